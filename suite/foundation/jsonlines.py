"""
The logger's output: JSON lines written in batches, rotated by size, reopened
on SIGHUP.  A message is in memory for at most `flush_interval` seconds (or
until `max_batch` bytes are pending); once the service stops, every line is
written through at once, so nothing received before SIGTERM is lost.
"""

import os
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from twisted.application import service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from suite.foundation.config import FILE_MODE, FILE_MODE_KIND, key
from suite.foundation.health import DEGRADED, FAILING
from suite.foundation.interfaces import IHealthSource, IMetricSource, IReopenable

log = Logger()


def file_mode_key(what: str) -> Any:
    """
    The `file_mode` key of a section that creates WHAT (its output files): a
    dataclass field standing for an int, as L{suite.foundation.config.key} returns.
    """
    return key(
        FILE_MODE_KIND,
        FILE_MODE,
        f"permissions of {what} it creates, in octal; the umask may take more away",
    )


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


def file_identity(path: str) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


class WriteFailed(Exception):
    """
    A write stopped after WRITTEN bytes because of ERROR: whole records,
    unless a file could not be cut back (then the rest follows on retry).
    """

    def __init__(self, written: int, error: OSError):
        super().__init__(error.strerror or str(error))
        self.written = written
        self.error = error


class _Stopped(Exception):
    """A write of whole records stopped by ERROR after KEPT bytes (at a record boundary)."""

    def __init__(self, kept: int, error: OSError):
        self.kept = kept
        self.error = error


class RotatingFile:
    """
    A file rotated to FILE.1 … FILE.KEEP (never more) when it reaches
    ROTATE_BYTES.  Rotation happens between two JSON lines, never inside one.

    Another tool may rename or delete the file (logrotate without a SIGHUP):
    each write first checks that the path still names the open file, and
    reopens it at the path if not, so writing (and rotating) goes on in a
    new file instead of into a file nobody sees.

    A write that fails (disk full, I/O error) keeps the records that fit
    and cuts back the one it tore, so the file never holds part of a record;
    L{WriteFailed} says how much of the data did get written.
    Twisted's LogFile is not used: it ignores short writes, which tears a
    record, and its rotation gives up silently when the file is gone.
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
    ):
        self.label = label  # who writes, for the log lines
        # A file closed at a rotation or a reopen is fsynced first: its records
        # may have been acknowledged as on disk (`sync`, RELP) by the next fsync,
        # which only reaches the file then open.
        self.sync_on_close = sync
        self.file_mode = file_mode  # of each file it creates (the path, after rotations)
        directory, name = os.path.split(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, name)
        self.rotate_bytes = rotate_bytes
        self.keep = keep
        self.rotations = 0
        removed = cut_torn_tail(self.path) if cut_tail else 0
        if removed:
            log.warn(
                "{label}: {path} ended in a partial record (the process was killed while "
                "writing); cut {removed} bytes back to the last complete line",
                label=label,
                path=self.path,
                removed=removed,
            )
        self._open()

    def _open(self) -> None:
        self._fd = os.open(
            self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, self.file_mode
        )
        found = os.fstat(self._fd)
        self.size = found.st_size
        self._opened = (found.st_dev, found.st_ino)

    def _current_size(self) -> int:
        return os.fstat(self._fd).st_size

    def _follow_path(self) -> None:
        if file_identity(self.path) != self._opened:
            self.reopen()
            log.warn(
                "{label}: {path} was renamed or deleted by another program; "
                "writing to a new file at that path",
                label=self.label,
                path=self.path,
            )

    def write(self, data: bytes) -> None:
        self._follow_path()
        written = 0
        limit = self.rotate_bytes
        try:
            while limit and self.size + len(data) - written > limit:
                rest = data[written:]
                cut = rest.rfind(b"\n", 0, max(limit - self.size, 0)) + 1
                if not cut and not self.size:
                    # A single line larger than a whole file gets a file of its own.
                    cut = rest.find(b"\n") + 1 or len(rest)
                if cut:
                    written += self._write_records(rest[:cut])
                if not self._rotate():
                    break
            if written < len(data):
                written += self._write_records(data[written:])
        except _Stopped as e:
            raise WriteFailed(written + e.kept, e.error) from None

    def _write_records(self, data: bytes) -> int:
        """
        Write DATA (whole records) and return its length.  When the disk
        fills part-way, the records that fit are kept and the one cut is
        removed, so a backlog larger than the space left goes out in pieces
        as space allows instead of being retried whole forever; L{_Stopped}
        says how many bytes were kept.
        """
        start = self.size
        view = memoryview(data)
        done = 0
        try:
            while done < len(data):
                done += os.write(self._fd, view[done:])
        except OSError as e:
            kept = data.rfind(b"\n", 0, done) + 1
            try:
                os.ftruncate(self._fd, start + kept)  # never leave part of a record
            except OSError:
                kept = done  # the file could not be cut: count what it holds
            self.size = start + kept
            raise _Stopped(kept, e) from None
        self.size += len(data)
        return len(data)

    def _rotate(self) -> bool:
        """FILE -> FILE.1 -> ... -> FILE.KEEP; False (logged) when the renames fail."""
        try:
            for n in range(self.keep - 1, 0, -1):
                if os.path.exists(f"{self.path}.{n}"):
                    os.replace(f"{self.path}.{n}", f"{self.path}.{n + 1}")
            os.replace(self.path, f"{self.path}.1")
        except OSError as e:
            log.warn(
                "{label}: cannot rotate {path} ({error}); writing on in it",
                label=self.label,
                path=self.path,
                error=e.strerror,
            )
            return False
        self.rotations += 1
        self.reopen()
        return True

    def reopen(self) -> None:
        if self.sync_on_close:
            self._sync_before_close()
        os.close(self._fd)
        self._open()
        if self.sync_on_close:
            self._sync_directory()

    def _sync_before_close(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError as e:
            log.error(
                "{label}: cannot fsync {path} before closing it: {error}; records written to it "
                "may not be on the disk",
                label=self.label,
                path=self.path,
                error=e.strerror,
            )

    def _sync_directory(self) -> None:
        """The renames of a rotation, and the new file's entry, are on the disk too."""
        try:
            directory = os.open(os.path.dirname(self.path), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            os.fsync(directory)
        except OSError:
            pass  # some file systems refuse to fsync a directory; the file's own data is synced
        finally:
            os.close(directory)

    def sync(self) -> None:
        """What was written is on the disk (fsync), not only in the page cache."""
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


class StandardOutput:
    """`output = "-"`: the process's real standard output (twistd replaces sys.stdout)."""

    path = "standard output"  # as log lines and /health name it
    rotations = 0

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(1, view) :]
        except OSError as e:
            raise WriteFailed(len(data) - len(view), e) from None

    def reopen(self) -> None:
        pass

    def sync(self) -> None:
        pass  # a pipe or a terminal: what was written is the reader's

    def close(self) -> None:
        pass


