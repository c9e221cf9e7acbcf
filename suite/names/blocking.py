"""
Consul's blocking queries.  A read with `index=N` (N > 0) is held until
the index of what it reads exceeds N, or until its wait is over: `wait`
(a Go duration; default 5 minutes, at most 10), plus a random jitter of up
to a sixteenth of it, so that clients that all started together do not all
come back together.  What a read reads is one name (its index is the
registry's index of that name) or the whole registry (the registry's own
index); a change to anything else does not wake it, and neither does a
change that changes nothing (a TTL pass that leaves status and output as
they were raises no index).

Wake-ups are gathered and answered one reactor turn after the change that
caused them, so that a read never sees a change half applied (a renamed
instance, gone from its old name and not yet under its new one) and a burst
of changes wakes each read once.  The reads answered together share their
answers (L{Renders}): a thousand clients holding the same query cost one
render per change, not a thousand.

The held reads cost no timer each: one heap of deadlines, one reactor call
for the earliest, and for each name a heap of indexes, so a change wakes
the reads it answers without looking at the others.  Reads that ended
otherwise (their connection lost) are dropped from the heaps lazily, and
the heaps are rebuilt whenever more of them is dropped than held, so the
work stays linear in the number of reads.  At most `max_held` reads are
held at once; beyond that a read is refused (the HTTP API answers 429) and
its client retries later, rather than being answered at once and coming
straight back.
"""

import heapq
import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from itertools import count
from typing import TypeVar, cast

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from suite.foundation.flood import FloodControl
from suite.names.go_values import parse_duration
from suite.names.registry import Registry
from suite.names.unexpected import log_unexpected

DEFAULT_WAIT = 300.0  # seconds, Consul's
MAX_WAIT = 600.0
JITTER_FRACTION = 16  # the jitter is at most wait / 16, as Consul's

MAX_INDEX = 2**64 - 1  # an index is a Go uint64
MAX_INDEX_DIGITS = len(str(MAX_INDEX))  # 20: more is refused before int() reads it
COMPACT_AT = 64  # dropped entries a heap keeps before it may be rebuilt
WHOLE_REGISTRY = ""  # the key of reads of everything (no name is empty)


class BadQuery(Exception):
    """`index` or `wait` could not be read: str() is Consul's 400 answer."""


@dataclass(frozen=True)
class Blocking:
    """What a read asked: hold until the index exceeds INDEX (0: answer now), for WAIT seconds."""

    index: int = 0
    wait: float = DEFAULT_WAIT


def parse_blocking(index: str | None, wait: str | None) -> Blocking:
    """The `index` and `wait` of a read (None: not given), as Consul's parseWait reads them."""
    seconds = DEFAULT_WAIT
    if wait:
        try:
            seconds = parse_duration(wait)
        except ValueError:
            raise BadQuery("Invalid wait time") from None
        if seconds <= 0:
            seconds = DEFAULT_WAIT
    number = 0
    if index:
        digits = index.lstrip("0") or "0"  # as Go's ParseUint, leading zeros count for nothing
        if (
            len(digits) > MAX_INDEX_DIGITS
            or not digits.isascii()
            or not digits.isdigit()
            or int(digits) > MAX_INDEX
        ):
            raise BadQuery("Invalid index")
        number = int(digits)
    return Blocking(number, min(seconds, MAX_WAIT))


Rendered = TypeVar("Rendered")


class Renders:
    """
    The answers rendered for the reads answered together (woken by one
    change, or whose waits ended at once): each distinct query once.
    """

    def __init__(self) -> None:
        self._rendered: dict[Hashable, object] = {}

    def once(self, query: Hashable, render: Callable[[], Rendered]) -> Rendered:
        """What RENDER() answers, called only for the first read asking QUERY."""
        if query not in self._rendered:
            self._rendered[query] = render()
        return cast(Rendered, self._rendered[query])


@dataclass(eq=False)
class HeldRead:
    """
    One held read: ANSWER(renders) is called once, when it is woken or its
    wait is over, with the L{Renders} it shares with the reads answered at
    the same time.
    """

    key: str
    index: int
    deadline: float
    answer: Callable[[Renders], object]
    done: bool = False
    order: int = field(default=0)


