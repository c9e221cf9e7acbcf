"""The AMP policy of the sleep and name servers: bounded boxes, bounded work, one-line errors."""

import struct

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.protocols.amp import IBoxSender
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from suite.contracts.errors import Overloaded
from suite.contracts.names import Lookup, Register
from suite.contracts.sleep import Sleep
from suite.net.amp import MAX_KEY_LENGTH, BoxParser, BoxTooLarge, KeyTooLong, QuietAMP
from suite.sleep.protocol import SleepFactory
from suite.sleep.service import SleepSettings
from tests.helpers import AMPPair, captured_log, connect
from tests.names.test_protocol import HeldStore, names_pair


def box(*pairs: tuple[bytes, bytes]) -> bytes:
    """The wire form of one AMP box."""
    encoded = b"".join(
        struct.pack("!H", len(k)) + k + struct.pack("!H", len(v)) + v for k, v in pairs
    )
    return encoded + b"\x00\x00"


class MalformedBoxTests(SynchronousTestCase):
    def setUp(self):
        self.lines = captured_log(self)
        self.protocol, self.transport = connect(
            SleepFactory(SleepSettings(idle_timeout=0, max_box=1024), Clock())
        )

    def assert_closed_with_one_line(self, reason):
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(
            [line for line in self.lines if "closing" in line],
            [f"sleep: closing 192.0.2.7:40000: {reason}"],
        )
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertFalse(any("Traceback" in line for line in self.lines))

    def test_an_empty_box(self):
        self.protocol.dataReceived(b"\x00\x00")
        self.assert_closed_with_one_line("malformed box: no command, answer or error in it")

    def test_an_answer_to_no_question(self):
        self.protocol.dataReceived(box((b"_answer", b"7"), (b"slept", b"1.0")))
        self.assert_closed_with_one_line("malformed box: an answer or error to no question")

    def test_an_error_to_no_question(self):
        self.protocol.dataReceived(
            box((b"_error", b"7"), (b"_error_code", b"X"), (b"_error_description", b"d"))
        )
        self.assert_closed_with_one_line("malformed box: an answer or error to no question")

    def test_arguments_that_do_not_parse(self):
        self.protocol.dataReceived(
            box((b"_command", b"Sleep"), (b"_ask", b"1"), (b"seconds", b"soon"))
        )
        self.assertIn(b"INVALID", self.transport.value())
        self.assert_closed_with_one_line(
            "bad arguments to Sleep: could not convert string to float: b'soon'"
        )

    def test_a_box_that_never_ends_is_cut_at_max_box(self):
        for n in range(100):
            self.protocol.dataReceived(box((b"k%d" % n, b"v" * 100))[:-2])
            if self.transport.disconnecting:
                break
        self.assertLess(n, 10)
        self.assert_closed_with_one_line("box larger than 1024 bytes (max_box)")

    def test_a_key_longer_than_amp_allows(self):
        self.protocol.dataReceived(struct.pack("!H", 300) + b"k" * 300)
        self.assert_closed_with_one_line("key longer than 255 bytes")

    def test_connections_made_and_lost_are_not_logged(self):
        protocol, _ = connect(SleepFactory(SleepSettings(idle_timeout=0), Clock()))
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.lines, [])

    def test_an_unknown_command_is_answered_and_the_connection_stays(self):
        self.protocol.dataReceived(box((b"_command", b"Nap"), (b"_ask", b"1")))
        self.assertIn(b"UNHANDLED", self.transport.value())
        self.assertFalse(self.transport.disconnecting)


class InFlightTests(SynchronousTestCase):
    def test_over_max_pending_is_overloaded_and_the_rest_still_served(self):
        clock = Clock()
        pair = AMPPair(SleepFactory(SleepSettings(idle_timeout=0, max_pending=2), clock))
        answers = [pair.call(Sleep, seconds=1.0) for _ in range(3)]
        self.assertEqual(answers[:2], [[], []])
        answers[2][0].trap(Overloaded)
        self.assertIn("max_pending", str(answers[2][0].value))
        clock.advance(1)
        pair.pump()
        self.assertEqual(answers[:2], [[{"slept": 1.0}], [{"slept": 1.0}]])
        self.assertEqual(pair.call(Sleep, seconds=0.0), [])  # room again
        clock.advance(0)
        pair.pump()

    def test_name_server_registrations_waiting_for_the_store_count_as_in_flight(self):
        store = HeldStore()
        pair = names_pair(store=store, max_pending=2)
        answers = [pair.call(Register, name="svc", host="h", port=p) for p in (1, 2, 3)]
        self.assertEqual(answers[:2], [[], []])
        answers[2][0].trap(Overloaded)
        store.release()
        pair.pump()
        self.assertEqual(answers[:2], [[{}], [{}]])
        self.assertEqual(len(pair.answer(Lookup, name="svc")["instances"]), 2)


SLEEP = box((b"_command", b"Sleep"), (b"_ask", b"1"), (b"seconds", b"1"))
NAP = box((b"_command", b"Nap"), (b"_ask", b"1"))  # a command the servers do not know


