"""
Closing the connections that stayed quiet for `idle_timeout`, with one
timer for all of them.

The sweep runs every tenth of `idle_timeout` while any connection is
watched: each run advances `tick`, a connection notes the tick whenever
something happens on it (`last_activity`), and one whose tick is more than
SWEEPS_PER_TIMEOUT runs old has been quiet for at least `idle_timeout` (and
at most 10% longer).  Moving a timer per read (Twisted's `TimeoutMixin`)
cost more than answering a short request, and a timer per connection more
memory than the rest of an idle connection's state.
"""

from typing import Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime

SWEEPS_PER_TIMEOUT = 10  # an idle connection is closed at most 10% after its idle_timeout


class SweptConnection(Protocol):
    """What the sweep needs of a connection it watches."""

    last_activity: int  # the sweep's tick when something last happened on it
    idle_slot: int | None  # its place among the watched (the sweep's bookkeeping)

    def is_idle(self) -> bool:
        """Whether it may be closed once quiet (no work pending)."""

    def timeoutConnection(self) -> None:
        """Close it: quiet for idle_timeout."""


class IdleSweep:
    """The connections of one factory under IDLE_TIMEOUT seconds, swept on CLOCK."""

    tick = 0
    _call: IDelayedCall | None = None

    def __init__(self, clock: IReactorTime, idle_timeout: float):
        self.clock = clock
        self.period = idle_timeout / SWEEPS_PER_TIMEOUT
        self.watched: list[SweptConnection] = []

    def watch(self, connection: SweptConnection) -> None:
        """Close CONNECTION once idle; the sweep runs while any is watched."""
        connection.idle_slot = len(self.watched)
        self.watched.append(connection)
        if self._call is None:
            self._call = self.clock.callLater(self.period, self._sweep)

    def unwatch(self, connection: SweptConnection) -> None:
        """CONNECTION is gone (or was never watched): in constant time, by its slot."""
        slot = connection.idle_slot
        if slot is None:
            return
        connection.idle_slot = None
        last = self.watched.pop()
        if last is not connection:
            self.watched[slot], last.idle_slot = last, slot
        if not self.watched and self._call is not None:
            self._call.cancel()
            self._call = None

    def _sweep(self) -> None:
        self._call = None
        self.tick = tick = self.tick + 1
        for connection in [c for c in self.watched if tick - c.last_activity > SWEEPS_PER_TIMEOUT]:
            if connection.is_idle():
                connection.timeoutConnection()
        if self.watched and self._call is None:
            self._call = self.clock.callLater(self.period, self._sweep)
