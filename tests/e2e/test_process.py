"""
The e2e helpers start processes that stop on the signals the tests send,
even when the test runner itself inherited them ignored (`make test &` from
a script, nohup).
"""

import signal
import subprocess
from contextlib import contextmanager

from tests.e2e.process import STOP_SIGNALS, ProcessTestCase, popen


@contextmanager
def ignoring(numbers):
    """The signals NUMBERS ignored in this process while the block runs, as a background job's."""
    before = {number: signal.signal(number, signal.SIG_IGN) for number in numbers}
    try:
        yield
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)


class StopSignalsTests(ProcessTestCase):
    def test_a_child_stops_on_a_signal_its_parent_ignores(self):
        for number in STOP_SIGNALS:
            with ignoring(STOP_SIGNALS):
                child = popen(["sleep", "60"], cwd=self.directory)
            try:
                child.send_signal(number)
                status = child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
                raise AssertionError(f"the child ignored {number!r}") from None
            assert status == -number, (number, status)

    def test_a_child_started_without_the_helper_would_ignore_it(self):
        """The test above can fail: a plain Popen hands the ignored signal on."""
        with ignoring([signal.SIGINT]):
            child = subprocess.Popen(["sleep", "60"], cwd=self.directory)
        self.addCleanup(child.wait)
        self.addCleanup(child.kill)
        child.send_signal(signal.SIGINT)
        self.assertRaises(subprocess.TimeoutExpired, child.wait, 0.5)
