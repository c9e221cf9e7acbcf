"""
The disk queue survives kill -9: a child process puts numbered messages
straight to disk (and takes and acknowledges some, lagging behind) until
it is killed mid-stream; the queue reopened afterwards holds every number
the child said it had put, in order, without a gap.
"""

import os
import signal
import subprocess
import sys
import time

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.logger.queue import ForwardQueue
from tests.helpers import tmp_dir

CHILD = """
import sys
from twisted.internet.task import Clock
from suite.logger import segments
from suite.logger.queue import ForwardQueue

segments.SEGMENT_BYTES = 4096  # many small segments: files made and deleted under the kill
queue = ForwardQueue("crash", sys.argv[1], 0, 2**30, "block", Clock())
number = int(sys.argv[2])
highest_taken = number - 1
while True:
    queue.put([b"%d" % n for n in range(number, number + 10)])
    number += 10
    taken = queue.take(7, 2**20)  # the forwarder lags: the queue grows
    if taken:
        highest_taken = int(taken[-1][1])
    # Reported before they are acknowledged: nothing beyond the report can be.
    sys.stdout.write(f"{number - 1} {highest_taken}\\n")
    sys.stdout.flush()
    if taken:
        queue.acknowledge(taken[-1][0])
"""

RUNS = 3
START_SECONDS = 10.0  # the child's imports, on a slow machine
RUN_SECONDS = 0.3


class KilledQueueTests(SynchronousTestCase):
    def run_child(self, directory: str, first: int, report: str) -> tuple[int, int]:
        """
        Run the child from number FIRST until killed; the last (highest
        put, highest taken) it reported: it acknowledges only what it
        reported taken.
        """
        with open(report, "wb") as out:
            child = subprocess.Popen(
                [sys.executable, "-c", CHILD, directory, str(first)], stdout=out
            )
        try:
            deadline = time.monotonic() + START_SECONDS
            while os.path.getsize(report) == 0:
                self.assertIsNone(child.poll(), "the child ended before it was killed")
                self.assertLess(time.monotonic(), deadline, "the child never put a message")
                time.sleep(0.01)
            time.sleep(RUN_SECONDS)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(5)
        with open(report, "rb") as f:
            lines = f.read().split(b"\n")[:-1]  # the last line may be cut by the kill
        put, taken = map(int, lines[-1].split())
        return put, taken

    def test_every_reported_message_survives_kill_9(self) -> None:
        directory = str(tmp_dir(self) / "queue")
        report = str(tmp_dir(self) / "report")
        first = 0
        for run in range(RUNS):
            put, taken = self.run_child(directory, first, report)
            self.assertGreater(put, first, f"run {run}: the child put nothing")
            queue = ForwardQueue("crash", directory, 0, 2**30, "block", Clock())
            try:
                numbers = []
                while batch := queue.take(10_000, 2**24):
                    numbers += [int(message) for _, message in batch]
            finally:
                queue.stopService()
            self.assertTrue(numbers, f"run {run}: the queue is empty")
            # In order, no gap, from at most just after the last one that can
            # have been acknowledged (a checkpoint behind sends some again) to
            # at least the last one put.
            self.assertEqual(numbers, list(range(numbers[0], numbers[0] + len(numbers))), run)
            self.assertLessEqual(numbers[0], taken + 1, run)
            self.assertGreaterEqual(numbers[-1], put, run)
            first = numbers[-1] + 1  # the next run goes on after whatever reached the disk
