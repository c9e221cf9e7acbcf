"""
A forward target's queue: messages wait here, in order, from the moment the
collector accepts them until the target acknowledged them.

The queue keeps messages in memory up to `memory_bytes`, then on disk under
`queue_dir` up to `queue_bytes` (see L{suite.logger.segments} for the
files).  Order is kept across the two places: once messages spill to disk,
new ones follow them there until the forwarder has taken everything on disk,
and only then is memory used again.  So the queue is a row of runs, each a
stretch of consecutive sequence numbers in one place, memory or a segment
file, and the forwarder takes from the oldest run on.

What the forwarder took stays in its run until acknowledged: a connection
lost gives it back, to be taken again first.  A segment is deleted once all
of its messages were acknowledged, and the checkpoint file records the last
acknowledged number, so a restart sends again at most what was in flight.

Writes are batched: the messages of one put are framed into one buffer and
written with one system call, and read back in reads of a MiB, because the
queue must keep up with forwarding at 100,000 messages a second.
"""

import contextlib
import errno
import fcntl
import os
from collections import deque
from collections.abc import Callable, Iterator

from twisted.application import service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from suite.foundation.health import DEGRADED
from suite.foundation.interfaces import IHealthSource, IMetricSource
from suite.logger import segments
from suite.logger.segments import (
    CHECKPOINT_NAME,
    FRAME_OVERHEAD,
    LOCK_NAME,
    MEMORY_OVERHEAD,
    MemoryRun,
    Run,
    Segment,
    checkpoint_bytes,
    frame,
    read_checkpoint,
    scan,
    segment_first,
    segment_name,
)

log = Logger()

RETRY_SECONDS = 1.0  # a failed disk write is tried again after this
DROP_LOG_SECONDS = 60.0  # drops are logged at most once in this many seconds

DROP, BLOCK = "drop", "block"


class QueueInUse(OSError):
    """Another queue, in this process or another, holds the directory's lock."""


