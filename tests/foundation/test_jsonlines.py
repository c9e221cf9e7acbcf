"""Batching, rotation and reopening of the logger's output, on real files."""

import errno
import os
import stat

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from suite.foundation import jsonlines as writer_module
from suite.foundation.config import ConfigError, settings_for
from suite.foundation.interfaces import IReopenable
from suite.foundation.jsonlines import BatchWriter, RotatingFile, WriteFailed, cut_torn_tail
from suite.logger import service
from suite.logger.service import LoggerSettings
from suite.names.store import SqliteStore
from tests.helpers import captured_log, tmp_dir


def line(n, width=20):
    return b"%0*d\n" % (width - 1, n)


class BatchingTests(SynchronousTestCase):
    def setUp(self):
        self.path = os.path.join(self.mktemp(), "out.jsonl")
        self.clock = Clock()
        self.output = RotatingFile(self.path, 0, 3)
        self.writer = BatchWriter(self.output, self.clock, flush_interval=0.2, max_batch=100)
        self.writer.startService()
        self.addCleanup(self.writer.stopService)

    def test_the_writer_is_reopened_on_sighup(self):
        self.assertTrue(verifyObject(IReopenable, self.writer))

    def content(self):
        with open(self.path, "rb") as f:
            return f.read()

    def test_lines_wait_at_most_flush_interval(self):
        self.writer.write_lines([line(1)], 1)
        self.clock.advance(0.1)
        self.writer.write_lines([line(2)], 1)
        self.assertEqual(self.content(), b"")
        self.clock.advance(0.1)
        self.assertEqual(self.content(), line(1) + line(2))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_one_write_per_batch(self):
        writes = []
        original = self.output.write
        self.output.write = lambda data: (writes.append(data), original(data))
        self.writer.write_lines([line(n) for n in range(4)], 4)
        self.writer.write_lines([line(4)], 1)
        self.clock.advance(0.2)
        self.assertEqual(len(writes), 1)

    def test_records_written_are_the_lines_said(self):
        self.writer.write_lines([line(1) + line(2), line(3)], 3)
        self.writer.write_lines([line(4) + line(5)], 2)
        self.writer.flush()
        self.assertEqual(self.writer.records_written, 5)

    def test_max_batch_writes_at_once(self):
        self.writer.write_lines([line(n) for n in range(5)], 5)
        self.assertEqual(len(self.content()), 100)

    def test_after_stop_everything_is_written_through(self):
        self.writer.write_lines([line(1)], 1)
        self.writer.stopService()
        self.assertEqual(self.content(), line(1))
        self.writer.write_lines([line(2)], 1)
        self.assertEqual(self.content(), line(1) + line(2))

    def test_reopen_after_rename_starts_a_new_file(self):
        self.writer.write_lines([line(1)], 1)
        self.writer.flush()
        os.rename(self.path, self.path + ".old")
        self.writer.reopen()
        self.writer.write_lines([line(2)], 1)
        self.writer.flush()
        with open(self.path + ".old", "rb") as f:
            self.assertEqual(f.read(), line(1))
        self.assertEqual(self.content(), line(2))


class RotationTests(SynchronousTestCase):
    def setUp(self):
        self.directory = self.mktemp()
        self.path = os.path.join(self.directory, "out.jsonl")

    def test_rotates_at_line_boundaries_and_keeps_at_most_keep_files(self):
        output = RotatingFile(self.path, rotate_bytes=100, keep=3)
        written = b"".join(line(n) + line(n + 1000) for n in range(40))
        for n in range(40):
            output.write(line(n) + line(n + 1000))
        files = sorted(os.listdir(self.directory))
        self.assertEqual(files, ["out.jsonl", "out.jsonl.1", "out.jsonl.2", "out.jsonl.3"])
        kept = b""
        for name in files[:0:-1] + files[:1]:
            with open(os.path.join(self.directory, name), "rb") as f:
                data = f.read()
            self.assertLessEqual(len(data), 100)
            self.assertEqual(len(data) % 20, 0)  # whole lines only
            kept += data
        # Oldest kept file first: together they are the tail of what was written.
        self.assertTrue(written.endswith(kept))
        self.assertGreaterEqual(len(kept), 300)

    def test_a_line_larger_than_a_file_gets_a_file_of_its_own(self):
        output = RotatingFile(self.path, rotate_bytes=50, keep=5)
        output.write(line(1))
        output.write(b"z" * 120 + b"\n" + line(2))
        with open(self.path + ".1", "rb") as f:
            self.assertEqual(f.read(), b"z" * 120 + b"\n")
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), line(2))

    def test_rotate_bytes_zero_never_rotates(self):
        output = RotatingFile(self.path, rotate_bytes=0, keep=1)
        for n in range(100):
            output.write(line(n))
        self.assertEqual(os.listdir(self.directory), ["out.jsonl"])


