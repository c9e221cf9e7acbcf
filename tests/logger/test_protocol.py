"""The logger's protocols with in-memory transports and a Clock."""

import base64
import json
import socket

from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from suite.foundation.interfaces import IBatchedDatagramProtocol, IMetricSource
from suite.logger.delivery import Delivery
from suite.logger.drain import FINAL_READ, ShutdownDrain
from suite.logger.protocol import SyslogDatagramProtocol, SyslogFactory
from suite.logger.records import RecordSink
from suite.logger.service import LoggerSettings
from tests.helpers import PEER, captured_log, connect, elapse


class MemoryWriter:
    full = False
    dropped = 0

    def __init__(self):
        self.lines = []
        self.pressure = []

    def on_pressure(self, callback):
        self.pressure.append(callback)

    def set_full(self, full):
        self.full = full
        for callback in self.pressure:
            callback(full)

    def write_lines(self, lines, records=None):
        self.lines += lines

    @property
    def records(self):
        return [json.loads(line) for chunk in self.lines for line in chunk.splitlines()]


def logger_factory(writer, clock, **settings):
    return SyslogFactory(LoggerSettings(**settings), clock, Delivery(RecordSink(writer, clock)))


class StreamTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1763681971.334991)
        self.writer = MemoryWriter()
        self.factory = logger_factory(self.writer, self.clock, max_message=16, max_frame=100)

    def test_connection_messages_in_order_and_disconnect(self):
        protocol, transport = connect(self.factory)
        protocol.dataReceived(b"<13>first\n11 <14>second\nthird")
        protocol.connectionLost(None)
        records = self.writer.records
        self.assertEqual(
            [r["event"] for r in records],
            ["connected", "message", "message", "message", "disconnected"],
        )
        self.assertEqual([r["message"] for r in records[1:4]], ["first", "second", "third"])
        self.assertEqual(
            records[0],
            {
                "received": "2025-11-20T23:39:31.334991Z",
                "event": "connected",
                "peer": "192.0.2.7:40000",
                "transport": "tcp",
            },
        )
        self.assertEqual(records[2]["syslog"]["severity"], "info")
        self.assertNotIn("syslog", records[3])
        self.assertNotIn("truncated", records[1])

    def test_a_connection_that_sends_nothing_writes_no_record_and_is_counted(self):
        """
        A port scan, a TCP health check, the name server's pings: no
        `connected`/`disconnected` pair, only a count in /metrics.
        """
        for reason in (None, Failure(ConnectionLost())):
            protocol, _ = connect(self.factory)
            self.clock.advance(1)
            protocol.connectionLost(reason)
        self.assertEqual(self.writer.records, [])
        samples = list(self.factory.metric_samples())
        self.assertIn(("empty_connections", ("tcp",), 2), samples)
        self.assertIn(("connections", ("tcp",), 2), samples)

    def test_a_connection_that_sends_keeps_its_connected_record_and_time(self):
        protocol, _ = connect(self.factory)
        self.clock.advance(5)  # the first byte comes later: the record says when it connected
        protocol.dataReceived(b"<")
        protocol.dataReceived(b"13>late\n")
        protocol.connectionLost(None)
        records = self.writer.records
        self.assertEqual(
            [(r["event"], r["received"]) for r in records],
            [
                ("connected", "2025-11-20T23:39:31.334991Z"),
                ("message", "2025-11-20T23:39:36.334991Z"),
                ("disconnected", "2025-11-20T23:39:36.334991Z"),
            ],
        )
        self.assertNotIn(
            "empty_connections", [name for name, _, _ in self.factory.metric_samples()]
        )

    def test_truncated_message_is_marked(self):
        protocol, _ = connect(self.factory)
        protocol.dataReceived(b"x" * 40 + b"\n")
        record = self.writer.records[1]
        self.assertEqual((record["message"], record["truncated"]), ("x" * 16, True))

    def test_octet_count_above_max_frame_closes_with_an_error_record(self):
        protocol, transport = connect(self.factory)
        protocol.dataReceived(b"<13>kept\n500 " + b"y" * 50)
        self.assertTrue(transport.disconnecting)
        protocol.dataReceived(b"ignored\n")
        protocol.connectionLost(None)
        records = self.writer.records
        self.assertEqual(
            [r["event"] for r in records], ["connected", "message", "error", "disconnected"]
        )
        self.assertEqual(
            records[2]["message"], "octet count 500 above max_frame 100: connection closed"
        )

    def test_half_close_delivers_the_unterminated_last_message(self):
        protocol, transport = connect(self.factory)
        protocol.dataReceived(b"no newline")
        protocol.readConnectionLost()
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.writer.records[-1]["message"], "no newline")

    def test_invalid_utf8_keeps_the_json_valid_and_the_exact_bytes(self):
        protocol, _ = connect(self.factory)
        protocol.dataReceived(b"caf\xe9 \xff\n")
        protocol.dataReceived(b"caf\\xe9 \\xff\n")  # the same text, typed: plain UTF-8
        raw, typed = self.writer.records[1:3]
        self.assertEqual(raw["message"], "caf\\xe9 \\xff")
        self.assertEqual(base64.b64decode(raw["message_base64"]), b"caf\xe9 \xff")
        self.assertEqual(typed["message"], raw["message"])
        self.assertNotIn("message_base64", typed)

    def test_a_line_cut_by_a_reset_is_written_truncated(self):
        protocol, _ = connect(self.factory)
        protocol.dataReceived(b"<13>whole\n<13>half a li")
        protocol.connectionLost(Failure(ConnectionLost()))
        last = self.writer.records[-2]
        self.assertEqual((last["message"], last.get("truncated")), ("half a li", True))

    def test_connections_over_max_connections_are_refused_and_logged(self):
        factory = logger_factory(self.writer, self.clock, max_connections=1)
        connect(factory)
        _, refused = connect(factory)
        self.assertTrue(refused.disconnecting)
        self.assertEqual(refused.value(), b"ERROR too many connections\n")
        error = self.writer.records[-1]
        self.assertEqual(
            (error["event"], error["message"]),
            ("error", "connection refused: max_connections (1) reached"),
        )


