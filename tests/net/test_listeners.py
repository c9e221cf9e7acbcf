"""Integration: the services on real sockets on 127.0.0.1, port 0."""

import ipaddress
import os
import re
import shutil
import socket
import stat
import tempfile
import tomllib
from pathlib import Path

from twisted.internet import defer, protocol, reactor, task
from twisted.internet.address import IPv6Address, UNIXAddress
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from suite.app import tap as services
from suite.app.compose import build
from suite.app.lifecycle import SuiteService
from suite.echo.protocol import echo_datagram
from suite.foundation.flood import FloodControl
from suite.names import service as names_service
from suite.names.service import NamesSettings
from suite.net.addresses import describe_peer, source_of
from suite.net.datagrams import RateLimitedReplier
from suite.net.listeners import parse_udp, reaches_beyond_loopback
from suite.net.ratelimit import SourceRateLimiter
from tests.helpers import captured_log, start_suite, tmp_dir

ETC = Path(__file__).resolve().parents[2] / "etc"
COMMENTED_LISTENERS = re.compile(r"(\w*listen) = (\[[^\]]*\])")


class Collect(protocol.Protocol):
    """Sends DATA (then half-closes if asked) and collects everything until close."""

    def __init__(self, data, half_close=True):
        self.data, self.half_close = data, half_close
        self.received = bytearray()
        self.done = defer.Deferred()

    def connectionMade(self):
        self.transport.write(self.data)
        if self.half_close:
            self.transport.loseWriteConnection()

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        self.done.callback(bytes(self.received))


async def exchange(port, data, half_close=True) -> bytes:
    client = Collect(data, half_close)
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
    return await client.done


class ServicesOnRealSockets(TestCase):
    def setUp(self):
        self.ports = start_suite(
            self,
            tmp_dir(self),
            """
            [timestamp]
            listen = ["tcp:0:interface=127.0.0.1", "udp:0:interface=127.0.0.1"]
            format = "epoch"
            [echo]
            listen = ["tcp:0:interface=127.0.0.1", "udp:0:interface=127.0.0.1"]
        """,
        )

    async def test_timestamp_lines_and_half_close(self):
        port = self.ports["timestamp tcp:0:interface=127.0.0.1"]
        received = await exchange(port, b"one\r\ntwo\nunterminated")
        lines = received.split(b"\r\n")
        self.assertEqual(len(lines), 4)
        self.assertEqual(lines[3], b"")
        for line, text in zip(lines, (b"one", b"two", b"unterminated"), strict=False):
            self.assertRegex(line, rb"^\[\d+\.\d{6}\] " + text + b"$")

    async def test_echo_quit_closes_the_connection(self):
        port = self.ports["echo tcp:0:interface=127.0.0.1"]
        received = await exchange(port, b"hi\nquit\n", half_close=False)
        self.assertEqual(received, b"You said: hi\r\nGoodbye.\r\n")

    async def test_max_line_error_then_close_while_others_are_served(self):
        port = self.ports["echo tcp:0:interface=127.0.0.1"]
        received = await exchange(port, b"x" * 9000 + b"\n", half_close=False)
        self.assertEqual(received, b"ERROR line longer than 8192 bytes\r\n")
        self.assertEqual(await exchange(port, b"still\n"), b"You said: still\r\n")

    async def test_udp_answers_and_ignores_empty_datagrams(self):
        for name, payload, expected in (
            ("echo udp:0:interface=127.0.0.1", b"\x00raw\r\n", rb"^\x00raw\r\n$"),
            ("timestamp udp:0:interface=127.0.0.1", b"ping\n", rb"^\[\d+\.\d{6}\] ping$"),
        ):
            replies = await udp_exchange(self.ports[name], [b"", payload])
            self.assertEqual(len(replies), 1)
            self.assertRegex(replies[0], expected)


class UDPClient(protocol.DatagramProtocol):
    def __init__(self, expected):
        self.replies = []
        self.expected = expected
        self.done = defer.Deferred()

    def datagramReceived(self, data, address):
        self.replies.append(data)
        if len(self.replies) == self.expected:
            self.done.callback(self.replies)


