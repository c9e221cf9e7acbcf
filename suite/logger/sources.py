"""
The collector's limits per source: where senders may come from
(`allowed_sources`) and how fast one source address may send
(`rate_per_source`, `burst_per_source`: a token bucket per address).

One L{SourceLimits} serves every listener of a logger (syslog over TCP,
TLS, UDP, and RELP) through its delivery, so an address draws on one
bucket whichever way and over however many connections its messages come.
A stream connection is never cut off for its rate: what it sent was read
already, so the bucket goes into debt and the connection is not read again
until the debt is paid off; TCP then holds the sender back and nothing is
lost.  A datagram beyond the rate has no one to hold back: it is dropped
and counted.

Unix-socket peers are local processes without an address: they are always
allowed and never limited (every one of them is the one source `unix`, so
a limit would throttle all of them together).
"""

import ipaddress
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from suite.foundation.flood import FloodControl
from suite.logger.relay_settings import parse_network
from suite.net.addresses import plain_host
from suite.net.admission import Admission

if TYPE_CHECKING:
    from suite.logger.service import LoggerSettings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
C = TypeVar("C", bound=Hashable)  # a connection
UNIX = "unix"  # the source of every Unix-socket peer (suite.net.addresses.source_of)
MAX_CACHED_ADDRESSES = 4096
PAID_OFF = 1e-9  # a debt this small is rounding: the timer was set for when it is paid


def _as_ipv4(network: Network) -> Network:
    """An IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) as the IPv4 network it means."""
    mapped = network.network_address.ipv4_mapped if network.version == 6 else None
    if mapped is None or network.prefixlen < 96:
        return network
    return ipaddress.IPv4Network((mapped, network.prefixlen - 96))


class NetworkSet:
    """
    Whether a source address is in one of NETWORKS.  Sources are the text
    a listener has (an address, maybe IPv4-mapped IPv6, maybe with a
    `%scope`); mapped addresses are taken as the IPv4 address they carry,
    and match IPv4 networks.  A text that is no address is in none.
    Senders repeat, so answers are kept, up to MAX_CACHED_ADDRESSES of them.
    """

    def __init__(self, networks: Iterable[Network]) -> None:
        self.networks = tuple(_as_ipv4(network) for network in networks)
        self._known: dict[str, bool] = {}

    def __contains__(self, source: str) -> bool:
        known = self._known.get(source)
        if known is None:
            if len(self._known) >= MAX_CACHED_ADDRESSES:
                self._known.clear()
            known = self._known[source] = self._find(source)
        return known

    def _find(self, source: str) -> bool:
        try:
            address = ipaddress.ip_address(source.partition("%")[0])
        except ValueError:
            return False
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)


class AllowedAdmission(Admission):
    """
    The connection limits, and before them `allowed_sources`: a connection
    from elsewhere is refused at connect and counted as `source_not_allowed`.
    """

    def __init__(self, max_connections: int, max_per_source: int, allowed: NetworkSet) -> None:
        super().__init__(max_connections, max_per_source)
        self.allowed = allowed

    def refusal_reason(self, source: str) -> str | None:
        if source != UNIX and source not in self.allowed:
            self.count_refusal("source_not_allowed")
            return f"{source} is not in allowed_sources"
        return super().refusal_reason(source)


class Bucket:
    """One address's tokens: TOKENS at STAMP (negative: a debt); OVER while it is over its rate."""

    __slots__ = ("tokens", "stamp", "over")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp
        self.over = False


