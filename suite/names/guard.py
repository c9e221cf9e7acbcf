"""
The eviction guard (Eureka's self-preservation, Nacos' protect threshold):
when the name server's own network fails (a switch, a firewall rule, a
saturated link), every health check fails at once, and a checker that
believed them would evict or turn critical every instance of the registry,
leaving clients with nothing where they had working services.  So when
more than `eviction_guard` of all checked instances (and at least
MIN_FAILING) have failed a check within one interval, the checker trusts
itself less than the instances: nothing is evicted or turned critical
until the fraction falls back.

A failure counts for one interval: `ping_interval`, or the check's own
interval when longer (until the check has had its next chance to pass);
a check that passes stops counting at once.  The checked instances are
those pinged (AMP registrations) and those with TCP or HTTP checks: a TTL
check's expiry is the instance's silence, not the network's, and is never
held back.
"""

import heapq
from collections.abc import Hashable, Iterator
from itertools import count

from twisted.application import service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from suite.foundation.health import DEGRADED
from suite.foundation.interfaces import IHealthSource, IMetricSource
from suite.names.registry import Registry

log = Logger()

MIN_FAILING = 10  # fewer failing instances never hold evictions back, whatever the fraction
RECOUNTS = 100  # at most this many recounts of the checked instances per interval
NETWORK_KINDS = ("tcp", "http")  # checks whose failure may be the name server's own network


@implementer(IHealthSource, IMetricSource)
class EvictionGuard(service.Service):
    """
    Counts the failed checks of REGISTRY's instances reported to it
    (L{failed}, L{passed}) over the last WINDOW seconds (`ping_interval`)
    and holds (`holding`) while more than FRACTION of the checked instances,
    and at least MIN_FAILING, fail.  FRACTION 0: never holds.  A probe is
    whatever identifies one check of one instance (hashable).
    """

    def __init__(
        self, registry: Registry, fraction: float, window: float, clock: IReactorTime
    ) -> None:
        self.registry = registry
        self.fraction = fraction
        self.window = window
        self.clock = clock
        self.holding = False
        self._failures: dict[Hashable, tuple[str, float]] = {}  # probe -> (instance ID, until)
        self._expiries: list[tuple[float, int, Hashable]] = []  # (until, order, probe), a heap
        self._order = count()
        self._failing: dict[str, int] = {}  # instance ID -> its probes failing now
        self._checked = 0
        self._counted_at: float | None = None  # when the checked instances were last counted
        self._recount = True  # the registry changed since
        self._watch = LoopingCall(self._evaluate)  # while holding: the fraction falls with time
        self._watch.clock = clock
        registry.on_change(self._registry_changed)

    def _registry_changed(self, name: str) -> None:
        self._recount = True

    def failed(self, probe: Hashable, instance_id: str, lasts: float = 0.0) -> bool:
        """
        PROBE (a check of the instance INSTANCE_ID) failed now; it counts for
        the window, or LASTS seconds if longer.  Returns whether the guard
        holds: the failure must then not evict or turn anything critical.
        """
        if not self.fraction:
            return False
        until = self.clock.seconds() + max(self.window, lasts)
        if self._failures.get(probe) is None:
            self._failing[instance_id] = self._failing.get(instance_id, 0) + 1
        self._failures[probe] = (instance_id, until)
        heapq.heappush(self._expiries, (until, next(self._order), probe))
        if len(self._expiries) > 2 * len(self._failures) + 64:  # outdated entries: rebuild
            self._expiries = [
                (until, next(self._order), probe) for probe, (_, until) in self._failures.items()
            ]
            heapq.heapify(self._expiries)
        self._evaluate()
        return self.holding

    def passed(self, probe: Hashable) -> None:
        """PROBE passed now: its instance no longer counts as failing by it."""
        if self._failures.get(probe) is not None:
            self._forget(probe)
            self._evaluate()

    def _forget(self, probe: Hashable) -> None:
        instance_id, _ = self._failures.pop(probe)
        remaining = self._failing[instance_id] - 1
        if remaining:
            self._failing[instance_id] = remaining
        else:
            del self._failing[instance_id]

    def _expire(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            until, _, probe = heapq.heappop(self._expiries)
            failure = self._failures.get(probe)
            if failure is not None and failure[1] == until:
                self._forget(probe)

    def checked(self) -> int:
        """
        How many instances are checked over the network: pinged ones and
        those with a TCP or HTTP check.  Counted again after a change, at
        most RECOUNTS times a window however many changes come (a count
        walks the whole registry).
        """
        now = self.clock.seconds()
        if self._recount and (
            self._counted_at is None or now - self._counted_at >= self.window / RECOUNTS
        ):
            self._recount, self._counted_at = False, now
            self._checked = sum(
                1
                for instance in self.registry.instances()
                if instance.pinged or any(c.kind in NETWORK_KINDS for c in instance.checks)
            )
        return self._checked

    def failing(self) -> int:
        """How many instances have a check failing within the window."""
        self._expire(self.clock.seconds())
        return len(self._failing)

    def _evaluate(self) -> None:
        failing, checked = self.failing(), self.checked()
        hold = failing >= MIN_FAILING and failing > self.fraction * checked
        if hold == self.holding:
            return
        self.holding = hold
        if hold:
            log.warn(
                "names: eviction guard on: {failing} of {checked} checked instances failed "
                "their health checks within {window:g} s, more than eviction_guard "
                "({fraction:g}): nothing is evicted or turned critical until fewer fail",
                failing=failing,
                checked=checked,
                window=self.window,
                fraction=self.fraction,
                names_event="eviction_guard",
            )
            self._watch.start(self.window / RECOUNTS, now=False)
        else:
            log.info(
                "names: eviction guard off: {failing} of {checked} checked instances failing; "
                "evictions and critical statuses resume",
                failing=failing,
                checked=checked,
                names_event="eviction_guard",
            )
            self._watch.stop()

    def health_problems(self) -> list[tuple[str, str]]:
        if not self.holding:
            return []
        return [
            (
                DEGRADED,
                f"eviction guard: {len(self._failing)} of {self._checked} checked instances "
                "failing; nothing is evicted or turned critical until fewer fail",
            )
        ]

    def metric_samples(self) -> Iterator[tuple[str, tuple, object]]:
        yield "eviction_guard", (), int(self.holding)

    def stopService(self) -> None:
        service.Service.stopService(self)
        if self._watch.running:
            self._watch.stop()