@implementer(IMetricSource, IHealthSource)
class ForwardQueue(service.Service):
    """
    The queue of the forward target NAME: in memory up to MEMORY_BYTES, then
    in DIRECTORY (empty: memory only) up to QUEUE_BYTES; WHEN_FULL "block"
    (always accepts; `full` asks the delivery to stop reading senders) or
    "drop" (drops and counts what does not fit).  With SYNC every message
    goes to disk and L{stored} fires once it is fsynced.

    Opening the directory (creating it, taking its lock, checking and
    repairing its segments) happens here, so a directory the queue cannot
    use is an OSError when the suite is built, not a failure later.
    """

    name: str  # the target's: in logs, metrics, and the delivery's outlets

    def __init__(
        self,
        name: str,
        directory: str,
        memory_bytes: int,
        queue_bytes: int,
        when_full: str,
        clock: IReactorTime,
        sync: bool = False,
    ) -> None:
        if when_full not in (DROP, BLOCK):
            raise ValueError(f"when_full must be {BLOCK!r} or {DROP!r}")
        self.name = name
        self.directory = os.path.abspath(directory) if directory else ""
        self.memory_bytes = memory_bytes
        self.queue_bytes = queue_bytes
        self.blocks = when_full == BLOCK
        self.clock = clock
        self.sync = sync
        self.full = False
        # Counted for /metrics: messages accepted, dropped, bytes cut at start.
        self.queued = 0
        self.dropped = 0
        self.cut_bytes = 0
        self.failing: str | None = None  # why the disk cannot be written, while it cannot
        self._runs: deque[Run] = deque()
        self._next = 1  # the sequence number of the next message accepted
        self._acknowledged = 0  # the highest number acknowledged
        self._waiting = 0  # messages not yet acknowledged
        self._memory_used = 0
        self._disk_used = 0
        self._unwritten: list[bytes] = []  # bound for disk while writing fails, in order
        self._unwritten_first = 0
        self._unwritten_size = 0
        self._starved = False
        self._ready: list[Callable[[], object]] = []
        self._pressure: list[Callable[[bool], object]] = []
        self._waiters: list[Deferred[None]] = []
        self._unsynced: set[Segment] = set()
        self._directory_unsynced = False
        self._checkpoint_unsynced = False
        self._checkpoint_failed = False
        self._soon: IDelayedCall | None = None
        self._retry: IDelayedCall | None = None
        self._read_retry: IDelayedCall | None = None
        self._read_failing: str | None = None
        self._dropped_since_log = 0
        self._drop_logged_at: float | None = None
        self._lock_fd: int | None = None
        self._checkpoint_fd: int | None = None
        self._closed = False
        if self.directory:
            self._open()
            capacity = queue_bytes + (0 if self._straight_to_disk() else memory_bytes)
        else:
            capacity = memory_bytes
            if sync:
                log.warn(
                    "forward queue {name}: sync = true, but the target has no queue_dir: "
                    "its messages are acknowledged to senders while only in memory",
                    name=name,
                )
        self._largest = capacity - max(FRAME_OVERHEAD, MEMORY_OVERHEAD)
        self.full = self.blocks and not self._room()

    # --- opening ---

    def _open(self) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self._lock_fd = os.open(
            os.path.join(self.directory, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise QueueInUse(
                errno.EBUSY,
                "is the queue of another forward target or of another running suite "
                "(its lock is held); give each queue a directory of its own",
                self.directory,
            ) from None
        try:
            self._read_directory()
        except OSError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise

    def _read_directory(self) -> None:
        checkpoint_path = os.path.join(self.directory, CHECKPOINT_NAME)
        acknowledged = read_checkpoint(checkpoint_path)
        if acknowledged is None:
            log.warn(
                "forward queue {name}: the checkpoint {path} is corrupt; every message on disk "
                "will be sent again, from the oldest (the target may see duplicates)",
                name=self.name,
                path=checkpoint_path,
            )
            acknowledged = 0
        firsts = sorted(
            first for first in map(segment_first, os.listdir(self.directory)) if first is not None
        )
        last = acknowledged
        for first in firsts:
            path = os.path.join(self.directory, segment_name(first))
            skip = max(0, acknowledged - first + 1)
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            try:
                size = os.fstat(fd).st_size
                count, good, skip_offset = scan(fd, skip)
                if good < size:
                    os.ftruncate(fd, good)
            finally:
                os.close(fd)
            if good < size:
                self.cut_bytes += size - good
                log.warn(
                    "forward queue {name}: {path} ended in a torn or damaged message (the "
                    "process was killed while writing, or the disk changed it); cut {cut} "
                    "bytes back to its last whole message ({count} kept)",
                    name=self.name,
                    path=path,
                    cut=size - good,
                    count=count,
                )
            if skip >= count:  # empty, or every message acknowledged before a crash
                os.unlink(path)
                continue
            self._runs.append(Segment(path, first, count, good, skip, skip_offset))
            self._disk_used += good - skip_offset
            self._waiting += count - skip
            last = max(last, first + count - 1)
        self._acknowledged = acknowledged
        self._next = last + 1
        self._checkpoint_fd = os.open(
            checkpoint_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        if self._waiting:
            log.info(
                "forward queue {name}: {count} messages ({size} bytes) wait on disk in "
                "{directory}",
                name=self.name,
                count=self._waiting,
                size=self._disk_used,
                directory=self.directory,
            )

    # --- metrics and health ---

    @property
    def queued_bytes(self) -> tuple[int, int]:
        """
        (bytes in memory, bytes on disk) of the messages not yet
        acknowledged, each message's overhead included; the files may hold
        a segment or two more of delivered messages until they are deleted.
        """
        return self._memory_used + self._unwritten_size, self._disk_used

    def metric_samples(self) -> Iterator[tuple[str, tuple, object]]:
        memory, disk = self.queued_bytes
        yield "forward_queued", (self.name,), self.queued
        yield "forward_dropped", (self.name,), self.dropped
        yield "forward_queue_bytes", (self.name, "memory"), memory
        yield "forward_queue_bytes", (self.name, "disk"), disk
        yield "forward_queue_cut_bytes", (self.name,), self.cut_bytes

    def health_problems(self) -> list[tuple[str, str]]:
        if self.failing is None:
            return []
        return [
            (
                DEGRADED,
                f"forward queue {self.name} cannot write {self.directory}: {self.failing}",
            )
        ]

    def __len__(self) -> int:
        return self._waiting

    # --- what the delivery calls ---

    def on_pressure(self, callback: Callable[[bool], object]) -> None:
        self._pressure.append(callback)

    def put(self, messages: list[bytes]) -> None:
        """
        Queue MESSAGES in order.  Blocking, everything is accepted (the
        delivery stops reading once `full`, so the overshoot is one read);
        dropping, what does not fit is dropped and counted.  A message
        larger than the whole queue is dropped either way.
        """
        if not messages:
            return
        if max(map(len, messages)) > self._largest:
            oversized = len(messages)
            messages = [message for message in messages if len(message) <= self._largest]
            self._drop(oversized - len(messages), "larger than the whole queue")
        count = len(messages)
        to_memory = 0
        if self._memory_open():
            if self.blocks and not self.directory:
                to_memory = count
            else:
                to_memory = _fitting(
                    messages, self.memory_bytes - self._memory_used, MEMORY_OVERHEAD
                )
        to_disk = 0
        if self.directory and to_memory < count:
            if self.blocks:
                to_disk = count - to_memory
            elif self.failing is None:
                to_disk = _fitting(
                    messages[to_memory:], self.queue_bytes - self._disk_used, FRAME_OVERHEAD
                )
        if to_memory:
            self._to_memory(messages if to_memory == count else messages[:to_memory])
        if to_disk:
            self._to_disk(messages[to_memory : to_memory + to_disk])
        self._drop(count - to_memory - to_disk, "the queue is full (when_full = drop)")
        self.queued += to_memory + to_disk
        self._check_full()
        if self._starved and self._takeable():
            self._tell_ready()

    def stored(self) -> "Deferred[None] | None":
        """
        None without `sync`; with it, fires once every message put so far is
        written and fsynced.  The fsync is made once per turn of the reactor
        for every message put in it; while the disk cannot be written, the
        callers wait for a retry to succeed.
        """
        if not self.sync:
            return None
        if not (self._unsynced or self._unwritten or self._directory_unsynced):
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        if self._soon is None and self.failing is None:
            self._soon = self.clock.callLater(0, self._sync_soon)
        return waiter

    # --- what the forwarder calls ---

    def on_ready(self, callback: Callable[[], object]) -> None:
        self._ready.append(callback)

    def take(self, count: int, max_bytes: int) -> list[tuple[int, bytes]]:
        """
        Up to COUNT messages not yet taken (and no more than MAX_BYTES, but
        at least one), oldest first, with their sequence numbers: they are
        in flight until acknowledged or given back.
        """
        out: list[tuple[int, bytes]] = []
        budget = max_bytes
        failed = False
        for run in self._runs:
            if len(out) >= count:
                break
            try:
                budget -= run.take(count - len(out), budget, out)
            except OSError as e:
                assert isinstance(run, Segment)  # only segments read
                self._read_failed(run, e)
                failed = True
                break
            if run.untaken():
                break
        if self._read_failing is not None and not failed:
            log.info("forward queue {name}: reading its segments again", name=self.name)
            self._read_failing = None
        if not out:
            self._starved = True
        return out

    def _read_failed(self, segment: Segment, error: OSError) -> None:
        """
        A segment cannot be read: tried again every RETRY_SECONDS (logged
        once), unless someone deleted the file, whose messages are then lost.
        """
        if error.errno == errno.ENOENT and not segment.messages:
            self._runs.remove(segment)
            lost = segment.count - (segment.base - segment.first)
            self._waiting -= lost
            self._disk_used -= segment.size - segment.delivered
            self.dropped += lost
            log.error(
                "forward queue {name}: {path} was deleted by another program; its {count} "
                "messages are lost",
                name=self.name,
                path=segment.path,
                count=lost,
            )
            self._check_full()
            if self._takeable():
                self.clock.callLater(0, self._tell_ready)
            return
        if self._read_failing is None:
            self._read_failing = error.strerror or str(error)
            log.error(
                "forward queue {name}: cannot read {path}: {error}; trying again every "
                "{retry:g} s",
                name=self.name,
                path=segment.path,
                error=self._read_failing,
                retry=RETRY_SECONDS,
            )
        if self._read_retry is None:
            self._read_retry = self.clock.callLater(RETRY_SECONDS, self._read_again)

    def acknowledge(self, upto: int) -> None:
        """Every taken message numbered UPTO or less was delivered: it leaves the queue."""
        acknowledged = 0
        freed_disk = False
        while self._runs:
            run = self._runs[0]
            if isinstance(run, MemoryRun):
                before = run.size
                count = run.acknowledge(upto)
                self._memory_used -= before - run.size
            else:
                assert isinstance(run, Segment)
                before = run.delivered
                count = run.acknowledge(upto)
                self._disk_used -= run.delivered - before
            if count:
                acknowledged += count
                self._acknowledged = run.base + run.head - 1
            if not run.finished() or self._keeps(run):
                break
            self._runs.popleft()
            if isinstance(run, Segment):
                self._delete(run)
                freed_disk = True
        if not acknowledged:
            return
        self._waiting -= acknowledged
        self._write_checkpoint()
        if freed_disk and self._unwritten:
            self._write_unwritten()
        self._check_full()

    def _keeps(self, run: Run) -> bool:
        """
        The newest segment stays, delivered, while it has room: a forwarder
        keeping up would otherwise create and delete a file for every put.
        """
        return (
            isinstance(run, Segment)
            and run.writable
            and run is self._runs[-1]
            and run.size < segments.SEGMENT_BYTES
        )

    def give_back(self) -> int:
        """
        The connection was lost: every message in flight is taken again,
        first.  Returns how many (the target may have seen them).
        """
        count = sum(run.give_back() for run in self._runs)
        if count and self._starved:
            self._tell_ready()
        return count

    def _read_again(self) -> None:
        self._read_retry = None
        self._tell_ready()

    # --- the service ---

    def stopService(self) -> None:
        """
        Write what waits in memory to the disk queue, so that a clean
        restart loses nothing; close the files and give up the lock.
        Messages put later (connections closing during shutdown) go
        straight to disk.
        """
        service.Service.stopService(self)
        for call in (self._soon, self._retry, self._read_retry):
            if call is not None and call.active():
                call.cancel()
        self._soon = self._retry = self._read_retry = None
        if self._closed:
            return
        self._closed = True
        if not self.directory:
            if self._waiting:
                log.warn(
                    "forward queue {name}: {count} messages not yet delivered are lost "
                    "(the queue has no queue_dir to keep them in)",
                    name=self.name,
                    count=self._waiting,
                )
            return
        self._write_unwritten()
        if self._unwritten:
            log.error(
                "forward queue {name}: stopping with {count} messages that could not be "
                "written to {directory}: {error}; they are lost",
                name=self.name,
                count=len(self._unwritten),
                directory=self.directory,
                error=self.failing,
            )
        self._spill_memory()
        try:
            if self.sync:
                self._fsync()
        except OSError as e:
            log.error(
                "forward queue {name}: cannot fsync {directory}: {error}",
                name=self.name,
                directory=self.directory,
                error=e.strerror,
            )
        else:
            if not self._unwritten:
                self._tell_waiters()
        while self._runs and self._runs[0].finished():
            delivered = self._runs.popleft()  # a segment kept only to be written to
            assert isinstance(delivered, Segment)
            self._delete(delivered)
        for run in self._runs:
            if isinstance(run, Segment):
                run.seal(sync=False)
                run.close()
        self._unsynced.clear()
        for fd in (self._checkpoint_fd, self._lock_fd):
            if fd is not None:
                os.close(fd)
        self._checkpoint_fd = self._lock_fd = None

    def _spill_memory(self) -> None:
        """Each memory run becomes segments of its own, named by its numbers."""
        runs: deque[Run] = deque()
        for run in self._runs:
            if isinstance(run, MemoryRun) and not run.finished():
                try:
                    runs.extend(self._segments_of(run))
                except OSError as e:
                    runs.append(run)
                    log.error(
                        "forward queue {name}: cannot write the {count} messages held in "
                        "memory to {directory}: {error}; they are lost when the process exits",
                        name=self.name,
                        count=len(run.messages) - run.head,
                        directory=self.directory,
                        error=e.strerror,
                    )
                    continue
                self._memory_used -= run.size
            else:
                runs.append(run)
        self._runs = runs

    def _segments_of(self, run: MemoryRun) -> list[Segment]:
        made = []
        start = run.head
        try:
            while start < len(run.messages):
                stop = start + _fitting(
                    run.messages[start:], segments.SEGMENT_BYTES, FRAME_OVERHEAD
                )
                stop = max(stop, start + 1)
                batch = run.messages[start:stop]
                segment = Segment.create(self.directory, run.base + start)
                made.append(segment)
                segment.append(frame(batch), len(batch))
                segment.messages = batch
                segment.taken = max(0, min(len(batch), run.taken - start))
                segment.read_offset = segment.size
                segment.seal(sync=False)
                start = stop
        except OSError:
            for segment in made:
                with contextlib.suppress(OSError):
                    segment.delete()
            raise
        for segment in made:
            self._disk_used += segment.size
        return made

    # --- placing messages ---

    def _straight_to_disk(self) -> bool:
        return bool(self.directory) and (self.sync or self.memory_bytes == 0 or self._closed)

    def _memory_open(self) -> bool:
        """
        New messages may go to memory: memory is in use and nothing on disk
        waits to be taken (order is kept: they would come after it).
        """
        if not self.directory:
            return True
        if self._straight_to_disk() or self.failing is not None or self._unwritten:
            return False
        return not (
            self._runs and isinstance(self._runs[-1], Segment) and self._runs[-1].untaken()
        )

    def _room(self) -> bool:
        if not self.directory:
            return self._memory_used < self.memory_bytes
        if self.failing is not None:
            return False
        if self._disk_used < self.queue_bytes:
            return True
        return self._memory_open() and self._memory_used < self.memory_bytes

    def _takeable(self) -> bool:
        return any(run.untaken() for run in self._runs)

    def _to_memory(self, messages: list[bytes]) -> None:
        last = self._runs[-1] if self._runs else None
        if not (isinstance(last, MemoryRun) and last.next_sequence() == self._next):
            if isinstance(last, Segment):
                last.seal(sync=False)  # memory is never used with sync
                if last.finished() and len(self._runs) == 1:
                    self._runs.pop()
                    self._delete(last)
            last = MemoryRun(self._next)
            self._runs.append(last)
        size = sum(map(len, messages)) + MEMORY_OVERHEAD * len(messages)
        last.add(messages, size)
        self._memory_used += size
        self._next += len(messages)
        self._waiting += len(messages)

    def _to_disk(self, messages: list[bytes]) -> None:
        first = self._next
        self._next += len(messages)
        self._waiting += len(messages)
        if self._unwritten:
            self._unwritten += messages
            self._unwritten_size += sum(map(len, messages)) + MEMORY_OVERHEAD * len(messages)
            return
        try:
            self._write(messages, first)
        except OSError as e:
            self._unwritten = list(messages)
            self._unwritten_first = first
            self._unwritten_size = sum(map(len, messages)) + MEMORY_OVERHEAD * len(messages)
            self._failed(e)

    def _write(self, messages: list[bytes], first: int) -> None:
        """Frame MESSAGES, numbered from FIRST, and append them in one write."""
        data = frame(messages)
        segment = self._segment_for(first, len(data))
        try:
            segment.append(data, len(messages))
        except OSError:
            if not segment.count:
                self._runs.pop()
                self._unsynced.discard(segment)
                with contextlib.suppress(OSError):
                    segment.delete()  # an empty segment: else removed at the next start
            raise
        self._disk_used += len(data)
        if self.sync:
            self._unsynced.add(segment)

    def _segment_for(self, first: int, size: int) -> Segment:
        """The newest segment when FIRST follows it and SIZE more bytes fit; else a new one."""
        last = self._runs[-1] if self._runs else None
        if isinstance(last, Segment) and last.writable:
            if last.next_sequence() == first and (
                not last.size or last.size + size <= segments.SEGMENT_BYTES
            ):
                return last
            last.seal(self.sync)
            self._unsynced.discard(last)
        segment = Segment.create(self.directory, first)
        self._runs.append(segment)
        if self.sync:
            self._directory_unsynced = True
        return segment

    def _drop(self, count: int, why: str) -> None:
        """
        COUNT messages dropped: counted always, logged at most once every
        DROP_LOG_SECONDS (a full queue would otherwise flood the log).
        """
        if not count:
            return
        self.dropped += count
        self._dropped_since_log += count
        now = self.clock.seconds()
        if self._drop_logged_at is None or now - self._drop_logged_at >= DROP_LOG_SECONDS:
            log.warn(
                "forward queue {name}: dropped {count} messages since the last report: {why}",
                name=self.name,
                count=self._dropped_since_log,
                why=why,
            )
            self._drop_logged_at = now
            self._dropped_since_log = 0

    # --- disk failures ---

    def _failed(self, error: OSError) -> None:
        if self.failing is None:
            self.failing = error.strerror or str(error)
            log.error(
                "forward queue {name}: cannot write {directory}: {error}; messages wait in "
                "memory, the queue counts as full and writing is retried every {retry:g} s",
                name=self.name,
                directory=self.directory,
                error=self.failing,
                retry=RETRY_SECONDS,
            )
        if self._retry is None and not self._closed:
            self._retry = self.clock.callLater(RETRY_SECONDS, self._try_again)
        self._check_full()

    def _try_again(self) -> None:
        self._retry = None
        if self._unwritten:
            self._write_unwritten()
        elif self._waiters:
            self._sync_soon()

    def _write_unwritten(self) -> None:
        if not self._unwritten:
            return
        try:
            self._write(self._unwritten, self._unwritten_first)
        except OSError as e:
            self._failed(e)
            return
        count = len(self._unwritten)
        self._unwritten, self._unwritten_size = [], 0
        self._resumed(count)
        if self._waiters and self._soon is None and not self._closed:
            self._soon = self.clock.callLater(0, self._sync_soon)
        if self._starved:
            self._tell_ready()

    def _resumed(self, count: int) -> None:
        log.info(
            "forward queue {name}: writing {directory} again after: {error}; the {count} "
            "messages kept in memory meanwhile are on disk",
            name=self.name,
            directory=self.directory,
            error=self.failing,
            count=count,
        )
        self.failing = None
        self._check_full()

    # --- sync, checkpoint, deletion ---

    def _sync_soon(self) -> None:
        self._soon = None
        self._write_unwritten()
        if self._unwritten:
            return  # the callers wait for a retry to succeed
        try:
            self._fsync()
        except OSError as e:
            self._failed(e)
            return
        if self.failing is not None:
            self._resumed(0)
        self._tell_waiters()

    def _fsync(self) -> None:
        """What was written is on the disk: segments, the directory's new names, the checkpoint."""
        for segment in list(self._unsynced):
            if segment.fd is not None:
                os.fsync(segment.fd)
            self._unsynced.discard(segment)
        if self._directory_unsynced:
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._directory_unsynced = False
        if self._checkpoint_unsynced and self._checkpoint_fd is not None:
            os.fsync(self._checkpoint_fd)
            self._checkpoint_unsynced = False

    def _tell_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _write_checkpoint(self) -> None:
        """
        In place, not fsynced (but with `sync`, at the next fsync): a
        checkpoint behind only means messages sent again after a crash.
        """
        if self._checkpoint_fd is None:
            return
        try:
            os.pwrite(self._checkpoint_fd, checkpoint_bytes(self._acknowledged), 0)
        except OSError as e:
            if not self._checkpoint_failed:
                self._checkpoint_failed = True
                log.warn(
                    "forward queue {name}: cannot write its checkpoint: {error}; after a "
                    "restart, delivered messages may be sent again",
                    name=self.name,
                    error=e.strerror,
                )
            return
        self._checkpoint_failed = False
        self._checkpoint_unsynced = self.sync

    def _delete(self, segment: Segment) -> None:
        self._unsynced.discard(segment)
        self._disk_used -= segment.size - segment.delivered
        try:
            segment.delete()
        except OSError as e:
            log.warn(
                "forward queue {name}: cannot delete the delivered segment {path}: {error}; "
                "it is removed at the next start",
                name=self.name,
                path=segment.path,
                error=e.strerror,
            )

    # --- telling ---

    def _tell_ready(self) -> None:
        self._starved = False
        for callback in self._ready:
            callback()

    def _check_full(self) -> None:
        full = self.blocks and not self._room()
        if full != self.full:
            self.full = full
            for callback in self._pressure:
                callback(full)


def _fitting(messages: list[bytes], room: int, overhead: int) -> int:
    """How many of the first MESSAGES fit in ROOM bytes, OVERHEAD each on top."""
    if sum(map(len, messages)) + overhead * len(messages) <= room:
        return len(messages)
    count = 0
    for message in messages:
        room -= len(message) + overhead
        if room < 0:
            break
        count += 1
    return count
