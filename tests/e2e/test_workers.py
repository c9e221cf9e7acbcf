"""
End to end with `workers = N`: a twistd parent that binds the listeners and
N worker processes (`python -m suite.app.worker`, its children) serving
them.  What an operator notices: every listener answers, a killed worker is
replaced (after a backoff that doubles) while the others keep serving,
/metrics and /health speak for all workers, SIGHUP and SIGTERM reach every
worker, systemd's socket activation and watchdog work with workers, and a
name server on a memory store runs once.
"""

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from suite.net.twisted_internals import fast_path
from tests.e2e.process import (
    TWISTD,
    ProcessTestCase,
    SuiteProcess,
    free_ports,
    popen,
    require,
    run,
    stop_process,
)

LOCAL = "tcp:0:interface=127.0.0.1"
LOCAL_UDP = "udp:0:interface=127.0.0.1"
ECHO_TCP = f"echo {LOCAL}"
ECHO_UDP = f"echo {LOCAL_UDP}"
METRICS = f"metrics {LOCAL}"
# The parent's own lines: a worker's relayed lines say `[worker N namespace#level]`.
PARENT_READY = " [suite.app.lifecycle#info] suite ready"
PARENT_SIGHUP = " [suite.app.lifecycle#info] SIGHUP: reopening files"
STARTED = re.compile(r"\[suite\.app\.supervisor#info\] worker (\d+) started \(pid (\d+)\)")
REQUESTS_TCP = 'suite_requests_total{service="echo",transport="tcp"}'

ECHO_WITH_METRICS = f"""
workers = 2
[echo]
listen = ["{LOCAL}", "{LOCAL_UDP}"]
[metrics]
listen = ["{LOCAL}"]
"""


def children(pid: int) -> list[int]:
    """PID's child processes, from /proc (every thread's list)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += map(int, (task / "children").read_text().split())
        except OSError:  # the thread or the process ended meanwhile
            pass
    return sorted(set(found))


def command_line(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def worker_pids(parent: int) -> list[int]:
    """The worker processes of twistd PARENT: its children running suite.app.worker."""
    return [pid for pid in children(parent) if "suite.app.worker" in command_line(pid)]


def alive(pid: int) -> bool:
    """PID runs (a zombie, ended and not yet reaped, counts as ended)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return not re.search(r"^State:\s+Z", status, re.M)


def go_on(pid: int) -> None:
    """SIGCONT to PID, if it still runs."""
    if alive(pid):
        os.kill(pid, signal.SIGCONT)


def socket_count(pid: int) -> int:
    """How many sockets PID has open."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += os.readlink(fd).startswith("socket:")
        except OSError:
            pass
    return count


T = TypeVar("T")


def poll(predicate: Callable[[], T], timeout: float, interval: float = 0.05) -> T:
    """PREDICATE's first true value within TIMEOUT seconds, else its last (false) one."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def connect_when_listening(port: int, timeout: float = 15) -> socket.socket:
    """A connection to PORT once something listens there (tried every 50 ms)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=timeout)
        except ConnectionRefusedError:
            assert time.monotonic() < deadline, f"nothing listens on {port}"
            time.sleep(0.05)


def echo(port: int, line: bytes = b"hello") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(line + b"\n")
        return sock.recv(1024)


def echo_udp(port: int, payload: bytes = b"datagram") -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(payload, ("127.0.0.1", port))
        return sock.recv(1024)


def http_get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of GET PATH; 503 is an answer too."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric(port: int, sample: str) -> float | None:
    """The value of SAMPLE (name and labels) in /metrics, None when absent."""
    _, text = http_get(port, "/metrics")
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return None


def workers_health(port: int) -> dict[str, Any]:
    """The "workers" service of /health."""
    _, body = http_get(port, "/health")
    found: dict[str, Any] = json.loads(body)["services"]["workers"]
    return found


class WorkersTestCase(ProcessTestCase):
    def start_workers(
        self,
        config: str,
        count: int = 2,
        plugin: str = "suite",
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> SuiteProcess:
        """A suite from CONFIG, once the parent said it is ready, with COUNT workers running."""
        suite: SuiteProcess = self.start_suite(config, 0, plugin=plugin, args=args, env=env)
        if not suite.wait_for(lambda: PARENT_READY in suite.output, timeout=20):
            raise AssertionError("the parent did not get ready:\n" + suite.output)
        pids = poll(lambda: len(worker_pids(suite.process.pid)) == count, timeout=5)
        assert pids, (worker_pids(suite.process.pid), suite.output)
        return suite

    def slots(self, suite: SuiteProcess) -> dict[int, int]:
        """Each worker's pid by its slot, as the parent last logged them started."""
        return {int(m[1]): int(m[2]) for m in STARTED.finditer(suite.output)}

    def started_again(self, suite: SuiteProcess, slot: int, after: int, timeout: float = 5) -> int:
        """The pid SLOT's worker was started with after pid AFTER ended."""

        def new() -> int | None:
            pid = self.slots(suite).get(slot)
            return pid if pid != after else None

        assert suite.wait_for(lambda: new() is not None, timeout), suite.output
        pid = new()
        assert pid is not None
        return pid


