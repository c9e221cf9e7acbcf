"""
One output file appended to by several processes (the collector's
workers): records never interleave, rotation happens once per crossing of
rotate_bytes whoever crosses it, and no record is lost or doubled.
"""

import multiprocessing
import os

from twisted.trial.unittest import SynchronousTestCase

from suite.foundation.shared_output import SharedRotatingFile
from tests.helpers import tmp_dir


def records_in(path: str, keep: int) -> list[bytes]:
    """Every line of PATH and its rotated files, oldest file first."""
    lines: list[bytes] = []
    for name in [f"{path}.{n}" for n in range(keep, 0, -1)] + [path]:
        if os.path.exists(name):
            with open(name, "rb") as f:
                data = f.read()
            assert not data or data.endswith(b"\n"), f"{name} ends inside a record"
            lines += data.splitlines()
    return lines


def append(path: str, writer: int, batches: int, per_batch: int, rotate_bytes: int) -> None:
    """A process appending BATCHES batches of PER_BATCH numbered records of its own."""
    output = SharedRotatingFile(path, rotate_bytes, 1000, cut_tail=False)
    for batch in range(batches):
        output.write(
            b"".join(
                b'{"writer": %d, "n": %06d, "pad": "%s"}\n'
                % (writer, batch * per_batch + i, b"x" * 40)
                for i in range(per_batch)
            )
        )
    output.close()


class SharedRotatingFileTests(SynchronousTestCase):
    def setUp(self):
        self.path = str(tmp_dir(self) / "out.jsonl")

    def test_two_writers_rotate_once_per_crossing_and_keep_every_record(self):
        first = SharedRotatingFile(self.path, 1000, 50)
        second = SharedRotatingFile(self.path, 1000, 50, cut_tail=False)
        line = b"x" * 99 + b"\n"
        for _ in range(30):
            first.write(line * 3)
            second.write(line * 3)
        self.assertEqual(len(records_in(self.path, 50)), 180)
        # 18,000 bytes in files of at most 1,000: 18 files, whoever wrote.
        self.assertEqual(first.rotations + second.rotations, 17)
        for n in range(1, 18):
            self.assertLessEqual(os.path.getsize(f"{self.path}.{n}"), 1000)

    def test_a_writer_follows_the_file_another_rotated(self):
        first = SharedRotatingFile(self.path, 200, 5)
        second = SharedRotatingFile(self.path, 200, 5, cut_tail=False)
        second.write(b"a" * 99 + b"\n")
        first.write(b"b" * 150 + b"\n")  # crosses 200: first rotates
        second.write(b"c\n")  # into the new file, not the renamed one
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"b" * 150 + b"\n" + b"c\n")
        with open(f"{self.path}.1", "rb") as f:
            self.assertEqual(f.read(), b"a" * 99 + b"\n")

    def test_processes_writing_at_once_neither_tear_nor_lose_records(self):
        context = multiprocessing.get_context("fork")
        writers = [
            context.Process(target=append, args=(self.path, number, 200, 50, 64 * 1024))
            for number in range(3)
        ]
        SharedRotatingFile(self.path, 64 * 1024, 1000).close()  # the parent opens it first
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join(60)
            self.assertEqual(writer.exitcode, 0)
        lines = records_in(self.path, 1000)
        self.assertEqual(len(lines), 3 * 200 * 50)
        for number in range(3):
            own = [line for line in lines if line.startswith(b'{"writer": %d,' % number)]
            numbers = [int(line.split(b'"n": ')[1][:6]) for line in own]
            self.assertEqual(numbers, list(range(200 * 50)), "each writer's records, in order")
        for n in range(1, 1000):
            name = f"{self.path}.{n}"
            if not os.path.exists(name):
                break
            self.assertLessEqual(os.path.getsize(name), 64 * 1024)