class RenamedUnderneathTests(SynchronousTestCase):
    """Another program renames or deletes the output, and no SIGHUP comes."""

    def setUp(self):
        self.directory = self.mktemp()
        self.path = os.path.join(self.directory, "out.jsonl")
        self.lines = captured_log(self)

    def everything_written(self) -> list[bytes]:
        found = []
        for name in os.listdir(self.directory):
            with open(os.path.join(self.directory, name), "rb") as f:
                found += f.read().splitlines(keepends=True)
        return sorted(found)

    def test_a_renamed_file_is_followed_by_a_new_one_and_rotation_goes_on(self):
        output = RotatingFile(self.path, rotate_bytes=100, keep=50)
        for n in range(20):
            output.write(line(n))
            if n in (3, 11):
                os.rename(self.path, self.path + f".moved{n}")
        self.assertEqual(self.everything_written(), [line(n) for n in range(20)])
        with open(self.path + ".moved3", "rb") as f:
            self.assertEqual(f.read(), b"".join(line(n) for n in range(4)))
        self.assertEqual(sum("was renamed or deleted" in text for text in self.lines), 2)

    def test_a_deleted_file_under_a_rotation_threshold_never_hangs(self):
        output = RotatingFile(self.path, rotate_bytes=100, keep=3)
        output.write(line(0) * 4)
        os.unlink(self.path)
        for n in range(1, 30):  # each write crosses the threshold soon: it must not loop
            output.write(line(n))
        with open(self.path, "rb") as f:
            self.assertTrue(f.read().endswith(line(29)))

    def test_a_torn_last_line_is_cut_back_at_start(self):
        os.makedirs(self.directory)
        with open(self.path, "wb") as f:
            f.write(line(1) + line(2) + b'{"received": "2026-')
        RotatingFile(self.path, rotate_bytes=0, keep=1).write(line(3))
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), line(1) + line(2) + line(3))
        self.assertTrue(
            any("cut 19 bytes back to the last complete line" in t for t in self.lines)
        )

    def test_a_file_with_no_complete_line_is_emptied(self):
        os.makedirs(self.directory)
        with open(self.path, "wb") as f:
            f.write(b"x" * 70000)
        self.assertEqual(cut_torn_tail(self.path), 70000)
        self.assertEqual(os.path.getsize(self.path), 0)
        self.assertEqual(cut_torn_tail(self.path + ".missing"), 0)


class FailingOutput:
    """
    An output whose writes fail (disk full) until `room` is set, after
    writing `partial` bytes.
    """

    def __init__(self):
        self.data = b""
        self.room = True
        self.partial = 0
        self.path = "out.jsonl"

    def write(self, data):
        if not self.room:
            written = data.rfind(b"\n", 0, self.partial) + 1  # whole records, as RotatingFile does
            self.data += data[:written]
            raise WriteFailed(written, OSError(errno.ENOSPC, "No space left on device"))
        self.data += data

    def reopen(self):
        pass


class WriteFaultTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.output = FailingOutput()
        self.writer = BatchWriter(
            self.output, self.clock, flush_interval=0.2, max_batch=10**6, max_buffer=200
        )
        self.writer.startService()
        self.lines = captured_log(self)
        self.pressure = []
        self.writer.on_pressure(self.pressure.append)

    def test_records_wait_retry_each_second_and_nothing_is_lost_or_doubled(self):
        self.writer.write_lines([line(1)], 1)
        self.clock.advance(0.2)
        self.output.room, self.output.partial = False, 30
        self.writer.write_lines([line(2), line(3)], 2)
        self.clock.advance(0.2)  # line 2 written, line 3 waits
        self.writer.write_lines([line(4)], 1)
        self.assertEqual(self.output.data, line(1) + line(2))
        for _ in range(3):
            self.clock.advance(1)  # retried, still full
        self.assertEqual(
            sum("cannot write out.jsonl: No space left on device" in t for t in self.lines), 1
        )
        self.output.room = True
        self.clock.advance(1)
        self.assertEqual(self.output.data, b"".join(line(n) for n in range(1, 5)))
        self.assertTrue(any("writing out.jsonl again" in t for t in self.lines))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_max_buffer_applies_back_pressure_until_there_is_room(self):
        self.output.room = False
        for n in range(12):  # 240 bytes, over max_buffer (200)
            self.writer.write_lines([line(n)], 1)
            self.clock.advance(0.2)
        self.assertEqual(self.pressure, [True])
        self.assertTrue(self.writer.full)
        self.output.room = True
        self.clock.advance(1)
        self.assertEqual(self.pressure, [True, False])
        self.assertEqual(self.output.data, b"".join(line(n) for n in range(12)))


class SyncedOutput(FailingOutput):
    """A FailingOutput that notes each write and fsync in EVENTS."""

    def __init__(self, events):
        super().__init__()
        self.events = events

    def write(self, data):
        super().write(data)
        self.events.append("write")

    def sync(self):
        self.events.append("sync")


class WhenWrittenTests(SynchronousTestCase):
    """What a RELP acknowledgement waits for: the lines written, and with `sync` fsynced."""

    def setUp(self):
        self.clock, self.events = Clock(), []
        self.output = SyncedOutput(self.events)

    def writer(self, **options):
        writer = BatchWriter(self.output, self.clock, 0.2, 100, **options)
        writer.startService()
        self.addCleanup(writer.stopService)
        return writer

    def waited(self, writer):
        done = writer.when_written()
        done.addCallback(lambda _: self.events.append("told"))
        return done

    def test_written_within_the_turn_not_after_flush_interval(self):
        writer = self.writer()
        writer.write_lines([line(1)], 1)
        self.waited(writer)
        self.assertEqual(self.events, [])
        self.clock.advance(0)
        self.assertEqual(self.events, ["write", "told"])

    def test_with_sync_lines_already_written_are_fsynced_before_telling(self):
        writer = self.writer(sync=True)
        writer.write_lines([line(n) for n in range(6)], 6)  # 120 bytes: over max_batch
        self.assertEqual(self.events, ["write"])
        self.waited(writer)
        self.clock.advance(0)
        self.assertEqual(self.events, ["write", "sync", "told"])
        self.waited(writer)  # nothing new since: nothing to wait for
        self.assertEqual(self.events, ["write", "sync", "told", "told"])

    def test_while_writes_fail_the_callers_wait_for_the_retry(self):
        writer = self.writer(sync=True)
        self.output.room = False
        writer.write_lines([line(1)], 1)
        self.waited(writer)
        self.clock.advance(0)
        self.clock.advance(1)
        self.assertNotIn("told", self.events)
        self.output.room = True
        self.clock.advance(1)
        self.assertEqual(self.events, ["write", "sync", "told"])