class BoxParserTests(SynchronousTestCase):
    def setUp(self):
        self.boxes = []

    def deliver(self, parsed):
        self.boxes.append(dict(parsed))
        return True

    def test_boxes_cut_anywhere_arrive_whole_and_in_order(self):
        data = SLEEP + box((b"k", b""))
        for cut in range(len(data) + 1):
            self.boxes.clear()
            parser = BoxParser(1024)
            parser.feed(data[:cut], self.deliver)
            parser.feed(data[cut:], self.deliver)
            self.assertEqual(
                self.boxes,
                [{b"_command": b"Sleep", b"_ask": b"1", b"seconds": b"1"}, {b"k": b""}],
            )

    def test_an_empty_box_is_delivered_empty(self):
        BoxParser(1024).feed(b"\x00\x00", self.deliver)
        self.assertEqual(self.boxes, [{}])

    def test_keys_up_to_amps_documented_limit_of_255_bytes(self):
        self.assertEqual(MAX_KEY_LENGTH, 255)
        BoxParser(1024).feed(box((b"k" * 255, b"v")), self.deliver)
        self.assertEqual(self.boxes, [{b"k" * 255: b"v"}])
        with self.assertRaises(KeyTooLong):
            BoxParser(1024).feed(struct.pack("!H", 256), self.deliver)

    def test_a_box_of_max_box_bytes_passes_one_byte_more_does_not(self):
        pair = box((b"k", b"v" * 95))[:-2]  # 100 bytes with the two length prefixes
        BoxParser(100).feed(pair + b"\x00\x00", self.deliver)
        self.assertEqual(len(self.boxes), 1)
        with self.assertRaises(BoxTooLarge):
            BoxParser(100).feed(box((b"k", b"v" * 96)), self.deliver)

    def test_a_box_too_large_is_refused_before_its_value_arrives(self):
        with self.assertRaises(BoxTooLarge):
            BoxParser(1024).feed(
                struct.pack("!H", 1) + b"k" + struct.pack("!H", 2000), self.deliver
            )

    def test_what_follows_a_stop_is_parsed_at_the_next_feed(self):
        parser = BoxParser(1024)
        parser.feed(SLEEP + NAP, lambda parsed: self.deliver(parsed) and False)
        self.assertEqual(len(self.boxes), 1)
        parser.feed(b"", self.deliver)
        self.assertEqual([b[b"_command"] for b in self.boxes], [b"Sleep", b"Nap"])

    def test_held_data_waits_for_the_next_feed(self):
        parser = BoxParser(1024)
        parser.hold(NAP)
        self.assertEqual(self.boxes, [])
        parser.feed(b"", self.deliver)
        self.assertEqual(self.boxes, [{b"_command": b"Nap", b"_ask": b"1"}])


class SplitTests(SynchronousTestCase):
    """The server protocol on AMP's public split: parser, dispatcher, locator, sender."""

    def setUp(self):
        self.protocol, self.transport = connect(
            SleepFactory(SleepSettings(idle_timeout=0), Clock())
        )

    def test_the_protocol_is_its_dispatchers_locator_and_box_sender(self):
        self.assertTrue(verifyObject(IBoxSender, self.protocol))
        self.assertTrue(verifyObject(IPushProducer, self.protocol))
        self.assertIs(self.protocol.dispatcher.locator, self.protocol)
        self.assertIs(self.protocol.dispatcher.boxSender, self.protocol)

    def test_a_command_without_ask_that_fails_closes_with_one_line(self):
        lines = captured_log(self)
        self.protocol.dataReceived(box((b"_command", b"Nap")))
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(
            [line for line in lines if "closing" in line],
            [
                "sleep: closing 192.0.2.7:40000: a command sent without _ask failed: "
                "Unhandled Command: b'Nap'"
            ],
        )

    def test_any_other_unhandled_failure_keeps_its_traceback_and_closes(self):
        self.protocol.dispatcher.unhandledError(Failure(ZeroDivisionError()))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertTrue(self.transport.disconnecting)

    def test_a_paused_connection_reads_its_commands_once_resumed(self):
        self.protocol.pauseProducing()
        self.protocol.dataReceived(NAP)
        self.assertEqual(self.transport.value(), b"")
        self.protocol.resumeProducing()
        self.assertIn(b"UNHANDLED", self.transport.value())

    def test_a_connection_paused_by_an_answer_reads_the_rest_once_resumed(self):
        def pause_first(parsed):
            self.protocol.pauseProducing()  # as a full write buffer would
            return False

        self.protocol.box_received = pause_first
        self.protocol.dataReceived(NAP + NAP)
        self.assertEqual(self.transport.value().count(b"UNHANDLED"), 1)
        del self.protocol.box_received
        self.protocol.resumeProducing()
        self.assertEqual(self.transport.value().count(b"UNHANDLED"), 2)


class QuietClientTests(SynchronousTestCase):
    def setUp(self):
        self.lines = captured_log(self)
        self.clock = Clock()
        self.pair = AMPPair(SleepFactory(SleepSettings(idle_timeout=0), self.clock), QuietAMP())

    def test_calls_are_answered_and_connections_made_and_lost_not_logged(self):
        answers = self.pair.call(Sleep, seconds=1.0)
        self.clock.advance(1)
        self.pair.pump()
        self.assertEqual(answers, [{"slept": 1.0}])
        self.pair.client.connectionLost(Failure(ConnectionDone()))
        self.assertIsNone(self.pair.client.transport)
        self.assertEqual(self.lines, [])

    def test_calls_unanswered_when_the_connection_is_lost_fail(self):
        answers = self.pair.call(Sleep, seconds=1.0)
        self.pair.client.connectionLost(Failure(ConnectionDone()))
        answers[0].trap(ConnectionDone)
