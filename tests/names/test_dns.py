"""The DNS listeners on real sockets, asked by dig and by twisted.names' own resolver."""

import shutil
import socket

from twisted.internet import reactor, task, utils
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.names import client, dns
from twisted.names import error as dns_error
from twisted.trial.unittest import SkipTest, TestCase

from suite.client import api
from suite.names.dnsfront import DNSFactory
from suite.names.registry import WARNING, Check, Instance
from suite.names.server import NameServer
from tests.helpers import start_suite, tmp_dir
from tests.names.test_zone import parse, query

LOCAL = "tcp:0:interface=127.0.0.1"


def port_free_for_tcp_and_udp() -> int:
    """A loopback port number free for both TCP and UDP (dig retries over TCP on the same port)."""
    for _ in range(100):
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            try:
                udp.bind(("127.0.0.1", tcp.getsockname()[1]))
            except OSError:
                continue
            return tcp.getsockname()[1]
    raise AssertionError("no port free for both TCP and UDP")


def header_flags(lines: list[str]) -> str:
    """dig's `;; flags: ...` line."""
    return [line for line in lines if line.startswith(";; flags")][0]


def srv_records(lines: list[str]) -> list[str]:
    """dig's lines of SRV records."""
    return [line for line in lines if "\tSRV\t" in line and not line.startswith(";")]


async def received(sock, at_least: int, seconds: float = 5.0) -> bytes:
    """What non-blocking SOCK receives, once it is AT_LEAST bytes (waiting at most SECONDS)."""
    data = b""
    for _ in range(int(seconds / 0.01)):
        try:
            data += sock.recv(65535)
        except BlockingIOError:
            await task.deferLater(reactor, 0.01, lambda: None)
        if len(data) >= at_least:
            return data
    raise AssertionError(f"received {data!r} in {seconds} s")


