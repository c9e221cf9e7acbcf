"""
The suite as a relay between two real rsyslogs, across a SIGKILL of the
suite: rsyslogd A (imtcp in, omrelp out with an action queue, so it sends
again what was not acknowledged) -> the suite (relp_listen, sync = true, a
RELP forward target whose queue is on disk before anything is
acknowledged) -> rsyslogd B (imrelp, each message written raw on a line).

Numbered messages go into A; the suite is killed with SIGKILL while they
flow at both ends and started again on the same port with the same queue
directory.  Every number must reach B.  Duplicates are allowed (RELP is at
least once at both hops) but must be accounted for: those in the suite's
own output came from A sending again what the dead suite had not answered;
the rest of B's came from the suite's disk queue sending again what B took
but the dead suite never saw answered.  Each rsyslogd and suite is the
test's own (config, work directory, loopback ports), stopped by PID.
"""

import glob
import json
import re
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import cast

from twisted.trial.unittest import SkipTest

from tests.e2e.process import ProcessTestCase, SuiteProcess, popen, require, stop_process
from tests.e2e.test_forward_rsyslog import Rsyslog, metric, wait_until
from tests.e2e.test_rsyslog import free_port

COUNT = 3000
NUMBER = re.compile(rb"n=(\d{6})")
LOCAL = "tcp:0:interface=127.0.0.1"
TARGET = "central"


def message(n: int) -> bytes:
    """Message N as the test hands it to rsyslogd A (RFC 5424, LF-framed over imtcp)."""
    return b"<13>1 2026-12-03T10:00:00Z host app - - - n=%06d\n" % n


def whole_lines(path: Path) -> list[bytes]:
    """The complete lines of PATH so far (a writer may be in the middle of one)."""
    data = path.read_bytes() if path.exists() else b""
    return data[: data.rfind(b"\n") + 1].splitlines()


def numbered(lines: Iterable[bytes]) -> Counter[int]:
    """How many times each number occurs in LINES."""
    return Counter(int(found[1]) for found in map(NUMBER.search, lines) if found)