class DatagramTests(SynchronousTestCase):
    def setUp(self):
        self.writer = MemoryWriter()
        self.protocol = SyslogDatagramProtocol(
            Delivery(RecordSink(self.writer, Clock())), max_message=8
        )

    def test_one_message_per_datagram_trailing_lf_dropped(self):
        self.protocol.datagramReceived(b"<13>hi\r\n", ("127.0.0.1", 514))
        self.protocol.datagramReceived(b"a\nb\n", ("::1", 515))
        records = self.writer.records
        self.assertEqual(
            [(r["message"], r["peer"], r["transport"]) for r in records],
            [("hi", "127.0.0.1:514", "udp"), ("a\nb", "[::1]:515", "udp")],
        )

    def test_empty_datagram_ignored_and_oversize_truncated(self):
        self.protocol.datagramReceived(b"", ("127.0.0.1", 514))
        self.protocol.datagramReceived(b"\n", ("127.0.0.1", 514))
        self.protocol.datagramReceived(b"0123456789", ("127.0.0.1", 514))
        self.assertEqual(
            [(r["message"], r["truncated"]) for r in self.writer.records], [("01234567", True)]
        )

    def test_batched_datagram_protocol_and_metric_source(self):
        """The port hands it whole batches, and /metrics finds its counts, by interface."""
        self.assertTrue(verifyObject(IBatchedDatagramProtocol, self.protocol))
        self.assertTrue(verifyObject(IMetricSource, self.protocol))