class ServingTests(WorkersTestCase):
    def test_two_workers_answer_tcp_and_udp_and_metrics_add_up(self):
        suite = self.start_workers(ECHO_WITH_METRICS)
        pids = worker_pids(suite.process.pid)
        assert len(pids) == 2 and sorted(self.slots(suite).values()) == pids, suite.output
        assert all(command_line(pid)[1:3] == ["-m", "suite.app.worker"] for pid in pids)
        tcp, metrics = suite.port(ECHO_TCP), suite.port(METRICS)
        assert echo(tcp) == b"You said: hello\r\n"
        assert echo_udp(suite.port(ECHO_UDP)) == b"datagram"
        assert metric(metrics, 'suite_workers_running{service="workers"}') == 2

        # 50 connections open at once, each opened once the one before was answered.
        before = {pid: socket_count(pid) for pid in pids}
        held = []
        try:
            for n in range(50):
                sock = socket.create_connection(("127.0.0.1", tcp), timeout=5)
                held.append(sock)
                sock.sendall(b"line %d\n" % n)
                assert sock.recv(100) == b"You said: line %d\r\n" % n
            served = {pid: socket_count(pid) - before[pid] for pid in pids}
        finally:
            for sock in held:
                sock.close()
        # Each worker holds the connections it accepted, and both took some: the fast path's
        # workers take turns by open connections (suite.net.accept_share); on the stock path
        # Twisted's accept loop leaves it to the kernel, where one worker may win every race.
        assert sum(served.values()) == 50, served
        assert min(served.values()) > 0 or not fast_path().fast, served
        assert poll(lambda: metric(metrics, REQUESTS_TCP) == 51, timeout=5), metric(
            metrics, REQUESTS_TCP
        )
        assert "Traceback" not in suite.output

    def test_names_on_a_memory_store_runs_once_in_the_parent(self):
        names = free_ports({1})[1]
        suite = self.start_workers(f"""
            workers = 2
            [echo]
            listen = ["{LOCAL}"]
            [names]
            listen = ["tcp:{names}:interface=127.0.0.1"]
            http_listen = ["{LOCAL}"]
            store = "memory"
            [announce]
            name_server = ["127.0.0.1:{names}"]
            interval = 1
        """)
        http, echo_port = suite.port(f"names http_listen {LOCAL}"), suite.port(ECHO_TCP)

        def instances() -> list:
            status, body = http_get(http, "/v1/catalog/service/echo")
            return json.loads(body) if status == 200 else []

        found = poll(instances, timeout=10, interval=0.1)
        assert [i["ServicePort"] for i in found] == [echo_port], (found, suite.output)
        # One registry: every request (each a new connection) finds the one instance.
        for _ in range(10):
            assert [i["ServicePort"] for i in instances()] == [echo_port]
        assert not re.search(r"\[worker \d+ [^]]*\] names listening", suite.output), suite.output
        assert echo(echo_port) == b"You said: hello\r\n"