class HeldReads:
    """
    The reads held on REGISTRY's indexes, answered on CLOCK's time;
    JITTER() is a random number in [0, 1).
    """

    def __init__(
        self,
        registry: Registry,
        clock: IReactorTime,
        max_held: int,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.registry = registry
        self.clock = clock
        self.max_held = max_held
        self.jitter = jitter
        self.held = 0
        self.refused = 0
        self.warnings = FloodControl(clock, "names")
        self._order = count()
        self._by_key: dict[str, list[tuple[int, int, HeldRead]]] = {}
        self._dropped: dict[str, int] = {}  # per key: entries of reads no longer held
        self._deadlines: list[tuple[float, int, HeldRead]] = []
        self._dropped_deadlines = 0
        self._timer: IDelayedCall | None = None
        self._changed: set[str] = set()
        self._wake_call: IDelayedCall | None = None
        registry.on_change(self._name_changed)

    def current(self, key: str) -> int:
        """The index a read of KEY (a name, or L{WHOLE_REGISTRY}) answers now."""
        if key == WHOLE_REGISTRY:
            return self.registry.index
        return self.registry.name_index(key)

    def hold(
        self, key: str, blocking: Blocking, answer: Callable[[Renders], object]
    ) -> HeldRead | None:
        """
        Hold a read of KEY until its index exceeds BLOCKING.index or its wait
        is over, then ANSWER(renders); None when `max_held` reads are held already.
        The caller answers at once instead when the index exceeds it already.
        """
        if self.held >= self.max_held:
            self.refused += 1
            return None
        wait = blocking.wait + self.jitter() * blocking.wait / JITTER_FRACTION
        read = HeldRead(key, blocking.index, self.clock.seconds() + wait, answer)
        read.order = next(self._order)
        self.held += 1
        heapq.heappush(self._by_key.setdefault(key, []), (read.index, read.order, read))
        heapq.heappush(self._deadlines, (read.deadline, read.order, read))
        if self._timer is None or read.deadline < self._timer.getTime():
            self._schedule()
        return read

    def release(self, read: HeldRead) -> None:
        """READ is no longer wanted (its connection was lost): it will not be answered."""
        if read.done:
            return
        self._end(read)
        self._dropped[read.key] = self._dropped.get(read.key, 0) + 1
        self._dropped_deadlines += 1
        self._compact(read.key)

    def _end(self, read: HeldRead) -> None:
        """READ is held no longer; its entries left in the heaps are dropped when met."""
        read.done = True
        self.held -= 1

    def _answer(self, read: HeldRead, renders: Renders) -> None:
        """Answer READ; should that fail, the others are answered still, and one line logged."""
        try:
            read.answer(renders)
        except Exception:
            log_unexpected(
                self.warnings, "failed held reads", "", "answering a held read", Failure()
            )

    def _compact(self, key: str) -> None:
        """Rebuild KEY's heap, and the deadlines', once more of it is dropped than held."""
        entries = self._by_key.get(key)
        dropped = self._dropped.get(key, 0)
        if entries is not None and dropped > COMPACT_AT and dropped * 2 > len(entries):
            live = [entry for entry in entries if not entry[2].done]
            heapq.heapify(live)
            self._by_key[key] = live
            self._dropped[key] = 0
        if self._dropped_deadlines > COMPACT_AT and self._dropped_deadlines * 2 > len(
            self._deadlines
        ):
            self._deadlines = [entry for entry in self._deadlines if not entry[2].done]
            heapq.heapify(self._deadlines)
            self._dropped_deadlines = 0
            self._schedule()

    def _schedule(self) -> None:
        """The one timer, set for the earliest deadline of a read still held."""
        while self._deadlines and self._deadlines[0][2].done:
            heapq.heappop(self._deadlines)
            self._dropped_deadlines -= 1
        if not self._deadlines:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        delay = max(self._deadlines[0][0] - self.clock.seconds(), 0.0)
        if self._timer is None:
            self._timer = self.clock.callLater(delay, self._expire)
        else:
            self._timer.reset(delay)

    def _expire(self) -> None:
        """Answer the reads whose wait is over."""
        self._timer = None
        now = self.clock.seconds()
        keys = set()
        renders = Renders()
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, read = heapq.heappop(self._deadlines)
            if read.done:
                self._dropped_deadlines -= 1
                continue
            self._end(read)
            self._dropped[read.key] = self._dropped.get(read.key, 0) + 1
            keys.add(read.key)
            self._answer(read, renders)
        for key in keys:
            self._compact(key)
        self._schedule()

    def _name_changed(self, name: str) -> None:
        """The registry changed NAME: wake its reads, and the whole registry's, next turn."""
        self._changed.add(name)
        if self._wake_call is None:
            self._wake_call = self.clock.callLater(0, self._wake)

    def _wake(self) -> None:
        self._wake_call = None
        changed, self._changed = self._changed, set()
        renders = Renders()
        for key in (*changed, WHOLE_REGISTRY):
            self._wake_key(key, renders)
        self._compact(WHOLE_REGISTRY)
        self._schedule()  # the earliest deadline may have been a woken read's

    def _wake_key(self, key: str, renders: Renders) -> None:
        """Answer the reads of KEY whose index the current one exceeds, sharing RENDERS."""
        entries = self._by_key.get(key)
        if entries is None:
            return
        current = self.current(key)
        while entries and entries[0][0] < current:
            _, _, read = heapq.heappop(entries)
            if read.done:
                self._dropped[key] -= 1
                continue
            self._end(read)
            self._dropped_deadlines += 1
            self._answer(read, renders)
        if not entries:
            del self._by_key[key]
            self._dropped.pop(key, None)
