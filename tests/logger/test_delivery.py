"""
What the delivery promises its listeners about the forward targets' queues:
a RELP message is answered only once every queue it goes to holds it, and
a queue that blocks when full holds back streams and drops datagrams.
"""

from twisted.internet.address import UNIXAddress
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.logger import records
from suite.logger.compiled import load_speedups
from suite.logger.delivery import Delivery
from suite.logger.protocol import SyslogDatagramProtocol, SyslogFactory
from suite.logger.records import RecordSink
from suite.logger.relay_settings import Match
from suite.logger.relp_server import RelpFactory
from suite.logger.routing import Route
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


class Hearer:
    """Records what it is told: (fields of each message, address) per call."""

    wants_hashes = False

    def __init__(self) -> None:
        self.calls: list[tuple[list, str]] = []

    def heard(self, messages, address, hashes=None) -> None:
        self.calls.append((list(messages), address))


class HashHearer(Hearer):
    """A hearer by hash (the name server's compiled heard table): (fields, address, hashes)."""

    wants_hashes = True

    def heard(self, messages, address, hashes=None) -> None:
        self.calls.append((messages, address, hashes))


def rfc5424(pri: int, hostname: bytes, app: bytes, text: bytes = b"hi") -> bytes:
    return b"<%d>1 2026-12-03T20:00:00Z %s %s 1 - - %s" % (pri, hostname, app, text)


WEB = rfc5424(13, b"h1", b"web")
DB = rfc5424(14, b"h2", b"db")


class HearerTests(SynchronousTestCase):
    """Who logged, told once per read to every hearer, on every listener's path."""

    def setUp(self):
        self.clock = Clock()
        self.writer = MemoryWriter()
        self.hearer = Hearer()
        self.delivery = Delivery(RecordSink(self.writer, self.clock))
        self.delivery.add_hearer(self.hearer)

    def test_a_stream_read_is_one_call_with_each_messages_fields_and_the_senders_address(self):
        protocol, _ = connect(SyslogFactory(LoggerSettings(), self.clock, self.delivery))
        protocol.dataReceived(WEB + b"\n" + DB + b"\nnot syslog at all\n")
        protocol.dataReceived(WEB + b"\n")
        self.assertEqual(
            self.hearer.calls,
            [
                ([(13, "h1", "web"), (14, "h2", "db"), None], "192.0.2.7"),
                ([(13, "h1", "web")], "192.0.2.7"),
            ],
        )
        self.assertEqual(self.writer.messages, ["hi", "hi", "not syslog at all", "hi"])

    def test_datagrams_are_one_call_per_sender_of_a_batch_ipv6_without_brackets(self):
        datagrams = SyslogDatagramProtocol(self.delivery, 8192)
        datagrams.datagramsReceived(
            [(WEB, ("192.0.2.8", 514)), (DB, ("192.0.2.8", 514)), (WEB, ("2001:db8::1", 514))]
        )
        datagrams.datagramReceived(b"<13>Dec  3 20:00:00 h3 cron[7]: x", ("::ffff:192.0.2.9", 9))
        self.assertEqual(
            self.hearer.calls,
            [
                ([(13, "h1", "web"), (14, "h2", "db")], "192.0.2.8"),
                ([(13, "h1", "web")], "2001:db8::1"),
                ([(13, "h3", "cron")], "192.0.2.9"),
            ],
        )

    def test_relp_messages_are_heard_with_the_senders_address(self):
        protocol, transport = connect(RelpFactory(LoggerSettings(), self.clock, self.delivery))
        protocol.dataReceived(OMRELP_OPEN + syslog(2, WEB) + syslog(3, DB))
        self.clock.advance(1)
        self.assertEqual(transport.value(), OPENED + ok(2, 3))
        self.assertEqual(self.hearer.calls, [([(13, "h1", "web"), (14, "h2", "db")], "192.0.2.7")])

    def test_a_unix_socket_sender_has_no_address(self):
        protocol, _ = connect(
            SyslogFactory(LoggerSettings(), self.clock, self.delivery),
            UNIXAddress(b"/run/app:514"),
        )
        protocol.dataReceived(WEB + b"\n")
        self.assertEqual(self.hearer.calls, [([(13, "h1", "web")], "")])

    def test_routes_and_hearers_work_together_from_one_parse(self):
        outlet = HeldOutlet()
        route = Route(Match(app="web"), outlets=(outlet.name,), stop=True)
        delivery = Delivery(
            RecordSink(self.writer, self.clock),
            {outlet.name: outlet},
            routes=[route],
            hearers=[self.hearer],
        )
        second = Hearer()
        delivery.add_hearer(second)
        delivery.messages([(WEB, False), (DB, False)], "192.0.2.7:40000", "tcp")
        self.assertEqual(outlet.messages, [WEB])  # the route took web's
        self.assertEqual(self.writer.messages, ["hi"])  # and stopped it: db's only
        expected = [([(13, "h1", "web"), (14, "h2", "db")], "192.0.2.7")]
        self.assertEqual(self.hearer.calls, expected)
        self.assertEqual(second.calls, expected)

    def test_hearers_without_routes_still_get_output_and_forward_targets_their_messages(self):
        outlet = HeldOutlet()
        delivery = Delivery(RecordSink(self.writer, self.clock), {outlet.name: outlet})
        delivery.add_hearer(self.hearer)
        delivery.messages([(WEB, False), (b"plain", True)], "[2001:db8::7]:514", "tcp")
        self.assertEqual(outlet.messages, [WEB, b"plain"])
        self.assertEqual(
            [(r["message"], r.get("truncated")) for r in self.writer.records],
            [("hi", None), ("plain", True)],
        )
        self.assertEqual(self.hearer.calls, [([(13, "h1", "web"), None], "2001:db8::7")])


class HashHearerTests(SynchronousTestCase):
    """A hearer by hash is given each read's hashes, and fields only when another wants them."""

    def setUp(self):
        if load_speedups({}) is None:
            self.patch(records, "speedups", None)
        self.writer = MemoryWriter()
        self.delivery = Delivery(RecordSink(self.writer, Clock()))
        self.by_hash = HashHearer()
        self.delivery.add_hearer(self.by_hash)

    def test_alone_it_gets_the_hashes_without_fields_when_compiled(self):
        self.delivery.messages([(WEB, False), (DB, False)], "192.0.2.7:40000", "tcp")
        [(messages, address, hashes)] = self.by_hash.calls
        self.assertEqual(address, "192.0.2.7")
        if records.speedups is None:
            self.assertEqual((messages, hashes), ([(13, "h1", "web"), (14, "h2", "db")], None))
        else:
            self.assertEqual((messages, len(hashes)), (None, 32))
        self.assertEqual(self.writer.messages, ["hi", "hi"])

    def test_beside_a_hearer_of_names_both_get_the_fields(self):
        by_name = Hearer()
        self.delivery.add_hearer(by_name)
        self.delivery.messages([(WEB, False)], "192.0.2.7:40000", "tcp")
        self.assertEqual(by_name.calls, [([(13, "h1", "web")], "192.0.2.7")])
        [(messages, _, hashes)] = self.by_hash.calls
        self.assertEqual(messages, [(13, "h1", "web")])
        self.assertEqual(None if hashes is None else len(hashes), records.speedups and 16)

    def test_without_the_compiled_parser_it_gets_the_fields(self):
        self.patch(records, "speedups", None)
        self.delivery.messages([(WEB, False)], "192.0.2.7:40000", "tcp")
        self.assertEqual(self.by_hash.calls, [([(13, "h1", "web")], "192.0.2.7", None)])
