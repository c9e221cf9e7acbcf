"""
The parts the connection policy is made of, each on its own: admission,
the idle sweep, the handshake deadline, the answer batch and the lingering
close; and the interfaces the stream factory provides.
"""

from OpenSSL import SSL
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from suite.echo.protocol import LineEchoFactory, RawEchoFactory
from suite.echo.service import EchoSettings
from suite.foundation.interfaces import IMetricSource
from suite.net.admission import DESCRIPTOR_LIMIT, Admission
from suite.net.answer_batch import BATCH_BYTES, AnswerBatch
from suite.net.handshake_deadline import HandshakeDeadline
from suite.net.idle_sweep import SWEEPS_PER_TIMEOUT, IdleSweep
from suite.net.interfaces import IRefusesAtDescriptorLimit
from suite.net.lingering_close import LINGER_SECONDS, LingeringClose


class StreamFactoryInterfacesTests(SynchronousTestCase):
    def test_a_stream_factory_tells_the_accept_loop_its_refusal_and_counts_for_metrics(self):
        factory = LineEchoFactory(EchoSettings(), Clock())
        for interface in (IRefusesAtDescriptorLimit, IMetricSource):
            self.assertTrue(verifyObject(interface, factory))
        self.assertEqual(factory.refusal, b"ERROR too many connections\r\n")

    def test_a_protocol_without_a_refusal_line_sends_nothing(self):
        self.assertEqual(RawEchoFactory(EchoSettings(), Clock()).refusal, b"")

    def test_refusals_at_the_descriptor_limit_are_counted_beside_the_limits(self):
        factory = LineEchoFactory(EchoSettings(), Clock())
        peer = IPv4Address("TCP", "192.0.2.7", 1)
        factory.refused_at_descriptor_limit(peer, "out of descriptors")
        factory.refused_at_descriptor_limit(None, "out of descriptors")
        samples = list(factory.metric_samples())
        self.assertIn(("connections_refused", (DESCRIPTOR_LIMIT,), 2), samples)
        factory.warnings.flush()


class AdmissionTests(SynchronousTestCase):
    def test_limits_in_total_and_per_source_each_counted(self):
        admission = Admission(max_connections=3, max_per_source=2)
        self.assertTrue(verifyObject(IMetricSource, admission))
        for source in ("a", "a", "b"):
            self.assertIsNone(admission.refusal_reason(source))
            admission.admit(source)
        self.assertEqual(admission.refusal_reason("c"), "max_connections (3) reached")
        admission.release("b")
        self.assertEqual(
            admission.refusal_reason("a"), "max_connections_per_source (2) reached for a"
        )
        self.assertIsNone(admission.refusal_reason("b"))
        self.assertEqual(
            sorted(admission.metric_samples()),
            [
                ("connections_refused", ("max_connections",), 1),
                ("connections_refused", ("max_connections_per_source",), 1),
            ],
        )

    def test_a_source_with_nothing_open_is_forgotten(self):
        admission = Admission(max_connections=3, max_per_source=2)
        admission.admit("a")
        admission.release("a")
        self.assertEqual((admission.connections, admission.per_source), (0, {}))


class Quiet:
    """A connection the sweep watches; BUSY ones are never idle."""

    idle_slot = None
    last_activity = 0
    timed_out = False

    def __init__(self, busy: bool = False):
        self.busy = busy

    def is_idle(self) -> bool:
        return not self.busy

    def timeoutConnection(self) -> None:
        self.timed_out = True


