"""
What the delivery promises its listeners about the forward targets' queues:
a RELP message is answered only once every queue it goes to holds it, and
a queue that blocks when full holds back streams and drops datagrams.
"""

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.logger.delivery import Delivery
from suite.logger.protocol import SyslogDatagramProtocol, SyslogFactory
from suite.logger.records import RecordSink
from suite.logger.relp_server import RelpFactory
from suite.logger.service import LoggerSettings
from tests.helpers import captured_log, connect
from tests.logger.test_relp import OMRELP_OPEN, OPENED, ok, syslog
from tests.logger.test_sources import MemoryWriter, lines, samples


class HeldOutlet:
    """A forward target's queue whose disk answers when the test says (`stored`, `set_full`)."""

    name = "central"
    full = False

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.pending: Deferred[None] | None = None
        self.pressure: list = []

    def put(self, messages: list[bytes]) -> None:
        self.messages += messages
        self.pending = self.pending or Deferred()

    def stored(self) -> "Deferred[None] | None":
        return self.pending

    def on_disk(self) -> None:
        pending, self.pending = self.pending, None
        assert pending is not None
        pending.callback(None)

    def on_pressure(self, callback) -> None:
        self.pressure.append(callback)

    def set_full(self, full: bool) -> None:
        self.full = full
        for callback in self.pressure:
            callback(full)


def delivery(clock: Clock) -> tuple[Delivery, MemoryWriter, HeldOutlet]:
    """A delivery to an output that writes at once and one forward queue that waits."""
    writer, outlet = MemoryWriter(), HeldOutlet()
    return Delivery(RecordSink(writer, clock), {outlet.name: outlet}), writer, outlet


class StoredTests(SynchronousTestCase):
    def test_a_relp_message_is_answered_only_once_the_forward_queue_holds_it(self):
        clock = Clock()
        target, writer, outlet = delivery(clock)
        factory = RelpFactory(LoggerSettings(), clock, target)
        protocol, transport = connect(factory)
        protocol.dataReceived(OMRELP_OPEN)
        self.assertEqual(transport.value(), OPENED)
        transport.clear()
        protocol.dataReceived(syslog(2, b"<13>kept"))
        clock.advance(1)
        self.assertEqual(writer.messages, ["kept"])  # the output has it already
        self.assertEqual(outlet.messages, [b"<13>kept"])
        self.assertEqual(transport.value(), b"")  # but the queue's disk has not said so
        outlet.on_disk()
        clock.advance(0)
        self.assertEqual(transport.value(), ok(2))

    def test_written_waits_until_the_queue_holds_what_was_put(self):
        clock = Clock()
        target, _, outlet = delivery(clock)
        target.messages([(b"<13>one", False)], "192.0.2.7:40000", "tcp")
        written = target.written()
        self.assertNoResult(written)
        outlet.on_disk()
        self.assertIsNone(self.successResultOf(written))


class BlockingQueueTests(SynchronousTestCase):
    """when_full = "block": a queue without room holds back what it can, drops the rest."""

    def test_a_full_blocking_queue_holds_streams_and_drops_datagrams_until_it_has_room(self):
        clock = Clock()
        captured_log(self)
        target, writer, outlet = delivery(clock)
        settings = LoggerSettings()
        streams = SyslogFactory(settings, clock, target)
        datagrams = SyslogDatagramProtocol(target, settings.max_message)
        protocol, transport = connect(streams)
        outlet.set_full(True)
        self.assertTrue(target.full)
        self.assertEqual(transport.producerState, "paused")
        datagrams.datagramsReceived([(b"<13>lost", ("192.0.2.7", 514))] * 3)
        self.assertEqual(samples(datagrams)[("datagrams", ("dropped",))], 3)
        self.assertNotIn(b"<13>lost", outlet.messages)
        outlet.set_full(False)
        self.assertFalse(target.full)
        self.assertEqual(transport.producerState, "producing")
        protocol.dataReceived(lines(1))
        datagrams.datagramReceived(b"<13>taken", ("192.0.2.7", 514))
        self.assertEqual(outlet.messages, [b"<13>m0", b"<13>taken"])
        self.assertEqual(writer.messages, ["m0", "taken"])
        self.assertEqual(samples(datagrams)[("datagrams", ("dropped",))], 3)
