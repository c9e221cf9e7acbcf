"""Metrics counted where the events happen, as /metrics shows them (in memory)."""

import errno
import os

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, error
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.names import dns
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from suite.contracts.names import Lookup, Register, Watch
from suite.contracts.sleep import Sleep
from suite.echo.protocol import LineEchoFactory, echo_datagram
from suite.echo.service import EchoSettings
from suite.foundation.health import health_report, http_status
from suite.foundation.interfaces import IMetricSource
from suite.foundation.jsonlines import BatchWriter, RotatingFile, WriteFailed
from suite.foundation.metrics import Histogram, SuiteCollector
from suite.names.health import HealthChecker
from suite.names.registry import Registry
from suite.names.service import NamesSettings
from suite.names.zone import ZoneAnswers
from suite.net.datagrams import rate_limited_replier
from suite.sleep.protocol import SleepFactory
from suite.sleep.service import SleepSettings
from tests.helpers import AMPPair, connect, tmp_dir
from tests.names.test_protocol import names_pair


def exposition(*sources) -> dict:
    """
    SOURCES ((service, source) pairs) through the collector and
    prometheus_client's text format, parsed back: {(sample name, labels): value}.
    """
    registry = CollectorRegistry()
    registry.register(SuiteCollector(lambda: sources))
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


class CollectorTests(SynchronousTestCase):
    def test_the_same_labels_from_two_sources_are_added_up(self):
        @implementer(IMetricSource)
        class Source:
            def __init__(self, n, seconds):
                self.n = n
                self.durations = Histogram()
                self.durations.observe(seconds)

            def metric_samples(self):
                yield "connections", ("tcp",), self.n
                yield "request_duration_seconds", (), self.durations

        samples = exposition(
            ("names", Source(2, 0.0002)), ("names", Source(3, 7.0)), ("echo", Source(4, 0.0002))
        )
        self.assertEqual(
            value(samples, "suite_connections_total", service="names", transport="tcp"), 5
        )
        self.assertEqual(
            value(samples, "suite_connections_total", service="echo", transport="tcp"), 4
        )
        self.assertEqual(
            value(samples, "suite_request_duration_seconds_count", service="names"), 2
        )
        self.assertEqual(
            value(samples, "suite_request_duration_seconds_bucket", service="names", le="0.00025"),
            1,
        )
        self.assertEqual(
            value(samples, "suite_request_duration_seconds_bucket", service="names", le="10.0"), 2
        )
        self.assertAlmostEqual(
            value(samples, "suite_request_duration_seconds_sum", service="names"), 7.0002
        )

    def test_objects_without_metrics_are_passed_over(self):
        self.assertEqual(exposition(("echo", object())), {})


class StreamCountTests(SynchronousTestCase):
    def setUp(self):
        self.factory = LineEchoFactory(
            EchoSettings(
                idle_timeout=0, max_line=10, max_connections=2, max_connections_per_source=1
            ),
            Clock(),
        )

    def samples(self):
        return exposition(("echo", self.factory))

    def test_lines_answered_and_connections_opened_and_closed(self):
        protocol, transport = connect(self.factory)
        protocol.dataReceived(b"one\ntwo\nthree\npartial")
        samples = self.samples()
        self.assertEqual(
            value(samples, "suite_requests_total", service="echo", transport="tcp"), 3
        )
        self.assertEqual(
            value(samples, "suite_connections_total", service="echo", transport="tcp"), 1
        )
        self.assertEqual(
            value(samples, "suite_connections_open", service="echo", transport="tcp"), 1
        )
        protocol.connectionLost(Failure(error.ConnectionDone()))
        self.assertEqual(
            value(self.samples(), "suite_connections_open", service="echo", transport="tcp"), 0
        )

    def test_a_line_too_long_is_an_error_not_a_request(self):
        protocol, _ = connect(self.factory)
        protocol.dataReceived(b"short\n" + b"x" * 11 + b"\nnever\n")
        samples = self.samples()
        self.assertEqual(
            value(samples, "suite_requests_total", service="echo", transport="tcp"), 1
        )
        self.assertEqual(
            value(samples, "suite_errors_total", service="echo", kind="line_too_long"), 1
        )

    def test_refusals_are_counted_by_limit(self):
        connect(self.factory)
        connect(self.factory)  # the same source: over max_connections_per_source
        connect(self.factory, IPv4Address("TCP", "192.0.2.8", 1))
        connect(self.factory, IPv4Address("TCP", "192.0.2.9", 1))  # over max_connections
        samples = self.samples()
        self.assertEqual(
            value(
                samples,
                "suite_connections_refused_total",
                service="echo",
                reason="max_connections_per_source",
            ),
            1,
        )
        self.assertEqual(
            value(
                samples,
                "suite_connections_refused_total",
                service="echo",
                reason="max_connections",
            ),
            1,
        )
        self.assertEqual(
            value(samples, "suite_connections_total", service="echo", transport="tcp"), 2
        )