class RateBuckets:
    """
    A token bucket per source address: RATE tokens a second, up to BURST.
    At most MAX_SOURCES addresses are remembered: when the table is full,
    the least recently seen one is forgotten only if forgetting it changes
    nothing (its bucket has refilled completely), as in
    L{suite.net.ratelimit.SourceRateLimiter}; otherwise a new address gets
    no bucket (its datagrams are dropped), so a flood from spoofed
    addresses can neither grow the table nor reset a real source's debt.
    A connection's messages were read already, so they are always charged:
    to its address's bucket, or while the table is full of debtors to the
    one `overflow` bucket that every such address shares (short
    connections from ever new addresses would otherwise grow the table
    without bound: `max_connections` bounds only those open at once).
    """

    def __init__(self, rate: float, burst: int, max_sources: int, clock: IReactorTime) -> None:
        self.rate = rate
        self.burst = float(burst or max(1, round(rate)))  # 0: one second's worth
        self.max_sources = max_sources
        self.clock = clock
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()
        self.overflow = Bucket(self.burst, clock.seconds())

    def __len__(self) -> int:
        return len(self._buckets)

    def bucket(self, source: str) -> Bucket | None:
        """SOURCE's bucket, refilled until now; None when there is no room for a new one."""
        now = self.clock.seconds()
        bucket = self._buckets.get(source)
        if bucket is None:
            if not self._make_room(now):
                return None
            bucket = self._buckets[source] = Bucket(self.burst, now)
            return bucket
        self._buckets.move_to_end(source)
        return self.refilled(bucket)

    def bucket_or_overflow(self, source: str) -> Bucket:
        """SOURCE's bucket, or when there is no room for it the shared `overflow` one."""
        return self.bucket(source) or self.refilled(self.overflow)

    def refilled(self, bucket: Bucket) -> Bucket:
        """BUCKET with the tokens of the time since it was last looked at."""
        now = self.clock.seconds()
        tokens = bucket.tokens + (now - bucket.stamp) * self.rate
        bucket.tokens = tokens if tokens < self.burst else self.burst
        bucket.stamp = now
        return bucket

    def _make_room(self, now: float) -> bool:
        buckets = self._buckets
        if len(buckets) < self.max_sources:
            return True
        oldest = next(iter(buckets.values()))
        if oldest.tokens + (now - oldest.stamp) * self.rate < self.burst:
            return False
        buckets.popitem(last=False)
        return True


class Pause:
    """
    A source's open connections that are not read until BUCKET (its own,
    or the shared overflow one) is out of debt, which TIMER is set for;
    each with the callable that stops and restarts its reading.
    """

    __slots__ = ("bucket", "timer", "connections")

    def __init__(self, bucket: Bucket, timer: IDelayedCall) -> None:
        self.bucket = bucket
        self.timer = timer
        self.connections: dict[Any, Callable[[Any], object]] = {}


