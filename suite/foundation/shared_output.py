"""
One output file appended to by several processes: the collector's workers
each write their own records to the one file, instead of sending every
record to the parent to write (which cost the parent as much per message
as the parsing saved).

The processes take turns: each write holds an exclusive `flock` on the
file's directory (which no rotation renames, unlike the file), so that
inside its turn a process knows which file the path names and its true
size (the others' records included), rotates it when that size says so,
and cuts back a record a full disk tore, exactly as a single writer does
(L{RotatingFile}).  A process that finds the path naming another file than
the one it holds open (another process rotated it) reopens it first.
Records are never interleaved (one write per batch, in a turn) and never
lost.  A turn costs two system calls per batch, not per record.
"""

import fcntl
import os

from suite.foundation.config import FILE_MODE
from suite.foundation.jsonlines import RotatingFile, file_identity


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
        # What the turns lock: the directory, which a rotation does not rename.
        self._directory = os.open(
            os.path.dirname(self.path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
        )

    def write(self, data: bytes) -> None:
        fcntl.flock(self._directory, fcntl.LOCK_EX)
        try:
            if file_identity(self.path) != self._opened:
                self.reopen()  # another process rotated it
            self.size = self._current_size()
            super().write(data)
        finally:
            fcntl.flock(self._directory, fcntl.LOCK_UN)

    def close(self) -> None:
        super().close()
        os.close(self._directory)