class CrashTests(WorkersTestCase):
    def test_a_killed_worker_is_replaced_while_the_other_serves(self):
        suite = self.start_workers(ECHO_WITH_METRICS)
        tcp, metrics = suite.port(ECHO_TCP), suite.port(METRICS)
        for n in range(10):
            assert echo(tcp, b"before %d" % n) == b"You said: before %d\r\n" % n
        # Every worker has reported its requests before one of them dies.
        assert poll(lambda: metric(metrics, REQUESTS_TCP) == 10, timeout=5)
        slot, pid = sorted(self.slots(suite).items())[0]

        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        down = f"worker {slot} is not running (killed by SIGKILL; restarting)"
        health = poll(
            lambda: down in json.dumps(workers_health(metrics)), timeout=2, interval=0.02
        )
        assert health, (workers_health(metrics), suite.output)
        assert workers_health(metrics)["status"] in ("degraded", "ok")  # ok once restarted
        for n in range(5):  # the other worker serves
            assert echo(tcp, b"during %d" % n) == b"You said: during %d\r\n" % n
        seen: list[float | None] = []

        def requests() -> float | None:
            """The echo's TCP requests in /metrics, each value noted in SEEN."""
            seen.append(metric(metrics, REQUESTS_TCP))
            return seen[-1]

        requests()  # while the worker is down
        assert re.search(
            rf"worker {slot} \(pid {pid}\) killed by SIGKILL after [\d.]+ s; restarting it in 1 s",
            suite.output,
        ), suite.output

        new = self.started_again(suite, slot, after=pid, timeout=3)
        assert time.monotonic() - killed < 3
        assert poll(lambda: new in worker_pids(suite.process.pid), timeout=1)
        assert len(worker_pids(suite.process.pid)) == 2 and not alive(pid)
        assert poll(lambda: workers_health(metrics)["status"] == "ok", timeout=3)
        assert metric(metrics, 'suite_worker_exits_total{service="workers"}') == 1
        assert poll(lambda: metric(metrics, 'suite_workers_running{service="workers"}') == 2, 3)
        # The dead worker's requests still count: 10 before, 5 during, 1 after.
        assert echo(tcp, b"after") == b"You said: after\r\n"
        assert poll(lambda: requests() == 16, timeout=5), seen
        assert all(value is not None and value >= 10 for value in seen), seen

    def test_a_worker_that_keeps_dying_waits_longer_each_time(self):
        suite = self.start_workers(f'workers = 2\n[echo]\nlisten = ["{LOCAL}"]\n')
        slot, pid = sorted(self.slots(suite).items())[0]
        waited = []
        for delay in (1, 2, 4):
            os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            restarting = re.compile(
                rf"worker {slot} \(pid {pid}\) killed by SIGKILL after [\d.]+ s; "
                rf"restarting it in {delay} s"
            )
            logged = suite.wait_for(lambda r=restarting: r.search(suite.output), timeout=3)
            assert logged, suite.output
            if delay == 4:
                break
            pid = self.started_again(suite, slot, after=pid, timeout=delay + 3)
            waited.append(time.monotonic() - killed)
        assert 0.9 <= waited[0] < 2.5 and 1.9 <= waited[1] < 3.5, waited
        assert echo(suite.port(ECHO_TCP)) == b"You said: hello\r\n"  # the other still serves


class SignalTests(WorkersTestCase):
    def test_sighup_reaches_every_worker_and_all_keep_serving(self):
        suite = self.start_workers(f'workers = 2\n[echo]\nlisten = ["{LOCAL}"]\n')
        pids = worker_pids(suite.process.pid)
        suite.process.send_signal(signal.SIGHUP)
        for expected in (
            PARENT_SIGHUP,
            " [worker 1 suite.app.lifecycle#info] SIGHUP: reopening files",
            " [worker 2 suite.app.lifecycle#info] SIGHUP: reopening files",
        ):
            assert suite.wait_for(lambda e=expected: e in suite.output, timeout=5), suite.output
        for n in range(10):
            assert echo(suite.port(ECHO_TCP), b"%d" % n) == b"You said: %d\r\n" % n
        assert worker_pids(suite.process.pid) == pids
        assert "killed by" not in suite.output and "exited with" not in suite.output

    def test_sigterm_stops_the_workers_then_the_parent(self):
        suite = self.start_workers(f'workers = 2\n[echo]\nlisten = ["{LOCAL}"]\n')
        pids = worker_pids(suite.process.pid)
        with socket.create_connection(("127.0.0.1", suite.port(ECHO_TCP)), timeout=5) as sock:
            sock.sendall(b"hello\n")
            assert sock.recv(1024) == b"You said: hello\r\n"  # accepted by a worker, served
            sock.sendall(b"last words\n")
            started = time.monotonic()
            suite.process.send_signal(signal.SIGTERM)
            answer = b""
            while chunk := sock.recv(1024):
                answer += chunk
                if answer.endswith(b"\r\n"):
                    break
            status = suite.wait(timeout=10)
        assert time.monotonic() - started < 5
        # twistd re-raises the signal after a clean shutdown: systemd counts that as clean.
        assert status in (0, -signal.SIGTERM), suite.output
        assert answer == b"You said: last words\r\n", (answer, suite.output)
        assert not any(alive(pid) for pid in pids)
        for slot, pid in sorted(self.slots(suite).items()):
            assert f"worker {slot} (pid {pid}) exited with status 0" in suite.output
        # The workers ended before the parent's own listener closed.
        exited = suite.output.rindex("exited with status 0")
        assert exited < suite.output.index("Server Shut Down."), suite.output
        assert "Traceback" not in suite.output, suite.output


