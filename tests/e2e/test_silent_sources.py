"""
End to end: logs checks against real senders.  Instances registered with a
Logs check, util-linux `logger` processes logging as them (or not at all),
and what a monitoring client polling the HTTP API, `dig` and /metrics see:
a source that stops is flagged soon after its max_silence and no sooner, one
that keeps logging never is; through the collector of the same suite, of
another suite reporting over HTTP, and for the instances an announcer
declares.

These tests wait for silences of a few seconds to run out on real clocks
(there is no clock to advance in another process): each says how long it
takes.  The delays are measured on this process's monotonic clock, each
from the moment the last line was written (or the instance registered) to
the arrival of the first answer showing the check not passing; they are
printed (pytest -s shows them).
"""

import heapq
import json
import queue
import random
import re
import shutil
import statistics
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable

from twisted.trial.unittest import SkipTest

from tests.e2e.process import ProcessTestCase, SuiteProcess, popen, require, run, stop_process
from tests.e2e.test_logger_process import read_records
from tests.e2e.test_names_process import dig

LOCAL = "tcp:0:interface=127.0.0.1"
TOKEN = "s3cret"
PASSING = "passing"


def api(base: str, method: str, path: str, body: object = None) -> object:
    """One request to a name server's HTTP API, with the write token; its JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        base + path, data=data, method=method, headers={"X-Consul-Token": TOKEN}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        text = answer.read()
    return json.loads(text) if text else None


def logs_instance(name: str, instance_id: str, port: int, app: str, max_silence: float) -> dict:
    """A registration on 127.0.0.1 with a Logs check for APP (its hostname: the address)."""
    return {
        "Name": name,
        "ID": instance_id,
        "Address": "127.0.0.1",
        "Port": port,
        "Weights": {"Passing": 10, "Warning": 1},
        "Check": {"Logs": {"App": app}, "MaxSilence": f"{max_silence:g}s"},
    }


def logger_args(port: int, tag: str) -> list[str]:
    """
    util-linux `logger` sending over TCP to 127.0.0.1:PORT in RFC 5424 (its
    default for a remote server, said outright), whose APP-NAME is the tag:
    the app a logs check names.
    """
    return [
        "logger",
        "--tcp",
        "--rfc5424",
        "--server",
        "127.0.0.1",
        "--port",
        str(port),
        "--tag",
        tag,
    ]


def metric(exposition: str, name: str, labels: str) -> float | None:
    found = re.search(rf"^suite_{name}{{{labels}}} (\S+)$", exposition, re.M)
    return float(found[1]) if found else None


def read_metrics(suite: SuiteProcess) -> str:
    url = f"http://127.0.0.1:{suite.port(f'metrics {LOCAL}')}/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.read().decode()


def wait_until(predicate: Callable[[], object], timeout: float) -> bool:
    """Whether PREDICATE() came true within TIMEOUT s (looked at every 20 ms)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return bool(predicate())
        time.sleep(0.02)
    return True


def spread(delays: list[float]) -> str:
    return (
        f"min {min(delays):.2f} s, median {statistics.median(delays):.2f} s, "
        f"max {max(delays):.2f} s"
    )


class CheckHistory(threading.Thread):
    """
    What a monitoring client sees: `GET /v1/health/state/any` every PERIOD
    s, and each check's changes (status, output) with the time the answer
    showing it arrived, which is never before the change itself.
    """

    def __init__(self, base: str, period: float = 0.15) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.period = period
        self.changes: dict[str, list[tuple[float, str, str]]] = {}
        self.failures: list[str] = []
        self.longest_gap = 0.0  # seconds between two answers, at most: the resolution
        self._lock = threading.Lock()
        self._done = threading.Event()

    def run(self) -> None:
        previous = time.monotonic()
        while not self._done.is_set():
            try:
                checks = api(self.base, "GET", "/v1/health/state/any")
            except (OSError, ValueError) as e:
                self.failures.append(repr(e))
            else:
                seen = time.monotonic()
                with self._lock:
                    for check in checks:
                        history = self.changes.setdefault(check["CheckID"], [])
                        state = (check["Status"], check["Output"])
                        if not history or history[-1][1:] != state:
                            history.append((seen, *state))
                    self.longest_gap = max(self.longest_gap, seen - previous)
                previous = seen
            self._done.wait(self.period)

    def stop(self) -> None:
        self._done.set()
        self.join(15)

    def history(self, check_id: str) -> list[tuple[float, str, str]]:
        with self._lock:
            return list(self.changes.get(check_id, ()))

    def first(self, check_id: str, passing: bool, after: float = float("-inf")) -> float | None:
        """When CHECK_ID was first seen passing (or not, PASSING false) at or after AFTER."""
        for seen, status, _ in self.history(check_id):
            if seen >= after and (status == PASSING) == passing:
                return seen
        return None

    def wait_first(self, check_id: str, passing: bool, after: float, timeout: float) -> float:
        wait_until(lambda: self.first(check_id, passing, after) is not None, timeout)
        seen = self.first(check_id, passing, after)
        assert seen is not None, (
            f"{check_id} not seen {'passing' if passing else 'not passing'} "
            f"within {timeout} s: {self.history(check_id)}"
        )
        return seen

    def output(self, check_id: str) -> str:
        return self.history(check_id)[-1][2]


