"""RELP: the frame codec on hostile input, and the server's session on in-memory transports."""

import errno
import json
import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import directlyProvides

from suite.foundation.jsonlines import BatchWriter, WriteFailed
from suite.logger.delivery import Delivery
from suite.logger.drain import ShutdownDrain
from suite.logger.records import RecordSink
from suite.logger.relp import (
    SERVERCLOSE,
    RelpFrame,
    RelpFrameDecoder,
    encode_frame,
    next_txnr,
    parse_offers,
    rsp,
)
from suite.logger.relp_server import OPEN_ANSWER, RelpFactory
from suite.logger.service import LoggerSettings
from suite.logger.sources import SourceLimits
from tests.helpers import PEER, captured_log, elapse

# What rsyslog 8.2302's omrelp (librelp 1.11.0) sends first, byte for byte.
OMRELP_OPEN = (
    b"1 open 86 relp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\n"
    b"commands=syslog\n"
)


def syslog(txnr: int, message: bytes) -> bytes:
    return encode_frame(txnr, b"syslog", message)


def ok(*txnrs: int) -> bytes:
    return b"".join(b"%d rsp 6 200 OK\n" % n for n in txnrs)


OPENED = rsp(1, OPEN_ANSWER)


class CodecTests(SynchronousTestCase):
    def test_omrelp_session_frames(self):
        decoder = RelpFrameDecoder(1024)
        data = OMRELP_OPEN + syslog(2, b"<13>hello") + b"3 close 0\n"
        frames = decoder.feed(data)
        self.assertEqual(
            frames,
            [
                RelpFrame(
                    1,
                    "open",
                    b"relp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\n"
                    b"commands=syslog",
                ),
                RelpFrame(2, "syslog", b"<13>hello"),
                RelpFrame(3, "close", b""),
            ],
        )
        self.assertIsNone(decoder.error)
        self.assertEqual(
            parse_offers(frames[0].data),
            {
                "relp_version": ["0"],
                "relp_software": ["librelp", "1.11.0", "http://librelp.adiscon.com"],
                "commands": ["syslog"],
            },
        )

    def test_split_at_every_byte_position_gives_the_same_frames(self):
        data = OMRELP_OPEN + syslog(2, b"a\nb c") + b"3 close 0\n"
        whole = RelpFrameDecoder(1024).feed(data)
        for cut in range(len(data) + 1):
            decoder = RelpFrameDecoder(1024)
            self.assertEqual(decoder.feed(data[:cut]) + decoder.feed(data[cut:]), whole, cut)
        decoder = RelpFrameDecoder(1024)
        self.assertEqual(sum((decoder.feed(bytes([b])) for b in data), []), whole)

    def test_malformed_input_is_an_error_with_a_reason(self):
        cases = {
            b"x": "frame does not start with a transaction number",
            b"1234567890 syslog 1 a\n": "transaction number longer than 9 digits",
            b"1syslog": "transaction number not followed by a space",
            b"1 5": "frame has no command",
            b"1 " + b"a" * 33: "command longer than 32 letters",
            b"1 sys-log": "command not followed by a space",
            b"1 syslog x": "frame has no data length",
            b"1 syslog 1234567890": "data length longer than 9 digits",
            b"1 syslog 5x": "data length not followed by a space or LF",
            b"1 syslog 999999999 ": "data length 999999999 above max_frame 1024",
            b"1 syslog 3 abcX": "frame not ended by LF after its 3 bytes of data",
            b"1 syslog 3\n": "data length 3 followed by LF instead of the data",
            b"1 close 0 \n": "data length 0 not followed by LF",
            b"0 syslog 1 a\n": "transaction number 0 (only the server's hints use it)",
        }
        for data, reason in cases.items():
            decoder = RelpFrameDecoder(1024)
            self.assertEqual(decoder.feed(data), [], data)
            self.assertEqual(decoder.error, reason, data)
            self.assertEqual(decoder.feed(syslog(2, b"later")), [])  # nothing more is taken

    def test_a_huge_data_length_is_refused_before_its_data(self):
        decoder = RelpFrameDecoder(100)
        self.assertEqual(decoder.feed(b"1 syslog 101 "), [])
        self.assertEqual(decoder.error, "data length 101 above max_frame 100")
        decoder = RelpFrameDecoder(100)
        self.assertEqual(decoder.feed(b"1 syslog 100 " + b"x" * 100 + b"\n")[0].data, b"x" * 100)

    def test_frames_before_an_error_are_kept(self):
        decoder = RelpFrameDecoder(100)
        frames = decoder.feed(syslog(1, b"good") + b"2 syslog 3 badX\n")
        self.assertEqual(frames, [RelpFrame(1, "syslog", b"good")])
        self.assertIsNotNone(decoder.error)

    def test_a_header_waits_only_while_it_can_still_be_one(self):
        decoder = RelpFrameDecoder(100)
        self.assertEqual(decoder.feed(b"123456789 abcdefghijklmnopqrstuvwxyzabcdef 12345678"), [])
        self.assertIsNone(decoder.error)
        self.assertEqual(decoder.feed(b"9"), [])
        self.assertIsNone(decoder.error)  # nine digits: a space or LF may come
        self.assertEqual(decoder.feed(b"0"), [])
        self.assertEqual(decoder.error, "data length longer than 9 digits")

    def test_encoders_write_as_librelp_does(self):
        self.assertEqual(rsp(7, b"200 OK"), b"7 rsp 6 200 OK\n")
        self.assertEqual(rsp(3, b""), b"3 rsp 0\n")
        self.assertEqual(SERVERCLOSE, b"0 serverclose 0\n")
        self.assertEqual(
            OPENED,
            b"1 rsp %d 200 OK\nrelp_version=0\nrelp_software=suite,%s\ncommands=syslog\n"
            % (len(OPEN_ANSWER), OPEN_ANSWER.split(b",")[-1].split(b"\n")[0]),
        )

    def test_transaction_numbers_wrap_after_nine_digits(self):
        self.assertEqual(next_txnr(1), 2)
        self.assertEqual(next_txnr(999_999_999), 1)

    def test_a_frame_dribbled_in_tiny_reads_holds_about_its_own_size(self):
        # Each read as its own object, as recv gives them: held as a list of
        # pieces, a frame in 2-byte reads cost over 20 times its size.
        max_frame = 1 << 17
        decoder = RelpFrameDecoder(max_frame)
        data = b"2 syslog %d " % max_frame + b"x" * max_frame
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        before = tracemalloc.get_traced_memory()[0]
        for i in range(0, len(data), 2):
            self.assertEqual(decoder.feed(bytes(data[i : i + 2])), [])
        held = tracemalloc.get_traced_memory()[0] - before
        self.assertEqual(decoder.pending, len(data))
        self.assertLess(held, 2 * max_frame)
        self.assertEqual(decoder.feed(b"\n"), [RelpFrame(2, "syslog", b"x" * max_frame)])
        self.assertEqual(decoder.pending, 0)

    def test_a_large_frame_in_one_byte_reads_is_framed(self):
        # Work linear in the bytes: each read appends, the frame is cut once.
        decoder = RelpFrameDecoder(1 << 20)
        data = syslog(2, b"y" * (1 << 20))
        frames = []
        for i in range(len(data)):
            frames += decoder.feed(data[i : i + 1])
        self.assertEqual(frames, [RelpFrame(2, "syslog", b"y" * (1 << 20))])

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=5))
    def test_any_bytes_any_split_never_raise_and_never_hold_more_than_a_frame(self, data, cuts):
        decoder = RelpFrameDecoder(64)
        whole = RelpFrameDecoder(64).feed(data)
        frames, start = [], 0
        for cut in sorted(cuts) + [len(data)]:
            frames += decoder.feed(data[start:cut])
            start = max(start, cut)
            self.assertLessEqual(decoder.pending, 64 + 60)
        self.assertEqual(frames, whole)


