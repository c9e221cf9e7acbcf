"""The shared line and connection rules, checked through the line and raw echo."""

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.echo.protocol import LineEchoFactory, RawEchoFactory
from suite.echo.service import EchoSettings
from suite.net.lines import LINES_PER_TURN
from tests.helpers import captured_log, connect, elapse


def line_echo(clock=None, **settings):
    return LineEchoFactory(EchoSettings(**settings), clock or Clock())


class LineFramingTests(SynchronousTestCase):
    def test_lf_framing_with_crlf_replies(self):
        protocol, transport = connect(line_echo())
        protocol.dataReceived(b"one\ntwo\n")
        self.assertEqual(transport.value(), b"You said: one\r\nYou said: two\r\n")

    def test_cr_before_lf_is_dropped(self):
        protocol, transport = connect(line_echo())
        protocol.dataReceived(b"one\r\n")
        self.assertEqual(transport.value(), b"You said: one\r\n")

    def test_line_split_at_every_byte(self):
        protocol, transport = connect(line_echo())
        for byte in b"hello world\r\n":
            protocol.dataReceived(bytes([byte]))
        self.assertEqual(transport.value(), b"You said: hello world\r\n")

    def test_connection_stays_open_between_lines(self):
        protocol, transport = connect(line_echo())
        protocol.dataReceived(b"a\n")
        protocol.dataReceived(b"b\n")
        self.assertFalse(transport.disconnecting)
        self.assertEqual(transport.value().count(b"\r\n"), 2)


class MaxLineTests(SynchronousTestCase):
    def test_line_of_exactly_max_line_is_answered(self):
        protocol, transport = connect(line_echo(max_line=5))
        protocol.dataReceived(b"12345\n12345\r\n")
        self.assertEqual(transport.value(), b"You said: 12345\r\n" * 2)
        self.assertFalse(transport.disconnecting)

    def test_longer_line_gets_error_and_close(self):
        protocol, transport = connect(line_echo(max_line=5))
        protocol.dataReceived(b"123456\nnext\n")
        self.assertEqual(transport.value(), b"ERROR line longer than 5 bytes\r\n")
        self.assertTrue(transport.disconnecting)

    def test_after_the_error_input_is_discarded_and_the_close_waits_at_most_a_second(self):
        clock = Clock()
        protocol, transport = connect(line_echo(max_line=5, clock=clock))
        protocol.dataReceived(b"123456\n")
        protocol.dataReceived(b"more\n" * 1000)
        self.assertEqual(transport.value(), b"ERROR line longer than 5 bytes\r\n")
        self.assertIn(1.0, [call.getTime() for call in clock.getDelayedCalls()])
        protocol.connectionLost(None)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_unterminated_overlong_line_is_refused_without_waiting_for_lf(self):
        protocol, transport = connect(line_echo(max_line=5))
        protocol.dataReceived(b"1234567")
        self.assertEqual(transport.value(), b"ERROR line longer than 5 bytes\r\n")
        self.assertTrue(transport.disconnecting)

    def test_max_line_plus_cr_waits_for_lf(self):
        protocol, transport = connect(line_echo(max_line=5))
        protocol.dataReceived(b"12345\r")
        self.assertEqual(transport.value(), b"")
        protocol.dataReceived(b"\n")
        self.assertEqual(transport.value(), b"You said: 12345\r\n")


class HalfCloseTests(SynchronousTestCase):
    def test_pending_partial_line_answered_then_closed(self):
        protocol, transport = connect(line_echo())
        protocol.dataReceived(b"first\nlast words\r")
        protocol.readConnectionLost()
        self.assertEqual(transport.value(), b"You said: first\r\nYou said: last words\r\n")
        self.assertTrue(transport.disconnecting)

    def test_half_close_without_pending_line_just_closes(self):
        protocol, transport = connect(line_echo())
        protocol.readConnectionLost()
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)
        self.assertIsNone(transport.producer)