async def udp_exchange(port, datagrams, expected=1, timeout=5):
    """Send DATAGRAMS; wait (at most TIMEOUT s) for EXPECTED replies, then a moment more."""
    client = UDPClient(expected)
    udp = reactor.listenUDP(0, client, interface="127.0.0.1")
    try:
        for datagram in datagrams:
            udp.write(datagram, ("127.0.0.1", port))
        client.done.addTimeout(timeout, reactor)
        await client.done
        return client.replies
    finally:
        await udp.stopListening()


class UDPRateLimit(TestCase):
    async def test_replies_stop_at_the_burst_and_resume_with_the_rate(self):
        clock = Clock()
        limiter = SourceRateLimiter(rate=10, burst=3, max_sources=100, clock=clock)
        server = reactor.listenUDP(
            0,
            RateLimitedReplier("echo", echo_datagram, limiter, FloodControl(clock, "echo")),
            interface="127.0.0.1",
        )
        self.addCleanup(server.stopListening)
        client = UDPClient(expected=4)
        udp = reactor.listenUDP(0, client, interface="127.0.0.1")
        self.addCleanup(udp.stopListening)
        address = ("127.0.0.1", server.getHost().port)
        for n in range(10):
            udp.write(b"%d" % n, address)
        # Loopback keeps order: once the marker sent after one refill period is
        # answered, every earlier datagram has been either answered or dropped.
        await task.deferLater(reactor, 0.2, lambda: None)
        clock.advance(0.1)
        udp.write(b"marker", address)
        client.done.addTimeout(5, reactor)
        self.assertEqual(await client.done, [b"0", b"1", b"2", b"marker"])


class RawEchoFlowControl(TestCase):
    """A client that writes without reading makes the server stop reading."""

    async def test_server_stops_reading_and_loses_nothing(self):
        ports = start_suite(
            self,
            tmp_dir(self),
            """
            [echo]
            listen = ["tcp:0:interface=127.0.0.1"]
            mode = "raw"
        """,
        )
        sock = socket.create_connection(("127.0.0.1", ports["echo tcp:0:interface=127.0.0.1"]))
        self.addCleanup(sock.close)
        sock.setblocking(False)
        chunk = bytes(range(256)) * 256  # 64 KiB
        sent, idle_rounds = 0, 0
        for _ in range(400):  # at most ~10 s
            progressed = False
            while sent < 256 * 2**20:
                try:
                    sent += sock.send(chunk[sent % len(chunk) :])
                    progressed = True
                except BlockingIOError:
                    break
            idle_rounds = 0 if progressed else idle_rounds + 1
            if idle_rounds == 10:
                break
            await task.deferLater(reactor, 0.025, lambda: None)
        self.assertEqual(
            idle_rounds, 10, "the server kept reading from a client that does not read"
        )
        self.assertLess(sent, 64 * 2**20)
        received = bytearray()
        for _ in range(2000):
            try:
                data = sock.recv(2**20)
            except BlockingIOError:
                await task.deferLater(reactor, 0.005, lambda: None)
                continue
            received += data
            if len(received) >= sent:
                break
        self.assertEqual(len(received), sent)
        self.assertEqual(bytes(received[: len(chunk)]), chunk)
        self.assertEqual(bytes(received[-1024:]), (chunk * 2)[(sent - 1024) % len(chunk) :][:1024])


class PortInUse(TestCase):
    def test_busy_port_names_service_and_endpoint_and_exits_1(self):
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = tmp_dir(self) / "suite.toml"
        path.write_text(f'[echo]\nlisten = ["tcp:{port}:interface=127.0.0.1"]\n')
        root = build(services.SERVICES, str(path), {}, reactor, only_listed=False)
        self.assertIsInstance(root, SuiteService)
        observed = []
        globalLogPublisher.addObserver(observed.append)
        self.addCleanup(globalLogPublisher.removeObserver, observed.append)
        with self.assertRaises(SystemExit) as caught:
            root.privilegedStartService()
        self.assertEqual(caught.exception.code, 1)
        critical = [
            e for e in observed if e.get("log_level") and e["log_level"].name == "critical"
        ]
        self.assertEqual(
            critical[0]["reason"],
            f"echo: cannot listen on tcp:{port}:interface=127.0.0.1: Address already in use",
        )