class MemoryOutput:
    """The writer's output in memory; EVENTS says when it was written and synced."""

    path = "memory"
    rotations = 0

    def __init__(self, events: list) -> None:
        self.events = events
        self.data = b""
        self.failing = False

    def write(self, data: bytes) -> None:
        if self.failing:
            raise WriteFailed(0, OSError(errno.ENOSPC, "No space left on device"))
        self.data += data
        self.events.append("write")

    def sync(self) -> None:
        self.events.append("sync")

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        pass

    @property
    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.data.splitlines()]


class Peer(StringTransport):
    """The sender's side: what the server sends, with EVENTS saying when."""

    def __init__(self, events: list) -> None:
        super().__init__(peerAddress=PEER)
        self.events = events

    def write(self, data: bytes) -> None:
        super().write(data)
        self.events.append("answer")


class ServerTests(SynchronousTestCase):
    def setUp(self):
        self.events: list = []
        self.output = MemoryOutput(self.events)
        self.lines = captured_log(self)
        self.clock = Clock()
        self.clock.advance(1763681971)

    def server(self, sync=False, **keys):
        writer = BatchWriter(self.output, self.clock, 0.2, 2**20, sync=sync)
        writer.startService()
        self.addCleanup(writer.stopService)
        settings = LoggerSettings(**keys)
        sources = SourceLimits.of(settings, self.clock)
        self.factory = RelpFactory(
            settings, self.clock, Delivery(RecordSink(writer, self.clock), sources=sources)
        )
        return self.factory

    def connect(self, factory=None, opened=True, tls=False):
        protocol = (factory or self.factory).buildProtocol(PEER)
        transport = Peer(self.events)
        if tls:
            directlyProvides(transport, ISSLTransport)
        protocol.makeConnection(transport)
        if opened:
            protocol.dataReceived(OMRELP_OPEN)
            self.assertEqual(transport.value(), OPENED)
            transport.clear()
        return protocol, transport

    def messages(self):
        return [r for r in self.output.records if r["event"] == "message"]

    def test_open_is_answered_with_the_offers_omrelp_requires(self):
        self.server()
        protocol, transport = self.connect(opened=False)
        protocol.dataReceived(OMRELP_OPEN)
        self.assertEqual(transport.value(), OPENED)
        offers = parse_offers(OPEN_ANSWER.split(b"\n", 1)[1])
        self.assertEqual((offers["relp_version"], offers["commands"]), (["0"], ["syslog"]))

    def test_a_message_is_answered_only_once_its_record_is_written(self):
        self.server()
        protocol, transport = self.connect()
        self.output.failing = True  # the disk is full: the write waits
        protocol.dataReceived(syslog(2, b"<13>kept"))
        self.clock.advance(0)
        self.assertEqual(transport.value(), b"")
        elapse(self.clock, 3)
        self.assertEqual(transport.value(), b"")  # retried every second, still failing
        self.output.failing = False
        elapse(self.clock, 1)
        self.assertEqual(transport.value(), ok(2))
        self.assertEqual(
            [(r["message"], r["transport"]) for r in self.messages()], [("kept", "relp")]
        )

    def test_with_sync_the_output_is_fsynced_before_the_answer(self):
        self.server(sync=True)
        protocol, transport = self.connect()
        del self.events[:]
        protocol.dataReceived(syslog(2, b"<13>one") + syslog(3, b"<13>two"))
        self.assertEqual(self.events, [])
        self.clock.advance(0)
        self.assertEqual(self.events, ["write", "sync", "answer"])
        self.assertEqual(transport.value(), ok(2, 3))

    def test_without_sync_there_is_no_fsync(self):
        self.server()
        protocol, transport = self.connect()
        del self.events[:]
        protocol.dataReceived(syslog(2, b"<13>one"))
        self.clock.advance(0)
        self.assertEqual(self.events, ["write", "answer"])

    def test_the_messages_of_one_read_are_answered_in_one_write_in_order(self):
        self.server()
        protocol, transport = self.connect()
        protocol.dataReceived(b"".join(syslog(n, b"<13>m%d" % n) for n in range(2, 7)))
        del self.events[:]
        self.clock.advance(0)
        self.assertEqual(self.events, ["write", "answer"])
        self.assertEqual(transport.value(), ok(2, 3, 4, 5, 6))

    def test_answers_keep_their_order_across_reads(self):
        self.server()
        protocol, transport = self.connect()
        self.output.failing = True
        protocol.dataReceived(syslog(2, b"<13>a"))
        self.clock.advance(0)
        self.output.failing = False
        protocol.dataReceived(syslog(3, b"<13>b"))  # this read's write would succeed at once
        protocol.dataReceived(syslog(4, b"<13>c"))
        self.clock.advance(0)
        self.assertEqual(transport.value(), b"")  # not before transaction 2's
        elapse(self.clock, 1)
        self.assertEqual(transport.value(), ok(2, 3, 4))
        self.assertEqual([r["message"] for r in self.messages()], ["a", "b", "c"])

    def test_reads_within_a_frame_hold_nothing_while_answers_wait(self):
        self.server()
        protocol, transport = self.connect()
        self.output.failing = True
        protocol.dataReceived(syslog(2, b"<13>a"))
        self.clock.advance(0)
        for byte in syslog(3, b"<13>" + b"x" * 200)[:-1]:
            protocol.dataReceived(bytes([byte]))
        self.assertEqual(len(protocol.turns), 1)
        self.output.failing = False
        protocol.dataReceived(b"\n")
        elapse(self.clock, 1)
        self.assertEqual(transport.value(), ok(2, 3))

    def test_the_window_stops_reading_until_answers_go_out(self):
        self.server(relp_window=3)
        protocol, transport = self.connect()
        protocol.dataReceived(syslog(2, b"<13>a") + syslog(3, b"<13>b"))
        self.assertEqual(transport.producerState, "producing")
        protocol.dataReceived(syslog(4, b"<13>c"))
        self.assertEqual(transport.producerState, "paused")
        self.clock.advance(0)
        self.assertEqual(transport.value(), ok(2, 3, 4))
        self.assertEqual(transport.producerState, "producing")

    def test_the_window_does_not_undo_back_pressure(self):
        self.server(relp_window=1)
        protocol, transport = self.connect()
        protocol.dataReceived(syslog(2, b"<13>a"))
        self.factory.hold(True)
        self.clock.advance(0)
        self.assertEqual(transport.value(), ok(2))
        self.assertEqual(transport.producerState, "paused")
        self.factory.hold(False)
        self.assertEqual(transport.producerState, "producing")

    def test_a_full_write_buffer_is_not_undone_by_the_window(self):
        # A client that never reads its answers: Twisted pauses the flow
        # producer when the write buffer is full; the window's release must
        # not read more (each read adds answers to that buffer, without bound).
        self.server(relp_window=1)
        protocol, transport = self.connect()
        protocol.dataReceived(syslog(2, b"<13>a"))
        transport.producer.pauseProducing()  # what Twisted does when the write buffer is full
        self.clock.advance(0)
        self.assertEqual(transport.value(), ok(2))  # the window has room again
        self.assertEqual(transport.producerState, "paused")
        transport.producer.resumeProducing()  # the client read its answers
        self.assertEqual(transport.producerState, "producing")

    def test_a_full_write_buffer_is_not_undone_by_the_rate_limit(self):
        self.server(rate_per_source=10, burst_per_source=20)
        protocol, transport = self.connect()
        protocol.dataReceived(b"".join(syslog(n, b"<13>m") for n in range(2, 32)))
        self.assertEqual(transport.producerState, "paused")  # 10 over the burst: 1 s of debt
        transport.producer.pauseProducing()
        elapse(self.clock, 2)
        self.assertEqual(transport.producerState, "paused")
        transport.producer.resumeProducing()
        self.assertEqual(transport.producerState, "producing")

    def test_a_drained_write_buffer_does_not_undo_back_pressure(self):
        self.server()
        protocol, transport = self.connect()
        transport.producer.pauseProducing()
        self.factory.hold(True)  # the delivery is full
        transport.producer.resumeProducing()  # the client read its answers
        self.assertEqual(transport.producerState, "paused")
        transport.producer.pauseProducing()
        self.factory.hold(False)  # back-pressure ends while the write buffer is full
        self.assertEqual(transport.producerState, "paused")
        transport.producer.resumeProducing()  # both released: read again
        self.assertEqual(transport.producerState, "producing")

    def test_close_is_answered_after_every_earlier_answer_then_serverclose(self):
        self.server()
        protocol, transport = self.connect()
        protocol.dataReceived(syslog(2, b"<13>last") + b"3 close 0\n" + syslog(4, b"<13>x"))
        self.assertEqual(transport.value(), b"")
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0)
        self.assertEqual(transport.value(), ok(2) + b"3 rsp 0\n" + SERVERCLOSE)
        self.assertTrue(transport.disconnecting)
        self.assertEqual([r["message"] for r in self.messages()], ["last"])

    def test_an_unknown_command_is_refused_and_the_session_ends(self):
        self.server()
        protocol, transport = self.connect()
        protocol.dataReceived(syslog(2, b"<13>a") + b"3 starttls 0\n")
        self.clock.advance(0)
        self.assertEqual(transport.value(), ok(2) + rsp(3, b"500 unknown command") + SERVERCLOSE)
        self.assertTrue(transport.disconnecting)
        error = self.output.records[-1]
        self.assertEqual(
            (error["event"], error["message"]),
            ("error", "unknown command 'starttls': connection closed"),
        )
        self.assertEqual(self.factory.errors, {"bad_frame": 1})

    def test_syslog_before_open_is_refused_as_librelp_does(self):
        self.server()
        protocol, transport = self.connect(opened=False)
        protocol.dataReceived(syslog(1, b"<13>early"))
        self.assertEqual(transport.value(), rsp(1, b"500 command disabled"))
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.messages(), [])
        self.assertEqual(self.factory.errors, {"relp_not_open": 1})

    def test_a_second_open_and_an_open_without_syslog_end_the_session(self):
        self.server()
        protocol, transport = self.connect()
        protocol.dataReceived(encode_frame(2, b"open", b"relp_version=0\ncommands=syslog"))
        self.assertEqual(
            transport.value(),
            rsp(2, b"500 protocol error: connection already open") + SERVERCLOSE,
        )
        protocol, transport = self.connect(opened=False)
        protocol.dataReceived(encode_frame(1, b"open", b"relp_version=0"))
        self.assertEqual(
            transport.value(),
            rsp(1, b"500 required command not supported by client") + SERVERCLOSE,
        )
        self.assertTrue(transport.disconnecting)

    def test_a_malformed_frame_writes_one_error_logs_once_and_closes(self):
        self.server()
        protocol, transport = self.connect()
        protocol.dataReceived(syslog(2, b"<13>good") + b"3 syslog 99999999 ")
        self.clock.advance(0)
        self.assertEqual(transport.value(), ok(2) + SERVERCLOSE)
        self.assertTrue(transport.disconnecting)
        protocol.dataReceived(syslog(4, b"<13>ignored"))
        errors = [r for r in self.output.records if r["event"] == "error"]
        self.assertEqual(
            [e["message"] for e in errors],
            ["data length 99999999 above max_frame 1048576: connection closed"],
        )
        self.assertEqual(
            [line for line in self.lines if "closing" in line],
            ["logger: closing 192.0.2.7:40000: data length 99999999 above max_frame 1048576"],
        )

    def test_a_transaction_number_out_of_sequence_ends_the_session(self):
        self.server()
        protocol, transport = self.connect()
        protocol.dataReceived(syslog(3, b"<13>skipped one"))
        self.assertEqual(transport.value(), SERVERCLOSE)
        self.clock.advance(1)
        self.assertEqual(
            self.output.records[-1]["message"],
            "transaction number 3 where 2 was due: connection closed",
        )

    def test_a_long_message_is_kept_cut_and_marked_truncated(self):
        self.server(max_message=8)
        protocol, transport = self.connect()
        protocol.dataReceived(syslog(2, b"0123456789"))
        self.clock.advance(0)
        self.assertEqual(transport.value(), ok(2))
        self.assertEqual(
            [(r["message"], r.get("truncated")) for r in self.messages()], [("01234567", True)]
        )

    def test_records_and_metrics_say_relp_or_relp_over_tls(self):
        self.server()
        protocol, transport = self.connect()
        protocol.dataReceived(syslog(2, b"<13>plain"))
        tls_protocol, tls_transport = self.connect(opened=False, tls=True)
        tls_protocol.client = "CN=client"  # as the handshake finds it
        tls_protocol.dataReceived(OMRELP_OPEN + syslog(2, b"<13>secret"))
        protocol.connectionLost(None)
        self.clock.advance(1)
        records = [(r["event"], r["transport"], r.get("client")) for r in self.output.records[:6]]
        self.assertEqual(
            sorted(records),
            sorted(
                [
                    ("connected", "relp", None),
                    ("message", "relp", None),
                    ("connected", "relp+tls", "CN=client"),
                    ("message", "relp+tls", "CN=client"),
                    ("disconnected", "relp", None),
                ]
            ),
        )
        samples = list(self.factory.metric_samples())
        self.assertIn(("requests", ("relp",), 1), samples)
        self.assertIn(("requests", ("relp+tls",), 1), samples)
        self.assertIn(("connections", ("relp+tls",), 1), samples)

    def test_a_frame_cut_by_a_reset_is_not_written(self):
        """Not acknowledged, so omrelp sends it again: writing it would be a duplicate."""
        self.server()
        protocol, transport = self.connect()
        protocol.dataReceived(b"2 syslog 10 <13>half")
        protocol.connectionLost(None)
        self.clock.advance(1)
        self.assertEqual(self.messages(), [])
        self.assertEqual(self.output.records[-1]["event"], "disconnected")

    def test_at_shutdown_written_messages_are_answered_then_serverclose(self):
        factory = self.server()
        protocol, transport = self.connect()
        protocol.dataReceived(syslog(2, b"<13>a") + b"3 syslog 10 <13>h")
        drain = ShutdownDrain(factory, self.clock, 1.0)
        drain.startService()
        stopped = drain.stopService()
        transport.loseConnection = lambda: protocol.connectionLost(None)
        elapse(self.clock, 1.5)
        self.successResultOf(stopped)
        self.assertEqual(transport.value(), ok(2) + SERVERCLOSE)
        self.assertEqual([r["message"] for r in self.messages()], ["a"])

    def test_refused_connections_are_told_serverclose(self):
        factory = self.server(max_connections=1)
        self.connect(factory)
        _, refused = self.connect(factory, opened=False)
        self.assertEqual(refused.value(), SERVERCLOSE)
        self.assertTrue(refused.disconnecting)
