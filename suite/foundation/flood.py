"""
Log flood control.  A warning that a client can repeat at will (a refused
connection, a failed TLS handshake, a protocol error, a wrong token, a
rate-limited datagram) is logged in full the first time for each source;
after that, repeats are counted and logged at most once per interval per
kind, as one summary line with the count.  A flood of bad clients therefore
costs a few log lines every ten seconds, not one line per attempt, while the
first attempt from each source is still there to read.
"""

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger, LogLevel

log = Logger()

INTERVAL = 10.0
MAX_SOURCES = 4096


class FloodControl:
    """
    Repeated warnings of one service (named OWNER in the summaries), timed
    by CLOCK.  At most MAX_SOURCES sources per kind are remembered; once that
    many have been logged, new sources are only counted, so memory stays
    bounded under a flood of spoofed or rotating addresses.
    """

    def __init__(
        self,
        clock: IReactorTime,
        owner: str,
        interval: float = INTERVAL,
        max_sources: int = MAX_SOURCES,
    ) -> None:
        self.clock = clock
        self.owner = owner
        self.interval = interval
        self.max_sources = max_sources
        self._logged: dict[str, set[str]] = {}
        self._repeats: dict[str, int] = {}
        self._summaries: dict[str, IDelayedCall] = {}
        self._levels: dict[str, LogLevel] = {}

    def warn(self, kind: str, source: str, format: str, /, **fields: object) -> None:
        """Log FORMAT (a twisted.logger format) unless KIND already came from SOURCE."""
        self.emit(LogLevel.warn, kind, source, format, **fields)

    def emit(
        self, level: LogLevel, kind: str, source: str, format: str, /, **fields: object
    ) -> None:
        """
        As L{warn}, at LEVEL: an audit trail a client can flood (the name
        server's registrations, failed pings, evictions) is info, not a
        warning.  KIND's summaries are at the level of its last event.
        """
        logged = self._logged.setdefault(kind, set())
        self._levels[kind] = level
        if source not in logged and len(logged) < self.max_sources:
            logged.add(source)
            log.emit(level, format, flood_kind=kind, **fields)
            return
        self._repeats[kind] = self._repeats.get(kind, 0) + 1
        if kind not in self._summaries:
            self._summaries[kind] = self.clock.callLater(self.interval, self._summarise, kind)

    def _summarise(self, kind: str) -> None:
        self._summaries.pop(kind, None)
        count = self._repeats.pop(kind, 0)
        if count:
            log.emit(
                self._levels[kind],
                "{owner}: {count} more {kind} in the last {interval:g} s",
                owner=self.owner,
                count=count,
                kind=kind,
                interval=self.interval,
                flood_kind=kind,
                flood_count=count,
            )

    def flush(self) -> None:
        """Log the summaries now and cancel their timers (the service is stopping)."""
        for kind, call in list(self._summaries.items()):
            call.cancel()
            self._summarise(kind)


class LineBudget:
    """
    An audit that wants every event of one KIND in full (each status change
    of the name server's instances), bounded all the same: at most LINES
    lines in each INTERVAL; beyond them, events are counted and logged as
    one summary line when the interval ends.  Unlike L{FloodControl}, a
    source repeating itself is logged again: each event is news.  A timer
    runs only while there is something to summarise.
    """

    def __init__(
        self,
        clock: IReactorTime,
        owner: str,
        kind: str,
        lines: int = 100,
        interval: float = INTERVAL,
    ) -> None:
        self.clock = clock
        self.owner = owner
        self.kind = kind
        self.lines = lines
        self.interval = interval
        self._ends = -1.0  # when the current interval ends
        self._used = 0
        self._over = 0
        self._level = LogLevel.info
        self._summary: IDelayedCall | None = None

    def emit(self, level: LogLevel, format: str, /, **fields: object) -> None:
        """Log FORMAT at LEVEL, unless this interval's lines are spent: then count it."""
        now = self.clock.seconds()
        if now >= self._ends and self._summary is None:
            self._ends, self._used = now + self.interval, 0
        self._level = level
        if self._used < self.lines:
            self._used += 1
            log.emit(level, format, flood_kind=self.kind, **fields)
            return
        self._over += 1
        if self._summary is None:
            self._summary = self.clock.callLater(max(0.0, self._ends - now), self._summarise)

    def _summarise(self) -> None:
        self._summary = None
        count, self._over = self._over, 0
        log.emit(
            self._level,
            "{owner}: {count} more {kind} in the last {interval:g} s",
            owner=self.owner,
            count=count,
            kind=self.kind,
            interval=self.interval,
            flood_kind=self.kind,
            flood_count=count,
        )

    def flush(self) -> None:
        """Log the summary now and cancel its timer (the service is stopping)."""
        if self._summary is not None:
            self._summary.cancel()
            self._summarise()
