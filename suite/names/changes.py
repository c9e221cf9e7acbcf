"""
The registry's recent changes, for the status page: registrations,
deregistrations, evictions and status changes, newest first.  Every one of
them is also a log line; these are the last KEEP of them, in memory, so
that a person looking at the page sees what just happened without reading
the log (a flood of changes keeps only the latest, at a fixed cost each).
"""

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

KEEP = 50

REGISTERED, DEREGISTERED, EVICTED, STATUS = "registered", "deregistered", "evicted", "status"


@dataclass(frozen=True)
class Change:
    """One change: WHEN (the clock's seconds), what KIND, to which instance, and why."""

    when: float
    kind: str
    name: str
    instance_id: str
    detail: str = ""


class RecentChanges:
    """The last KEEP changes; `count` says how many there were in all."""

    def __init__(self, keep: int = KEEP) -> None:
        self._changes: deque[Change] = deque(maxlen=keep)
        self.count = 0

    def add(self, change: Change) -> None:
        self._changes.append(change)
        self.count += 1

    def __iter__(self) -> Iterator[Change]:
        """Newest first."""
        return reversed(self._changes)

    def __len__(self) -> int:
        return len(self._changes)
