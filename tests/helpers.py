"""Shared test helpers: in-memory connections, throwaway TLS certificates, in-process suites."""

import datetime
import ipaddress
import textwrap
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.protocols import amp
from twisted.python.failure import Failure

from suite.app import tap as services
from suite.app.compose import build
from suite.app.lifecycle import SuiteService, walk
from suite.net.listeners import ListenerService

PEER = IPv4Address("TCP", "192.0.2.7", 40000)


def connect(factory, peer=PEER):
    """A protocol of FACTORY connected to a StringTransport from PEER: (protocol, transport)."""
    protocol = factory.buildProtocol(peer)
    transport = StringTransport(peerAddress=peer)
    protocol.makeConnection(transport)
    return protocol, transport


def elapse(clock, seconds: float, step: float = 0.125) -> None:
    """
    Let SECONDS pass on a Clock in steps of 1/8 s (exact in binary), as for a
    running reactor.
    """
    for _ in range(round(seconds / step)):
        clock.advance(step)


def captured_events(test) -> list[dict]:
    """Every log event from now until TEST ends, as a list that grows."""
    events = []
    globalLogPublisher.addObserver(events.append)
    test.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


def captured_log(test) -> list[str]:
    """The text of every log event from now until TEST ends, as a list that grows."""
    lines = []

    def observe(event):
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    test.addCleanup(globalLogPublisher.removeObserver, observe)
    return lines


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject, key, issuer_name, issuer_key, ca=False, names=()):
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        # Python 3.13's default context (VERIFY_X509_STRICT) wants both key identifiers.
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path, data):
    path.write_bytes(data)
    return str(path)


def tls_section(pki, role="server", client_ca="", min_version="1.2") -> str:
    """The [tls] table serving ROLE's certificate from a make_pki() result."""
    return (
        "[tls]\n"
        f'certificate = "{pki[role + "_crt"]}"\n'
        f'private_key = "{pki[role + "_key"]}"\n'
        f'client_ca = "{client_ca}"\n'
        f'min_version = "{min_version}"\n'
    )


def make_pki(directory):
    """
    A CA, a server certificate for localhost/127.0.0.1 and a client
    certificate, as PEM files in DIRECTORY; returns a dict of their paths.
    A second, unrelated CA signs `stranger` (a client the server must refuse);
    `elsewhere` is signed by the CA but names another host.
    """
    local = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    pem = serialization.Encoding.PEM
    paths = {}
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("suite test CA", ca_key, _name("suite test CA"), ca_key, ca=True)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_ca_name = _name("other CA")
    paths["ca"] = _write(directory / "ca.crt", ca.public_bytes(pem))
    for role, issuer_name, issuer_key, names in (
        ("server", ca.subject, ca_key, local),
        ("client", ca.subject, ca_key, ()),
        ("stranger", other_ca_name, other_key, ()),
        ("elsewhere", ca.subject, ca_key, [x509.DNSName("elsewhere.example")]),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(role, key, issuer_name, issuer_key, names=names)
        paths[role + "_crt"] = _write(directory / f"{role}.crt", cert.public_bytes(pem))
        paths[role + "_key"] = _write(
            directory / f"{role}.key",
            key.private_bytes(
                pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )
    return paths


class AMPPair:
    """
    An AMP client (CLIENT, or a plain amp.AMP) talking to a server protocol
    of FACTORY through two StringTransports, from PEER.
    """

    MAX_ROUNDS = 1000

    def __init__(self, factory, client=None, peer=PEER):
        self.server, self.server_transport = connect(factory, peer)
        self.client = amp.AMP() if client is None else client
        self.client_transport = StringTransport()
        self.client.makeConnection(self.client_transport)

    def pump(self):
        """
        Deliver bytes both ways until both sides are quiet; a conversation
        that never ends fails.
        """
        for _ in range(self.MAX_ROUNDS):
            to_server = self.client_transport.value()
            to_client = self.server_transport.value()
            if not to_server and not to_client:
                return
            self.client_transport.clear()
            self.server_transport.clear()
            if to_server:
                self.server.dataReceived(to_server)
            if to_client:
                self.client.dataReceived(to_client)
        raise AssertionError(f"client and server still talking after {self.MAX_ROUNDS} rounds")

    def call(self, command, **arguments):
        """Call COMMAND; a list that holds the answer (or Failure) once one came."""
        answers = []
        self.client.callRemote(command, **arguments).addBoth(answers.append)
        self.pump()
        return answers

    def answer(self, command, **arguments):
        """
        Call COMMAND and return its answer, which must have come at once; a
        Failure is raised.
        """
        answers = self.call(command, **arguments)
        if not answers:
            raise AssertionError(f"{command.__name__} was not answered")
        (answer,) = answers
        if isinstance(answer, Failure):
            answer.raiseException()
        return answer


def tmp_dir(test) -> Path:
    """A new, empty directory of TEST's own (absolute: tests may change directory)."""
    path = Path(test.mktemp()).absolute()
    path.mkdir(parents=True)
    return path


class StartedSuite:
    """
    The root service of a suite a test started.  Iterating it gives every
    service of its tree (the named services, their listeners, writers ...),
    so that a test finds a part without knowing which service holds it.
    """

    def __init__(self, root: SuiteService):
        self.root = root

    def __iter__(self):
        return walk(self.root)

    def stopService(self):
        return self.root.stopService()


def start_suite(test, tmp_dir, body) -> dict:
    """
    Start the suite from BODY, kept as TEST's `suite_root` (a L{StartedSuite});
    returns {listener description: bound port number (None: Unix)}.
    """
    path = tmp_dir / "suite.toml"
    path.write_text(textwrap.dedent(body))
    root = build(services.SERVICES, str(path), {}, reactor, only_listed=False)
    root.privilegedStartService()
    root.startService()
    test.addCleanup(root.stopService)
    test.suite_root = StartedSuite(root)
    return {
        f"{child.service_name} {child.listener}": getattr(child.port.getHost(), "port", None)
        for child in walk(root)
        if isinstance(child, ListenerService)
    }


def flush_writers(test) -> None:
    """Write out now what the batching writers of the suite TEST started hold."""
    from suite.foundation.jsonlines import BatchWriter

    for child in test.suite_root:
        if isinstance(child, BatchWriter):
            child.flush()


def json_lines(path) -> list[dict]:
    """The records of a JSON-lines file (none when it does not exist yet)."""
    import json

    path = Path(path)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
