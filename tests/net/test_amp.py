"""The AMP policy of the sleep and name servers: bounded boxes, bounded work, one-line errors."""

import struct

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from suite.contracts.errors import Overloaded
from suite.contracts.names import Lookup, Register
from suite.contracts.sleep import Sleep
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
