"""
The runner of the checks instances declare (Consul's): each TCP and HTTP
check runs every `interval` (0: every `ping_interval`) at a fixed offset
within it that a hash of its ID picks, so ten thousand checks make a
steady trickle rather than one burst per interval; at most
`check_concurrency` run at once, and one check never twice at once.  The
pings of AMP registrations have a limit of their own (`ping_concurrency`):
checks are declared by whoever registers, and however slow theirs, the
pings still run.  A check takes at most its interval and MAX_TIMEOUT,
whatever its `timeout` (which may be ten years): it is run again at its
next interval anyway, and a slot it held for longer would be one fewer
for every other check.  A TTL check is the other way round: passed from
outside (the HTTP API), it turns critical with "TTL expired" once TTL
seconds went by without an update; the runner never passes one itself.
After a start (or a change of leader) the TTL of a check not updated
since counts from when the runner first saw it: a grace of one TTL.

A logs check is timed the same way, by what the collectors hear
(L{suite.names.silence}): once its `max_silence` went by without a message
from its app on its host (counted from when the runner first saw it if
none came since), it turns to its `silence_status` with "no message from
APP on HOST for N s"; a message while it is not passing turns it passing
at once, and messages while it passes write nothing.  A message known
from a report (a collector in another process) counts REPORT_GRACE
seconds longer.  The runner says which identities are watched: with etcd
only the leader's runner runs, and the other replicas drop what they hear.

Results change the registry through L{NameServer.change}: a check that
passes again with the same output writes nothing and raises no index, so
a steady registry costs no writes and wakes no blocking query.  A result
that cannot be kept (the store unavailable, an instance grown past its
size limit by the output) is logged the first time per registering
source, then counted in summaries: it comes again at every interval.  An
instance whose check has been critical for its `deregister_after`
(DeregisterCriticalServiceAfter) is deregistered, evicted as failed pings
evict.  While the eviction guard holds (L{suite.names.guard}), TCP and HTTP
failures turn nothing critical and deregister nothing, and the time a check
spends critical under the guard does not count towards its
`deregister_after`; TTL expiries and silent sources go on.  The runner
remembers when a check turned critical, not the store: after a start it
counts from when it first saw the check critical.

The schedule is a heap of wake-up times under one timer, so a run costs
O(log n) whatever the number of checks; a change to the registry is
picked up at most every `ping_interval / 100` seconds (a burst of ten
thousand registrations costs a hundred scans of the names they touched,
not ten thousand).
"""

import heapq
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from hashlib import blake2b
from itertools import count
from typing import TYPE_CHECKING

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.contracts.errors import Overloaded
from suite.contracts.names import Invalid, Unavailable
from suite.foundation.flood import FloodControl
from suite.foundation.interfaces import IRegistryMetrics
from suite.foundation.printable import printable
from suite.names.guard import EvictionGuard
from suite.names.health import SLOTS
from suite.names.probes import Outcome
from suite.names.registry import CRITICAL, PASSING, STATUSES, Check, Instance
from suite.names.server import NameServer
from suite.names.silence import Silence, Watched, heard_output, silent_output
from suite.names.store import StoreError

if TYPE_CHECKING:
    from suite.names.service import NamesSettings

log = Logger()

MIN_INTERVAL = 1.0  # seconds: a shorter interval or TTL is raised to this (Consul's minimum)
MAX_TIMEOUT = 300.0  # seconds a check may take, whatever its timeout (and at most its interval)
TTL_EXPIRED = "TTL expired"
WHY_LENGTH = 200  # characters of an output repeated in the audit of a status change

PASSIVE = ("ttl", "logs")  # kinds told from outside: never probed, timed by a deadline
Probe = Callable[[Check, float], defer.Deferred[Outcome]]  # a TCP or HTTP check, run once
KEPT_FAILURES = (Invalid, Unavailable, StoreError, Overloaded)  # why a result may not be kept
Key = tuple[str, str]  # (instance ID, check ID): what the runner tells checks by