class DiskFullTests(SynchronousTestCase):
    """A real file whose write fails half-way: it is cut back, never left with half a record."""

    def test_a_failed_write_leaves_no_partial_record(self):
        path = os.path.join(self.mktemp(), "out.jsonl")
        output = RotatingFile(path, rotate_bytes=0, keep=1)
        output.write(line(1))
        real_write = os.write
        calls = []

        def half_then_full(fd, data):
            calls.append(len(data))
            if len(calls) == 1:
                return real_write(fd, bytes(data[:7]))  # a short write
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(writer_module.os, "write", half_then_full)
        with self.assertRaises(WriteFailed) as caught:
            output.write(line(2) + line(3))
        self.assertEqual(caught.exception.written, 0)
        self.patch(writer_module.os, "write", real_write)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), line(1))
        output.write(line(2) + line(3))
        with open(path, "rb") as f:
            self.assertEqual(f.read(), line(1) + line(2) + line(3))


class MovedRotationsTests(SynchronousTestCase):
    def setUp(self):
        self.directory = self.mktemp()
        self.path = os.path.join(self.directory, "out.jsonl")

    def test_keep_still_holds_when_rotated_files_were_moved_away(self):
        output = RotatingFile(self.path, rotate_bytes=40, keep=2)
        for n in range(12):
            output.write(line(n))
            if n == 3:
                os.rename(self.path + ".1", os.path.join(self.directory, "archived"))
        names = sorted(os.listdir(self.directory))
        self.assertEqual(names, ["archived", "out.jsonl", "out.jsonl.1", "out.jsonl.2"])
        for name, first in (("out.jsonl.2", 6), ("out.jsonl.1", 8), ("out.jsonl", 10)):
            with open(os.path.join(self.directory, name), "rb") as f:
                self.assertEqual(f.read(), line(first) + line(first + 1))


class SmallDisk:
    """
    os.write for a disk that holds CAPACITY bytes of files: short writes,
    then ENOSPC, as a full disk gives; a file cut back frees its space.
    """

    def __init__(self, test, capacity: int):
        self.capacity = capacity
        self.real_write = os.write
        test.patch(writer_module.os, "write", self.write)

    def write(self, fd, data):
        free = self.capacity - os.fstat(fd).st_size
        if free <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.real_write(fd, bytes(data[:free]))


class BacklogInPiecesTests(SynchronousTestCase):
    """A backlog larger than the space freed goes out in pieces, whole records, in order."""

    def setUp(self):
        self.path = os.path.join(self.mktemp(), "out.jsonl")
        self.clock = Clock()
        self.writer = BatchWriter(
            RotatingFile(self.path, rotate_bytes=0, keep=1),
            self.clock,
            flush_interval=0.2,
            max_batch=10**6,
        )
        self.writer.startService()
        self.addCleanup(self.writer.stopService)
        self.lines = captured_log(self)

    def content(self):
        with open(self.path, "rb") as f:
            return f.read()

    def test_each_retry_writes_the_records_that_fit(self):
        disk = SmallDisk(self, capacity=0)
        self.writer.write_lines([line(n) for n in range(5)], 5)
        self.writer.write_lines([b"".join(line(n) for n in range(5, 10))], 5)  # 200 bytes wait
        self.clock.advance(0.2)
        self.assertEqual(self.content(), b"")
        disk.capacity = 50  # room for two records and a half
        self.clock.advance(1)
        self.assertEqual(self.content(), line(0) + line(1))
        self.assertEqual(self.writer.records_written, 2)
        disk.capacity = 125  # three more and a quarter
        self.clock.advance(1)
        self.assertEqual(self.content(), b"".join(line(n) for n in range(6)))
        self.assertIsNotNone(self.writer.failing)  # four still wait: not resumed yet
        disk.capacity = 10**6
        self.clock.advance(1)
        self.assertEqual(self.content(), b"".join(line(n) for n in range(10)))
        self.assertEqual(self.writer.records_written, 10)
        self.assertEqual(sum("cannot write" in t for t in self.lines), 1)
        self.assertEqual(sum("writing" in t and "again" in t for t in self.lines), 1)

    def test_at_stop_what_fits_is_written_and_only_the_rest_reported(self):
        disk = SmallDisk(self, capacity=0)
        self.writer.write_lines([line(n) for n in range(10)], 10)
        self.clock.advance(0.2)
        disk.capacity = 45
        self.writer.stopService()
        self.assertEqual(self.content(), line(0) + line(1))
        self.assertTrue(any("stopping with 160 bytes of records" in t for t in self.lines))