class Chatter(threading.Thread):
    """
    Many sources logging as programs do, irregularly: one thread writes a
    line to each logger's standard input every 0.5-1.5 s (drawn anew for
    every line), flushed at once.  silence() closes a logger's input after
    its next line is due, so that it exits.
    """

    def __init__(self, loggers: dict[str, subprocess.Popen], seed: int) -> None:
        super().__init__(daemon=True)
        self.loggers = loggers
        self.random = random.Random(seed)
        self.last_written: dict[str, float] = {}
        self.longest_gap = 0.0  # between two lines of one source that kept logging
        self.failures: list[str] = []
        self._silence: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._silenced: set[str] = set()
        self._done = threading.Event()

    def silence(self, *apps: str) -> None:
        for app in apps:
            self._silence.put(app)

    def run(self) -> None:
        due = [(time.monotonic() + self.random.uniform(0, 0.2), app) for app in self.loggers]
        heapq.heapify(due)
        try:
            while due and not self._done.is_set():
                while not self._silence.empty():
                    app = self._silence.get()
                    self._silenced.add(app)
                    self.loggers[app].stdin.close()
                when, app = due[0]
                if self._done.wait(max(0.0, when - time.monotonic())):
                    break
                heapq.heappop(due)
                if app in self._silenced:
                    continue
                self._write(app)
                heapq.heappush(due, (time.monotonic() + self.random.uniform(0.5, 1.5), app))
        finally:
            for app, process in self.loggers.items():
                if app not in self._silenced:
                    process.stdin.close()

    def _write(self, app: str) -> None:
        try:
            stdin = self.loggers[app].stdin
            stdin.write(f"{app} still here\n".encode())
            stdin.flush()
        except OSError as e:
            self.failures.append(f"{app}: {e!r}")
            return
        now = time.monotonic()
        previous = self.last_written.get(app)
        if previous is not None:
            self.longest_gap = max(self.longest_gap, now - previous)
        self.last_written[app] = now

    def finish(self) -> None:
        self._done.set()
        self.join(15)


