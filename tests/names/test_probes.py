"""TCP and HTTP checks against real loopback listeners: statuses, outputs, where they may go."""

from http import HTTPStatus

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet import defer, reactor, ssl
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import resource, server

from suite.names.allowed import AllowedHosts
from suite.names.probes import BODY_LIMIT, RESPONSE_LIMIT, Prober, Refused, split_target
from suite.names.registry import CRITICAL, MAX_TEXT, PASSING, WARNING, Check
from tests.helpers import make_pki, tmp_dir

TIMEOUT = 10  # seconds a probe may take here, unless a test says otherwise


class Answer(resource.Resource):
    """Answers CODE with BODY, and remembers each request's method and headers."""

    isLeaf = True

    def __init__(self, code, body=b"", location=None):
        super().__init__()
        self.code = code
        self.body = body
        self.location = location
        self.seen = []

    def render(self, request):
        self.seen.append((request.method, request.requestHeaders))
        request.setResponseCode(self.code, HTTPStatus(self.code).phrase.encode())
        if self.location:
            request.setHeader(b"location", self.location)
        return self.body


class Endless(resource.Resource):
    """A body that never ends: 64 KiB more each millisecond, until the client hangs up."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.gone = defer.Deferred()  # fires once the client hung up
        self.next = None

    def render_GET(self, request):
        def hung_up(_):
            if self.next.active():
                self.next.cancel()
            self.gone.callback(None)

        def more():
            request.write(b"x" * 65536)
            self.next = reactor.callLater(0.001, more)

        more()
        request.notifyFinish().addBoth(hung_up)
        return server.NOT_DONE_YET


class Silent(Protocol):
    """Takes a connection and never answers."""


def flood(head, unit):
    """
    A protocol that answers HEAD, then UNIT 64 times a millisecond (at most
    a thousand times) until the client hangs up: its class's `gone` fires then.
    """

    class Flood(Protocol):
        gone = defer.Deferred()

        def connectionMade(self):
            self.rounds = 0
            self.transport.write(head)
            self.more()

        def more(self):
            self.rounds += 1
            self.transport.write(unit * 64)
            self.next = reactor.callLater(0.001, self.more) if self.rounds < 1000 else None

        def connectionLost(self, reason):
            if self.next is not None and self.next.active():
                self.next.cancel()
            self.gone.callback(self.rounds)

    return Flood


class ManyHeaders(resource.Resource):
    """Answers 200 "fine" with COUNT headers of 100 bytes each."""

    isLeaf = True

    def __init__(self, count):
        super().__init__()
        self.count = count

    def render_GET(self, request):
        for n in range(self.count):
            request.setHeader(f"x-h{n:04}", "v" * 92)
        return b"fine"


def prober(networks=("127.0.0.0/8",), resolved=None):
    hosts = AllowedHosts(networks)

    def resolve(name):
        if resolved is None or name not in resolved:
            return defer.fail(Refused(f"host '{name}': host name not found"))
        return defer.succeed(list(resolved[name]))

    return Prober(reactor, resolve, hosts.addresses)


class ProbeTestCase(TestCase):
    def site(self, **paths):
        root = resource.Resource()
        for path, child in paths.items():
            root.putChild(path.encode(), child)
        port = reactor.listenTCP(0, server.Site(root), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}"

    def listen(self, protocol=Protocol):
        """The port number of a listener on 127.0.0.1 whose connections PROTOCOL serves."""
        port = reactor.listenTCP(0, Factory.forProtocol(protocol), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def closed_port(self):
        port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        number = port.getHost().port
        return port.stopListening().addCallback(lambda _: number)


class TCPProbes(ProbeTestCase):
    async def test_a_listening_port_passes(self):
        number = self.listen(Protocol)
        target = f"127.0.0.1:{number}"
        outcome = await prober().probe(Check("c", "tcp", target=target), TIMEOUT)
        self.assertEqual(outcome, (PASSING, f"TCP connect {target}: Success"))

    async def test_a_closed_port_is_critical_as_consul_words_it(self):
        number = await self.closed_port()
        outcome = await prober().probe(Check("c", "tcp", target=f"127.0.0.1:{number}"), TIMEOUT)
        self.assertEqual(
            outcome, (CRITICAL, f"dial tcp 127.0.0.1:{number}: connect: connection refused")
        )

    async def test_a_host_name_is_resolved_at_each_run_and_its_address_checked(self):
        number = self.listen(Protocol)
        addresses = {"db.internal": ["127.0.0.1"]}
        probe = prober(resolved=addresses)
        check = Check("c", "tcp", target=f"db.internal:{number}")
        self.assertEqual((await probe.probe(check, TIMEOUT))[0], PASSING)
        addresses["db.internal"] = ["127.0.0.1", "169.254.169.254"]  # re-pointed: refused
        status, output = await probe.probe(check, TIMEOUT)
        self.assertEqual(status, CRITICAL)
        self.assertIn("169.254.169.254 is a link-local address, never checked", output)

    async def test_an_address_outside_allowed_networks_is_never_connected_to(self):
        connected = []

        class Seen(Protocol):
            def connectionMade(self):
                connected.append(True)

        number = self.listen(Seen)
        target = f"127.0.0.1:{number}"
        status, output = await prober(networks=("10.0.0.0/8",)).probe(
            Check("c", "tcp", target=target), TIMEOUT
        )
        self.assertEqual(status, CRITICAL)
        self.assertEqual(
            output, f"dial tcp {target}: host '127.0.0.1': 127.0.0.1 is outside allowed_networks"
        )
        self.assertEqual(connected, [])


class HTTPProbes(ProbeTestCase):
    async def test_2xx_passes_429_warns_the_rest_is_critical(self):
        base = self.site(
            ok=Answer(200, b"all good"),
            empty=Answer(204),
            busy=Answer(429, b"slow down"),
            broken=Answer(500, b"oops"),
            moved=Answer(302, location=b"/ok"),
        )
        probe = prober()

        async def outcome(path):
            return await probe.probe(Check("h", "http", target=f"{base}/{path}"), TIMEOUT)

        self.assertEqual(
            await outcome("ok"), (PASSING, f"HTTP GET {base}/ok: 200 OK Output: all good")
        )
        self.assertEqual((await outcome("empty"))[0], PASSING)
        self.assertEqual(
            await outcome("busy"),
            (WARNING, f"HTTP GET {base}/busy: 429 Too Many Requests Output: slow down"),
        )
        self.assertEqual(
            await outcome("broken"),
            (CRITICAL, f"HTTP GET {base}/broken: 500 Internal Server Error Output: oops"),
        )
        status, output = await outcome("moved")  # no redirect followed
        self.assertEqual(
            (status, output.split(" Output:")[0]), (CRITICAL, f"HTTP GET {base}/moved: 302 Found")
        )

    async def test_the_method_and_headers_are_sent(self):
        answer = Answer(200)
        base = self.site(h=answer)
        check = Check(
            "h", "http", target=f"{base}/h", method="POST", header={"X-Probe": ["a", "b"]}
        )
        self.assertEqual((await prober().probe(check, TIMEOUT))[0], PASSING)
        [(method, headers)] = answer.seen
        self.assertEqual(method, b"POST")
        self.assertEqual(headers.getRawHeaders(b"x-probe"), [b"a", b"b"])
        self.assertEqual(headers.getRawHeaders(b"user-agent"), [b"Consul Health Check"])
        self.assertEqual(headers.getRawHeaders(b"host"), [base.removeprefix("http://").encode()])

    async def test_at_most_4_kib_of_the_body_is_read(self):
        endless = Endless()
        base = self.site(big=endless)
        check = Check("h", "http", target=f"{base}/big")
        status, output = await prober().probe(check, 5)  # not a timeout: reading stopped
        await endless.gone.addTimeout(5, reactor)
        self.assertEqual(status, PASSING)
        whole = f"HTTP GET {base}/big: 200 OK Output: " + "x" * BODY_LIMIT
        self.assertEqual(output, whole[:MAX_TEXT])  # what a check's output keeps

    async def test_endless_headers_are_cut_at_the_response_limit(self):
        hostile = flood(b"HTTP/1.1 200 OK\r\n", b"X-Flood: " + b"y" * 54 + b"\r\n")
        url = f"http://127.0.0.1:{self.listen(hostile)}/"
        outcome = await prober().probe(Check("h", "http", target=url), 5)  # not a timeout
        self.assertEqual(
            outcome, (CRITICAL, f'Get "{url}": server response exceeded 65536 bytes; aborted')
        )
        rounds = await hostile.gone.addTimeout(5, reactor)  # the name server hung up
        self.assertLess(rounds, 1000)
        self.assertEqual(RESPONSE_LIMIT, 65536)

    async def test_the_framing_of_a_body_counts_towards_the_response_limit(self):
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        one_byte_chunk = b"1;pad=" + b"p" * 1000 + b"\r\nx\r\n"  # 1 KiB of framing a byte
        hostile = flood(head, one_byte_chunk)
        url = f"http://127.0.0.1:{self.listen(hostile)}/"
        outcome = await prober().probe(Check("h", "http", target=url), 5)
        self.assertEqual(
            outcome, (CRITICAL, f'Get "{url}": server response exceeded 65536 bytes; aborted')
        )
        await hostile.gone.addTimeout(5, reactor)

    async def test_an_answer_within_the_response_limit_stands(self):
        base = self.site(h=ManyHeaders(600))  # 60,000 bytes of headers
        outcome = await prober().probe(Check("h", "http", target=f"{base}/h"), TIMEOUT)
        self.assertEqual(outcome, (PASSING, f"HTTP GET {base}/h: 200 OK Output: fine"))

    async def test_a_closed_port_is_critical(self):
        number = await self.closed_port()
        url = f"http://127.0.0.1:{number}/"
        outcome = await prober().probe(Check("h", "http", target=url), TIMEOUT)
        self.assertEqual(
            outcome,
            (CRITICAL, f'Get "{url}": dial tcp 127.0.0.1:{number}: connect: connection refused'),
        )

    async def test_a_server_that_never_answers_times_out(self):
        number = self.listen(Silent)
        url = f"http://127.0.0.1:{number}/"
        outcome = await prober().probe(Check("h", "http", target=url, timeout=3600), 0.2)
        self.assertEqual(outcome, (CRITICAL, f'Get "{url}": i/o timeout'))

    async def test_a_server_that_hangs_up_without_an_answer_is_critical(self):
        class HangUp(Protocol):
            def connectionMade(self):
                self.transport.loseConnection()

        number = self.listen(HangUp)
        url = f"http://127.0.0.1:{number}/"
        outcome = await prober().probe(Check("h", "http", target=url), TIMEOUT)
        self.assertEqual(outcome, (CRITICAL, f'Get "{url}": EOF'))

    async def test_a_url_outside_allowed_networks_is_not_requested(self):
        answer = Answer(200)
        base = self.site(h=answer)
        status, output = await prober(networks=("10.0.0.0/8",)).probe(
            Check("h", "http", target=f"{base}/h"), TIMEOUT
        )
        self.assertEqual(status, CRITICAL)
        self.assertIn("outside allowed_networks", output)
        self.assertEqual(answer.seen, [])

    async def test_a_host_name_is_requested_at_its_checked_address_under_its_own_name(self):
        answer = Answer(200)
        base = self.site(h=answer)
        port = base.rsplit(":", 1)[1]
        url = f"http://web.internal:{port}/h"
        probe = prober(resolved={"web.internal": ["127.0.0.1"]})
        self.assertEqual((await probe.probe(Check("h", "http", target=url), TIMEOUT))[0], PASSING)
        [(_, headers)] = answer.seen
        self.assertEqual(headers.getRawHeaders(b"host"), [f"web.internal:{port}".encode()])


class HTTPSProbes(ProbeTestCase):
    def tls_site(self):
        pki = make_pki(tmp_dir(self))
        with open(pki["server_key"], "rb") as key, open(pki["server_crt"], "rb") as crt:
            options = ssl.CertificateOptions(
                privateKey=serialization.load_pem_private_key(key.read(), None),
                certificate=x509.load_pem_x509_certificate(crt.read()),
            )
        root = resource.Resource()
        root.putChild(b"h", Answer(200, b"secure"))
        port = reactor.listenSSL(0, server.Site(root), options, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return f"https://127.0.0.1:{port.getHost().port}/h"

    async def test_an_unknown_certificate_is_critical_unless_verification_is_skipped(self):
        url = self.tls_site()
        status, output = await prober().probe(Check("h", "http", target=url), TIMEOUT)
        self.assertEqual(status, CRITICAL)
        self.assertEqual(output, f'Get "{url}": tls: certificate verify failed')
        outcome = await prober().probe(
            Check("h", "http", target=url, tls_skip_verify=True), TIMEOUT
        )
        self.assertEqual(outcome, (PASSING, f"HTTP GET {url}: 200 OK Output: secure"))


class Targets(SynchronousTestCase):
    def test_host_port_forms(self):
        self.assertEqual(split_target("10.0.0.1:80"), ("10.0.0.1", 80))
        self.assertEqual(split_target("[::1]:8080"), ("::1", 8080))
        self.assertEqual(split_target("db.internal:5432"), ("db.internal", 5432))
        for bad in ("10.0.0.1", ":80", "host:0", "host:99999", "host:x"):
            self.assertRaises(Refused, split_target, bad)

    def test_a_malformed_check_is_critical_not_an_error(self):
        probe = prober()
        for check in (
            Check("c", "tcp", target="nonsense"),
            Check("h", "http", target="ftp://127.0.0.1/"),
            Check("h", "http", target="http://127.0.0.1/", method="GET X"),
        ):
            status, output = self.successResultOf(probe.probe(check, TIMEOUT))
            self.assertEqual(status, CRITICAL, check)