class Sender:
    """
    rsyslogd A: imtcp on a loopback port of its own, every message relayed
    by omrelp to the suite through a linked-list action queue retried every
    second without end, so nothing it could not hand over is dropped.
    """

    def __init__(self, work: Path, relp_port: int) -> None:
        work.mkdir()
        self.work = work
        self.port = free_port()
        (work / "rsyslog.conf").write_text(f"""
global(workDirectory="{work}")
module(load="imtcp")
module(load="omrelp")
input(type="imtcp" port="{self.port}" address="127.0.0.1" ruleset="relay")
ruleset(name="relay") {{
  action(type="omrelp" target="127.0.0.1" port="{relp_port}"
         template="RSYSLOG_SyslogProtocol23Format"
         queue.type="LinkedList" queue.size="100000"
         action.resumeRetryCount="-1" action.resumeInterval="1")
}}
""")
        self.process: subprocess.Popen | None = None

    def start(self) -> "Sender":
        self.process = popen(
            [
                "rsyslogd",
                "-n",
                "-f",
                str(self.work / "rsyslog.conf"),
                "-i",
                str(self.work / "pid"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self.work,
        )
        deadline = time.monotonic() + 10
        while True:
            assert self.process.poll() is None, self.process.stdout.read()  # type: ignore[union-attr]
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return self
            except OSError:
                assert time.monotonic() < deadline, f"rsyslogd does not listen on {self.port}"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process.stdout.close()  # type: ignore[union-attr]
            self.process = None

    def feed(self, numbers: range, per_pause: int = 100, pause: float = 0.05) -> None:
        """
        NUMBERS into imtcp, PAUSE seconds after every PER_PAUSE messages, so
        that they are still flowing when the suite is killed; gives up after
        10 s should rsyslogd stop reading.
        """
        with socket.create_connection(("127.0.0.1", self.port), 10) as sock:
            for start in range(numbers.start, numbers.stop, per_pause):
                end = min(start + per_pause, numbers.stop)
                sock.sendall(b"".join(message(n) for n in range(start, end)))
                time.sleep(pause)


class RelayChainTests(ProcessTestCase):
    def setUp(self):
        super().setUp()
        require("rsyslogd")
        for module in ("imrelp", "omrelp"):
            if not glob.glob(f"/usr/lib/*/rsyslog/{module}.so"):
                raise SkipTest(
                    f"rsyslog-relp ({module}) is not installed (make test installs it as root)"
                )

    def start_relay(self, relp_port: int, forward_port: int) -> tuple[SuiteProcess, int]:
        """The suite between the two: (process, its /metrics port)."""
        suite = self.start_suite(
            f"""
            [logger]
            listen = []
            relp_listen = ["tcp:{relp_port}:interface=127.0.0.1"]
            output = "messages.jsonl"
            flush_interval = 0.05
            sync = true

            [[logger.forward]]
            name = "{TARGET}"
            target = "relp:127.0.0.1:{forward_port}"
            memory_bytes = 0
            queue_dir = "queue"

            [metrics]
            listen = ["{LOCAL}"]
            """,
            listeners=2,
        )
        return suite, suite.port(f"metrics {LOCAL}")

    def test_nothing_acknowledged_is_lost_when_the_relay_is_killed_mid_stream(self):
        receiver = Rsyslog(
            self.directory / "rsyslog-b", [("relp", f'type="imrelp" port="{free_port()}"')]
        )
        self.addCleanup(receiver.stop)
        receiving = cast(subprocess.Popen, receiver.start().process)
        relp_port = free_port()
        suite, _ = self.start_relay(relp_port, receiver.ports[0])
        sender = Sender(self.directory / "rsyslog-a", relp_port)
        self.addCleanup(sender.stop)
        sender.start()

        output = self.directory / "messages.jsonl"
        relayed = receiver.work / "relp"
        feeding = threading.Thread(target=sender.feed, args=(range(1, COUNT + 1),), daemon=True)
        feeding.start()
        self.addCleanup(feeding.join, 15)
        assert wait_until(
            lambda: len(whole_lines(output)) >= 500 and len(whole_lines(relayed)) >= 200, 10
        ), (len(whole_lines(output)), len(whole_lines(relayed)), suite.output)

        # B stops reading for a moment, so that when the suite dies its disk
        # queue holds messages B has not answered (some of them on B's socket):
        # the restart must send those again.
        receiving.send_signal(signal.SIGSTOP)
        self.addCleanup(receiving.send_signal, signal.SIGCONT)  # a no-op once it ended
        taken = len(whole_lines(output))
        assert wait_until(lambda: len(whole_lines(output)) >= taken + 200, 5), suite.output
        suite.process.send_signal(signal.SIGKILL)
        suite.process.wait(10)
        receiving.send_signal(signal.SIGCONT)
        written_before = len(whole_lines(output))

        # What B writes of the dead suite's connection (it reads what its socket
        # held once it runs again), counted once B's file stops growing.
        def settled() -> bool:
            before = len(whole_lines(relayed))
            time.sleep(0.3)
            return len(whole_lines(relayed)) == before

        assert wait_until(settled, 5)
        relayed_before = len(whole_lines(relayed))

        suite, metrics = self.start_relay(relp_port, receiver.ports[0])
        reopened = re.search(
            rf"forward queue {TARGET}: (\d+) messages \(\d+ bytes\) wait on disk in "
            rf"{re.escape(str(self.directory / 'queue'))}",
            suite.output,
        )
        assert reopened, suite.output
        waiting = int(reopened[1])

        wanted = set(range(1, COUNT + 1))
        assert wait_until(lambda: set(numbered(whole_lines(relayed))) >= wanted, 15), sorted(
            wanted - set(numbered(whole_lines(relayed)))
        )[:20]
        # The suite counts a message sent once B's answer is read, which may
        # come after B wrote it.
        assert wait_until(
            lambda: (
                metric(metrics, "forward_sent_total", TARGET)
                == waiting + metric(metrics, "forward_queued_total", TARGET)
            ),
            5,
        )
        sent = int(metric(metrics, "forward_sent_total", TARGET))
        queued = int(metric(metrics, "forward_queued_total", TARGET))
        retried = int(metric(metrics, "forward_retried_total", TARGET))

        records = [json.loads(line) for line in whole_lines(output)]
        at_suite = numbered(r["message"].encode() for r in records if r["event"] == "message")
        lines = whole_lines(relayed)
        at_b = numbered(lines)
        lost = sorted(wanted - set(at_b))
        duplicated_in_suite = sum(at_suite.values()) - len(at_suite)
        duplicated_in_b = sum(at_b.values()) - len(at_b)
        # B's copies beyond the suite's: sent again from the suite's disk queue.
        from_queue = sum(max(0, at_b[n] - at_suite[n]) for n in at_b)
        print(
            json.dumps(
                {
                    "sent": COUNT,
                    "suite output lines before SIGKILL": written_before,
                    "B lines before restart": relayed_before,
                    "reopened queue": waiting,
                    "lost": len(lost),
                    "duplicated in suite output (A -> suite, omrelp resent)": duplicated_in_suite,
                    "duplicated in B": duplicated_in_b,
                    "of which suite -> B (queue resent)": from_queue,
                    "forward_sent after restart": sent,
                    "forward_queued after restart": queued,
                    "forward_retried after restart": retried,
                }
            )
        )
        self.assertEqual(lost, [])
        self.assertGreater(queued, 0, "the suite was killed after the last message")
        self.assertEqual(set(at_suite), wanted)
        for record in records:
            self.assertIn(record["event"], ("connected", "message", "disconnected", "error"))
            self.assertEqual(record["transport"], "relp")
            if record["event"] == "message":
                self.assertRegex(record["message"], r"^n=\d{6}$")
                self.assertEqual(
                    (record["syslog"]["app"], record["syslog"]["hostname"]), ("app", "host")
                )
        # The duplicates explained: B has every line it had when the suite was
        # killed plus exactly what the restarted suite sent (its reopened queue
        # and what it took since), and the copies B has beyond the suite's
        # output are at most what that reopened queue sent again.
        self.assertEqual(len(lines), relayed_before + sent)
        self.assertLessEqual(from_queue, waiting)
        self.assertEqual(metric(metrics, "forward_dropped_total", TARGET), 0)