class SourceLimits:
    """
    `allowed_sources` (ALLOWED networks; none: every source) and
    `rate_per_source` (RATE messages a second, BURST at once; RATE 0: no
    limit) of one logger, timed by CLOCK.  Going over the rate is logged
    through WARNINGS, once per source and then as a count every ten
    seconds (L{FloodControl}); an episode ends when the source's bucket is
    full again.
    """

    def __init__(
        self,
        allowed: Iterable[Network],
        rate: float,
        burst: int,
        max_sources: int,
        clock: IReactorTime,
        warnings: FloodControl,
    ) -> None:
        networks = tuple(allowed)
        self.allowed = NetworkSet(networks) if networks else None
        self.buckets = RateBuckets(rate, burst, max_sources, clock) if rate else None
        self.clock = clock
        self.warnings = warnings
        # By source: its open connections not read until its debt is paid off.
        self._pauses: dict[str, Pause] = {}

    @classmethod
    def of(cls, settings: "LoggerSettings", clock: IReactorTime) -> "SourceLimits | None":
        """The limits SETTINGS ask for; None when they ask for none (nothing is checked)."""
        if not (settings.allowed_sources or settings.rate_per_source):
            return None
        return cls(
            map(parse_network, settings.allowed_sources),
            settings.rate_per_source,
            settings.burst_per_source,
            settings.max_rate_sources,
            clock,
            FloodControl(clock, settings.section),
        )

    def admission(self, max_connections: int, max_per_source: int) -> Admission:
        """The connection limits of a stream factory, `allowed_sources` first."""
        if self.allowed is None:
            return Admission(max_connections, max_per_source)
        return AllowedAdmission(max_connections, max_per_source, self.allowed)

    def datagram_refusal(self, source: str) -> str | None:
        """
        Why a datagram from SOURCE (its host) is dropped: `source_not_allowed`
        or `rate_limited` (each logged, flood-controlled); None: it is taken.
        """
        if source.startswith("::ffff:"):  # a dual-stack port: the IPv4 source it is
            source = plain_host(source)
        if self.allowed is not None and source not in self.allowed:
            self.warnings.warn(
                "datagrams from sources not allowed",
                source,
                "{service}: dropping datagrams from {source}: not in allowed_sources",
                service=self.warnings.owner,
                source=source,
            )
            return "source_not_allowed"
        buckets = self.buckets
        if buckets is None:
            return None
        bucket = buckets.bucket(source)
        if bucket is None:
            self._went_over(source, None)
            return "rate_limited"
        if bucket.tokens < 1:
            self._went_over(source, bucket)
            return "rate_limited"
        bucket.tokens -= 1
        if bucket.tokens >= buckets.burst - 1:
            bucket.over = False
        return None

    def charge(
        self,
        source: str,
        connection: C,
        messages: int,
        update: Callable[[C], object],
    ) -> bool:
        """
        MESSAGES were read from CONNECTION, from SOURCE.  When that puts the
        source's bucket into debt, CONNECTION is paused for its rate (see
        L{paused}) and UPDATE(connection) is called, now and again once the
        debt is paid off, to stop and restart its reading.  True: it was
        paused now (and was not before), which the caller counts.
        """
        buckets = self.buckets
        if buckets is None or source == UNIX:
            return False
        bucket = buckets.bucket_or_overflow(source)
        if bucket.tokens >= buckets.burst:
            bucket.over = False
        bucket.tokens -= messages
        if bucket.tokens >= 0:
            return False
        pause = self._pauses.get(source)
        if pause is None:
            delay = -bucket.tokens / buckets.rate
            timer = self.clock.callLater(delay, self._paid_off, source)
            pause = self._pauses[source] = Pause(bucket, timer)
            if bucket is buckets.overflow:
                self._shares_overflow(source)
            else:
                self._went_over(source, bucket)
        new = connection not in pause.connections
        pause.connections[connection] = update
        update(connection)
        return new

    def paused(self, source: str, connection: Hashable) -> bool:
        """Whether CONNECTION (from SOURCE) is not to be read for its source's rate."""
        pause = self._pauses.get(source)
        return pause is not None and connection in pause.connections

    def forget(self, source: str, connection: Hashable) -> None:
        """
        CONNECTION is gone: nothing is to be restarted for it, and once none
        of its source's connections waits, neither is there a timer (the
        debt stays in the bucket, for the source's next connection).
        """
        pause = self._pauses.get(source)
        if pause is None:
            return
        pause.connections.pop(connection, None)
        if not pause.connections:
            del self._pauses[source]
            pause.timer.cancel()

    def _paid_off(self, source: str) -> None:
        assert self.buckets is not None
        pause = self._pauses[source]
        bucket = self.buckets.refilled(pause.bucket)
        if bucket.tokens < -PAID_OFF:  # another connection on this bucket read meanwhile
            pause.timer = self.clock.callLater(
                -bucket.tokens / self.buckets.rate, self._paid_off, source
            )
            return
        del self._pauses[source]
        for connection, update in pause.connections.items():
            update(connection)

    def _went_over(self, source: str, bucket: Bucket | None) -> None:
        if bucket is not None:
            if bucket.over:
                return
            bucket.over = True
        assert self.buckets is not None
        self.warnings.warn(
            "sources over rate_per_source",
            source,
            "{service}: {source} is over rate_per_source ({rate:g} messages/s, {burst:g} at "
            "once): its connections are read no faster, its datagrams beyond it dropped",
            service=self.warnings.owner,
            source=source,
            rate=self.buckets.rate,
            burst=self.buckets.burst,
        )

    def _shares_overflow(self, source: str) -> None:
        assert self.buckets is not None
        self.warnings.warn(
            "sources sharing one bucket (max_rate_sources)",
            source,
            "{service}: {source} is held back together with every new address: the "
            "max_rate_sources ({max_sources}) remembered ones are all still refilling, so the "
            "others share one bucket of rate_per_source",
            service=self.warnings.owner,
            source=source,
            max_sources=self.buckets.max_sources,
        )

    def stop(self) -> None:
        """The logger stops: the summaries of what was left untold are logged now."""
        self.warnings.flush()