class UnixSocketModes(TestCase):
    def test_sockets_are_0660_unless_the_endpoint_says_mode(self):
        """Under umask 0 a socket keeps whatever mode it is given: Twisted's own is 0666."""
        short = tempfile.mkdtemp(prefix="modes")  # a Unix socket path has 108 bytes at most
        self.addCleanup(shutil.rmtree, short)
        self.addCleanup(os.umask, os.umask(0))
        start_suite(
            self,
            tmp_dir(self),
            f"""
            [echo]
            listen = ["unix:{short}/default.sock", "unix:{short}/open.sock:mode=666"]
            [timestamp]
            listen = ["unix:address={short}/private.sock:mode=600"]
            """,
        )
        modes = {
            name: stat.S_IMODE(os.stat(os.path.join(short, name)).st_mode)
            for name in ("default.sock", "open.sock", "private.sock")
        }
        self.assertEqual(modes, {"default.sock": 0o660, "open.sock": 0o666, "private.sock": 0o600})


def reaches_other_hosts(description: str) -> bool:
    if description.startswith("udp:"):
        interface = parse_udp(description)[1]
        return not interface or not ipaddress.ip_address(interface).is_loopback
    return reaches_beyond_loopback(description, MemoryReactor())


class ShippedConfigs(SynchronousTestCase):
    def test_every_listener_binds_loopback_and_the_comments_show_how_to_open_it(self):
        """`make run` and the per-core example answer no other host until a line is changed."""
        for path in (ETC / "suite.toml", ETC / "systemd" / "per-core" / "per-core.toml"):
            text = path.read_text()
            listeners = [
                description
                for section in tomllib.loads(text).values()
                if isinstance(section, dict)  # not a top-level key (workers)
                for key, value in section.items()
                if key.endswith("listen")
                for description in value
            ]
            opened = [
                description
                for line in text.splitlines()
                if line.startswith("#")
                for _, value in COMMENTED_LISTENERS.findall(line)
                for description in tomllib.loads(f"value = {value}")["value"]
            ]
            self.assertTrue(listeners and opened, path)
            for description in listeners:
                self.assertFalse(reaches_other_hosts(description), f"{path.name}: {description}")
            for description in opened:
                self.assertTrue(reaches_other_hosts(description), f"{path.name}: {description}")


class PeersAndExposure(SynchronousTestCase):
    def test_v4_mapped_peers_print_as_ipv4(self):
        self.assertEqual(
            describe_peer(IPv6Address("TCP", "::ffff:127.0.0.1", 51132)), "127.0.0.1:51132"
        )
        self.assertEqual(describe_peer(IPv6Address("TCP", "::1", 5)), "[::1]:5")
        self.assertEqual(source_of(IPv6Address("TCP", "::ffff:10.1.2.3", 5)), "10.1.2.3")
        self.assertEqual(source_of(UNIXAddress(b"/run/x.sock")), "unix")

    def test_unix_peer_paths_print_escaped(self):
        """
        A Unix client binds its socket to a path of its choosing: a log line
        prints it escaped.
        """
        self.assertEqual(describe_peer(UNIXAddress(b"/tmp/c\n\x1b[2J")), "/tmp/c\\n\\x1b[2J")
        self.assertEqual(describe_peer(UNIXAddress(b"/run/x.sock")), "/run/x.sock")
        self.assertEqual(describe_peer(UNIXAddress(None)), "unix")

    def test_which_listeners_reach_beyond_loopback(self):
        reactor = MemoryReactor()
        for description, beyond in (
            ("tcp:5300", True),
            ("tcp:5300:interface=127.0.0.1", False),
            ("tcp:5300:interface=127.0.0.5", False),
            ("tcp:5300:interface=192.0.2.1", True),
            ("tcp:5300:interface=localhost", False),
            ("tcp6:5300", True),
            ("tcp6:5300:interface=\\:\\:1", False),
            ("unix:/run/names.sock", False),
        ):
            self.assertEqual(reaches_beyond_loopback(description, reactor), beyond, description)

    def test_a_name_server_open_to_other_hosts_without_token_warns_at_start(self):
        lines = captured_log(self)
        for settings, warned in (
            (NamesSettings(listen=("tcp:0",), store="memory"), True),
            (NamesSettings(listen=("tcp:0",), store="memory", token="t"), False),
            (NamesSettings(store="memory"), False),
        ):
            del lines[:]
            names_service.build(settings, MemoryReactor())
            self.assertEqual(any("no token is set" in line for line in lines), warned, settings)
