"""
suite-client ADDRESS (`host:port`, `[v6]:port`, or a Twisted client endpoint
string) -> endpoint.
"""

import re
from dataclasses import dataclass

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import endpoints, ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IStreamClientEndpoint

_HOST_PORT = re.compile(r"(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]\s=]+)):(?P<port>\d{1,5})")
_HOST_PARAMETER = re.compile(r"(?:^|:)host=([^:]+)")


@dataclass(frozen=True)
class Address:
    text: str
    host: str | None = None
    port: int | None = None

    @property
    def hostname(self) -> str | None:
        """The name TLS verifies: the host part, or an endpoint string's host=."""
        if self.host:
            return self.host
        found = _HOST_PARAMETER.search(self.text)
        return found[1] if found else None


def parse_address(text: str) -> Address:
    found = _HOST_PORT.fullmatch(text)
    if found is None:
        if ":" not in text:
            raise ValueError(f"{text}: expected host:port, [v6]:port or an endpoint string")
        return Address(text)
    port = int(found["port"])
    if not 0 < port < 65536:
        raise ValueError(f"{text}: port must be 1-65535")
    return Address(text, found["v6"] or found["host"], port)


def client_tls(
    hostname: str, ca: str | None, cert: str | None, key: str | None
) -> IOpenSSLClientConnectionCreator:
    """Client TLS verifying the server's certificate and HOSTNAME (service_identity)."""
    trust = ssl.platformTrust()
    if ca:
        with open(ca, "rb") as f:
            trust = ssl.Certificate.loadPEM(f.read())
    client_certificate = None
    if cert or key:
        if not (cert and key):
            raise ValueError("--cert and --key go together")
        with open(cert, "rb") as c, open(key, "rb") as k:
            client_certificate = ssl.PrivateCertificate.loadPEM(c.read() + b"\n" + k.read())
    return ssl.optionsForClientTLS(hostname, trustRoot=trust, clientCertificate=client_certificate)


def tls_failure(exception: BaseException | None) -> str | None:
    """Why a TLS handshake failed, in OpenSSL's words, for one line (None: not a TLS failure)."""
    if isinstance(exception, SSL.Error):
        errors = exception.args[0] if exception.args else None
        reasons = [part[-1] for part in errors if part] if errors else []
        return f"TLS failed: {', '.join(reasons) or exception}"
    if isinstance(exception, VerificationError):
        return "TLS failed: certificate does not match the host name"
    return None


def stream_endpoint(
    reactor: object,
    address: Address,
    timeout: float,
    tls: IOpenSSLClientConnectionCreator | None = None,
) -> IStreamClientEndpoint:
    """
    The endpoint ADDRESS names, through TLS when TLS is given; REACTOR is
    the reactor (TCP, time and name resolution, as `HostnameEndpoint` asks).
    """
    endpoint: IStreamClientEndpoint
    if address.host and address.port is not None:
        endpoint = endpoints.HostnameEndpoint(reactor, address.host, address.port, timeout=timeout)
    else:
        endpoint = endpoints.clientFromString(reactor, address.text)
    if tls is not None:
        endpoint = endpoints.wrapClientTLS(tls, endpoint)
    return endpoint