class BackPressureTests(SynchronousTestCase):
    def test_a_full_writer_stops_every_stream_and_drops_and_counts_datagrams(self):
        clock, writer = Clock(), MemoryWriter()
        factory = logger_factory(writer, clock)
        _, before = connect(factory)
        writer.set_full(True)
        _, during = connect(factory)
        self.assertEqual((before.producerState, during.producerState), ("paused", "paused"))
        datagrams = SyslogDatagramProtocol(Delivery(RecordSink(writer, clock)), 8192)
        for _ in range(3):
            datagrams.datagramReceived(b"<13>dropped", ("127.0.0.1", 1))
        self.assertEqual(writer.dropped, 3)
        writer.set_full(False)
        self.assertEqual((before.producerState, during.producerState), ("producing", "producing"))
        datagrams.datagramReceived(b"<13>kept", ("127.0.0.1", 1))
        self.assertEqual(writer.records[-1]["message"], "kept")


class KernelTransport(StringTransport):
    """
    A StringTransport whose peer's bytes wait in a real kernel queue (a
    socketpair): each doRead takes READ bytes of them and READ_SECONDS of CLOCK.
    """

    READ = 16
    READ_SECONDS = 0.125

    def __init__(self, test, clock):
        super().__init__(peerAddress=PEER)
        self.socket, self.sender = socket.socketpair()
        test.addCleanup(self.socket.close)
        test.addCleanup(self.sender.close)
        self.clock = clock
        self.reads = self.bytes_read = 0

    def doRead(self):
        self.reads += 1
        self.clock.advance(self.READ_SECONDS)
        data = self.socket.recv(self.READ)
        self.bytes_read += len(data)
        self.protocol.dataReceived(data)


class ShutdownDrainTests(SynchronousTestCase):
    """At shutdown_timeout the drain reads what the kernel holds, then counts what it discards."""

    def setUp(self):
        self.clock, self.writer = Clock(), MemoryWriter()
        self.factory = logger_factory(self.writer, self.clock)
        self.lines = captured_log(self)

    def connection(self, data: bytes) -> KernelTransport:
        transport = KernelTransport(self, self.clock)
        transport.protocol = self.factory.buildProtocol(PEER)
        transport.protocol.makeConnection(transport)
        transport.sender.sendall(data)
        return transport

    def drain(self, timeout=3.0):
        drain = ShutdownDrain(self.factory, self.clock, timeout)
        drain.startService()
        stopped = drain.stopService()
        elapse(self.clock, timeout + 0.25)
        self.successResultOf(stopped)

    def messages(self):
        return [r["message"] for r in self.writer.records if r["event"] == "message"]

    def test_what_the_kernel_holds_is_read_before_the_connections_close(self):
        first, second = self.connection(b"<13>a1\n<13>a2\n"), self.connection(b"<13>b1\n")
        self.drain()
        self.assertEqual(sorted(self.messages()), ["a1", "a2", "b1"])
        self.assertTrue(first.disconnecting and second.disconnecting)
        self.assertFalse(any("discarded" in line for line in self.lines))

    def test_what_is_left_when_the_final_read_is_up_is_counted_in_one_line(self):
        flood = b"".join(
            b"<13>a%02d\n" % n for n in range(40)
        )  # 320 bytes: more than 1 s of reads
        slow = self.connection(flood)
        self.connection(b"<13>b1\n<13>b2\n")  # 16 bytes: one read
        self.drain()
        read = slow.bytes_read
        self.assertLess(read, len(flood))
        self.assertLessEqual(slow.reads * KernelTransport.READ_SECONDS, FINAL_READ + 0.25)
        messages = self.messages()
        self.assertEqual([m for m in messages if m.startswith("b")], ["b1", "b2"])
        whole = read // 8
        got = [m for m in messages if m.startswith("a")]
        self.assertEqual(got[:whole], [f"a{n:02d}" for n in range(whole)])
        self.assertLessEqual(len(got), whole + 1)  # and the frame the close cut, truncated
        found = [line for line in self.lines if "discarded" in line]
        self.assertEqual(
            found,
            [
                f"logger: stopping: discarded {len(flood) - read} bytes still unread "
                "from 1 connection "
                "(sent faster than it could be read within shutdown_timeout 3 s and 1 s more)"
            ],
        )