class SilentSourceTests(ProcessTestCase):
    def setUp(self):
        super().setUp()
        require("logger")

    def suite_in(self, name: str, config: str, listeners: int) -> SuiteProcess:
        """A suite in a directory of its own (each writes its suite.toml), stopped after."""
        directory = self.directory / name
        directory.mkdir()
        suite = SuiteProcess(directory, config)
        self.addCleanup(suite.stop)
        suite.wait_ready(listeners)
        return suite

    def name_server(
        self, name: str, listeners: int, names_keys: str = "", sections: str = ""
    ) -> tuple[SuiteProcess, str]:
        """
        A suite whose name server keeps its registry in memory and serves
        its HTTP API, writes needing TOKEN; NAMES_KEYS more of [names],
        SECTIONS more of the suite.  The suite and its API's base URL.
        """
        suite = self.suite_in(
            name,
            f"""
            [names]
            listen = ["{LOCAL}"]
            http_listen = ["{LOCAL}"]
            store = "memory"
            token = "{TOKEN}"
            lookup_audit = ""
            {names_keys}
            {sections}
            """,
            listeners,
        )
        return suite, f"http://127.0.0.1:{suite.port(f'names http_listen {LOCAL}')}"

    def long_lived_logger(self, port: int, tag: str) -> subprocess.Popen:
        """A `logger` sending one message per line it reads, stopped by PID after."""
        process = popen(
            logger_args(port, tag),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.addCleanup(stop_process, process)
        self.addCleanup(process.stdin.close)  # first: it then ends by itself
        return process

    def watch(self, base: str, period: float) -> CheckHistory:
        history = CheckHistory(base, period)
        history.start()
        self.addCleanup(history.stop)
        return history

    def test_a_hundred_sources_the_silent_ones_flagged_and_no_other(self):
        """
        100 instances with a Logs check (max_silence 4 s); 99 loggers logging
        every 0.5-1.5 s; one never started, two stopped 5 s on.  About 12 s:
        5 s of everyone logging, then the 4 s of silence to run out.
        """
        max_silence = 4.0
        never, stopped = "app-00", ("app-10", "app-20")
        silent = (never, *stopped)
        suite, base = self.name_server(
            "suite",
            listeners=5,
            names_keys=f'dns_listen = ["{LOCAL}"]\nmax_instances_per_source = 200',
            sections=f"""
            [logger]
            listen = ["{LOCAL}"]
            output = "messages.jsonl"
            max_connections_per_source = 200
            [metrics]
            listen = ["{LOCAL}"]
            """,
        )
        collector = suite.port(f"logger {LOCAL}")
        apps = [f"app-{n:02d}" for n in range(100)]
        history = self.watch(base, 0.15)
        loggers = {app: self.long_lived_logger(collector, app) for app in apps if app != never}
        seed = random.randrange(2**32)
        chatter = Chatter(loggers, seed)
        chatter.start()
        self.addCleanup(chatter.finish)

        registered = {}
        for n, app in enumerate(apps):
            registered[app] = time.monotonic()
            api(
                base,
                "PUT",
                "/v1/agent/service/register",
                logs_instance("app", app, 10000 + n, app, max_silence),
            )
        time.sleep(max(0.0, registered[apps[-1]] + 5 - time.monotonic()))
        chatter.silence(*stopped)

        def flagged(app: str) -> float | None:
            return history.first(f"service:{app}", passing=False)

        self.assertTrue(
            wait_until(lambda: all(flagged(app) for app in silent), max_silence + 3),
            {app: history.history(f"service:{app}") for app in silent},
        )
        time.sleep(0.5)  # a false alarm among the others would show by now as well

        delays = {app: flagged(app) - chatter.last_written[app] for app in stopped}
        delays[never] = flagged(never) - registered[never]
        false_alarms = [app for app in apps if app not in silent and flagged(app) is not None]
        print(
            f"\n100 sources (seed {seed}): detection delays "
            + ", ".join(f"{app} {delay:.2f} s" for app, delay in sorted(delays.items()))
            + f"; {spread(list(delays.values()))}; false alarms: {len(false_alarms)}; "
            f"longest gap between two lines of a source logging "
            f"{chatter.longest_gap:.2f} s; longest gap between two polls "
            f"{history.longest_gap:.2f} s"
        )
        self.assertEqual(false_alarms, [])
        self.assertEqual(chatter.failures + history.failures, [])
        self.assertEqual(
            sorted(history.changes), sorted(f"service:{app}" for app in apps), "every check seen"
        )
        for app, delay in delays.items():
            self.assertGreaterEqual(delay, max_silence, app)  # never before its max_silence
            self.assertLessEqual(delay, max_silence + 1, app)
            found = re.fullmatch(
                rf"no message from {app} on 127\.0\.0\.1 for (\d+) s",
                history.output(f"service:{app}"),
            )
            self.assertIsNotNone(found, history.history(f"service:{app}"))
            self.assertIn(int(found[1]), (4, 5))
            self.assertIn(
                f"logs check service:{app}: no message from {app} on 127.0.0.1 for", suite.output
            )

        exposition = read_metrics(suite)
        self.assertEqual(metric(exposition, "silent_instances", 'service="names"'), 3.0)
        longest = metric(exposition, "log_silence_seconds", 'name="app",service="names"')
        self.assertIsNotNone(longest, exposition)
        self.assertGreater(longest, max_silence)  # the one never heard at all

        # The loggers' tag is the app the collector parsed, and so the one heard.
        records = [r for r in read_records(suite.directory / "messages.jsonl") if "syslog" in r]
        self.assertEqual(
            {(r["syslog"]["format"], r["syslog"]["app"]) for r in records},
            {("rfc5424", app) for app in loggers},
        )

        if shutil.which("dig") is None:
            raise SkipTest("dig is not installed: the SRV weights were not looked at")
        answer = dig(
            suite.port(f"names dns_listen {LOCAL}"), "+tcp", "+short", "app.service.suite", "SRV"
        )
        weights = {int(line.split()[2]) - 10000: int(line.split()[1]) for line in answer}
        self.assertEqual(
            weights,
            {n: 1 if app in silent else 10 for n, app in enumerate(apps)},
            "a silent instance is served with its warning weight",
        )

    def test_a_collector_in_another_suite_reports_what_it_heard(self):
        """
        A name server and a collector in two processes, the collector
        reporting to it.  About 12 s: 3 s of logging, then max_silence (3 s)
        and the 2 s of grace a report gets before the check turns warning.
        """
        max_silence, grace = 3.0, 2.0
        _, base = self.name_server("names", listeners=2)
        collector = self.suite_in(
            "collector",
            f"""
            [logger]
            listen = ["{LOCAL}"]
            output = "messages.jsonl"
            report_to = ["{base}"]
            report_token = "{TOKEN}"
            """,
            listeners=1,
        )
        check = "service:web-1"
        history = self.watch(base, 0.1)
        web = self.long_lived_logger(collector.port(f"logger {LOCAL}"), "web")
        registered = time.monotonic()
        api(
            base,
            "PUT",
            "/v1/agent/service/register",
            logs_instance("web", "web-1", 8080, "web", max_silence),
        )

        def write() -> float:
            web.stdin.write(b"web serving\n")
            web.stdin.flush()
            return time.monotonic()

        last = write()
        while last - registered < 3:
            time.sleep(max(0.0, last + 0.5 - time.monotonic()))
            last = write()
        warned = history.wait_first(check, passing=False, after=registered, timeout=10)
        silenced = warned - last
        # Never before max_silence and the grace (less the report's millisecond rounding).
        self.assertGreaterEqual(silenced, max_silence + grace - 0.001)
        self.assertLessEqual(silenced, max_silence + grace + 1 + 1)  # + the report cadence, + 1 s
        # The seconds since the message was heard, the grace in them.
        self.assertIn(
            history.output(check),
            [f"no message from web on 127.0.0.1 for {n} s" for n in (5, 6, 7)],
        )

        again = write()
        heard = history.wait_first(check, passing=True, after=again, timeout=5) - again
        print(
            f"\nreported: warning {silenced:.2f} s after the last message; passing again "
            f"{heard:.2f} s after the next; longest gap between two polls "
            f"{history.longest_gap:.2f} s"
        )
        self.assertLessEqual(heard, 2.0)
        self.assertEqual(history.failures, [])

    def test_an_announced_suite_that_does_not_log_turns_warning_until_it_does(self):
        """
        A suite announcing its echo listener with logs_app, heard by the
        collector next to the name server.  About 9 s: the silence of 3 s,
        then one more announcement while the check is warning.
        """
        max_silence = 3.0
        names, base = self.name_server(
            "names",
            listeners=3,
            sections=f'[logger]\nlisten = ["{LOCAL}"]\noutput = "messages.jsonl"',
        )
        history = self.watch(base, 0.1)
        started = time.monotonic()
        announcing = self.suite_in(
            "announcing",
            f"""
            [echo]
            listen = ["{LOCAL}"]
            [announce]
            name_server = ["127.0.0.1:{names.port(f"names {LOCAL}")}"]
            token = "{TOKEN}"
            interval = 1
            logs_app = "suite-c"
            max_silence = {max_silence}
            """,
            listeners=1,
        )
        echo_port = announcing.port(f"echo {LOCAL}")

        def logs_checks() -> list[dict]:
            return [
                check
                for entry in api(base, "GET", "/v1/health/service/echo")
                for check in entry["Checks"]
                if check["Type"] == "logs"
            ]

        self.assertTrue(wait_until(logs_checks, 5), names.output)
        [declared] = logs_checks()
        check = declared["CheckID"]
        self.assertEqual(declared["Status"], PASSING)  # until it had max_silence to log
        instance = api(base, "GET", "/v1/health/service/echo")[0]["Service"]
        self.assertEqual((instance["Address"], instance["Port"]), ("127.0.0.1", echo_port))

        warned = history.wait_first(check, passing=False, after=started, timeout=10)
        self.assertGreaterEqual(warned - started, max_silence)
        self.assertLessEqual(warned - history.history(check)[0][0], max_silence + 1)
        self.assertIn(
            history.output(check),
            [f"no message from suite-c on 127.0.0.1 for {n} s" for n in (3, 4)],
        )
        time.sleep(1.5)  # an announcement comes meanwhile: it does not make the check pass
        self.assertIsNone(history.first(check, passing=True, after=warned))

        sent = time.monotonic()
        run(
            [*logger_args(names.port(f"logger {LOCAL}"), "suite-c"), "suite-c started"],
            check=True,
            timeout=10,
        )
        heard = history.wait_first(check, passing=True, after=sent, timeout=5) - sent
        print(
            f"\nannounced: warning {warned - history.history(check)[0][0]:.2f} s after the "
            f"check appeared; passing {heard:.2f} s after a message"
        )
        self.assertLessEqual(heard, 2.0)
        self.assertEqual(history.failures, [])
