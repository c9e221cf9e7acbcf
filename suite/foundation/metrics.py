"""
The suite's metrics: counted where the events happen, as plain integers on
the objects that see them, and turned into Prometheus families by one
collector when `/metrics` is scraped.

A plain `counts.requests += 1` costs about 30 ns; prometheus_client's own
`Counter.inc()` takes a lock and costs about 330 ns, and `Histogram.observe`
about 720 ns, which would be a tenth of a short request's whole cost.  So
the hot paths add to integers, and L{SuiteCollector} (a prometheus_client
custom collector) reads them.  prometheus_client's Twisted resource runs
the collection in the reactor's thread pool, so the collector only ever
reads: dictionaries are copied whole (one step under the GIL) before they
are walked.

A metric source provides L{IMetricSource}: `metric_samples()` yields
`(name, label values, value)`: NAME is a key of L{METRICS}, whose entry
says the family's kind, help and label names (after `service`, which the
collector adds).  Samples with the same labels from several sources (the
name server's AMP and DNS listeners both count connections) are added up.
"""

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import cast

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.core import (
    Metric as Family,
)

from suite.foundation.interfaces import IMetricSource

PREFIX = "suite_"

# Request durations from a tenth of a millisecond (a lookup) to an hour (a sleep).
DURATION_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    3600.0,
)


@dataclass(frozen=True)
class Metric:
    kind: type
    help: str
    labels: tuple[str, ...] = ()


COUNTER, GAUGE, HISTOGRAM = CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

METRICS = {
    "connections_open": Metric(GAUGE, "Stream connections open now.", ("transport",)),
    "connections": Metric(COUNTER, "Stream connections admitted.", ("transport",)),
    "connections_refused": Metric(
        COUNTER,
        "Stream connections refused by a limit: max_connections, max_connections_per_source, "
        "file_descriptors (none left), source_not_allowed (the logger's allowed_sources).",
        ("reason",),
    ),
    "empty_connections": Metric(
        COUNTER,
        "Stream connections closed without sending a byte (port scans, TCP health checks), "
        "which the logger counts instead of writing records of them.",
        ("transport",),
    ),
    "received_bytes": Metric(COUNTER, "Bytes received, as on the wire.", ("transport",)),
    "sent_bytes": Metric(COUNTER, "Bytes sent, as on the wire.", ("transport",)),
    "requests": Metric(
        COUNTER, "Requests: lines, syslog messages, AMP commands, DNS queries.", ("transport",)
    ),
    "errors": Metric(COUNTER, "Client and TLS errors, by kind.", ("kind",)),
    "datagrams": Metric(
        COUNTER,
        "Datagrams received: answered, rate_limited (per address: udp_rate, or the logger's "
        "rate_per_source), network_rate_limited (per /24 or /56), dropped_source_port (a reply "
        "would go to a port below 1024 or to 0), dropped (by the kernel, or held back while the "
        "logger cannot write), source_not_allowed (the logger's allowed_sources).",
        ("result",),
    ),
    "records_written": Metric(
        COUNTER, "Records (JSON lines) written to the output (the logger's routes' files too)."
    ),
    "write_errors": Metric(COUNTER, "Writes of the output that failed (disk full, I/O error)."),
    "pending_bytes": Metric(GAUGE, "Bytes of records waiting to be written."),
    "rotations": Metric(COUNTER, "Rotations of the output file."),
    "forward_queued": Metric(
        COUNTER, "Messages taken into a forward target's queue.", ("target",)
    ),
    "forward_sent": Metric(
        COUNTER,
        "Messages a forward target acknowledged (RELP) or the kernel accepted (TCP, TLS).",
        ("target",),
    ),
    "forward_retried": Metric(
        COUNTER,
        "Messages sent to a forward target again after a connection was lost before they "
        "were acknowledged (the target may see them twice).",
        ("target",),
    ),
    "forward_dropped": Metric(
        COUNTER,
        "Messages a forward target's queue dropped: full with when_full = drop, or datagrams "
        "that came while it blocked.",
        ("target",),
    ),
    "forward_queue_bytes": Metric(
        GAUGE,
        "Bytes of messages waiting in a forward target's queue, by place (memory, disk).",
        ("target", "place"),
    ),
    "forward_connected": Metric(GAUGE, "1 while a forward target is connected.", ("target",)),
    "forward_queue_cut_bytes": Metric(
        COUNTER,
        "Bytes cut from the end of a forward queue's segments at start (a torn or corrupt "
        "tail left by a crash).",
        ("target",),
    ),
    "source_paused": Metric(
        COUNTER,
        "Times a stream or RELP sender was not read for a while for going over rate_per_source.",
    ),
    "sleeps_pending": Metric(GAUGE, "Sleeps waiting for their time."),
    "instances": Metric(GAUGE, "Live instances in the registry."),
    "lookups": Metric(COUNTER, "Lookups over AMP, by result (found, not_found).", ("result",)),
    "pings": Metric(COUNTER, "Health checks of instances, by result (ok, failed).", ("result",)),
    "evictions": Metric(COUNTER, "Instances evicted after failed health checks."),
    "checks": Metric(COUNTER, "Declared checks run, by kind and result.", ("kind", "result")),
    "eviction_guard": Metric(GAUGE, "1 while the eviction guard holds evictions back."),
    "watches": Metric(GAUGE, "Names watched, over all connections."),
    "silent_instances": Metric(
        GAUGE, "Instances with a logs check that is silent (no message within its max_silence)."
    ),
    "log_silence_seconds": Metric(
        GAUGE,
        "Seconds since the longest-silent logs check of each service name last heard its "
        "source (or since it was first watched, if never).",
        ("name",),
    ),
    "log_reports": Metric(
        COUNTER,
        "Reports of who was heard sent to name servers (report_to), by result (sent, failed).",
        ("target", "result"),
    ),
    "log_report_skipped": Metric(
        COUNTER,
        "Sources heard but left out of a report: more than max_reported_sources in one second.",
    ),
    "leader": Metric(GAUGE, "1 while this name server runs the shared registry's health checks."),
    "etcd_reachable": Metric(GAUGE, "1 while the registry's etcd cluster answers (etcd store)."),
    "dns_queries": Metric(COUNTER, "DNS queries answered, by type and rcode.", ("type", "rcode")),
    "workers_running": Metric(GAUGE, "Worker processes running (workers above 1)."),
    "worker_exits": Metric(
        COUNTER, "Worker processes that ended while the suite ran (each is restarted)."
    ),
    "request_duration_seconds": Metric(
        HISTOGRAM, "Time from request to answer: sleeps, and lookups over AMP."
    ),
}


