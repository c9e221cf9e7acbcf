"""
End to end with real clients: a real Prometheus server scraping the suite,
curl probing /health while the logger's disk is full, systemd's watchdog
pings from a twistd process (and their stop while it is frozen), and the
JSON process log.
"""

import json
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request

from tests.e2e.process import TWISTD, ProcessTestCase, busy_port, require, run, small_disk

LOCAL = "tcp:0:interface=127.0.0.1"
METRICS = f"metrics {LOCAL}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def echo_lines(port, count):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for n in range(count):
            sock.sendall(b"line %d\n" % n)
            assert sock.recv(100).startswith(b"You said: ")


class PrometheusTests(ProcessTestCase):
    def start_prometheus(self, target_port) -> int:
        require("prometheus")
        port = free_port()
        data = self.directory / "prometheus"
        data.mkdir()
        config = self.directory / "prometheus.yml"
        config.write_text(
            "global:\n"
            "  scrape_interval: 1s\n"
            "scrape_configs:\n"
            "  - job_name: suite\n"
            "    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target_port}']\n"
        )
        log = open(self.directory / "prometheus.log", "w")
        self.addCleanup(log.close)
        process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={data}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
        )

        def stop():
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

        self.addCleanup(stop)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return port
            except OSError:
                time.sleep(0.2)
        raise AssertionError(
            "prometheus did not start:\n" + (self.directory / "prometheus.log").read_text()
        )

    def query(self, port, expression) -> float | None:
        url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expression}
        )
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        results = body["data"]["result"]
        return float(results[0]["value"][1]) if results else None

    def wait_for_value(self, port, expression, predicate, timeout=30):
        deadline = time.monotonic() + timeout
        found = None
        while time.monotonic() < deadline:
            found = self.query(port, expression)
            if found is not None and predicate(found):
                return found
            time.sleep(0.5)
        raise AssertionError(f"{expression} = {found} after {timeout} s")

    def test_prometheus_scrapes_the_suite_and_sees_echo_connections_grow(self):
        suite = self.start_suite(
            f"""
            [echo]
            listen = ["{LOCAL}"]
            [metrics]
            listen = ["{LOCAL}"]
        """,
            listeners=2,
        )
        echo = suite.port(f"echo {LOCAL}")
        echo_lines(echo, 1)
        prometheus = self.start_prometheus(suite.port(METRICS))
        expression = 'suite_connections_total{service="echo",transport="tcp"}'
        before = self.wait_for_value(prometheus, expression, lambda v: v >= 1)
        for _ in range(5):
            echo_lines(echo, 2)
        after = self.wait_for_value(prometheus, expression, lambda v: v >= before + 5)
        assert after == before + 5, (before, after)
        assert self.query(prometheus, 'up{job="suite"}') == 1
        requests = self.query(prometheus, 'suite_requests_total{service="echo"}')
        assert requests == 11, requests


class HealthProbeTests(ProcessTestCase):
    def curl(self, port, path="/health") -> tuple[int, dict]:
        require("curl")
        result = subprocess.run(
            ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", f"http://127.0.0.1:{port}{path}"],
            capture_output=True,
            text=True,
            timeout=15,
        )
        body, _, status = result.stdout.rpartition("\n")
        return int(status), json.loads(body)

    def test_health_turns_503_while_the_logger_cannot_write_and_back(self):
        out = small_disk(self, self.directory / "out", "1m")
        suite = self.start_suite(
            f"""
            [logger]
            listen = ["{LOCAL}"]
            output = "out/messages.jsonl"
            flush_interval = 0.05
            [metrics]
            listen = ["{LOCAL}"]
        """,
            listeners=2,
        )
        metrics = suite.port(METRICS)
        assert self.curl(metrics) == (
            200,
            {
                "status": "ok",
                "services": {"logger": {"status": "ok"}, "metrics": {"status": "ok"}},
            },
        )
        filler = out / "filler"
        with open(filler, "wb", buffering=0) as f:  # fill the disk to the last byte
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        with socket.create_connection(("127.0.0.1", suite.port(f"logger {LOCAL}"))) as sock:
            sock.sendall(b"<13>held back by a full disk\n" * 200)
            assert suite.wait_for(lambda: "No space left on device" in suite.output)
            status, report = self.curl(metrics)
            assert status == 503, report
            assert report["status"] == "failing"
            (problem,) = report["services"]["logger"]["problems"]
            assert problem.startswith("cannot write ") and problem.endswith(
                "messages.jsonl: No space left on device"
            ), problem
            filler.unlink()
            assert suite.wait_for(lambda: "messages.jsonl again" in suite.output, timeout=10)
        assert self.curl(metrics)[0] == 200


class WatchdogProcessTests(ProcessTestCase):
    def test_pings_from_twistd_stop_while_it_is_frozen(self):
        path = str(self.directory / "notify.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            notify.bind(path)
            notify.settimeout(10)
            suite = self.start_suite(
                f'[echo]\nlisten = ["{LOCAL}"]\n',
                listeners=0,
                env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"},
            )
            states = set()
            while "READY=1" not in states:
                states.add(notify.recv(100).decode())
            for _ in range(3):
                assert notify.recv(100) == b"WATCHDOG=1"
            assert "systemd watchdog: WATCHDOG=1 every 0.2 s" in suite.output
            suite.process.send_signal(signal.SIGSTOP)  # a reactor that no longer turns
            try:
                time.sleep(0.1)
                while True:  # what was sent before the stop
                    notify.settimeout(0.05)
                    try:
                        notify.recv(100)
                    except TimeoutError:
                        break
                notify.settimeout(1.0)
                self.assertRaises(TimeoutError, notify.recv, 100)
            finally:
                suite.process.send_signal(signal.SIGCONT)
            notify.settimeout(5)
            assert notify.recv(100) == b"WATCHDOG=1"


class JSONLogTests(ProcessTestCase):
    def test_twistd_logs_one_json_object_per_line(self):
        with busy_port() as port:
            config = self.directory / "suite.toml"
            config.write_text(f'[echo]\nlisten = ["tcp:{port}:interface=127.0.0.1"]\n')
            result = run(
                [
                    TWISTD,
                    "--nodaemon",
                    "--pidfile=",
                    "--logger=suite.journal.json_observer",
                    "suite",
                    "--config",
                    str(config),
                ],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=self.directory,
            )
        assert result.returncode == 1
        records = [json.loads(line) for line in result.stdout.splitlines()]
        assert records and all(
            {"time", "level", "message", "log_namespace"} <= set(r) for r in records
        )
        (failure,) = [r for r in records if r["level"] == "critical"]
        assert failure["message"] == (
            f"echo: cannot listen on tcp:{port}:interface=127.0.0.1: Address already in use"
        )
        assert failure["log_namespace"] == "suite.app.lifecycle"
