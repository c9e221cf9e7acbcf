"""Per-source limits of the collector (allowed_sources, rate_per_source), driven by a Clock."""

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.foundation.flood import FloodControl
from suite.logger.delivery import Delivery
from suite.logger.protocol import SyslogDatagramProtocol, SyslogFactory
from suite.logger.records import RecordSink
from suite.logger.relp_server import RelpFactory
from suite.logger.service import LoggerSettings
from suite.logger.sources import SourceLimits
from tests.helpers import captured_log, connect
from tests.logger.test_protocol import MemoryWriter as RecordedLines

NOISY = IPv4Address("TCP", "192.0.2.7", 40000)
NOISY_TOO = IPv4Address("TCP", "192.0.2.7", 40001)
QUIET = IPv4Address("TCP", "192.0.2.8", 40000)


class MemoryWriter(RecordedLines):
    """The writer's part the delivery uses, in memory; set_full() plays a disk that stalls."""

    def when_written(self):
        return succeed(None)

    @property
    def messages(self):
        return [r["message"] for r in self.records if r["event"] == "message"]


def logger(clock, factory=SyslogFactory, **keys):
    """(FACTORY, datagram protocol, writer) of one logger with the [logger] KEYS."""
    settings = LoggerSettings(**keys)
    writer = MemoryWriter()
    delivery = Delivery(RecordSink(writer, clock), sources=SourceLimits.of(settings, clock))
    return (
        factory(settings, clock, delivery),
        SyslogDatagramProtocol(delivery, settings.max_message),
        writer,
    )


def lines(count, tag=b"m"):
    return b"".join(b"<13>%s%d\n" % (tag, n) for n in range(count))


def samples(source):
    return {(name, labels): value for name, labels, value in source.metric_samples()}


class AllowedSourcesTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.log = captured_log(self)
        self.factory, self.datagrams, self.writer = logger(
            self.clock,
            allowed_sources=("10.0.0.0/8", "2001:db8::/32", "::ffff:172.16.0.0/108"),
        )

    def connect(self, address):
        protocol, transport = connect(self.factory, address)
        protocol.dataReceived(b"<13>hello\n")
        return transport

    def test_connections_from_allowed_networks_are_served_others_refused_and_counted(self):
        allowed = [
            IPv4Address("TCP", "10.1.2.3", 1),
            IPv6Address("TCP", "2001:db8::5", 1),
            IPv6Address("TCP", "::ffff:10.9.9.9", 1),  # a dual-stack listener's IPv4 sender
            IPv4Address("TCP", "172.16.4.4", 1),  # an IPv4-mapped network takes IPv4 too
            UNIXAddress(b"/run/app.sock"),  # a local process: always allowed
        ]
        refused = [
            IPv4Address("TCP", "192.0.2.7", 40000),
            IPv6Address("TCP", "2001:db9::5", 1),
            IPv6Address("TCP", "::ffff:192.0.2.9", 1),
        ]
        for address in allowed:
            self.assertFalse(self.connect(address).disconnecting, address)
        for address in refused:
            self.assertTrue(self.connect(address).disconnecting, address)
        self.assertEqual(self.writer.messages, ["hello"] * len(allowed))
        self.assertEqual(
            samples(self.factory)[("connections_refused", ("source_not_allowed",))], 3
        )
        self.assertIn(
            "logger: refused connection from 192.0.2.7:40000: 192.0.2.7 is not in allowed_sources",
            self.log,
        )

    def test_refusals_from_one_source_are_logged_once_then_summed_up(self):
        for port in range(1, 6):
            self.connect(IPv4Address("TCP", "192.0.2.7", port))
        self.clock.advance(10)
        refused = [line for line in self.log if "192.0.2.7" in line or "more refused" in line]
        self.assertEqual(
            refused,
            [
                "logger: refused connection from 192.0.2.7:1: 192.0.2.7 is not in allowed_sources",
                "logger: 4 more refused connections in the last 10 s",
            ],
        )

    def test_datagrams_from_elsewhere_are_dropped_and_counted(self):
        self.datagrams.datagramsReceived(
            [
                (b"<13>in", ("10.0.0.1", 514)),
                (b"<13>out", ("192.0.2.1", 514)),
                (b"<13>mapped in", ("::ffff:10.0.0.2", 514)),
                (b"<13>mapped out", ("::ffff:192.0.2.2", 514)),
                (b"<13>v6 in", ("2001:db8::1", 514)),
            ]
        )
        self.assertEqual(self.writer.messages, ["in", "mapped in", "v6 in"])
        self.assertEqual(samples(self.datagrams)[("datagrams", ("source_not_allowed",))], 2)
        self.assertIn(
            "logger: dropping datagrams from 192.0.2.1: not in allowed_sources", self.log
        )