class IdleSweepTests(SynchronousTestCase):
    def test_quiet_idle_connections_are_timed_out_busy_and_active_ones_kept(self):
        clock = Clock()
        sweep = IdleSweep(clock, idle_timeout=10)
        quiet, busy, active = Quiet(), Quiet(busy=True), Quiet()
        for connection in (quiet, busy, active):
            sweep.watch(connection)
        for _ in range(SWEEPS_PER_TIMEOUT + 1):
            active.last_activity = sweep.tick
            clock.advance(1)
        self.assertEqual([c.timed_out for c in (quiet, busy, active)], [True, False, False])

    def test_unwatching_keeps_the_slots_of_the_others_and_stops_the_timer_when_empty(self):
        clock = Clock()
        sweep = IdleSweep(clock, idle_timeout=10)
        first, second, third = Quiet(), Quiet(), Quiet()
        for connection in (first, second, third):
            sweep.watch(connection)
        sweep.unwatch(first)
        self.assertEqual(
            [sweep.watched.index(c) for c in (third, second)], [third.idle_slot, second.idle_slot]
        )
        sweep.unwatch(first)  # twice: nothing more
        sweep.unwatch(second)
        sweep.unwatch(third)
        self.assertEqual((sweep.watched, clock.getDelayedCalls()), ([], []))


class HandshakeDeadlineTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.failures: list[str] = []
        self.aborted: list[bool] = []
        self.deadline = HandshakeDeadline(
            self.clock, 2.0, self.failures.append, lambda: self.aborted.append(True)
        )

    def test_a_handshake_not_done_in_time_fails_and_aborts(self):
        self.clock.advance(2)
        self.assertEqual(self.failures, ["not finished within 2 s (handshake_timeout)"])
        self.assertEqual(self.aborted, [True])
        self.assertFalse(self.deadline.pending)

    def test_a_handshake_done_in_time_leaves_no_timer(self):
        self.deadline.completed()
        self.deadline.connection_lost(Failure(SSL.Error([("", "", "late")])))
        self.assertEqual((self.clock.getDelayedCalls(), self.failures), ([], []))

    def test_a_connection_lost_to_ssl_mid_handshake_says_openssls_reason(self):
        self.deadline.connection_lost(
            Failure(SSL.Error([("SSL routines", "", "wrong version number")]))
        )
        self.assertEqual(self.failures, ["wrong version number"])
        self.assertEqual((self.clock.getDelayedCalls(), self.aborted), ([], []))


class AnswerBatchTests(SynchronousTestCase):
    def test_answers_leave_in_order_and_the_batch_says_when_it_is_full(self):
        batch = AnswerBatch()
        self.assertFalse(batch.add(b"one "))
        self.assertTrue(batch.add(b"x" * BATCH_BYTES))
        self.assertEqual(batch.take(), b"one " + b"x" * BATCH_BYTES)
        self.assertEqual((batch.take(), batch.size), (b"", 0))


class Closing:
    """A transport that records what the close asks of it, in order."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.written = b""

    def write(self, data: bytes) -> None:
        self.written += data

    def unregisterProducer(self) -> None:
        self.calls.append("unregisterProducer")

    def resumeProducing(self) -> None:
        self.calls.append("resumeProducing")

    def loseConnection(self) -> None:
        self.calls.append("loseConnection")

    def loseWriteConnection(self) -> None:
        self.calls.append("loseWriteConnection")

    def abortConnection(self) -> None:
        self.calls.append("abortConnection")


@implementer(ITCPTransport)
class ClosingTCP(Closing):
    """The same over TCP (or Unix), where the sending side closes alone."""


class LingeringCloseTests(SynchronousTestCase):
    def test_the_sending_side_closes_first_and_the_rest_a_second_later(self):
        clock, transport = Clock(), ClosingTCP()
        LingeringClose(clock, transport, b"ERROR\r\n", tls=False)
        self.assertEqual(transport.written, b"ERROR\r\n")
        self.assertEqual(
            transport.calls, ["unregisterProducer", "resumeProducing", "loseWriteConnection"]
        )
        clock.advance(LINGER_SECONDS)
        self.assertEqual(transport.calls[-1], "abortConnection")

    def test_over_tls_or_without_half_close_it_closes_whole(self):
        for transport, tls in ((ClosingTCP(), True), (Closing(), False)):
            LingeringClose(Clock(), transport, b"ERROR\r\n", tls=tls)
            self.assertEqual(transport.calls[-1], "loseConnection")

    def test_a_connection_closed_in_time_is_not_cut(self):
        clock, transport = Clock(), ClosingTCP()
        LingeringClose(clock, transport, b"ERROR\r\n", tls=False).cancel()
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertNotIn("abortConnection", transport.calls)