class FileModeTests(SynchronousTestCase):
    """
    Files the suite creates are 0640 (file_mode) even under umask 0: records
    hold client text.
    """

    def setUp(self):
        self.addCleanup(os.umask, os.umask(0))
        self.directory = self.mktemp()
        self.path = os.path.join(self.directory, "out.jsonl")

    def mode(self, path) -> int:
        return stat.S_IMODE(os.stat(path).st_mode)

    def test_output_and_rotated_files_are_0640(self):
        output = RotatingFile(self.path, rotate_bytes=40, keep=2)
        for n in range(6):
            output.write(line(n))
        self.assertEqual(
            sorted(os.listdir(self.directory)), ["out.jsonl", "out.jsonl.1", "out.jsonl.2"]
        )
        for name in os.listdir(self.directory):
            self.assertEqual(self.mode(os.path.join(self.directory, name)), 0o640, name)

    def test_file_mode_is_configurable_and_an_existing_file_keeps_its_own(self):
        service.build(
            settings_for(LoggerSettings, {"output": self.path, "file_mode": "0600"}, "suite.toml"),
            Clock(),
        )
        self.assertEqual(self.mode(self.path), 0o600)
        os.chmod(self.path, 0o644)
        RotatingFile(self.path, rotate_bytes=0, keep=1, file_mode=0o600).reopen()
        self.assertEqual(self.mode(self.path), 0o644)

    def test_file_mode_values(self):
        def mode(value):
            return settings_for(LoggerSettings, {"file_mode": value}, "suite.toml").file_mode

        self.assertEqual(
            [mode("0640"), mode("0o600"), mode("644"), mode(0o640), mode(0)],
            [0o640, 0o600, 0o644, 0o640, 0],
        )
        self.assertEqual(LoggerSettings().file_mode, 0o640)
        for wrong, problem in (
            ("4755", "permission bits only"),
            (640, "permission bits only"),
            ("rw-r-----", "octal mode"),
            ("0648", "octal mode"),
            (True, "octal mode"),
            (6.4, "octal mode"),
        ):
            message = str(self.assertRaises(ConfigError, mode, wrong))
            self.assertIn("suite.toml: [logger] file_mode", message)
            self.assertIn(problem, message)

    def test_the_name_server_store_file_is_0640(self):
        path = os.path.join(self.directory, "names.sqlite")
        SqliteStore._check_and_read(path)
        self.assertEqual(self.mode(path), 0o640)


class SyncedRotationTests(SynchronousTestCase):
    """With `sync`, records in a file rotated away were fsynced before it was closed."""

    def test_every_file_a_flush_rotated_is_fsynced_before_the_callers_are_told(self):
        directory = tmp_dir(self)
        path = str(directory / "out.jsonl")
        synced_inodes = []
        real_fsync = os.fsync

        def fsync(fd):
            synced_inodes.append(os.fstat(fd).st_ino)
            real_fsync(fd)

        self.patch(os, "fsync", fsync)
        clock = Clock()
        output = RotatingFile(path, rotate_bytes=100, keep=3, sync=True)
        writer = BatchWriter(output, clock, 0.2, 2**20, sync=True)
        writer.startService()
        self.addCleanup(writer.stopService)
        pad = b"x" * 50
        writer.write_lines([b'{"n": %d, "pad": "%s"}\n' % (n, pad) for n in range(3)], 3)
        told = []
        writer.when_written().addCallback(told.append)
        clock.advance(0)
        self.assertEqual(told, [None])
        files = sorted(os.listdir(directory))
        self.assertEqual(files, ["out.jsonl", "out.jsonl.1", "out.jsonl.2"])
        for name in files:
            inode = os.stat(directory / name).st_ino
            self.assertIn(inode, synced_inodes, name)