class SentDatagrams:
    def __init__(self):
        self.sent = []

    def write(self, data, address):
        self.sent.append(data)


class DatagramCountTests(SynchronousTestCase):
    def test_answered_and_rate_limited(self):
        settings = EchoSettings(udp_rate=1, udp_burst=2)
        replier = rate_limited_replier(settings, echo_datagram, Clock())()
        replier.transport = SentDatagrams()
        replier.startProtocol()
        for _ in range(5):
            replier.datagramReceived(b"ping", ("192.0.2.7", 40005))
        samples = exposition(("echo", replier))
        self.assertEqual(
            value(samples, "suite_datagrams_total", service="echo", result="answered"), 2
        )
        self.assertEqual(
            value(samples, "suite_datagrams_total", service="echo", result="rate_limited"), 3
        )
        self.assertEqual(
            value(samples, "suite_requests_total", service="echo", transport="udp"), 5
        )
        self.assertEqual(
            value(samples, "suite_received_bytes_total", service="echo", transport="udp"), 20
        )
        self.assertEqual(
            value(samples, "suite_sent_bytes_total", service="echo", transport="udp"), 8
        )


class FullDisk:
    path = "out.jsonl"
    rotations = 0

    def __init__(self):
        self.room = True

    def write(self, data):
        if not self.room:
            raise WriteFailed(0, OSError(errno.ENOSPC, "No space left on device"))


class WriterCountTests(SynchronousTestCase):
    def test_records_rotations_pending_and_write_errors(self):
        path = str(tmp_dir(self) / "out.jsonl")
        output = RotatingFile(path, rotate_bytes=100, keep=3)
        self.addCleanup(output.close)
        clock = Clock()
        writer = BatchWriter(output, clock, flush_interval=1, max_batch=10**6)
        writer.startService()
        writer.write_lines([b'{"n": %d, "pad": "%s"}\n' % (n, b"x" * 20) for n in range(10)], 10)
        clock.advance(1)
        samples = exposition(("logger", writer))
        self.assertEqual(value(samples, "suite_records_written_total", service="logger"), 10)
        self.assertEqual(
            value(samples, "suite_rotations_total", service="logger"), 4
        )  # 2 lines a file
        self.assertEqual(value(samples, "suite_pending_bytes", service="logger"), 0)
        self.assertTrue(os.path.exists(path + ".3"))

    def test_a_failing_output_is_counted_and_makes_the_logger_fail_its_health(self):
        output = FullDisk()
        clock = Clock()
        writer = BatchWriter(output, clock, flush_interval=0.2, max_batch=10**6)
        writer.startService()
        self.addCleanup(writer.stopService)
        output.room = False
        writer.write_lines([b"{}\n"] * 4, 4)
        clock.advance(0.2)
        clock.advance(1)  # one retry, failing too
        samples = exposition(("logger", writer))
        self.assertEqual(value(samples, "suite_write_errors_total", service="logger"), 2)
        self.assertEqual(value(samples, "suite_pending_bytes", service="logger"), 12)
        report = health_report([("logger", writer), ("echo", object())])
        self.assertEqual(http_status(report), 503)
        self.assertEqual(report["status"], "failing")
        self.assertEqual(
            report["services"]["logger"],
            {
                "status": "failing",
                "problems": ["cannot write out.jsonl: No space left on device"],
            },
        )
        self.assertEqual(report["services"]["echo"], {"status": "ok"})
        output.room = True
        clock.advance(1)
        self.assertEqual(health_report([("logger", writer)])["status"], "ok")
        self.assertEqual(
            value(exposition(("logger", writer)), "suite_records_written_total", service="logger"),
            4,
        )

    def test_an_audit_that_cannot_be_written_only_degrades(self):
        output = FullDisk()
        output.room = False
        writer = BatchWriter(output, Clock(), 0, 1, label="names", essential=False)
        writer.write_lines([b"{}\n"], 1)
        report = health_report([("names", writer)])
        self.assertEqual((report["status"], http_status(report)), ("degraded", 200))
        self.assertEqual(health_report([("names", writer)], running=False)["status"], "stopping")