class SystemdTests(WorkersTestCase):
    def test_socket_activation_with_workers(self):
        require("systemd-socket-activate")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        path = self.directory / "suite.toml"
        path.write_text('workers = 2\n[echo]\nlisten = ["systemd:domain=INET:name=echo"]\n')
        log = self.directory / "twistd.out"
        with open(log, "w") as stdout:
            process = popen(
                [
                    "systemd-socket-activate",
                    "-l",
                    f"127.0.0.1:{port}",
                    "--fdname=echo",
                    "--",
                    TWISTD,
                    "--nodaemon",
                    "--pidfile=",
                    "suite",
                    "--config",
                    str(path),
                ],
                cwd=self.directory,
                stdout=stdout,
                stderr=subprocess.STDOUT,
            )
        self.addCleanup(stop_process, process)
        # The first connection starts twistd (systemd-socket-activate execs it).
        with connect_when_listening(port) as sock:
            sock.sendall(b"activated\n")
            assert sock.recv(1024) == b"You said: activated\r\n"
        assert poll(lambda: PARENT_READY in log.read_text(), timeout=15), log.read_text()
        assert len(worker_pids(process.pid)) == 2
        for n in range(10):
            assert echo(port, b"%d" % n) == b"You said: %d\r\n" % n
        assert stop_process(process) in (0, -signal.SIGTERM)
        output = log.read_text()
        for slot in (1, 2):
            listening = f"[worker {slot} suite.net.listeners#info] echo listening on systemd:"
            assert listening in output, output
            assert re.search(rf"worker {slot} \(pid \d+\) exited with status 0", output), output
        assert "Traceback" not in output, output

    def test_watchdog_pings_wait_for_a_stopped_worker(self):
        path = str(self.directory / "notify.sock")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(notify.close)
        notify.bind(path)
        suite = self.start_suite(
            f'workers = 2\n[echo]\nlisten = ["{LOCAL}"]\n',
            0,
            env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"},
        )

        def receive(until: float) -> list[tuple[float, bytes]]:
            """Every message until the monotonic time UNTIL, with when it came."""
            got = []
            while (left := until - time.monotonic()) > 0:
                notify.settimeout(left)
                try:
                    got.append((time.monotonic(), notify.recv(100)))
                except TimeoutError:
                    break
            return got

        deadline = time.monotonic() + 20
        while True:
            notify.settimeout(max(0.01, deadline - time.monotonic()))
            if notify.recv(100) == b"READY=1":
                break
        ready_at = len(suite.lines)
        for slot in (1, 2):  # ready: both workers said so (their lines relayed just before)
            ready = f"[worker {slot} suite.app.lifecycle#info] suite ready"
            assert suite.wait_for(lambda r=ready: r in suite.output, timeout=1), suite.output
        assert len(worker_pids(suite.process.pid)) == 2

        pings = [at for at, message in receive(time.monotonic() + 2.5) if message == b"WATCHDOG=1"]
        assert len(pings) >= 4, (pings, suite.output)  # every 0.5 s
        since_ready = "\n".join(suite.lines[ready_at:])
        assert "not pinging" not in since_ready, since_ready

        slot, pid = sorted(self.slots(suite).items())[0]
        os.kill(pid, signal.SIGSTOP)
        self.addCleanup(go_on, pid)
        stopped = time.monotonic()
        after = [
            at - stopped for at, message in receive(stopped + 3.5) if message == b"WATCHDOG=1"
        ]
        assert all(at < 2.5 for at in after), after
        withheld = f"systemd watchdog: not pinging: worker {slot} has not answered for over"
        assert withheld in "\n".join(suite.lines[ready_at:]), suite.output
        withheld_at = len(suite.lines)

        os.kill(pid, signal.SIGCONT)
        notify.settimeout(2)
        assert notify.recv(100) == b"WATCHDOG=1"  # within 2 s
        assert suite.wait_for(
            lambda: "systemd watchdog: pinging again" in "\n".join(suite.lines[withheld_at:]), 1
        ), suite.output
        assert echo(suite.port(ECHO_TCP)) == b"You said: hello\r\n"