class ConnectionLimitTests(SynchronousTestCase):
    def test_connection_over_max_connections_is_refused_with_a_reason(self):
        factory = line_echo(max_connections=1)
        first, _ = connect(factory)
        _, refused = connect(factory)
        self.assertEqual(refused.value(), b"ERROR too many connections\r\n")
        self.assertTrue(refused.disconnecting)
        first.connectionLost(None)
        third, transport = connect(factory)
        third.dataReceived(b"hi\n")
        self.assertEqual(transport.value(), b"You said: hi\r\n")

    def test_one_source_is_refused_over_its_own_limit_and_others_are_not(self):
        lines = captured_log(self)
        factory = line_echo(max_connections_per_source=2)
        attacker = IPv4Address("TCP", "127.0.0.2", 1)
        held = [connect(factory, attacker) for _ in range(2)]
        for _ in range(3):
            _, refused = connect(factory, attacker)
            self.assertEqual(refused.value(), b"ERROR too many connections\r\n")
        bystander, transport = connect(factory, IPv4Address("TCP", "127.0.0.3", 1))
        bystander.dataReceived(b"hi\n")
        self.assertEqual(transport.value(), b"You said: hi\r\n")
        held[0][0].connectionLost(None)
        _, again = connect(factory, attacker)
        self.assertEqual(again.value(), b"")
        self.assertEqual(
            [line for line in lines if "refused" in line],
            [
                "echo: refused connection from 127.0.0.2:1: "
                "max_connections_per_source (2) reached for 127.0.0.2"
            ],
        )

    def test_v4_mapped_peers_count_as_their_ipv4_source(self):
        factory = line_echo(max_connections_per_source=1)
        connect(factory, IPv6Address("TCP", "::ffff:127.0.0.2", 1))
        _, refused = connect(factory, IPv4Address("TCP", "127.0.0.2", 2))
        self.assertEqual(refused.value(), b"ERROR too many connections\r\n")

    def test_raw_echo_refuses_without_writing(self):
        factory = RawEchoFactory(EchoSettings(mode="raw", max_connections=1), Clock())
        connect(factory)
        _, refused = connect(factory)
        self.assertEqual(refused.value(), b"")
        self.assertTrue(refused.disconnecting)


class IdleTimeoutTests(SynchronousTestCase):
    def test_idle_connection_closed_after_idle_timeout_at_most_a_tenth_later(self):
        clock = Clock()
        protocol, transport = connect(line_echo(idle_timeout=10, clock=clock))
        elapse(clock, 9)
        protocol.dataReceived(b"still here\n")
        elapse(clock, 9.875)  # quiet for 9.875 s
        self.assertFalse(transport.disconnecting)
        elapse(clock, 1.125)  # quiet for 11 s: at most a tenth more than idle_timeout
        self.assertTrue(transport.disconnecting)

    def test_one_sweep_timer_for_all_connections(self):
        clock = Clock()
        factory = line_echo(idle_timeout=10, clock=clock)
        connections = [connect(factory) for _ in range(50)]
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        for protocol, _ in connections[::2]:
            protocol.connectionLost(None)
        elapse(clock, 11)
        self.assertEqual([t.disconnecting for _, t in connections[1::2]], [True] * 25)
        for protocol, _ in connections[1::2]:
            protocol.connectionLost(None)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_zero_idle_timeout_never_closes(self):
        clock = Clock()
        protocol, transport = connect(line_echo(idle_timeout=0, clock=clock))
        clock.advance(10**6)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_closed_connection_leaves_no_timer(self):
        clock = Clock()
        protocol, _ = connect(line_echo(clock=clock))
        protocol.connectionLost(None)
        self.assertEqual(clock.getDelayedCalls(), [])


class FlowControlTests(SynchronousTestCase):
    def test_streaming_producers(self):
        protocol, transport = connect(line_echo())
        self.assertIs(transport.producer, protocol)
        self.assertTrue(transport.streaming)
        _, transport = connect(RawEchoFactory(EchoSettings(mode="raw", idle_timeout=0), Clock()))
        self.assertIs(transport.producer, transport)

    def test_paused_line_service_answers_no_more_lines_until_resumed(self):
        """Paused is what Twisted does when the client stops reading and the write buffer fills."""
        clock = Clock()
        protocol, transport = connect(line_echo(clock=clock))
        protocol.dataReceived(b"one\n")
        protocol.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        protocol.dataReceived(b"two\n" * 100)
        clock.advance(0)
        self.assertEqual(transport.value(), b"You said: one\r\n")
        protocol.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(transport.value().count(b"You said: two\r\n"), 100)

    def test_a_read_of_bare_newlines_is_answered_in_linear_time(self):
        clock = Clock()
        protocol, transport = connect(line_echo(clock=clock))
        protocol.dataReceived(b"\n" * 65536)
        clock.advance(0)
        self.assertEqual(transport.value(), b"You said: \r\n" * 65536)

    def test_many_lines_in_one_read_take_turns_with_other_connections(self):
        clock = Clock()
        factory = line_echo(clock=clock)
        busy, busy_transport = connect(factory)
        other, other_transport = connect(factory, IPv4Address("TCP", "127.0.0.3", 1))
        busy.dataReceived(b"x\n" * 1000)
        self.assertEqual(busy_transport.value().count(b"\r\n"), LINES_PER_TURN)
        self.assertEqual(busy_transport.producerState, "paused")  # not reading meanwhile
        other.dataReceived(b"me too\n")
        self.assertEqual(other_transport.value(), b"You said: me too\r\n")
        clock.advance(0)  # a Clock runs the following turns at once, too
        self.assertEqual(busy_transport.value().count(b"\r\n"), 1000)
        self.assertEqual(busy_transport.producerState, "producing")
