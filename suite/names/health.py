"""
Health checks and eviction: each instance is checked once every
`ping_interval` with a TCP connection, at a fixed offset within the
interval derived from its identity, so ten thousand instances make a steady
trickle of connects rather than one burst per round (the thundering herd
peers' users report).  At most `ping_concurrency` checks are in flight; an
instance is evicted after `max_failures` failures in a row, unless the
eviction guard holds (L{suite.names.guard}: too many failing at once
suggests the name server's own network).  Checks run on the reactor beside
lookups and never block them.

A check connects to the addresses the instance's host stood for when it
was registered (L{suite.names.allowed}), in turn until one accepts: never
to a host name, which could since point anywhere.  Failed checks are
logged the first time per registering source, then counted in summaries:
ten thousand dead instances cost a few lines per interval, not ten
thousand.
"""

from collections.abc import Callable, Iterator
from hashlib import blake2b
from typing import TYPE_CHECKING, cast

from twisted.application import service
from twisted.internet import defer, error
from twisted.internet.abstract import isIPAddress
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IProtocol, IReactorTCP, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.foundation.flood import FloodControl
from suite.foundation.interfaces import IMetricSource
from suite.names.guard import EvictionGuard
from suite.names.registry import Instance, Registry
from suite.net.addresses import host_port

if TYPE_CHECKING:
    from suite.names.service import NamesSettings

log = Logger()

SLOTS = 100  # an interval is cut into this many slots; each instance belongs to one

Ping = Callable[[str, int], defer.Deferred[None]]  # (address, port) -> fires once connected
Evict = Callable[[Instance, str], defer.Deferred[None]]  # (instance, reason) -> evicted


class IConnectingClock(IReactorTime, IReactorTCP):
    """
    What L{tcp_ping} asks of its reactor: a clock that makes TCP connections.
    No reactor declares it: it is the type of a reactor that is both.
    """


class _QuietProbes(Factory):
    """The pings' factory: Twisted logs every start and stop of a noisy one, twice per ping."""

    noisy = False
    protocol = Protocol


def _hang_up(protocol: IProtocol) -> None:
    """A check connected: close its connection (the protocol is a _QuietProbes' Protocol)."""
    transport = cast(Protocol, protocol).transport
    if transport is not None:  # always, once connected
        transport.loseConnection()


def tcp_ping(reactor: IConnectingClock, timeout: float) -> Ping:
    """ping(address, port) -> Deferred that fires once a TCP connection opens (then closes it)."""

    def ping(address: str, port: int) -> defer.Deferred[None]:
        endpoint_type = TCP4ClientEndpoint if isIPAddress(address) else TCP6ClientEndpoint
        endpoint = endpoint_type(reactor, address, port, timeout=timeout)
        connected = endpoint.connect(_QuietProbes())
        connected.addTimeout(timeout, reactor)
        return connected.addCallback(_hang_up)

    return ping


def failure_reason(failure: Failure, timeout: float) -> str:
    if failure.check(error.ConnectionRefusedError):
        return "connection refused"
    if failure.check(defer.TimeoutError, defer.CancelledError, error.TimeoutError):
        return f"no connection within {timeout:g} s"
    if failure.check(error.DNSLookupError):
        return "host name not found"
    return failure.getErrorMessage()