class CommandLineTests(WorkersTestCase):
    def test_suite_echo_with_workers_on_the_command_line(self):
        suite = self.start_workers(
            "", plugin="suite-echo", args=("--workers", "2", "--listen", LOCAL)
        )
        for n in range(5):
            assert echo(suite.port(ECHO_TCP), b"%d" % n) == b"You said: %d\r\n" % n

    def test_zero_workers_is_refused_in_one_line(self):
        result = run(
            [
                TWISTD,
                "--nodaemon",
                "--pidfile=",
                "suite-echo",
                "--workers",
                "0",
                "--listen",
                LOCAL,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=self.directory,
        )
        assert result.returncode == 1
        assert result.stdout == ""
        assert result.stderr == (
            'error: command line: --workers 0: must be 1-256, or "auto" (one per CPU)\n'
        )

    def test_auto_starts_one_worker_per_cpu(self):
        """Auto follows the CPUs twistd may run on (as `taskset` sets them), here 2."""
        allowed = os.sched_getaffinity(0)
        if len(allowed) < 2:
            self.skipTest("one CPU: auto means one process, no workers")
        os.sched_setaffinity(0, sorted(allowed)[:2])  # inherited by twistd
        try:
            suite = self.start_workers(f'workers = "auto"\n[echo]\nlisten = ["{LOCAL}"]\n')
        finally:
            os.sched_setaffinity(0, allowed)
        assert sorted(self.slots(suite)) == [1, 2]
        assert echo(suite.port(ECHO_TCP)) == b"You said: hello\r\n"


COLLECTOR = """
    workers = 2
    [logger]
    listen = ["tcp:0:interface=127.0.0.1"]
    relp_listen = ["tcp:0:interface=127.0.0.1"]
    output = "messages.jsonl"
    rotate_bytes = 0
    """


def listener_port(suite: SuiteProcess, name: str) -> int:
    """The port the parent bound for listener NAME ("logger tcp:0:…")."""
    return int(suite.ports[name].rsplit(":", 1)[1])


def numbered(connection: int, count: int) -> bytes:
    return b"".join(
        b"<13>1 2026-12-03T00:00:00Z host app - - - conn %d msg %06d\n" % (connection, n)
        for n in range(count)
    )


def messages_by_connection(path: Path) -> dict[int, list[int]]:
    found: dict[int, list[int]] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record["event"] == "message":
            _, connection, _, number = record["message"].split()
            found.setdefault(int(connection), []).append(int(number))
    return found


class RelpSender:
    """A RELP client, one message in flight: the numbers the collector acknowledged."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.acknowledged: list[int] = []
        offer = b"relp_version=0\nrelp_software=test\ncommands=syslog"
        self.sock.sendall(b"1 open %d %s\n" % (len(offer), offer))
        assert b" rsp " in self.sock.recv(1000)
        self.txnr = 1
        self.pending = b""

    def send(self, number: int) -> bool:
        """Message NUMBER, and whether it was acknowledged (False: the connection broke)."""
        self.txnr += 1
        body = b"<13>1 2026-12-03T00:00:00Z host relp - - - conn 99 msg %06d" % number
        try:
            self.sock.sendall(b"%d syslog %d %s\n" % (self.txnr, len(body), body))
            while b"\n" not in self.pending:
                data = self.sock.recv(1000)
                if not data:
                    return False
                self.pending += data
        except OSError:
            return False
        answer, _, self.pending = self.pending.partition(b"\n")
        if not answer.startswith(b"%d rsp 6 200 OK" % self.txnr):
            return False
        self.acknowledged.append(number)
        return True


class CollectorTests(WorkersTestCase):
    def test_ten_connections_one_file_each_in_order_nothing_lost_at_sigterm(self):
        suite = self.start_workers(COLLECTOR)
        port = listener_port(suite, "logger tcp:0:interface=127.0.0.1")
        sockets = [connect_when_listening(port) for _ in range(10)]
        for number, sock in enumerate(sockets):
            sock.sendall(numbered(number, 5000))
            sock.close()
        suite.process.send_signal(signal.SIGTERM)  # at once: the workers drain what was sent
        self.assertIn(suite.wait(20), (0, -signal.SIGTERM))
        found = messages_by_connection(self.directory / "messages.jsonl")
        self.assertEqual(sorted(found), list(range(10)))
        for number, received in found.items():
            self.assertEqual(received, list(range(5000)), f"connection {number}")
        self.assertNotIn("Traceback", suite.output)

    def test_workers_rotating_the_one_file_keep_every_record_once_and_in_order(self):
        # Each worker appends its own records: rotation happens once per crossing, whoever
        # crosses, and a worker whose file another renamed writes on in the new one.
        suite = self.start_workers(
            COLLECTOR.replace("rotate_bytes = 0", "rotate_bytes = 50000\nkeep = 1000")
        )
        port = listener_port(suite, "logger tcp:0:interface=127.0.0.1")
        sockets = [connect_when_listening(port) for _ in range(6)]
        for number, sock in enumerate(sockets):
            sock.sendall(numbered(number, 3000))
            sock.close()
        suite.process.send_signal(signal.SIGTERM)
        self.assertIn(suite.wait(20), (0, -signal.SIGTERM))
        output = self.directory / "messages.jsonl"
        rotated = sorted(output.parent.glob("messages.jsonl.*"), key=lambda p: -int(p.suffix[1:]))
        found: dict[int, list[int]] = {}
        for path in [*rotated, output]:  # oldest first
            self.assertLessEqual(path.stat().st_size, 50000, path.name)
            for connection, numbers in messages_by_connection(path).items():
                found.setdefault(connection, []).extend(numbers)
        self.assertEqual(sorted(found), list(range(6)))
        for number, received in found.items():
            self.assertEqual(received, list(range(3000)), f"connection {number}")
        # Rotated once full, never twice at once: every rotated file within a record of full.
        self.assertGreater(len(rotated), 10)
        for path in rotated:
            self.assertGreater(path.stat().st_size, 50000 - 500, path.name)
        self.assertNotIn("Traceback", suite.output)

    def test_what_relp_acknowledged_survives_a_worker_killed(self):
        suite = self.start_workers(COLLECTOR)
        port = listener_port(suite, "logger relp_listen tcp:0:interface=127.0.0.1")
        sender = RelpSender(port)
        for number in range(200):
            self.assertTrue(sender.send(number))
        for pid in worker_pids(suite.process.pid):  # whichever serves the connection
            os.kill(pid, signal.SIGKILL)
        number = 200
        while sender.send(number) and number < 10_000:
            number += 1
        received = poll(
            lambda: messages_by_connection(self.directory / "messages.jsonl").get(99, []), 5
        )
        self.assertTrue(set(sender.acknowledged) <= set(received), "an acknowledged one is lost")
        self.assertGreaterEqual(len(sender.acknowledged), 200)
        # The parent went on: new workers take a new sender's messages into the same file.
        self.assertTrue(suite.wait_for(lambda: suite.output.count("restarting it in") >= 2, 5))
        again = poll(lambda: _relp_or_none(port), 10)
        self.assertTrue(again and again.send(50_000))
        self.assertIn(
            50_000,
            poll(
                lambda: messages_by_connection(self.directory / "messages.jsonl").get(99, []),
                5,
            ),
        )


def _relp_or_none(port: int) -> RelpSender | None:
    try:
        return RelpSender(port)
    except (OSError, AssertionError):
        return None
