"""
Worker processes sharing a listening socket take turns by open connections.

The kernel wakes every worker waiting on a shared socket, and the same one
wins each race while all are idle: ten connections made at once would all
land on one worker, which then does all their work while the others wait.
So the workers keep their counts of open connections in one small shared
memory (a memfd the parent makes and every worker maps): a worker holding
more than one connection above the least loaded live worker lets
connections wait for PAUSE seconds instead of accepting them, and then
takes one anyway (so that a worker that stopped answering delays the others
by PAUSE per connection, never more).  The parent marks a slot whose
worker ended as absent.
"""

import mmap
import os
import struct

SLOT = struct.Struct("q")  # open connections of one worker; ABSENT: none runs in the slot
ABSENT = -1
PAUSE = 0.002  # seconds a worker ahead of the others lets a connection wait
AHEAD_BY = 1  # connections above the least loaded worker that count as ahead


class AcceptShare:
    """The workers' open-connection counts in the memory of FD; this process is SLOT (0-based)."""

    def __init__(self, fd: int, slots: int, slot: int | None = None) -> None:
        self.fd = fd
        self.slots = slots
        self.slot = slot
        self.memory = mmap.mmap(fd, SLOT.size * slots)
        self.open = 0
        if slot is not None:
            self.mark(slot, 0)

    @classmethod
    def create(cls, slots: int) -> "AcceptShare":
        """The parent's: a new memory of SLOTS slots, every one absent."""
        fd = os.memfd_create("suite-accept-share", 0)  # inherited only where passed
        os.ftruncate(fd, SLOT.size * slots)
        share = cls(fd, slots)
        for number in range(slots):
            share.mark(number, ABSENT)
        return share

    def mark(self, slot: int, count: int) -> None:
        SLOT.pack_into(self.memory, slot * SLOT.size, count)

    def counts(self) -> list[int]:
        return [SLOT.unpack_from(self.memory, n * SLOT.size)[0] for n in range(self.slots)]

    def opened(self) -> None:
        self.open += 1
        if self.slot is not None:
            self.mark(self.slot, self.open)

    def closed(self) -> None:
        self.open = max(0, self.open - 1)
        if self.slot is not None:
            self.mark(self.slot, self.open)

    def ahead(self) -> bool:
        """Whether this worker holds more than AHEAD_BY connections above the least loaded."""
        live = [count for count in self.counts() if count != ABSENT]
        return bool(live) and self.open > min(live) + AHEAD_BY

    def close(self) -> None:
        self.memory.close()