class Output(Protocol):
    """Where a BatchWriter writes: a RotatingFile or the standard output."""

    path: str
    rotations: int

    def write(self, data: bytes) -> None: ...

    def reopen(self) -> None: ...

    def sync(self) -> None: ...

    def close(self) -> None: ...


def open_output(
    path: str,
    rotate_bytes: int,
    keep: int,
    label: str = "logger",
    file_mode: int = FILE_MODE,
    sync: bool = False,
) -> Output:
    """The output PATH names; SYNC: a file closed (rotated, reopened) is fsynced first."""
    if path == "-":
        return StandardOutput()
    return RotatingFile(path, rotate_bytes, keep, label, file_mode, sync)


RETRY_SECONDS = 1.0


@implementer(IReopenable, IMetricSource, IHealthSource)
class BatchWriter(service.Service):
    """
    Collects JSON lines and writes them in one system call per batch while
    the service runs; before it starts and once it has stopped, each line is
    written through at once.

    When writing fails (disk full, I/O error) the records wait in memory
    and the write is retried every second; one line says when writing
    stops and one when it resumes.  Once MAX_BUFFER bytes wait, the writer
    is `full`: whoever registered with on_pressure is told (the stream
    listeners stop reading, so TCP back-pressure reaches the senders) and
    datagrams are dropped and counted in `dropped`.

    Its metrics (under its LABEL's service): records written, failed
    writes, bytes waiting, rotations; its health: whether it can write.
    """

    def __init__(
        self,
        output: Output,
        reactor: IReactorTime,
        flush_interval: float,
        max_batch: int,
        max_buffer: int = 64 * 2**20,
        label: str = "logger",
        essential: bool = True,
        sync: bool = False,
    ) -> None:
        self.output = output
        self.sync = sync  # fsync before telling when_written's callers
        self.label = label  # who writes, for the log lines
        self.essential = essential
        self.reactor = reactor
        self.flush_interval = flush_interval
        self.max_batch = max_batch
        self.max_buffer = max_buffer
        self._pending: list[bytes] = []
        self._size = 0
        self._records = 0  # lines in _pending
        self._call: IDelayedCall | None = None
        self._retry: IDelayedCall | None = None
        self.failing: str | None = None
        self.full = False
        self.dropped = 0
        self._pressure: list[Callable[[bool], object]] = []
        self.records_written = 0
        self.write_errors = 0
        self._waiters: list[Deferred[None]] = []
        self._soon: IDelayedCall | None = None
        self._unsynced = False  # with `sync`: lines written since the last fsync

    def metric_samples(self) -> Iterator[tuple[str, tuple, object]]:
        yield "records_written", (), self.records_written
        yield "write_errors", (), self.write_errors
        yield "pending_bytes", (), self._size
        yield "rotations", (), self.output.rotations

    def health_problems(self) -> list[tuple[str, str]]:
        """
        Failing (the logger's output), or degraded (an audit: ESSENTIAL
        false), while writes fail.
        """
        failing = self.failing
        if failing is None:
            return []
        return [(FAILING if self.essential else DEGRADED, f"cannot write {self.name}: {failing}")]

    @property
    def name(self) -> str:  # type: ignore[override]  # the output names it; never set
        return self.output.path

    def on_pressure(self, callback: Callable[[bool], object]) -> None:
        """CALLBACK(full) is called each time the writer becomes full, or has room again."""
        self._pressure.append(callback)

    def write_lines(self, lines: list[bytes], records: int) -> None:
        """
        LINES: whole JSON lines, each item one or several; RECORDS: how many
        lines they hold.  Every caller knows, so none is counted here: a
        count would scan every byte, as costly as a copy, on each write.
        """
        self._pending += lines
        self._size += sum(map(len, lines))
        self._records += records
        if self.failing is not None:
            self._check_full()
        elif not self.running or self._size >= self.max_batch or not self.flush_interval:
            self.flush()
        elif self._call is None:
            self._call = self.reactor.callLater(self.flush_interval, self.flush)

    def when_written(self) -> "Deferred[None]":
        """
        Fires once every line handed over so far is in the output (fsynced
        with `sync`): what a RELP acknowledgement waits for.  Lines someone
        waits for are written at the end of this turn of the reactor, not
        after `flush_interval`, so that the wait costs a turn, not a timer;
        while writes fail, the callers wait until a retry succeeds.
        """
        if not self._pending and not self._unsynced:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        if self._soon is None and self.failing is None:
            self._soon = self.reactor.callLater(0, self._flush_soon)
        return waiter

    def _flush_soon(self) -> None:
        self._soon = None
        self.flush()

    def _tell_waiters(self) -> None:
        if self.sync:
            try:
                self.output.sync()
            except OSError as e:
                self.write_errors += 1
                self._failed(WriteFailed(0, e))
                return
            self._unsynced = False
            if self.failing is not None:
                self._resumed()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def flush(self) -> None:
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None
        if self._pending:
            data = b"".join(self._pending)
            try:
                self.output.write(data)
            except WriteFailed as e:
                written = data.count(b"\n", 0, e.written)
                self.records_written += written
                self._records -= written
                self.write_errors += 1
                rest = data[e.written :]
                self._pending, self._size = [rest], len(rest)
                self._failed(e)
            else:
                self.records_written += self._records
                self._pending, self._size, self._records = [], 0, 0
                self._unsynced = self.sync
                if self.failing is not None:
                    self._resumed()
        if self._waiters and not self._pending:
            self._tell_waiters()
        self._check_full()

    def _failed(self, failure: WriteFailed) -> None:
        if self.failing is None:
            self.failing = str(failure)
            log.error(
                "{label}: cannot write {path}: {error}; records wait in memory (up to "
                "max_buffer) and writing is retried every {retry:g} s",
                label=self.label,
                path=self.name,
                error=self.failing,
                retry=RETRY_SECONDS,
            )
        if self.running and self._retry is None:
            self._retry = self.reactor.callLater(RETRY_SECONDS, self._try_again)

    def _try_again(self) -> None:
        self._retry = None
        self.flush()

    def _resumed(self) -> None:
        log.info(
            "{label}: writing {path} again after: {error}; "
            "{dropped} records were dropped meanwhile",
            label=self.label,
            path=self.name,
            error=self.failing,
            dropped=self.dropped,
        )
        self.failing = None
        self.dropped = 0

    def _check_full(self) -> None:
        full = self._size >= self.max_buffer
        if full != self.full:
            self.full = full
            for callback in self._pressure:
                callback(full)

    def reopen(self) -> None:
        """On SIGHUP (via the root service): logrotate renamed the file, start a new one."""
        self.flush()
        self.output.reopen()
        log.info("{label}: output reopened (SIGHUP): {path}", label=self.label, path=self.name)

    def stopService(self) -> None:
        service.Service.stopService(self)
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._soon is not None:
            self._soon.cancel()
            self._soon = None
        self.flush()
        if self._pending:
            log.error(
                "{label}: stopping with {size} bytes of records that could not be written to "
                "{path}: {error}",
                label=self.label,
                size=self._size,
                path=self.name,
                error=self.failing,
            )