class Counts:
    """The counts of one transport (tcp, tls, unix, udp) of a service's listeners."""

    __slots__ = ("opened", "closed", "received", "sent", "requests", "empty")

    def __init__(self) -> None:
        self.opened = self.closed = self.received = self.sent = self.requests = 0
        self.empty = 0  # connections closed without sending a byte (the logger's)

    def metric_samples(self, transport: str) -> Iterator[tuple[str, tuple[str], int]]:
        yield "received_bytes", (transport,), self.received
        yield "sent_bytes", (transport,), self.sent
        yield "requests", (transport,), self.requests
        if self.opened:
            yield "connections", (transport,), self.opened
            yield "connections_open", (transport,), self.opened - self.closed
        if self.empty:
            yield "empty_connections", (transport,), self.empty


UNCOUNTED = Counts()  # where a connection not (yet) counted for a service adds


class Histogram:
    """
    Durations in DURATION_BUCKETS: observe() is a bisect and two additions,
    about 70 ns, where prometheus_client's takes a lock and 720 ns.
    """

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATION_BUCKETS) + 1)  # the last: above every bound
        self.total = 0.0

    def observe(self, seconds: float, count: int = 1) -> None:
        """COUNT requests that took SECONDS each."""
        self.counts[bisect_left(DURATION_BUCKETS, seconds)] += count
        self.total += seconds * count

    def add(self, other: "Histogram") -> None:
        """OTHER's requests added to these (a process that ended, kept in a sum)."""
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.total += other.total

    def buckets(self) -> list[tuple[str, int]]:
        """Cumulative (upper bound, count) pairs, +Inf last, as Prometheus wants them."""
        cumulative: list[tuple[str, int]] = []
        running = 0
        for bound, count in zip(
            (*map(str, DURATION_BUCKETS), "+Inf"), list(self.counts), strict=True
        ):
            running += count
            cumulative.append((bound, running))
        return cumulative


class SuiteCollector:
    """
    Every family of METRICS from the parts PARTS() gives, (service name,
    part) pairs, asked at each scrape (the suite's service tree, walked):
    those parts providing L{IMetricSource} are counted.
    """

    def __init__(self, parts: Callable[[], Iterable[tuple[str, object]]]) -> None:
        self.parts = parts

    def describe(self) -> list[Family]:
        return []  # families appear as they are counted; nothing to check at registration

    def collect(self) -> Iterator[Family]:
        numbers: dict[str, dict[tuple[str, ...], float]] = {name: {} for name in METRICS}
        histograms: dict[str, dict[tuple[str, ...], HistogramValue]] = {
            name: {} for name in METRICS
        }
        for service, source in list(self.parts()):
            if not IMetricSource.providedBy(source):
                continue
            for name, labels, value in source.metric_samples():
                key = (service, *labels)
                if isinstance(value, Histogram):
                    by_labels = histograms[name]
                    summed = (value.buckets(), value.total)
                    previous = by_labels.get(key)
                    if previous is not None:
                        summed = _sum_histograms(previous, summed)
                    by_labels[key] = summed
                else:
                    # Anything else is a number, as IMetricSource says.
                    numbers[name][key] = numbers[name].get(key, 0) + cast(float, value)
        for name, metric in METRICS.items():
            is_histogram = metric.kind is HISTOGRAM
            if not (histograms[name] if is_histogram else numbers[name]):
                continue
            family = metric.kind(PREFIX + name, metric.help, labels=("service", *metric.labels))
            if is_histogram:
                for labels, (buckets, total) in sorted(histograms[name].items()):
                    family.add_metric(labels, buckets=buckets, sum_value=total)
            else:
                for labels, number in sorted(numbers[name].items()):
                    family.add_metric(labels, number)
            yield family


HistogramValue = tuple[list[tuple[str, int]], float]


def _sum_histograms(a: HistogramValue, b: HistogramValue) -> HistogramValue:
    buckets = [(bound, x + y) for (bound, x), (_, y) in zip(a[0], b[0], strict=True)]
    return buckets, a[1] + b[1]