def slot_of(instance: Instance) -> int:
    """
    The slot (0 to SLOTS - 1) of the interval in which INSTANCE is checked:
    a hash of its key.
    """
    digest = blake2b(instance.key.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") * SLOTS >> 32


@implementer(IMetricSource)
class HealthChecker(service.Service):
    """
    Checks the instances of REGISTRY with the ping_* and max_failures of
    SETTINGS; ON_EVICT(instance, reason) evicts (its Deferred is waited
    for).  Every `ping_interval / SLOTS` one slot's instances are checked:
    slot S at S + 1 ticks after the start, and again each interval.  An
    instance whose previous check is still running (queued behind
    `ping_concurrency`, or connecting) is not checked twice.  A tick that
    fails (a bug in a check or in an eviction) is logged and the next runs
    all the same; stopping waits for the checks in flight.  GUARD, if any,
    hears every result and holds evictions back while it holds.  The
    declared checks (L{suite.names.checks}) have a limit of their own: they
    never hold a ping back.
    """

    def __init__(
        self,
        registry: Registry,
        settings: "NamesSettings",
        clock: IReactorTime,
        ping: Ping,
        on_evict: Evict,
        guard: EvictionGuard | None = None,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.ping = ping
        self.on_evict = on_evict
        self.guard = guard
        self._slots: list[list[Instance]] | None = None  # instances by slot, rebuilt on change
        self._slot_by_key: dict[str, int] = {}
        self._next_slot = 0
        self._in_flight: dict[str, defer.Deferred[None]] = {}
        self.limit = defer.DeferredSemaphore(settings.ping_concurrency)
        self._ticks = LoopingCall.withCount(self._tick)
        self._ticks.clock = clock
        self.pings = {"ok": 0, "failed": 0}
        self.warnings = FloodControl(clock, "names")
        registry.on_change(self._forget_slots)

    def metric_samples(self) -> Iterator[tuple[str, tuple, object]]:
        for result, count in list(self.pings.items()):
            yield "pings", (result,), count

    def _forget_slots(self, name: str | None = None) -> None:
        self._slots = None

    def startService(self) -> None:
        service.Service.startService(self)
        self._ticks.start(self.settings.ping_interval / SLOTS, now=False)

    def stopService(self) -> defer.Deferred[None]:
        service.Service.stopService(self)
        if self._ticks.running:
            self._ticks.stop()
        checks = defer.DeferredList(list(self._in_flight.values()))
        return checks.addCallback(lambda _: self.warnings.flush())  # their failures included

    def _tick(self, count: int) -> None:
        """Check the slots due since the last tick (more than one when the reactor was late)."""
        try:
            slots = self._slots
            if slots is None:
                slots = self._slots = self._build_slots()
            for _ in range(min(count, SLOTS)):
                slot, self._next_slot = self._next_slot, (self._next_slot + 1) % SLOTS
                for instance in slots[slot]:  # an eviction may change the registry meanwhile
                    if instance.key not in self._in_flight and self.registry.holds_exactly(
                        instance
                    ):
                        self._start(instance)
        except Exception:
            log.failure("names: health checks failed")

    def _build_slots(self) -> list[list[Instance]]:
        """
        The instances by slot, after a change: at most once a tick, however
        many registrations came meanwhile; slots are remembered by key, so
        only new instances are hashed.
        """
        slots: list[list[Instance]] = [[] for _ in range(SLOTS)]
        known, self._slot_by_key = self._slot_by_key, {}
        for instance in self.registry.instances():
            if not instance.pinged:  # registered over HTTP: it has checks of its own
                continue
            key = instance.key
            slot = known.get(key)
            if slot is None:
                slot = slot_of(instance)
            self._slot_by_key[key] = slot
            slots[slot].append(instance)
        return slots

    def _start(self, instance: Instance) -> None:
        key = instance.key
        d = self._in_flight[key] = self.limit.run(self._check, instance)
        d.addBoth(self._finished, key)

    def _finished(self, _: object, key: str) -> None:
        del self._in_flight[key]

    async def _connect(self, instance: Instance) -> None:
        """Ping INSTANCE's addresses in turn until one answers; the last failure otherwise."""
        if not instance.addresses:
            raise error.DNSLookupError(f"{instance.host} has no address")
        for number, address in enumerate(instance.addresses, 1):
            try:
                return await self.ping(address, instance.port)
            except Exception:
                if number == len(instance.addresses):
                    raise

    def _check(self, instance: Instance) -> defer.Deferred[None]:
        d = defer.ensureDeferred(self._connect(instance))
        d.addCallbacks(lambda _: self._result(instance, None), lambda f: self._result(instance, f))
        d.addErrback(
            lambda failure: log.failure(
                "names: checking {name} {address} failed",
                failure,
                name=instance.name,
                address=host_port(instance.host, instance.port),
                host=instance.host,
                port=instance.port,
            )
        )
        return d

    def _result(self, instance: Instance, failure: Failure | None) -> defer.Deferred[None] | None:
        max_failures = self.settings.max_failures
        if failure is None:
            self.pings["ok"] += 1
            self.registry.ping_result(instance, True, max_failures)  # never evicts
            if self.guard is not None:
                self.guard.passed(instance.id)
            return None
        reason = failure_reason(failure, self.settings.ping_timeout)
        self.pings["failed"] += 1
        self.warnings.emit(
            LogLevel.info,
            "failed pings",
            instance.source,
            "names: ping {address} ({name}) failed {failures}/{max_failures}: {reason}",
            address=host_port(instance.host, instance.port),
            host=instance.host,
            port=instance.port,
            name=instance.name,
            failures=instance.failures + 1,
            max_failures=max_failures,
            reason=reason,
            names_event="ping_failed",
        )
        due = self.registry.ping_result(instance, False, max_failures)
        held = self.guard is not None and self.guard.failed(instance.id, instance.id)
        if due and not held:
            return self.on_evict(instance, reason)
        return None
