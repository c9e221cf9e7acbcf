import os
import time

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.timestamp.protocol import (
    TimestampFactory,
    check_format,
    datagram_answerer,
    formatter,
)
from suite.timestamp.service import TimestampSettings
from tests.helpers import connect, elapse

# Sat Feb 24 10:29:28.5 2018 UTC, the moment of the README's example.
MOMENT = 1519468168.5


class FormatTests(SynchronousTestCase):
    def test_ctime(self):
        self.assertEqual(formatter("ctime", utc=True)(MOMENT), b"Sat Feb 24 10:29:28 2018")

    def test_iso_is_rfc3339_with_microseconds_and_offset(self):
        self.assertEqual(formatter("iso", utc=True)(MOMENT), b"2018-02-24T10:29:28.500000+00:00")

    def test_epoch_has_six_decimals(self):
        self.assertEqual(formatter("epoch", utc=True)(MOMENT), b"1519468168.500000")

    def test_strftime_pattern(self):
        self.assertEqual(
            formatter("%Y/%m/%d %H:%M:%S.%f %z", utc=True)(MOMENT),
            b"2018/02/24 10:29:28.500000 +0000",
        )

    def test_local_time_follows_tz(self):
        old = os.environ.get("TZ")
        os.environ["TZ"] = "IST-5:30"
        time.tzset()
        try:
            self.assertEqual(formatter("ctime", utc=False)(MOMENT), b"Sat Feb 24 15:59:28 2018")
            self.assertEqual(
                formatter("iso", utc=False)(MOMENT), b"2018-02-24T15:59:28.500000+05:30"
            )
        finally:
            if old is None:
                del os.environ["TZ"]
            else:
                os.environ["TZ"] = old
            time.tzset()

    def test_whole_second_formats_change_with_the_second(self):
        for pattern in ("ctime", "%H:%M:%S"):
            stamp = formatter(pattern, utc=True)
            self.assertEqual(stamp(MOMENT), stamp(MOMENT + 0.49))
            self.assertNotEqual(stamp(MOMENT), stamp(MOMENT + 0.5))
        self.assertEqual(formatter("%H:%M:%S", utc=True)(MOMENT + 0.5), b"10:29:29")
        sub_second = formatter("%S.%f", utc=True)
        self.assertEqual(sub_second(MOMENT + 0.25), b"28.750000")

    def test_check_format_refuses_a_word_without_directives(self):
        for good in ("ctime", "iso", "epoch", "%H:%M"):
            check_format(good)
        self.assertRaises(ValueError, check_format, "isoo")


class TimestampLineTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(MOMENT)
        factory = TimestampFactory(
            TimestampSettings(format="epoch", utc=True, idle_timeout=0), self.clock
        )
        self.protocol, self.transport = connect(factory)

    def test_each_line_stamped_on_a_persistent_connection(self):
        self.protocol.dataReceived(b"hello\r\n")
        self.clock.advance(1.25)
        self.protocol.dataReceived(b"again\n")
        self.assertEqual(
            self.transport.value(),
            b"[1519468168.500000] hello\r\n[1519468169.750000] again\r\n",
        )
        self.assertFalse(self.transport.disconnecting)

    def test_quit_is_just_a_line(self):
        self.protocol.dataReceived(b"quit\n")
        self.assertEqual(self.transport.value(), b"[1519468168.500000] quit\r\n")
        self.assertFalse(self.transport.disconnecting)


class TimestampReadFramingTests(SynchronousTestCase):
    """framing = "read": each read answered `[T] DATA`, DATA exactly as read."""

    def connect(self, **settings):
        self.clock = Clock()
        self.clock.advance(MOMENT)
        factory = TimestampFactory(
            TimestampSettings(format="epoch", utc=True, framing="read", **settings), self.clock
        )
        return connect(factory)

    def test_each_read_is_answered_as_it_came(self):
        protocol, transport = self.connect()
        protocol.dataReceived(b"hello")
        self.assertEqual(transport.value(), b"[1519468168.500000] hello")
        protocol.dataReceived(b"two\nlines\r\n")
        self.assertEqual(
            transport.value(), b"[1519468168.500000] hello[1519468168.500000] two\nlines\r\n"
        )
        self.assertFalse(transport.disconnecting)

    def test_a_read_longer_than_max_line_is_answered_in_pieces(self):
        protocol, transport = self.connect(max_line=4)
        protocol.dataReceived(b"abcdefghij")
        self.assertEqual(
            transport.value(),
            b"[1519468168.500000] abcd[1519468168.500000] efgh[1519468168.500000] ij",
        )

    def test_limits_flow_control_and_idle_timeout_are_the_policy_s(self):
        protocol, transport = self.connect(max_connections=1, idle_timeout=10)
        self.assertIs(transport.producer, transport)
        _, refused = connect(protocol.factory)
        self.assertEqual(refused.value(), b"ERROR too many connections\r\n")
        elapse(self.clock, 11)
        self.assertTrue(transport.disconnecting)

    def test_the_default_is_line_framing(self):
        self.assertEqual(TimestampSettings().framing, "line")
        protocol, transport = connect(TimestampFactory(TimestampSettings(), Clock()))
        protocol.dataReceived(b"no line end")
        self.assertEqual(transport.value(), b"")


class TimestampDatagramTests(SynchronousTestCase):
    def setUp(self):
        clock = Clock()
        clock.advance(MOMENT)
        self.answer = datagram_answerer(formatter("epoch", True), clock, max_line=10)

    def test_trailing_newline_stripped(self):
        self.assertEqual(self.answer(b"ping\r\n"), b"[1519468168.500000] ping")

    def test_oversize_datagram_gets_an_error(self):
        self.assertEqual(self.answer(b"x" * 11), b"ERROR datagram longer than 10 bytes")
