"""
The logger's output: JSON lines written in batches, rotated by size, reopened
on SIGHUP.  A message is in memory for at most `flush_interval` seconds (or
until `max_batch` bytes are pending); once the service stops, every line is
written through at once, so nothing received before SIGTERM is lost.
"""

import os

from zope.interface import implementer

from twisted.application import service
from twisted.logger import Logger
from twisted.python.logfile import LogFile

from suite.runtime.lifecycle import IReopenable

log = Logger()


def cut_torn_tail(path: str) -> int:
    """
    Cut PATH back to its last complete line (a crash can leave half a
    record at the end); returns the number of bytes removed.
    """
    try:
        f = open(path, "r+b")
    except FileNotFoundError:
        return 0
    with f:
        size = f.seek(0, os.SEEK_END)
        end = size
        while end > 0:
            start = max(0, end - 65536)
            f.seek(start)
            newline = f.read(end - start).rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        if end < size:
            f.truncate(end)
        return size - end


def _identity(path: str):
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


class RotatingFile:
    """
    A file rotated to FILE.1 … FILE.KEEP (never more) when it reaches
    ROTATE_BYTES.  Rotation happens between two JSON lines, never inside one.

    Another tool may rename or delete the file (logrotate without a SIGHUP):
    each write first checks that the path still names the open file, and
    reopens it at the path if not, so writing (and rotating) goes on in a
    new file instead of into a file nobody sees, or into a loop.
    """

    def __init__(self, path: str, rotate_bytes: int, keep: int):
        directory, name = os.path.split(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, name)
        self.rotate_bytes = rotate_bytes
        removed = cut_torn_tail(self.path)
        if removed:
            log.warn(
                "logger: {path} ended in a partial record (the process was killed while "
                "writing); cut {removed} bytes back to the last complete line",
                path=self.path, removed=removed,
            )
        # Rotation is decided here, at line boundaries, so LogFile never rotates on its own.
        self._file = LogFile(name, directory, rotateLength=0, maxRotatedFiles=keep)
        self._opened = _identity(self.path)

    def _follow_path(self):
        if _identity(self.path) != self._opened:
            self.reopen()
            log.warn(
                "logger: {path} was renamed or deleted by another program; "
                "writing to a new file at that path",
                path=self.path,
            )

    def write(self, data: bytes):
        self._follow_path()
        limit = self.rotate_bytes
        while limit and self._file.size + len(data) > limit:
            cut = data.rfind(b"\n", 0, max(limit - self._file.size, 0)) + 1
            if not cut and not self._file.size:
                # A single line larger than a whole file gets a file of its own.
                cut = data.find(b"\n") + 1 or len(data)
            if cut:
                self._file.write(data[:cut])
                data = data[cut:]
            if not self._rotate():
                break
        if data:
            self._file.write(data)

    def _rotate(self) -> bool:
        """Rotate; False when LogFile could not (it then does nothing, quietly)."""
        self._file.rotate()
        self._opened = _identity(self.path)
        if self._file.size:
            log.warn("logger: cannot rotate {path}; writing on in it", path=self.path)
            return False
        return True

    def reopen(self):
        self._file.reopen()
        self._opened = _identity(self.path)

    def close(self):
        self._file.close()


class StandardOutput:
    """`output = "-"`: the process's real standard output (twistd replaces sys.stdout)."""

    def write(self, data: bytes):
        view = memoryview(data)
        while view:
            view = view[os.write(1, view):]

    def reopen(self):
        pass

    def close(self):
        pass


def open_output(path: str, rotate_bytes: int, keep: int):
    return StandardOutput() if path == "-" else RotatingFile(path, rotate_bytes, keep)


@implementer(IReopenable)
class BatchWriter(service.Service):
    """
    Collects JSON lines and writes them in one system call per batch while
    the service runs; before it starts and once it has stopped, each line is
    written through at once.
    """

    def __init__(self, output, reactor, flush_interval: float, max_batch: int):
        self.output = output
        self.reactor = reactor
        self.flush_interval = flush_interval
        self.max_batch = max_batch
        self._pending: list[bytes] = []
        self._size = 0
        self._call = None

    def write_lines(self, lines: list[bytes]):
        self._pending += lines
        self._size += sum(map(len, lines))
        if not self.running or self._size >= self.max_batch or not self.flush_interval:
            self.flush()
        elif self._call is None:
            self._call = self.reactor.callLater(self.flush_interval, self.flush)

    def flush(self):
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None
        if self._pending:
            data = b"".join(self._pending)
            self._pending, self._size = [], 0
            self.output.write(data)

    def reopen(self):
        """On SIGHUP (via the root service): logrotate renamed the file, start a new one."""
        self.flush()
        self.output.reopen()
        log.info("logger: output reopened (SIGHUP)")

    def stopService(self):
        service.Service.stopService(self)
        self.flush()