def phase_of(key: Key) -> float:
    """Where in its interval the check KEY runs (0 to 1): a hash of its IDs."""
    digest = blake2b("\0".join(key).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") / 2**32


@dataclass
class _Entry:
    """What the runner remembers of one check between runs."""

    name: str  # of its instance
    spec: tuple[str, str, float]  # kind, target, interval or TTL: a change restarts its schedule
    phase: float
    first_seen: float
    next_run: float  # TCP and HTTP: its next run; TTL: when it expires, or is looked at again
    deregister_after: float = 0.0
    critical_since: float | None = None
    wake: float | None = None  # the time it is on the heap for
    heard: Watched | None = None  # a logs check: what it listens for, and when last heard


@implementer(IRegistryMetrics)  # its silence samples look at every instance
class CheckRunner(service.Service):
    """
    Runs the checks of SERVER's registry with PROBE (see
    L{suite.names.probes.Prober.probe}) on CLOCK, under SETTINGS'
    ping_interval and check_concurrency; GUARD, if any, is told every TCP
    and HTTP result and holds failures back while it holds.  SILENCE (a
    new one if none) is where the logs checks listen: the runner says what
    it watches while it runs.  Stopping cancels the checks in flight and
    waits for the writes of results already in.
    """

    def __init__(
        self,
        server: NameServer,
        settings: "NamesSettings",
        clock: IReactorTime,
        probe: Probe,
        guard: EvictionGuard | None = None,
        silence: Silence | None = None,
    ) -> None:
        self.server = server
        self.registry = server.registry
        self.settings = settings
        self.clock = clock
        self.probe = probe
        self.guard = guard
        self.limit = defer.DeferredSemaphore(settings.check_concurrency)
        self.warnings = FloodControl(clock, "names")
        self.silence = Silence(clock) if silence is None else silence
        self.silence.woken = self._heard_again
        self.results = {
            (kind, status): 0 for kind in ("tcp", "http", "ttl", "logs") for status in STATUSES
        }
        self._entries: dict[Key, _Entry] = {}
        self._by_name: dict[str, set[Key]] = {}
        self._heap: list[tuple[float, int, Key]] = []
        self._order = count()
        self._timer: IDelayedCall | None = None
        self._dirty: set[str] = set()
        self._sync_call: IDelayedCall | None = None
        self._synced_at = -math.inf
        self._probes: dict[Key, defer.Deferred[Outcome]] = {}  # waiting or running
        self._pending: set[defer.Deferred[None]] = set()  # probes and writes, until done
        self._evicting: set[str] = set()  # instance IDs being deregistered
        self.registry.on_change(self._changed)

    def metric_samples(self) -> Iterator[tuple[str, tuple, object]]:
        for (kind, status), number in list(self.results.items()):
            if number:
                yield "checks", (kind, status), number
        yield from self._silence_samples()

    def _silence_samples(self) -> Iterator[tuple[str, tuple, object]]:
        """
        Instances with a logs check not passing (as the registry says: the
        same on every replica), and for each service name the seconds since
        its longest-silent logs check last heard its source (this runner's:
        none where it does not run).  Read from another thread: copies walked.
        """
        silent = sum(
            any(check.kind == "logs" and check.status != PASSING for check in instance.checks)
            for instance in self.registry.instances()
        )
        yield "silent_instances", (), silent
        now = self.now()
        longest: dict[str, float] = {}
        for entry in list(self._entries.values()):
            heard = entry.heard
            if heard is None:
                continue
            last = heard.last
            seconds = max(0.0, now - (entry.first_seen if last is None else last))
            if seconds >= longest.get(entry.name, 0.0):
                longest[entry.name] = seconds
        for name, seconds in longest.items():
            yield "log_silence_seconds", (name,), seconds

    def startService(self) -> None:
        service.Service.startService(self)
        self._dirty.update(self.registry.names())
        self._sync()

    def stopService(self) -> defer.Deferred[None]:
        service.Service.stopService(self)
        for call in (self._timer, self._sync_call):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._sync_call = None
        self._entries.clear()
        self.silence.clear()
        self._by_name.clear()
        self._heap.clear()
        self._dirty.clear()
        self._synced_at = -math.inf
        for probe in list(self._probes.values()):
            probe.cancel()
        pending = defer.DeferredList(list(self._pending), consumeErrors=True)
        return pending.addCallback(lambda _: self.warnings.flush())  # their failures included

    # What the registry holds, followed.

    def _changed(self, name: str) -> None:
        """The registry changed NAME's instances: look at them within a tick."""
        if not self.running:
            return
        self._dirty.add(name)
        if self._sync_call is None:
            delay = max(0.0, self._synced_at + self.settings.ping_interval / SLOTS - self.now())
            self._sync_call = self.clock.callLater(delay, self._sync)

    def _sync(self) -> None:
        self._sync_call = None
        self._synced_at = now = self.now()
        names, self._dirty = self._dirty, set()
        try:
            for name in names:
                self._sync_name(name, now)
        except Exception:
            log.failure("names: following the registry's checks failed")
        self._arm()

    def _sync_name(self, name: str, now: float) -> None:
        seen: set[Key] = set()
        for instance in self.registry.instances_of(name):
            for check in instance.checks:
                key = (instance.id, check.check_id)
                seen.add(key)
                self._track(name, key, check, now, instance.host)
        for key in self._by_name.pop(name, set()) - seen:
            entry = self._entries.get(key)
            if entry is not None and entry.name == name:  # not moved to another name meanwhile
                del self._entries[key]
                self.silence.unwatch(key)
        if seen:
            self._by_name[name] = seen

    def _interval(self, check: Check) -> float:
        if check.kind == "ttl":
            return max(check.ttl, MIN_INTERVAL)
        if check.kind == "logs":
            return max(check.max_silence, MIN_INTERVAL)
        if not check.interval:
            return self.settings.ping_interval
        return max(check.interval, MIN_INTERVAL)

    def timeout(self, check: Check) -> float:
        """How long a run of CHECK may take: its timeout, at most its interval and MAX_TIMEOUT."""
        return min(check.timeout, self._interval(check), MAX_TIMEOUT)

    def _track(self, name: str, key: Key, check: Check, now: float, host: str) -> None:
        """Follow CHECK (of KEY, an instance of NAME on HOST) as the registry has it now."""
        spec = (check.kind, check.target, self._interval(check))
        entry = self._entries.get(key)
        if entry is None or entry.spec != spec:
            phase = phase_of(key)
            first_seen = now if entry is None else entry.first_seen
            entry = self._entries[key] = _Entry(name, spec, phase, first_seen, now)
            if check.kind not in PASSIVE:
                entry.next_run = self._after(entry, now)
        entry.name = name
        entry.deregister_after = check.deregister_after
        self._note_status(entry, check, now)
        if check.kind == "logs":
            entry.heard = self.silence.watch(key, check.app, check.target or host)
            if check.status == PASSING:
                entry.heard.passed(key)
            else:  # a message from now on turns it passing; one heard already, now
                entry.heard.wait(key)
                self._pass_if_heard(key, now)
        else:  # perhaps a logs check before
            entry.heard = None
            self.silence.unwatch(key)
        self._schedule(key, entry, now)

    @staticmethod
    def _note_status(entry: _Entry, check: Check, now: float) -> None:
        if check.status != CRITICAL:
            entry.critical_since = None
        elif entry.critical_since is None:
            entry.critical_since = now

    # When each check is due.

    def now(self) -> float:
        return self.clock.seconds()

    @staticmethod
    def _after(entry: _Entry, now: float) -> float:
        """The first run of ENTRY after NOW: at its phase of every interval."""
        interval = entry.spec[2]
        offset = entry.phase * interval
        due = offset + (math.floor((now - offset) / interval) + 1) * interval
        return due if due > now else due + interval

    def _deadline(self, key: Key, entry: _Entry) -> float:
        """
        When a TTL check expires, or a logs check turns silent: its TTL (or
        max_silence) after its last update (or message), or after the runner
        first saw it if none came since.
        """
        if entry.spec[0] == "ttl":
            since = self.registry.last_heartbeat(key[1])
        else:
            since = None if entry.heard is None else entry.heard.since
        return (entry.first_seen if since is None else since) + entry.spec[2]

    def _schedule(self, key: Key, entry: _Entry, now: float) -> None:
        """Put ENTRY on the heap for its next due time, if sooner than it is already."""
        if entry.spec[0] in PASSIVE:
            deadline = self._deadline(key, entry)
            entry.next_run = deadline if deadline > now else now + entry.spec[2]
        wake = entry.next_run
        if entry.critical_since is not None and entry.deregister_after > 0:
            deregister = entry.critical_since + entry.deregister_after
            if deregister > now:  # else due already, and held back: looked at each run
                wake = min(wake, deregister)
        if entry.wake is not None and entry.wake <= wake:
            return
        entry.wake = wake
        heapq.heappush(self._heap, (wake, next(self._order), key))
        if len(self._heap) > 2 * len(self._entries) + 64:  # outdated entries: rebuild
            self._heap = [
                (e.wake, next(self._order), k)
                for k, e in self._entries.items()
                if e.wake is not None
            ]
            heapq.heapify(self._heap)

    def _arm(self) -> None:
        """One timer, for the soonest wake-up on the heap."""
        if not self.running or not self._heap:
            return
        soonest = self._heap[0][0]
        if self._timer is not None and self._timer.active():
            if self._timer.getTime() <= soonest:
                return
            self._timer.cancel()
        self._timer = self.clock.callLater(max(0.0, soonest - self.now()), self._wake)

    def _wake(self) -> None:
        self._timer = None
        now = self.now()
        while self._heap and self._heap[0][0] <= now:
            wake, _, key = heapq.heappop(self._heap)
            entry = self._entries.get(key)
            if entry is None or entry.wake != wake:
                continue  # gone, or due at another time since
            entry.wake = None
            try:
                self._due(key, entry, now)
            except Exception:
                log.failure("names: running check {check} failed", check=printable(key[1]))
        self._arm()

    def _due(self, key: Key, entry: _Entry, now: float) -> None:
        instance = self.registry.by_id(key[0])
        check = None if instance is None else instance.check(key[1])
        if instance is None or check is None:
            return  # gone: the registry's change drops the entry
        if check.kind not in PASSIVE and self.guard is not None and self.guard.holding:
            entry.critical_since = None  # time under the guard counts towards no deregistration
        self._note_status(entry, check, now)
        # Being deregistered (or now): nothing more to run, unless the store refuses.
        if instance.id not in self._evicting and not self._deregister_due(
            entry, instance, check, now
        ):
            if check.kind in PASSIVE:
                if now >= self._deadline(key, entry):
                    self._expired(entry, instance, check, now)
            elif now >= entry.next_run and key not in self._probes:  # never two runs at once
                self._start(key, instance, check)
        if check.kind not in PASSIVE and entry.next_run <= now:
            entry.next_run = self._after(entry, now)
        self._schedule(key, entry, now)

    # Running a check, and what comes of it.

    def _start(self, key: Key, instance: Instance, check: Check) -> None:
        probe = self.limit.run(self.probe, check, self.timeout(check))
        self._probes[key] = probe
        done = probe.addBoth(self._probed, key, instance.id, check)
        self._track_pending(done)

    def _track_pending(self, d: defer.Deferred) -> None:
        """Wait for D when stopping; a failure it ends with (a bug) is logged."""
        self._pending.add(d)

        def settled(result: object) -> None:
            self._pending.discard(d)
            if isinstance(result, Failure):
                log.failure("names: a health check's change failed", result)

        d.addBoth(settled)

    def _probed(
        self, outcome: Outcome | Failure, key: Key, instance_id: str, ran: Check
    ) -> defer.Deferred[bool] | None:
        del self._probes[key]  # from here on, stopping waits rather than cancels
        if not self.running:
            return None  # cancelled by stopService, or finished after it: not applied
        if isinstance(outcome, Failure):
            log.failure("names: check {check} failed", outcome, check=printable(key[1]))
            return None
        status, output = outcome
        self.results[(ran.kind, status)] += 1
        instance = self.registry.by_id(instance_id)
        check = None if instance is None else instance.check(key[1])
        if (
            instance is None
            or check is None
            or (check.kind, check.target) != (ran.kind, ran.target)
        ):
            return None  # deregistered or redeclared while it ran
        if self.guard is not None:
            if status != CRITICAL:
                self.guard.passed(key)
            elif self.guard.failed(key, instance_id, self._interval(check)):
                return None  # the guard holds: not turned critical
        return self._set(instance, check, status, output)

    def _expired(self, entry: _Entry, instance: Instance, check: Check, now: float) -> None:
        """A TTL check's TTL ran out (critical), or a logs check's max_silence (silent)."""
        if check.kind == "ttl":
            if check.status != CRITICAL or check.output != TTL_EXPIRED:
                self.results[("ttl", CRITICAL)] += 1
                self._track_pending(self._set(instance, check, CRITICAL, TTL_EXPIRED))
            return
        heard = entry.heard
        if heard is None or check.status == check.silence_status:
            return  # silent already: its output keeps the silence it began with
        last = heard.last
        seconds = now - (entry.first_seen if last is None else last)
        output = silent_output(check.app, check.target or instance.host, seconds)
        self.results[("logs", check.silence_status)] += 1
        self._track_pending(self._set(instance, check, check.silence_status, output))

    def _heard_again(self, woken: list[Watched]) -> None:
        """Sources of logs checks not passing were heard: each of those checks passes now."""
        now = self.now()
        for watched in woken:
            for key in list(watched.waiting):
                self._pass_if_heard(key, now)

    def _pass_if_heard(self, key: Key, now: float) -> None:
        """The logs check KEY passes if its source was heard within its max_silence."""
        entry = self._entries.get(key)
        instance = self.registry.by_id(key[0])
        check = None if instance is None else instance.check(key[1])
        if entry is None or entry.heard is None or instance is None or check is None:
            return
        watched = entry.heard
        if check.kind != "logs" or check.status == PASSING:
            watched.passed(key)
            return
        if watched.last is None or now >= self._deadline(key, entry):
            return  # not heard since watched, or a report of a message too old
        watched.passed(key)  # messages while the change is written: nothing more
        self.results[("logs", PASSING)] += 1
        written = self._set(
            instance, check, PASSING, heard_output(check.app, check.target or instance.host)
        )
        self._track_pending(written.addBoth(self._wait_again, key, watched))
        self._schedule(key, entry, now)  # a report may have moved its deadline nearer

    def _wait_again(self, result: object, key: Key, watched: Watched) -> None:
        """
        After a logs check's change to passing: still not passing (the change
        was not kept), it waits for the next message again.
        """
        entry = self._entries.get(key)
        instance = self.registry.by_id(key[0])
        check = None if instance is None else instance.check(key[1])
        if entry is not None and entry.heard is watched and check is not None:
            if check.kind == "logs" and check.status != PASSING:
                watched.wait(key)

    def _set(
        self, instance: Instance, check: Check, status: str, output: str
    ) -> defer.Deferred[bool]:
        """CHECK of INSTANCE is now STATUS with OUTPUT, if that is a change."""
        if check.status == status and check.output == output:
            return defer.succeed(False)
        check_id = check.check_id

        ran = (check.kind, check.target)

        def mutate(changed: Instance) -> None:
            target = changed.check(check_id)
            # A result of what ran: not of a check redeclared while its write waited.
            if target is not None and (target.kind, target.target) == ran:
                target.status, target.output = status, output

        first_line = output.split("\n", 1)[0][:WHY_LENGTH]
        why = f"{check.kind} check {check_id}: {first_line}"
        d = defer.maybeDeferred(self.server.change, instance, mutate, why)
        return d.addErrback(self._not_written, instance, check_id)

    def _not_written(self, failure: Failure, instance: Instance, check_id: str) -> bool:
        """
        The change of CHECK_ID's result failed: logged once per registering
        source, then counted (it fails again at every interval); the
        traceback too when the failure is none of the expected ones (a bug).
        """
        fields = {} if failure.check(*KEPT_FAILURES) else {"log_failure": failure}
        self.warnings.warn(
            "unkept check results",
            instance.source,
            "names: the result of check {check} of {id} ({name}) was not kept: {error}",
            check=printable(check_id),
            id=printable(instance.id),
            name=instance.name,
            error=printable(failure.getErrorMessage()),
            **fields,
        )
        return False

    def _deregister_due(self, entry: _Entry, instance: Instance, check: Check, now: float) -> bool:
        """Deregister INSTANCE if CHECK has been critical its deregister_after; whether it is."""
        since = entry.critical_since
        after = check.deregister_after
        if since is None or after <= 0 or now < since + after:
            return False
        reason = (
            f"check {check.check_id} critical for {now - since:g} s "
            f"(deregister_critical_after {after:g} s)"
        )
        self._evicting.add(instance.id)
        evicted = defer.maybeDeferred(self.server.evict, instance, reason, pings=False)
        self._track_pending(evicted.addBoth(self._evicted, instance.id))
        return True

    def _evicted(self, result: object, instance_id: str) -> object:
        self._evicting.discard(instance_id)
        return result