class SleepCountTests(SynchronousTestCase):
    def test_pending_sleeps_and_their_durations(self):
        clock = Clock()
        factory = SleepFactory(SleepSettings(idle_timeout=0), clock)
        pair = AMPPair(factory)
        pair.call(Sleep, seconds=2.0)
        pair.call(Sleep, seconds=0.5)
        samples = exposition(("sleep", factory))
        self.assertEqual(value(samples, "suite_sleeps_pending", service="sleep"), 2)
        self.assertEqual(
            value(samples, "suite_requests_total", service="sleep", transport="tcp"), 2
        )
        clock.advance(0.5)
        clock.advance(1.5)
        pair.pump()
        samples = exposition(("sleep", factory))
        self.assertEqual(value(samples, "suite_sleeps_pending", service="sleep"), 0)
        self.assertEqual(
            value(samples, "suite_request_duration_seconds_bucket", service="sleep", le="0.5"), 1
        )
        self.assertEqual(
            value(samples, "suite_request_duration_seconds_bucket", service="sleep", le="2.5"), 2
        )
        self.assertEqual(
            value(samples, "suite_request_duration_seconds_sum", service="sleep"), 2.5
        )


class NamesCountTests(SynchronousTestCase):
    def test_instances_lookups_watches(self):
        pair = names_pair()
        server = pair.server.factory.server
        pair.answer(Register, name="echo", host="127.0.0.1", port=5001)
        pair.answer(Register, name="echo", host="127.0.0.1", port=5002)
        for _ in range(3):
            pair.answer(Lookup, name="echo")
        pair.call(Lookup, name="nothing")
        pair.answer(Watch, name="echo")
        samples = exposition(("names", server), ("names", pair.server.factory))
        self.assertEqual(value(samples, "suite_instances", service="names"), 2)
        self.assertEqual(value(samples, "suite_lookups_total", service="names", result="found"), 3)
        self.assertEqual(
            value(samples, "suite_lookups_total", service="names", result="not_found"), 1
        )
        self.assertEqual(
            value(samples, "suite_request_duration_seconds_count", service="names"), 4
        )
        self.assertEqual(value(samples, "suite_watches", service="names"), 1)
        # Register x2, Lookup x4 (three answered at once, one by AMP), Watch.
        self.assertEqual(
            value(samples, "suite_requests_total", service="names", transport="tcp"), 7
        )
        pair.server.connectionLost(Failure(error.ConnectionDone()))
        self.assertEqual(value(exposition(("names", server)), "suite_watches", service="names"), 0)

    def test_pings_and_evictions(self):
        pair = names_pair()
        server = pair.server.factory.server
        pair.answer(Register, name="echo", host="127.0.0.1", port=5001)
        pair.answer(Register, name="echo", host="127.0.0.1", port=5002)
        clock = Clock()
        settings = NamesSettings(ping_interval=1, max_failures=2)

        def ping(host, port):
            return (
                defer.succeed(None) if port == 5001 else defer.fail(error.ConnectionRefusedError())
            )

        checker = HealthChecker(server.registry, settings, clock, ping, server.evict)
        checker.startService()
        self.addCleanup(checker.stopService)
        for _ in range(200):
            clock.advance(0.01)
        samples = exposition(("names", server), ("names", checker))
        self.assertEqual(value(samples, "suite_pings_total", service="names", result="ok"), 2)
        self.assertEqual(value(samples, "suite_pings_total", service="names", result="failed"), 2)
        self.assertEqual(value(samples, "suite_evictions_total", service="names"), 1)
        self.assertEqual(value(samples, "suite_instances", service="names"), 1)


def query(name: bytes, qtype: int) -> bytes:
    message = dns.Message(id=7)
    message.queries = [dns.Query(name, qtype, dns.IN)]
    return message.toStr()


class DNSCountTests(SynchronousTestCase):
    def test_queries_by_type_and_rcode_with_bounded_labels(self):
        registry = Registry(10)
        registry.register("echo", "127.0.0.1", 5001, "")
        zone = ZoneAnswers(registry, "suite", 5)
        for _ in range(2):
            zone.answer(query(b"_echo._tcp.suite", dns.SRV))
        zone.answer(query(b"nothing.suite", dns.A))
        zone.answer(query(b"example.com", dns.A))
        for qtype in range(1000, 1100):  # a hundred types no label names
            zone.answer(query(b"echo.suite", qtype))
        zone.answer(b"\0\7\1\0" + b"\0" * 8)  # no question: FORMERR
        samples = exposition(("names", zone))
        self.assertEqual(
            value(
                samples, "suite_dns_queries_total", service="names", type="SRV", rcode="NOERROR"
            ),
            2,
        )
        self.assertEqual(
            value(samples, "suite_dns_queries_total", service="names", type="A", rcode="NXDOMAIN"),
            1,
        )
        self.assertEqual(
            value(samples, "suite_dns_queries_total", service="names", type="A", rcode="REFUSED"),
            1,
        )
        self.assertEqual(
            value(
                samples, "suite_dns_queries_total", service="names", type="other", rcode="NOERROR"
            ),
            100,
        )
        self.assertEqual(
            value(
                samples, "suite_dns_queries_total", service="names", type="none", rcode="FORMERR"
            ),
            1,
        )
        self.assertEqual(len([k for k in samples if k[0] == "suite_dns_queries_total"]), 5)
