"""
End to end: Ctrl-C (SIGINT) or SIGTERM on a `suite-client` that waits (a
watch, an echo reading standard input, a sleep) ends it with one line,
`interrupted`, and status 130, like any command a person interrupts; the
server it talked to did nothing wrong and is not blamed.
"""

import signal
import subprocess
import time

from tests.e2e.process import ProcessTestCase, popen
from tests.e2e.test_client_process import CLIENT

LOCAL = "tcp:0:interface=127.0.0.1"
INTERRUPTED = "suite-client: interrupted\n"


def catches(process: subprocess.Popen, number: int) -> bool:
    """Whether PROCESS has a handler of its own for signal NUMBER (Linux's /proc)."""
    with open(f"/proc/{process.pid}/status") as status:
        for line in status:
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (number - 1) & 1)
    return False


class InterruptedClientTests(ProcessTestCase):
    def setUp(self):
        super().setUp()
        self.suite = self.start_suite(
            f"""
            [names]
            listen = ["{LOCAL}"]
            store = "memory"
            lookup_audit = ""
            [echo]
            listen = ["{LOCAL}"]
            [sleep]
            listen = ["{LOCAL}"]
            """,
            listeners=3,
        )

    def address(self, service):
        return f"127.0.0.1:{self.suite.port(f'{service} {LOCAL}')}"

    def start_client(self, *args):
        """suite-client ARGS, its standard streams piped, stopped by PID after the test."""
        process = popen(
            [CLIENT, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.addCleanup(lambda: process.poll() is None and (process.kill(), process.wait()))
        return process

    def interrupt(self, process, number):
        """Send signal NUMBER; the status, what was left on standard output, standard error."""
        process.send_signal(number)
        out, err = process.communicate(timeout=10)
        return process.returncode, out, err

    def test_watch(self):
        for number in (signal.SIGINT, signal.SIGTERM):
            watcher = self.start_client("names", self.address("names"), "watch", "echo")
            assert watcher.stdout.readline() == "echo: (no live instance)\n"
            assert self.interrupt(watcher, number) == (130, "", INTERRUPTED), number

    def test_echo_reading_standard_input(self):
        for number in (signal.SIGINT, signal.SIGTERM):
            echo = self.start_client("echo", self.address("echo"))
            echo.stdin.write("first\n")
            echo.stdin.flush()
            assert echo.stdout.readline() == "You said: first\n"  # connected, waiting for more
            assert self.interrupt(echo, number) == (130, "", INTERRUPTED), number

    def test_sleep(self):
        for number in (signal.SIGINT, signal.SIGTERM):
            sleeper = self.start_client("sleep", self.address("sleep"), "30")
            for _ in range(200):  # at most ~10 s: until the client handles the signals itself
                if catches(sleeper, signal.SIGTERM):
                    break
                time.sleep(0.05)
            started = time.monotonic()
            assert self.interrupt(sleeper, number) == (130, "", INTERRUPTED), number
            assert time.monotonic() - started < 5  # at once, not at the end of the sleep
