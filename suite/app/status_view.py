"""
What the status page shows, gathered from the suite's service tree at one
instant: each service with its listeners, open connections and request
rate; each name server's registry (instances, tags, checks, silent sources,
maintenance, the eviction guard, recent changes); the collector's message
rate over the last minutes, write errors and forward queues; uptime,
version and workers.  Plain data, so that the page's template only lays it
out and tests read it directly.

Rates come from L{StatusHistory}, which samples the counters every
SAMPLE_SECONDS and keeps HISTORY samples: the same counters /metrics
serves (with workers, the parent's sums of its workers' reports), so the
page and Prometheus never disagree.  A registry is listed up to
PAGE_INSTANCES instances, the unwell first, so that a registry of any size
costs the page a bounded amount and what needs looking at is never cut.
"""

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from twisted.application import service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from suite.app.lifecycle import SuiteService
from suite.foundation.health import health_report
from suite.foundation.interfaces import IMetricSource, IRegistryMetrics
from suite.foundation.metrics import Histogram
from suite.foundation.version import describe_versions
from suite.names.changes import Change
from suite.names.guard import EvictionGuard
from suite.names.registry import CRITICAL, PASSING, SEVERITY, Instance
from suite.names.server import NameServer
from suite.net.addresses import PeerAddress, describe_peer, host_port
from suite.net.listeners import ListenerService

SAMPLE_SECONDS = 2.0
HISTORY = 150  # five minutes of samples
PAGE_INSTANCES = 1000
OUTPUT_SHOWN = 300  # characters of a check's last output
RATED = ("requests", "records_written")  # the counters whose rates the page shows
LOGS = "logs"
COLLECTOR = "logger"  # the service whose records_written are messages collected

Samples = dict[str, dict[str, dict[tuple, float]]]  # service -> metric -> labels -> value


def metric_totals(parts: Iterable[tuple[str, object]], counters_only: bool = False) -> Samples:
    """
    Every part's numeric samples, summed by service, metric and labels (as
    /metrics does); with COUNTERS_ONLY, not those of parts whose samples
    look at a whole registry (L{IRegistryMetrics}): what a sampler every
    few seconds reads, at the same cost whatever the registry holds.
    """
    totals: Samples = {}
    for name, part in parts:
        if not IMetricSource.providedBy(part):
            continue
        if counters_only and IRegistryMetrics.providedBy(part):
            continue
        by_metric = totals.setdefault(name, {})
        for metric, labels, value in part.metric_samples():
            if isinstance(value, Histogram):
                continue
            by_labels = by_metric.setdefault(metric, {})
            by_labels[labels] = by_labels.get(labels, 0) + value  # type: ignore[operator]
    return totals


def total(samples: Samples, service_name: str, metric: str) -> float:
    return sum(samples.get(service_name, {}).get(metric, {}).values())