class StreamRateTests(SynchronousTestCase):
    """rate_per_source = 10, burst 20: a connection over it is not read until its debt is paid."""

    def setUp(self):
        self.clock = Clock()
        self.log = captured_log(self)
        self.factory, self.datagrams, self.writer = logger(
            self.clock, rate_per_source=10, burst_per_source=20
        )

    def test_a_source_over_its_rate_is_paused_then_read_again_and_nothing_is_lost(self):
        protocol, transport = connect(self.factory, NOISY)
        protocol.dataReceived(lines(20))  # the burst: still reading
        self.assertEqual(transport.producerState, "producing")
        protocol.dataReceived(lines(30, b"n"))  # 30 over: 3 s of debt
        self.assertEqual(transport.producerState, "paused")
        self.assertEqual(len(self.writer.messages), 50)  # what was read is written
        self.clock.advance(2.9)
        self.assertEqual(transport.producerState, "paused")
        self.clock.advance(0.1)
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(samples(self.factory)[("source_paused", ())], 1)

    def test_another_source_is_not_held_back(self):
        noisy, noisy_transport = connect(self.factory, NOISY)
        quiet, quiet_transport = connect(self.factory, QUIET)
        noisy.dataReceived(lines(100))
        quiet.dataReceived(lines(5))
        self.assertEqual(
            (noisy_transport.producerState, quiet_transport.producerState),
            ("paused", "producing"),
        )

    def test_connections_of_one_address_share_its_bucket(self):
        first, first_transport = connect(self.factory, NOISY)
        second, second_transport = connect(self.factory, NOISY_TOO)
        first.dataReceived(lines(15))
        second.dataReceived(lines(15))  # 30 from the address: 10 over, 1 s of debt
        self.assertEqual(
            (first_transport.producerState, second_transport.producerState),
            ("producing", "paused"),
        )
        first.dataReceived(lines(10))  # read before it was paused: 2 s of debt now
        self.assertEqual(first_transport.producerState, "paused")
        self.clock.advance(1.5)
        self.assertEqual(second_transport.producerState, "paused")
        self.clock.advance(0.5)
        self.assertEqual(
            (first_transport.producerState, second_transport.producerState),
            ("producing", "producing"),
        )
        self.assertEqual(samples(self.factory)[("source_paused", ())], 2)

    def test_a_full_delivery_and_the_rate_do_not_undo_each_other(self):
        protocol, transport = connect(self.factory, NOISY)
        protocol.dataReceived(lines(30))  # 1 s of debt
        self.writer.set_full(True)
        self.clock.advance(1)  # the debt is paid, but the output cannot keep up
        self.assertEqual(transport.producerState, "paused")
        self.writer.set_full(False)
        self.assertEqual(transport.producerState, "producing")
        protocol.dataReceived(lines(30))  # the bucket was empty: 3 s of debt
        self.assertEqual(transport.producerState, "paused")
        self.writer.set_full(True)
        self.writer.set_full(False)  # room again, but the source is still over its rate
        self.assertEqual(transport.producerState, "paused")
        self.clock.advance(3)
        self.assertEqual(transport.producerState, "producing")

    def test_a_connection_gone_while_paused_is_forgotten(self):
        protocol, transport = connect(self.factory, NOISY)
        protocol.dataReceived(lines(30))
        protocol.connectionLost(None)
        self.assertFalse(self.factory.sources.paused(protocol.source, protocol))
        self.clock.advance(5)  # the refill finds nothing to restart
        self.assertEqual(transport.producerState, "paused")

    def test_unix_peers_are_never_limited(self):
        protocol, transport = connect(self.factory, UNIXAddress(b"/run/app.sock"))
        protocol.dataReceived(lines(500))
        self.assertEqual(transport.producerState, "producing")

    def test_one_line_per_source_going_over_then_a_count(self):
        for port in range(3):
            protocol, _ = connect(self.factory, IPv4Address("TCP", "192.0.2.7", port))
            protocol.dataReceived(lines(25))
        other, _ = connect(self.factory, QUIET)
        other.dataReceived(lines(25))
        over = [line for line in self.log if "rate_per_source" in line]
        self.assertEqual(
            over,
            [
                "logger: 192.0.2.7 is over rate_per_source (10 messages/s, 20 at once): its "
                "connections are read no faster, its datagrams beyond it dropped",
                "logger: 192.0.2.8 is over rate_per_source (10 messages/s, 20 at once): its "
                "connections are read no faster, its datagrams beyond it dropped",
            ],
        )
        self.clock.advance(60)  # both quiet: their buckets refill, the episodes end
        for address in (NOISY, QUIET):
            protocol, _ = connect(self.factory, address)
            protocol.dataReceived(lines(25))
        self.clock.advance(10)
        self.assertEqual(
            [line for line in self.log if "rate_per_source" in line][2:],
            ["logger: 2 more sources over rate_per_source in the last 10 s"],
        )


