"""
The answering datagram sides against reflection: no reply to a source port
below 1024 or to port 0, one budget per /24, loopback by default.  In
memory with a Clock, then with forged datagrams on loopback (raw sockets,
root only) to echo, timestamp and the name server's DNS.
"""

import os
import socket
import struct

from twisted.internet import reactor, task
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from suite.echo.protocol import echo_datagram
from suite.echo.service import EchoSettings
from suite.net.datagrams import rate_limited_replier
from suite.net.listeners import DatagramListenerService, parse_listeners
from suite.timestamp.service import TimestampSettings
from tests.helpers import start_suite, tmp_dir
from tests.names.test_zone import query


class SentDatagrams:
    def __init__(self):
        self.sent = []

    def write(self, data, address):
        self.sent.append((data, address))


def replier_for(settings, answer=echo_datagram, clock=None):
    replier = rate_limited_replier(settings, answer, clock or Clock())()
    replier.transport = SentDatagrams()
    replier.startProtocol()
    return replier


def counted(replier) -> dict:
    return {
        labels[0]: value for name, labels, value in replier.metric_samples() if name == "datagrams"
    }


class SourcePortTests(SynchronousTestCase):
    def test_no_reply_to_a_port_below_1024_or_to_port_0_counted_and_logged_once(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        asked = []
        replier = replier_for(EchoSettings(), answer=lambda data: asked.append(data) or data)
        for port in (0, 7, 19, 53, 123, 1023, 0, 53):
            replier.datagramReceived(b"ping", ("192.0.2.7", port))
        self.assertEqual((replier.transport.sent, asked), ([], []))
        self.assertEqual(counted(replier)["dropped_source_port"], 8)
        warnings = [e for e in events if e.get("flood_kind") == "datagrams from a port below 1024"]
        self.assertEqual(len(warnings), 1)  # then counted in the ten-second summary
        replier.datagramReceived(b"ping", ("192.0.2.7", 1024))
        self.assertEqual(replier.transport.sent, [(b"ping", ("192.0.2.7", 1024))])
        self.assertEqual(counted(replier)["answered"], 1)

    def test_dropped_datagrams_spend_no_budget(self):
        replier = replier_for(EchoSettings(udp_rate=1, udp_burst=2))
        for _ in range(10):
            replier.datagramReceived(b"ping", ("192.0.2.7", 53))
        for _ in range(3):
            replier.datagramReceived(b"ping", ("192.0.2.7", 5353))
        self.assertEqual(len(replier.transport.sent), 2)
        self.assertEqual(counted(replier)["rate_limited"], 1)


class NetworkBudgetTests(SynchronousTestCase):
    def test_a_24_of_victims_gets_one_networks_budget(self):
        clock = Clock()
        replier = replier_for(
            EchoSettings(udp_rate=50, udp_burst=100, udp_network_rate=500, udp_network_burst=1000),
            clock=clock,
        )
        for host in range(256):
            for _ in range(100):
                replier.datagramReceived(b"x", (f"198.51.100.{host}", 4000))
        self.assertEqual(len(replier.transport.sent), 1000)  # before: 25,600
        self.assertEqual(counted(replier)["network_rate_limited"], 25600 - 1000)
        clock.advance(1)
        for host in range(256):
            replier.datagramReceived(b"x", (f"198.51.100.{host}", 4000))
        self.assertEqual(len(replier.transport.sent), 1256)  # 500 a second: room for all 256

    def test_the_defaults(self):
        settings = EchoSettings()
        self.assertEqual((settings.udp_network_rate, settings.udp_network_burst), (500.0, 1000))


class LoopbackByDefaultTests(SynchronousTestCase):
    def test_echo_and_timestamp_datagram_sides_bind_loopback(self):
        for settings in (EchoSettings(), TimestampSettings()):
            datagram = [
                listener for listener in parse_listeners(settings, True) if listener.datagram
            ]
            self.assertEqual(
                [listener.udp_interface for listener in datagram], ["127.0.0.1"], settings.section
            )


# Forged datagrams on loopback.


def forged(source: str, source_port: int, port: int, payload: bytes) -> bytes:
    """An IPv4 + UDP datagram to 127.0.0.1:PORT claiming to come from SOURCE:SOURCE_PORT."""
    udp = struct.pack("!HHHH", source_port, port, 8 + len(payload), 0) + payload  # no checksum
    # Linux fills in the IP checksum and the packet ID (raw(7)).
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        0,
        0,
        64,
        socket.IPPROTO_UDP,
        0,
        socket.inet_aton(source),
        socket.inet_aton("127.0.0.1"),
    )
    return ip + udp