class DNSOnSockets(TestCase):
    def start(self, extra=""):
        port = port_free_for_tcp_and_udp()
        udp, tcp = f"udp:{port}:interface=127.0.0.1", f"tcp:{port}:interface=127.0.0.1"
        ports = start_suite(
            self,
            tmp_dir(self),
            f"""
            [names]
            listen = ["{LOCAL}"]
            dns_listen = ["{udp}", "{tcp}"]
            store = "memory"
            lookup_audit = ""
            {extra}
        """,
        )
        self.amp = TCP4ClientEndpoint(reactor, "127.0.0.1", ports[f"names {LOCAL}"])
        self.udp_port = ports[f"names dns_listen {udp}"]
        self.tcp_port = ports[f"names dns_listen {tcp}"]

    async def register(self, name, host, port):
        await api.register(reactor, self.amp, name, host, port)

    async def dig(self, *arguments, tcp=False) -> list[str]:
        if shutil.which("dig") is None:
            raise SkipTest("dig is not installed (bind9-dnsutils; make test installs it as root)")
        port = self.tcp_port if tcp else self.udp_port
        out, err, code = await utils.getProcessOutputAndValue(
            "dig",
            ["@127.0.0.1", "-p", str(port), "+time=5", "+tries=1", *arguments]
            + (["+tcp"] if tcp else []),
        )
        self.assertEqual((code, err), (0, b""), out)
        return out.decode().splitlines()

    async def test_dig_srv_a_aaaa(self):
        self.start()
        await self.register("web", "127.0.0.1", 8001)
        await self.register("web", "::1", 8002)
        lines = await self.dig("_web._tcp.suite", "SRV", "+noall", "+answer", "+additional")
        self.assertEqual(
            [line.split() for line in lines],
            [
                ["_web._tcp.suite.", "5", "IN", "SRV", "1", "1", "8001", "7f000001.addr.suite."],
                [
                    "_web._tcp.suite.",
                    "5",
                    "IN",
                    "SRV",
                    "1",
                    "1",
                    "8002",
                    "00000000000000000000000000000001.addr.suite.",
                ],
                ["7f000001.addr.suite.", "5", "IN", "A", "127.0.0.1"],
                ["00000000000000000000000000000001.addr.suite.", "5", "IN", "AAAA", "::1"],
            ],
        )
        self.assertEqual(await self.dig("web.suite", "A", "+short"), ["127.0.0.1"])
        self.assertEqual(await self.dig("web.suite", "AAAA", "+short", tcp=True), ["::1"])
        # A second instance on each address: one SRV record more each, no address twice.
        await self.register("web", "127.0.0.1", 8003)
        await self.register("web", "::1", 8004)
        self.assertEqual(await self.dig("web.suite", "A", "+short"), ["127.0.0.1"])
        self.assertEqual(await self.dig("web.suite", "AAAA", "+short", tcp=True), ["::1"])
        lines = await self.dig("_web._tcp.suite", "SRV", "+noall", "+answer", "+additional")
        self.assertEqual(
            sorted(
                (fields[3], fields[-2] if fields[3] == "SRV" else fields[-1])
                for fields in map(str.split, lines)
            ),
            [
                ("A", "127.0.0.1"),
                ("AAAA", "::1"),
                ("SRV", "8001"),
                ("SRV", "8002"),
                ("SRV", "8003"),
                ("SRV", "8004"),
            ],
        )
        flags = header_flags(await self.dig("web.suite"))
        self.assertIn(" aa", flags)
        self.assertNotIn(" ra", flags)

    async def test_dig_nxdomain_with_soa_and_refused(self):
        self.start()
        lines = await self.dig("nothing.suite", "A", "+noall", "+comments", "+authority")
        self.assertTrue(any("status: NXDOMAIN" in line for line in lines), lines)
        self.assertIn(
            [
                "suite.",
                "5",
                "IN",
                "SOA",
                "ns.suite.",
                "hostmaster.suite.",
                "1",
                "3600",
                "600",
                "86400",
                "5",
            ],
            [line.split() for line in lines],
        )
        lines = await self.dig("example.com", "A")
        self.assertTrue(any("status: REFUSED" in line for line in lines), lines)

    async def test_dig_truncated_over_udp_then_whole_over_tcp(self):
        self.start()
        for port in range(1, 41):
            await self.register("many", f"10.0.{port}.1", port)
        lines = await self.dig("_many._tcp.suite", "SRV", "+noedns", "+ignore")
        self.assertIn(" tc", header_flags(lines))
        answered = srv_records(lines)
        self.assertTrue(0 < len(answered) < 40, len(answered))
        lines = await self.dig("_many._tcp.suite", "SRV", "+noedns")  # dig retries over TCP
        self.assertTrue(any("Truncated, retrying in TCP mode" in line for line in lines), lines)
        answered = srv_records(lines)
        self.assertEqual(len(answered), 40)

    async def test_an_edns_query_offering_4096_gets_at_most_1232_bytes_over_udp(self):
        self.start()
        for port in range(1, 101):
            await self.register("many", f"10.0.{port}.1", port)
        lines = await self.dig("_many._tcp.suite", "SRV", "+bufsize=4096", "+ignore")
        self.assertIn(" tc", header_flags(lines))
        (size,) = [int(line.split()[-1]) for line in lines if "MSG SIZE" in line]
        self.assertLessEqual(size, 1232)
        self.assertGreater(size, 1000)
        self.assertIn("; EDNS: version: 0, flags:; udp: 1232", lines)
        lines = await self.dig("_many._tcp.suite", "SRV", "+bufsize=4096", tcp=True)
        answered = srv_records(lines)
        self.assertEqual(len(answered), 100)

    async def test_a_query_with_bytes_after_it_is_formerr_over_udp_and_tcp(self):
        self.start()
        junk = query("web.suite", edns_size=1232) + b"\0" * 64
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.setblocking(False)
        sock.sendto(junk, ("127.0.0.1", self.udp_port))
        self.assertEqual(parse(await received(sock, 1)).rCode, dns.EFORMAT)
        stream = socket.create_connection(("127.0.0.1", self.tcp_port), timeout=5)
        self.addCleanup(stream.close)
        stream.setblocking(False)
        stream.sendall(len(junk).to_bytes(2, "big") + junk)
        framed = await received(stream, 2 + 12)
        self.assertEqual(parse(framed[2:]).rCode, dns.EFORMAT)

    async def test_dns_cache_bytes_bounds_the_zones_caches(self):
        self.start("dns_cache_bytes = 65536")
        (factory,) = self._dns_factories()
        zone = factory.zone
        self.assertEqual(
            (zone._views.max_bytes, zone._prepared.max_bytes, zone._exact.max_bytes),
            (8192, 24576, 32768),
        )

    async def test_dig_asks_consuls_forms_and_sees_tags_weights_and_statuses(self):
        self.start()
        server = self._name_server()
        await server.put(
            Instance("web", "127.0.0.1", 8001, id="web-1", tags=("Primary",), weights=(10, 1)),
            None,
            "test",
            "127.0.0.1",
        )
        warning = Check("web-2:ttl", "ttl", ttl=600, status=WARNING)
        await server.put(
            Instance(
                "web",
                "127.0.0.2",
                8002,
                id="web-2",
                tags=("canary",),
                weights=(10, 2),
                checks=[warning],
            ),
            None,
            "test",
            "127.0.0.1",
        )
        self.assertEqual(
            await self.dig("primary.web.service.suite", "SRV", "+short"),
            ["1 10 8001 7f000001.addr.suite."],
        )
        self.assertEqual(
            await self.dig("_web._canary.suite", "SRV", "+short"),
            ["1 2 8002 7f000002.addr.suite."],
        )
        self.assertEqual(await self.dig("canary.web.service.suite", "A", "+short"), ["127.0.0.2"])
        self.assertEqual(
            sorted(await self.dig("web.service.suite", "SRV", "+short", tcp=True)),
            ["1 10 8001 7f000001.addr.suite.", "1 2 8002 7f000002.addr.suite."],
        )
        lines = await self.dig("stable.web.service.suite", "SRV")
        self.assertTrue(any("status: NXDOMAIN" in line for line in lines), lines)
        # Maintenance makes web-1 critical: every form leaves it out at once.
        web_1 = server.registry.by_id("web-1")
        self.assertTrue(
            await server.change(web_1, lambda i: setattr(i, "maintenance", "upgrade"), "test")
        )
        lines = await self.dig("primary.web.service.suite", "SRV")
        self.assertTrue(any("status: NXDOMAIN" in line for line in lines), lines)
        self.assertEqual(
            await self.dig("_web._tcp.suite", "SRV", "+short"), ["1 2 8002 7f000002.addr.suite."]
        )

    async def test_twisted_names_resolver(self):
        self.start()
        await self.register("web", "127.0.0.1", 8001)
        await self.register("web", "localhost", 8003)  # a host name: SRV names it, not an addr
        resolver = client.Resolver(servers=[("127.0.0.1", self.udp_port)], reactor=reactor)
        self.addCleanup(
            lambda: [
                call.cancel()
                for call in reactor.getDelayedCalls()
                if "Resolver" in repr(call.func)
            ]
        )
        answers, authority, additional = await resolver.lookupService("_web._tcp.suite")
        self.assertEqual(
            sorted((a.payload.port, a.payload.target.name) for a in answers),
            [(8001, b"7f000001.addr.suite"), (8003, b"localhost")],
        )
        self.assertEqual([a.payload.dottedQuad() for a in additional], ["127.0.0.1"])
        answers, _, _ = await resolver.lookupAddress("web.suite")
        self.assertEqual([a.payload.dottedQuad() for a in answers], ["127.0.0.1"])
        with self.assertRaises(dns_error.DomainError):
            await resolver.lookupAddress("nothing.suite")
        with self.assertRaises(dns_error.DNSQueryRefusedError):
            await resolver.lookupAddress("example.com")

    async def test_udp_replies_are_rate_limited_per_source(self):
        self.start("udp_rate = 5\nudp_burst = 5")
        await self.register("web", "127.0.0.1", 8001)
        got = {}
        for source in ("127.0.0.2", "127.0.0.3"):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.addCleanup(sock.close)
            sock.bind((source, 0))
            sock.setblocking(False)
            for number in range(20 if source == "127.0.0.2" else 3):
                sock.sendto(query("web.suite", id_=number), ("127.0.0.1", self.udp_port))
            await task.deferLater(reactor, 0.2, lambda: None)
            got[source] = 0
            while True:
                try:
                    sock.recv(4096)
                except BlockingIOError:
                    break
                got[source] += 1
        self.assertEqual(got, {"127.0.0.2": 5, "127.0.0.3": 3})

    async def test_a_tcp_client_that_never_reads_holds_bounded_memory(self):
        self.start()
        for port in range(1, 41):
            await self.register("many", f"10.0.{port}.1", port)
        one = query("_many._tcp.suite", dns.SRV)
        framed = len(one).to_bytes(2, "big") + one
        sock = socket.create_connection(("127.0.0.1", self.tcp_port))
        self.addCleanup(sock.close)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        sent = 0
        for _ in range(400):  # each answer is about 2.8 KB: 11 MB asked for in all
            try:
                sent += sock.send(framed * 50)
            except BlockingIOError:
                await task.deferLater(reactor, 0.01, lambda: None)
        await task.deferLater(reactor, 0.3, lambda: None)
        factory = list(self._dns_factories())[0]
        (connection,) = factory.idle.watched
        held = (
            len(connection._buffer)
            + len(connection.transport.dataBuffer)
            + connection.transport._tempDataLen
        )
        self.assertTrue(connection.paused)
        self.assertLess(held, 512 * 1024, held)
        self.assertGreater(sent, 0)

    def _name_server(self) -> NameServer:
        (server,) = (child for child in self.suite_root if isinstance(child, NameServer))
        return server

    def _dns_factories(self):
        for child in self.suite_root:
            factory = getattr(child, "port", None) and getattr(child.port, "factory", None)
            if isinstance(factory, DNSFactory):
                yield factory