class RelpSourcesTests(SynchronousTestCase):
    def test_a_relp_sender_from_elsewhere_is_refused_at_connect(self):
        factory, _, _ = logger(Clock(), RelpFactory, allowed_sources=("10.0.0.0/8",))
        _, allowed = connect(factory, IPv4Address("TCP", "10.0.0.1", 1))
        _, refused = connect(factory, NOISY)
        self.assertEqual((allowed.disconnecting, refused.disconnecting), (False, True))
        self.assertIn(b"serverclose", refused.value())
        self.assertEqual(samples(factory)[("connections_refused", ("source_not_allowed",))], 1)

    def test_a_relp_sender_over_its_rate_is_paused_through_the_same_factory(self):
        clock = Clock()
        factory, _, writer = logger(clock, RelpFactory, rate_per_source=10, burst_per_source=10)
        protocol, transport = connect(factory, NOISY)
        offers = b"relp_version=0\nrelp_software=test\ncommands=syslog"
        frames = [b"1 open %d %s\n" % (len(offers), offers)]
        frames += [b"%d syslog 8 <13>m%03d\n" % (n + 2, n) for n in range(20)]
        protocol.dataReceived(b"".join(frames))
        self.assertEqual(len(writer.messages), 20)
        self.assertEqual(transport.producerState, "paused")
        clock.advance(1)
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(samples(factory)[("source_paused", ())], 1)