class Loopback:
    """A raw socket to send forged datagrams, and one seeing every UDP datagram on the host."""

    def __init__(self, test):
        if os.geteuid() != 0:
            raise SkipTest("forging a datagram's source needs a raw socket: run as root")
        self.sender = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.sniffer = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
        for sock in (self.sender, self.sniffer):
            test.addCleanup(sock.close)
        self.sniffer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 2**20)
        self.sniffer.setblocking(False)
        self.seen = []

    def send(self, source, source_port, port, payload):
        self.sender.sendto(forged(source, source_port, port, payload), ("127.0.0.1", 0))

    def replies_from(self, port) -> list[tuple[str, int]]:
        """(host, port) of every datagram seen so far sent from 127.0.0.1:PORT."""
        while True:
            try:
                packet = self.sniffer.recv(65535)
            except BlockingIOError:
                break
            header = (packet[0] & 0xF) * 4
            source_port, destination_port = struct.unpack_from("!HH", packet, header)
            self.seen.append(
                (
                    socket.inet_ntoa(packet[12:16]),
                    source_port,
                    socket.inet_ntoa(packet[16:20]),
                    destination_port,
                )
            )
        return [
            (host, to)
            for source, sport, host, to in self.seen
            if source == "127.0.0.1" and sport == port
        ]

    async def until_replied(self, port, to, seconds=5.0):
        """Wait (at most SECONDS) until a reply from PORT to TO has been seen."""
        for _ in range(int(seconds / 0.01)):
            if to in self.replies_from(port):
                return
            await task.deferLater(reactor, 0.01, lambda: None)
        raise AssertionError(f"no reply from port {port} to {to}: {self.replies_from(port)}")


def repliers(test) -> dict:
    """{service: its datagram protocol} of the suite TEST started."""
    return {
        child.service_name: child.port.protocol
        for child in test.suite_root
        if isinstance(child, DatagramListenerService)
    }


UDP = "udp:0:interface=127.0.0.1"


class ForgedSources(TestCase):
    async def test_no_reply_to_ports_below_1024_from_echo_timestamp_and_dns(self):
        loopback = Loopback(self)
        ports = start_suite(
            self,
            tmp_dir(self),
            f"""
            [echo]
            listen = ["{UDP}"]
            [timestamp]
            listen = ["{UDP}"]
            [names]
            listen = ["tcp:0:interface=127.0.0.1"]
            dns_listen = ["{UDP}"]
            store = "memory"
            lookup_audit = ""
        """,
        )
        payloads = {"echo": b"ping", "timestamp": b"ping", "names dns_listen": query("web.suite")}
        for service, payload in payloads.items():
            port = ports[f"{service} {UDP}"]
            for victim_port in (53, 0, 7, 1023):
                loopback.send("127.0.0.2", victim_port, port, payload)
            # Loopback keeps order: once this is answered, the forged ones were dealt with.
            loopback.send("127.0.0.2", 1024, port, payload)
            await loopback.until_replied(port, ("127.0.0.2", 1024))
            self.assertEqual(loopback.replies_from(port), [("127.0.0.2", 1024)], service)
        self.assertEqual(
            {
                service: counted(protocol)["dropped_source_port"]
                for service, protocol in repliers(self).items()
            },
            {"echo": 4, "timestamp": 4, "names": 4},
        )

    async def test_victims_in_one_24_share_its_budget(self):
        loopback = Loopback(self)
        ports = start_suite(
            self,
            tmp_dir(self),
            f"""
            [echo]
            listen = ["{UDP}"]
            udp_rate = 0.001
            udp_burst = 5
            udp_network_rate = 0.001
            udp_network_burst = 10
        """,
        )
        port = ports[f"echo {UDP}"]
        for host in range(10, 50):
            loopback.send(f"127.0.0.{host}", 4000, port, b"x")
        loopback.send("127.0.1.1", 4000, port, b"x")  # another /24: its own budget
        await loopback.until_replied(port, ("127.0.1.1", 4000))
        victims = [host for host, _ in loopback.replies_from(port) if host.startswith("127.0.0.")]
        self.assertEqual(len(victims), 10)  # before: 40, 5 each would have fit
        self.assertEqual(counted(repliers(self)["echo"])["network_rate_limited"], 30)
