"""
One output file appended to by several processes: the collector's workers
each write their own records to the one file, instead of sending every
record to the parent to write (which cost the parent as much per message
as the parsing saved).

Each write takes an exclusive `flock` on the file first, so that the
processes take turns: inside its turn a process knows the file's true size
(the others' records included), rotates it when that size says so, and
cuts back a record a full disk tore, exactly as a single writer does
(L{RotatingFile}).  A rotation renames the file under the lock; the other
processes hold the old file open, so when their turn comes they see that
the path names another file, reopen it and lock the new one.  Records are
never interleaved (one write per batch, under the lock) and never lost (a
record written to a file that was renamed meanwhile is in the renamed
file, FILE.1).  A turn lasts one write system call: the lock costs two
more system calls per batch, not per record.
"""

import fcntl

from suite.foundation.config import FILE_MODE
from suite.foundation.jsonlines import RotatingFile, file_identity

MAX_FOLLOWS = 16  # rotations by others in a row before a write goes ahead regardless


class SharedRotatingFile(RotatingFile):
    """
    A L{RotatingFile} other processes append to as well.  Only the first
    process to open the file (the parent, before any worker starts) cuts a
    torn record from its end: CUT_TAIL false in the others, which could
    otherwise mistake a record another process is writing for a torn one.
    """

    def __init__(
        self,
        path: str,
        rotate_bytes: int,
        keep: int,
        label: str = "logger",
        file_mode: int = FILE_MODE,
        sync: bool = False,
        cut_tail: bool = True,
    ) -> None:
        super().__init__(path, rotate_bytes, keep, label, file_mode, sync, cut_tail=cut_tail)

    def write(self, data: bytes) -> None:
        self._take_turn()
        try:
            self.size = self._current_size()
            super().write(data)  # may rotate: the reopened file is unlocked, the old one closed
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _take_turn(self) -> None:
        """Hold the lock of the file the path names now (another process may have rotated it)."""
        for _ in range(MAX_FOLLOWS):
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            if file_identity(self.path) == self._opened:
                return
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            self.reopen()