class DatagramRateTests(SynchronousTestCase):
    def test_datagrams_over_the_rate_are_dropped_and_counted(self):
        clock = Clock()
        _, datagrams, writer = logger(clock, rate_per_source=5)  # burst 0: 5
        batch = [(b"<13>noisy %d" % n, ("192.0.2.7", 514)) for n in range(8)]
        batch += [(b"<13>quiet", ("192.0.2.8", 514))]
        batch += [(b"<13>mapped", ("::ffff:192.0.2.7", 514))]  # the same source
        datagrams.datagramsReceived(batch)
        clock.advance(0.4)  # two tokens back
        datagrams.datagramsReceived([(b"<13>later %d" % n, ("192.0.2.7", 514)) for n in range(3)])
        self.assertEqual(
            writer.messages,
            ["noisy 0", "noisy 1", "noisy 2", "noisy 3", "noisy 4", "quiet", "later 0", "later 1"],
        )
        self.assertEqual(samples(datagrams)[("datagrams", ("rate_limited",))], 5)

    def test_a_stream_and_datagrams_of_one_address_share_its_bucket(self):
        clock = Clock()
        factory, datagrams, writer = logger(clock, rate_per_source=10, burst_per_source=10)
        protocol, _ = connect(factory, NOISY)
        protocol.dataReceived(lines(10))
        datagrams.datagramReceived(b"<13>late", ("192.0.2.7", 514))
        self.assertNotIn("late", writer.messages)
        self.assertEqual(samples(datagrams)[("datagrams", ("rate_limited",))], 1)

    def test_tracked_sources_are_bounded_and_a_flood_cannot_reset_a_debt(self):
        clock = Clock()
        factory, datagrams, writer = logger(
            clock, rate_per_source=1, burst_per_source=2, max_rate_sources=3
        )
        protocol, transport = connect(factory, NOISY)
        protocol.dataReceived(lines(12))  # 10 s of debt
        spoofed = [(b"<13>spoofed", (f"198.51.100.{n}", 514)) for n in range(50)]
        datagrams.datagramsReceived(spoofed)
        buckets = factory.sources.buckets
        self.assertEqual(len(buckets), 3)
        self.assertEqual(writer.messages.count("spoofed"), 2)  # the table was full after two
        self.assertEqual(samples(datagrams)[("datagrams", ("rate_limited",))], 48)
        clock.advance(9)
        self.assertEqual(transport.producerState, "paused")  # the debt was kept
        clock.advance(1)
        self.assertEqual(transport.producerState, "producing")
        clock.advance(3)
        datagrams.datagramsReceived(spoofed[2:5])  # full buckets are forgotten for new ones
        self.assertEqual(writer.messages.count("spoofed"), 5)
        self.assertEqual(len(buckets), 3)


class ShortConnectionFloodTests(SynchronousTestCase):
    def test_short_connections_from_ever_new_addresses_do_not_grow_the_table(self):
        """
        max_connections bounds only the connections open at once: 10,000
        short ones from distinct addresses must leave neither 10,000
        buckets nor 10,000 timers behind, nor wipe an honest source's debt.
        """
        clock = Clock()
        log = captured_log(self)
        limits = SourceLimits(
            (), rate=1, burst=1, max_sources=4, clock=clock, warnings=FloodControl(clock, "logger")
        )
        reading = {}

        def update(connection):
            reading[connection] = not limits.paused(connection[0], connection)

        honest = ("192.0.2.7", 1)
        limits.charge(honest[0], honest, 11, update)  # 10 s of debt
        for n in range(10_000):
            flooder = (f"2001:db8::{n:x}", n)
            limits.charge(flooder[0], flooder, 50, update)
            self.assertFalse(reading[flooder])  # what it sent was charged
            limits.forget(flooder[0], flooder)  # the connection closed
        self.assertEqual(len(limits.buckets), 4)
        self.assertLessEqual(len(clock.getDelayedCalls()), 3)  # the honest one's, log summaries
        newcomer = ("2001:db8:1::1", 0)
        limits.charge(
            newcomer[0], newcomer, 1, update
        )  # the flood's debt is shared, not forgotten
        self.assertFalse(reading[newcomer])
        self.assertIn(
            "logger: 2001:db8::4 is held back together with every new address: the "
            "max_rate_sources (4) remembered ones are all still refilling, so the others "
            "share one bucket of rate_per_source",
            log,
        )
        clock.advance(9.5)
        self.assertFalse(reading[honest])
        clock.advance(0.5)
        self.assertTrue(reading[honest])


class NoLimitsTests(SynchronousTestCase):
    def test_without_limits_nothing_is_checked_or_counted(self):
        clock = Clock()
        factory, datagrams, writer = logger(clock)
        self.assertIsNone(factory.sources)
        protocol, transport = connect(factory, NOISY)
        protocol.dataReceived(lines(10000))
        datagrams.datagramsReceived([(b"<13>d", ("192.0.2.7", 514))] * 1000)
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(len(writer.messages), 11000)
        self.assertNotIn("source_paused", [name for name, _ in samples(factory)])