class StatusHistory(service.Service):
    """
    The rated counters of ROOT's services every EVERY seconds, the last KEEP
    samples: what rates and the collector's sparkline are computed from.
    `generation` counts the samples taken (the page's live updates follow it).
    """

    def __init__(
        self,
        root: SuiteService,
        clock: IReactorTime,
        every: float = SAMPLE_SECONDS,
        keep: int = HISTORY,
    ) -> None:
        self.root = root
        self.clock = clock
        self.every = every
        self.samples: deque[tuple[float, dict[tuple[str, str], float]]] = deque(maxlen=keep)
        self.generation = 0
        self._loop = LoopingCall(self.sample)
        self._loop.clock = clock

    def startService(self) -> None:
        super().startService()
        self._loop.start(self.every, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    def sample(self) -> None:
        totals = metric_totals(self.root.parts(), counters_only=True)
        counters = {
            (name, metric): sum(by_metric.get(metric, {}).values())
            for name, by_metric in totals.items()
            for metric in RATED
            if metric in by_metric
        }
        self.samples.append((self.clock.seconds(), counters))
        self.generation += 1

    def rates(self, service_name: str, metric: str) -> list[float]:
        """Per second between each two samples, oldest first (never below 0)."""
        key = (service_name, metric)
        found = []
        previous: tuple[float, float] | None = None
        for when, counters in self.samples:
            value = counters.get(key)
            if value is None:
                previous = None
                continue
            if previous is not None and when > previous[0]:
                found.append(max(0.0, (value - previous[1]) / (when - previous[0])))
            previous = (when, value)
        return found

    def rate(self, service_name: str, metric: str) -> float | None:
        """The rate over the last interval sampled; None before two samples."""
        key = (service_name, metric)
        if len(self.samples) < 2:
            return None
        (before, old), (now, new) = self.samples[-2], self.samples[-1]
        if key not in old or key not in new or now <= before:
            return None
        return max(0.0, (new[key] - old[key]) / (now - before))


@dataclass(frozen=True)
class ServiceRow:
    name: str
    status: str
    problems: tuple[str, ...]
    listeners: tuple[str, ...]
    connections: int
    rate: float | None  # requests/s


@dataclass(frozen=True)
class CheckRow:
    name: str
    kind: str
    status: str
    output: str


@dataclass(frozen=True)
class InstanceRow:
    name: str
    instance_id: str
    address: str
    tags: tuple[str, ...]
    status: str
    weight: int
    checks: tuple[CheckRow, ...]
    maintenance: str | None
    silent: bool


@dataclass(frozen=True)
class GuardView:
    holding: bool
    failing: int
    checked: int
    fraction: float


@dataclass(frozen=True)
class RegistryView:
    service: str
    names: int
    instances: int
    rows: tuple[InstanceRow, ...]  # the unwell first, at most PAGE_INSTANCES
    silent: int
    in_maintenance: int
    by_status: dict[str, int]
    guard: GuardView | None
    changes: tuple[Change, ...]  # newest first
    evictions: int


@dataclass(frozen=True)
class TargetRow:
    name: str
    connected: bool
    memory_bytes: int
    disk_bytes: int
    dropped: int


@dataclass(frozen=True)
class CollectorView:
    service: str
    rate: float | None  # messages written per second
    series: tuple[float, ...]  # messages/s per sample interval, oldest first
    written: int
    write_errors: int
    targets: tuple[TargetRow, ...]


@dataclass(frozen=True)
class StatusView:
    at: float
    status: str
    uptime: float | None
    version: str
    workers: int
    workers_running: int | None
    sample_seconds: float
    services: tuple[ServiceRow, ...]
    registries: tuple[RegistryView, ...]
    collectors: tuple[CollectorView, ...]


def _instance_row(instance: Instance) -> InstanceRow:
    checks = tuple(
        CheckRow(
            check.name or check.check_id,
            check.kind,
            check.status,
            check.output[:OUTPUT_SHOWN],
        )
        for check in instance.checks
    )
    return InstanceRow(
        name=instance.name,
        instance_id=instance.id,
        address=host_port(instance.host, instance.port),
        tags=instance.tags,
        status=instance.status,
        weight=instance.weight,
        checks=checks,
        maintenance=instance.maintenance,
        silent=any(c.kind == LOGS and c.status != PASSING for c in instance.checks),
    )


def registry_view(name: str, server: NameServer, guard: EvictionGuard | None) -> RegistryView:
    instances = server.registry.instances()
    by_status = {PASSING: 0, "warning": 0, CRITICAL: 0}
    silent = in_maintenance = 0
    for instance in instances:
        status = instance.status
        by_status[status] = by_status.get(status, 0) + 1
        in_maintenance += instance.maintenance is not None
        silent += any(c.kind == LOGS and c.status != PASSING for c in instance.checks)
    shown = sorted(instances, key=lambda i: (-SEVERITY[i.status], i.name, i.id))[:PAGE_INSTANCES]
    return RegistryView(
        service=name,
        names=len(server.registry.names()),
        instances=len(instances),
        rows=tuple(_instance_row(instance) for instance in shown),
        silent=silent,
        in_maintenance=in_maintenance,
        by_status=by_status,
        guard=(
            GuardView(guard.holding, guard.failing(), guard.checked(), guard.fraction)
            if guard is not None
            else None
        ),
        changes=tuple(server.recent),
        evictions=server.evictions,
    )


def collector_view(name: str, samples: Samples, history: StatusHistory) -> CollectorView:
    by_metric = samples.get(name, {})
    targets: dict[str, dict[str, float]] = {}
    for metric in ("forward_connected", "forward_queue_bytes", "forward_dropped"):
        for labels, value in by_metric.get(metric, {}).items():
            target = str(labels[0])
            place = str(labels[1]) if len(labels) > 1 else ""
            entry = targets.setdefault(target, {})
            key = f"{metric}:{place}" if place else metric
            entry[key] = entry.get(key, 0) + value
    return CollectorView(
        service=name,
        rate=history.rate(name, "records_written"),
        series=tuple(history.rates(name, "records_written")),
        written=int(total(samples, name, "records_written")),
        write_errors=int(total(samples, name, "write_errors")),
        targets=tuple(
            TargetRow(
                name=target,
                connected=bool(entry.get("forward_connected", 0)),
                memory_bytes=int(entry.get("forward_queue_bytes:memory", 0)),
                disk_bytes=int(entry.get("forward_queue_bytes:disk", 0)),
                dropped=int(entry.get("forward_dropped", 0)),
            )
            for target, entry in sorted(targets.items())
        ),
    )


def _listeners(root: SuiteService) -> dict[str, list[str]]:
    """Each service's listeners as configured, with the address bound (as its log line says)."""
    found: dict[str, list[str]] = {}
    for name, part in root.parts():
        if isinstance(part, ListenerService):
            port = part.port
            bound = (
                "not listening"
                if port is None
                else describe_peer(cast(PeerAddress, port.getHost()))
            )
            found.setdefault(name, []).append(f"{part.listener} ({bound})")
    return found


def _found(parts: Iterable[tuple[str, object]], kind: type) -> Iterator[tuple[str, Any]]:
    for name, part in parts:
        if isinstance(part, kind):
            yield name, part


class StatusSource:
    """The view of ROOT now (L{view}), and a cheap fingerprint of what it shows (L{digest})."""

    def __init__(self, root: SuiteService, history: StatusHistory, workers: int = 1) -> None:
        self.root = root
        self.history = history
        self.workers = workers
        self.started_at: float | None = None  # set when the page's service starts: the uptime

    def name_servers(self) -> list[tuple[str, NameServer]]:
        return list(_found(list(self.root.parts()), NameServer))

    def digest(self) -> tuple:
        """
        Changes whenever the page would: a registry change, a new sample
        (rates), a service's health.  Costs a walk of the tree, not a render.
        """
        parts = list(self.root.parts())
        report = health_report(parts, bool(self.root.running))
        return (
            self.history.generation,
            report["status"],
            tuple(sorted((name, entry["status"]) for name, entry in report["services"].items())),
            tuple(
                (server.registry.index, server.recent.count)
                for _, server in _found(parts, NameServer)
            ),
            tuple(guard.holding for _, guard in _found(parts, EvictionGuard)),
        )

    def view(self) -> StatusView:
        root = self.root
        parts = list(root.parts())
        report = health_report(parts, bool(root.running))
        samples = metric_totals(parts)
        listeners = _listeners(root)
        guards = dict(_found(parts, EvictionGuard))
        services = tuple(
            ServiceRow(
                name=name,
                status=entry["status"],
                problems=tuple(entry.get("problems", ())),
                listeners=tuple(listeners.get(name, ())),
                connections=int(total(samples, name, "connections_open")),
                rate=self.history.rate(name, "requests"),
            )
            for name, entry in report["services"].items()
        )
        registries = tuple(
            registry_view(name, server, guards.get(name))
            for name, server in _found(parts, NameServer)
        )
        collectors = tuple(
            collector_view(name, samples, self.history)
            for name in report["services"]
            if name == COLLECTOR
        )
        now = self.history.clock.seconds()
        started = self.started_at
        running = samples.get("workers", {}).get("workers_running")
        return StatusView(
            at=now,
            status=report["status"],
            uptime=None if started is None else max(0.0, now - started),
            version=describe_versions(),
            workers=self.workers,
            workers_running=None if running is None else int(sum(running.values())),
            sample_seconds=self.history.every,
            services=services,
            registries=registries,
            collectors=collectors,
        )


ViewMaker = Callable[[], StatusView]
