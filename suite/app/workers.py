"""
The `workers` key (top-level, `--workers` on every plugin): how many
processes serve the listeners.  1, the default, is one process as always;
N above 1 makes the parent bind every listener and run N worker processes
that serve them (L{suite.app.supervisor}); `auto` is one per CPU this
process may run on.
"""

import os
from dataclasses import dataclass

from suite.foundation.config import TOP_LEVEL, Kind, Settings, key

MAX_WORKERS = 256  # a typo of 10000 would otherwise fork the machine to a halt
AUTO = "auto"


def cpus() -> int:
    """CPUs this process may run on (its affinity: `taskset`, a cgroup's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def _check_workers(value: object) -> int | str:
    if value == AUTO:
        return AUTO
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f'must be an integer (1-{MAX_WORKERS}) or "auto"')
    if not 1 <= value <= MAX_WORKERS:
        raise ValueError(f'must be 1-{MAX_WORKERS}, or "auto" (one per CPU)')
    return value


def _workers_from_text(text: str) -> int | str:
    return int(text) if text.strip().isdigit() else text


WORKERS = Kind(_check_workers, _workers_from_text)


@dataclass(frozen=True, kw_only=True)
class WorkersSettings(Settings):
    """The keys written before any table of the config file."""

    section = TOP_LEVEL

    workers: int | str = key(
        WORKERS,
        1,
        "processes serving the listeners: N above 1 runs N worker processes on the sockets "
        'the parent binds, restarted when one dies; "auto" = one per CPU',
    )

    @property
    def count(self) -> int:
        """The number of worker processes: 1 means none (one process serves)."""
        return cpus() if self.workers == AUTO else int(self.workers)
