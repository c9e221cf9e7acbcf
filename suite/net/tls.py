"""
The [tls] section and the server TLS context every `tls_listen` shares:
certificate chain, private key, optional client CA (mutual TLS), the
lowest TLS version accepted (`min_version`) and the TLS 1.2 cipher suites
(`ciphers`).
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from OpenSSL import SSL
from twisted.internet import ssl

from suite.foundation.config import Listening, Settings, choice, key, path, text
from suite.foundation.credentials import credential_path

if TYPE_CHECKING:
    from suite.net.twisted_internals.types import IOpenSSLTrustRoot

# Mozilla's "intermediate" profile for TLS 1.2: forward secrecy (ECDHE) and
# authenticated encryption (GCM, ChaCha20-Poly1305) only, so no RSA key
# exchange and no CBC.  Its DHE suites are left out: they need DH parameters
# the operator would have to generate and ship, cost several times ECDHE's CPU
# per handshake (an unauthenticated client's cheap lever), and only clients
# too old for ECDHE would ever pick them.  TLS 1.3 suites stay OpenSSL's own.
INTERMEDIATE_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)


def check_cipher_string(ciphers: str) -> None:
    """
    CIPHERS must select at least one TLS 1.2 suite, checked when the config
    is read so that a typo is one config line at start, whether or not a
    tls_listen uses [tls] yet, and never a traceback from Twisted.
    """
    try:
        SSL.Context(SSL.TLS_METHOD).set_cipher_list(ciphers.encode("ascii"))
    except (SSL.Error, UnicodeEncodeError):
        raise ValueError("OpenSSL selects no cipher suite from this cipher string") from None


@dataclass(frozen=True, kw_only=True)
class TLSSettings(Settings):
    """
    The server certificate, key and policy of every `tls_listen`; `client_ca`
    set means mutual TLS.
    """

    section = "tls"

    certificate: str = key(
        path(), "", "PEM certificate (chain) served by tls_listen, or credential:NAME"
    )
    private_key: str = key(path(), "", "PEM private key of the certificate, or credential:NAME")
    client_ca: str = key(
        path(),
        "",
        "PEM CA certificate(s), or credential:NAME: when set, clients must present a "
        "certificate one of them signed (mutual TLS)",
    )
    min_version: str = key(choice("1.2", "1.3"), "1.2", "lowest TLS version accepted")
    ciphers: str = key(
        text(check_cipher_string),
        INTERMEDIATE_CIPHERS,
        "OpenSSL cipher string for TLS 1.2 (default: Mozilla intermediate)",
    )


# The loaders take any section's SETTINGS and key NAME ([tls], and [announce]
# for its client side), so that every unreadable file is a config error naming its key.


def _read_pem(settings: Settings, name: str) -> bytes:
    try:
        with open(credential_path(getattr(settings, name)), "rb") as f:
            return f.read()
    except ValueError as e:
        raise settings.error(name, str(e)) from None
    except OSError as e:
        raise settings.error(name, f"cannot read: {e.strerror}") from None


def load_certificates(settings: Settings, name: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(_read_pem(settings, name))
    except ValueError:
        raise settings.error(name, "no PEM certificate in file") from None


def load_private_key(settings: Settings) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(
            _read_pem(settings, "private_key"), password=None
        )
    except TypeError:
        raise settings.error("private_key", "encrypted keys are not supported") from None
    except ValueError:
        raise settings.error("private_key", "not a PEM private key") from None


def client_certificate_options(settings: Settings) -> dict[str, object]:
    """
    What a TLS client presents from SETTINGS' `certificate` and `private_key`
    keys (the `extraCertificateOptions` of optionsForClientTLS; none set: {}),
    read now: a bad file, or a key that is not the certificate's, is a
    ConfigError naming its key.
    """
    if not getattr(settings, "certificate", ""):
        return {}
    chain = load_certificates(settings, "certificate")
    private_key = load_private_key(settings)
    if chain[0].public_key() != private_key.public_key():
        raise settings.error("private_key", "does not match the certificate")
    return {"certificate": chain[0], "privateKey": private_key, "extraCertChain": chain[1:]}


def trust_root(settings: Settings, name: str) -> "IOpenSSLTrustRoot":
    """Every CA certificate in the file key NAME names, as a TLS trust root."""
    root: IOpenSSLTrustRoot = ssl.trustRootFromCertificates(
        [
            ssl.Certificate.loadPEM(ca.public_bytes(serialization.Encoding.PEM))
            for ca in load_certificates(settings, name)
        ]
    )
    return root


def names_files(tls: TLSSettings) -> bool:
    return any((tls.certificate, tls.private_key, tls.client_ca))


def tls_options(tls: TLSSettings, needed_by: Listening | None = None) -> ssl.CertificateOptions:
    """
    The server TLS context of the [tls] section, fully loaded now so that a
    missing file, a bad PEM or a key that does not match the certificate is a
    config error at start, not a failed handshake later.  It is loaded
    whenever [tls] names a file, whether or not a tls_listen uses it yet, or
    when NEEDED_BY (a service with a tls_listen) needs it.
    """
    for name in ("certificate", "private_key"):
        if not getattr(tls, name):
            if needed_by is not None:
                raise needed_by.error(
                    "tls_listen", f"needs [tls] {name}", list(needed_by.tls_listen)
                )
            named = next(n for n in ("client_ca", "certificate", "private_key") if getattr(tls, n))
            raise tls.error(named, f"needs [tls] {name} too")
    chain = load_certificates(tls, "certificate")
    private_key = load_private_key(tls)
    trust = trust_root(tls, "client_ca") if tls.client_ca else None
    minimum = ssl.TLSVersion.TLSv1_3 if tls.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    options = ssl.CertificateOptions(
        # Twisted annotates pyOpenSSL's older types; pyOpenSSL takes cryptography's objects.
        privateKey=private_key,  # type: ignore[arg-type]
        certificate=chain[0],  # type: ignore[arg-type]
        extraCertChain=chain[1:],  # type: ignore[arg-type]
        trustRoot=trust,
        raiseMinimumTo=minimum,
        acceptableCiphers=ssl.AcceptableCiphers.fromOpenSSLCipherString(tls.ciphers),
    )
    try:
        options.getContext()
    except SSL.Error:
        raise tls.error("private_key", "does not match the certificate") from None
    return options
