"""The parent of worker processes, on a clock: starting, restarting, stopping, reports."""

import json

from twisted.internet import error
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import classImplements

from suite.app import supervisor as supervising
from suite.app.supervisor import (
    HUNG_AFTER,
    KILL_AFTER,
    WorkerLaunch,
    WorkerProcess,
    WorkerSupervisor,
    worker_environment,
)
from suite.app.worker_control import report_of, sample_value
from suite.foundation.interfaces import IMetricSource
from suite.foundation.metrics import Histogram, SuiteCollector


class FakeProcess:
    """A spawned worker: its pid and the signals it was sent."""

    def __init__(self, protocol, pid, args, env, child_fds):
        self.protocol, self.pid, self.args, self.env, self.child_fds = (
            protocol,
            pid,
            args,
            env,
            child_fds,
        )
        self.signals: list[str] = []

    def signalProcess(self, name):
        self.signals.append(name)

    def end(self, failure=None):
        self.protocol.processEnded(failure or Failure(error.ProcessTerminated(signal=9)))


class WorkerReactor(MemoryReactorClock):
    """A memory reactor that spawns fake processes and adopts connections into a list."""

    def __init__(self):
        super().__init__()
        self.processes: list[FakeProcess] = []
        self.adopted: list[tuple[int, object]] = []
        self.fail_spawns = 0

    def spawnProcess(self, protocol, executable, args, env=None, path=None, childFDs=None):
        if self.fail_spawns:
            self.fail_spawns -= 1
            raise OSError(11, "Resource temporarily unavailable")
        process = FakeProcess(protocol, 1000 + len(self.processes), args, env, childFDs)
        protocol.makeConnection(process)
        self.processes.append(process)
        return process

    def adoptStreamConnection(self, fd, family, factory):
        protocol = factory.buildProtocol(None)
        sent: list[bytes] = []
        protocol.transport = type(
            "T", (), {"write": sent.append, "loseConnection": lambda self: None}
        )()
        self.adopted.append((fd, protocol, sent))


def started(test, count):
    """A supervisor of COUNT workers on a WorkerReactor, its reactor running."""
    test.reactor = WorkerReactor()
    test.supervisor = WorkerSupervisor(count, LAUNCH, test.reactor)
    test.supervisor.startService()
    test.reactor.run()  # callWhenRunning: the workers start once the reactor runs


def captured_log(test):
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    test.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


def texts(events):
    from twisted.logger import formatEvent

    return [formatEvent(e) for e in events]


LAUNCH = WorkerLaunch("etc/suite.toml", {"": {"workers": "2"}}, ("echo",), False)


class StartTests(SynchronousTestCase):
    def setUp(self):
        started(self, 2)

    def test_one_process_per_slot_running_the_worker_module(self):
        self.assertEqual(len(self.reactor.processes), 2)
        first = self.reactor.processes[0]
        self.assertEqual(first.args[1:3], ["-m", "suite.app.worker"])
        arguments = json.loads(first.args[3])
        self.assertEqual(arguments["slot"], 1)
        self.assertEqual(arguments["config"], "etc/suite.toml")
        self.assertEqual(arguments["services"], ["echo"])
        self.assertEqual(arguments["control"], 3)
        self.assertEqual(json.loads(self.reactor.processes[1].args[3])["slot"], 2)

    def test_the_control_connection_is_inherited_and_adopted(self):
        first = self.reactor.processes[0]
        self.assertIn(3, first.child_fds)
        self.assertEqual(first.child_fds[1], "r")  # its log events
        self.assertEqual(len(self.reactor.adopted), 2)  # one control connection each

    def test_no_worker_is_not_running(self):
        self.assertEqual(self.supervisor.health_problems(), [])
        self.assertEqual(
            {n: v for n, _, v in self.supervisor.metric_samples()},
            {
                "workers_running": 2,
                "worker_exits": 0,
            },
        )


class EnvironmentTests(SynchronousTestCase):
    def test_what_systemd_gave_the_parent_is_not_passed_on(self):
        environ = {
            "PATH": "/bin",
            "NOTIFY_SOCKET": "/run/x",
            "WATCHDOG_USEC": "1",
            "WATCHDOG_PID": "1",
            "LISTEN_FDS": "2",
            "LISTEN_PID": "1",
            "LISTEN_FDNAMES": "a:b",
            "CREDENTIALS_DIRECTORY": "/run/c",
        }
        self.assertEqual(
            worker_environment(environ), {"PATH": "/bin", "CREDENTIALS_DIRECTORY": "/run/c"}
        )


class RestartTests(SynchronousTestCase):
    def setUp(self):
        self.events = captured_log(self)
        started(self, 1)

    def crash(self):
        self.reactor.processes[-1].end()

    def test_a_worker_that_dies_is_restarted_after_a_second(self):
        self.reactor.advance(5)
        self.crash()
        self.assertEqual(len(self.reactor.processes), 1)
        self.assertIn(
            "worker 1 (pid 1000) killed by SIGKILL after 5.0 s; restarting it in 1 s",
            texts(self.events),
        )
        self.assertEqual(
            self.supervisor.health_problems(),
            [("failing", "no worker is running")],
        )
        self.reactor.advance(1)
        self.assertEqual(len(self.reactor.processes), 2)
        self.assertEqual(self.supervisor.health_problems(), [])

    def test_the_backoff_doubles_to_thirty_seconds(self):
        delays = []
        for _ in range(7):
            self.crash()
            before = len(self.reactor.processes)
            waited = 0.0
            while len(self.reactor.processes) == before:
                self.reactor.advance(0.5)
                waited += 0.5
            delays.append(waited)
        self.assertEqual(delays, [1, 2, 4, 8, 16, 30, 30])

    def test_a_worker_that_ran_thirty_seconds_starts_the_backoff_afresh(self):
        for _ in range(3):
            self.crash()
            self.reactor.advance(30)
        self.reactor.advance(30)  # the last one ran 60 s
        self.crash()
        self.reactor.advance(1)
        self.assertEqual(len(self.reactor.processes), 5)

    def test_an_exit_status_is_told(self):
        self.reactor.processes[-1].end(Failure(error.ProcessTerminated(exitCode=3)))
        self.assertIn("exited with status 3", texts(self.events)[-1])

    def test_a_worker_that_cannot_be_spawned_is_tried_again(self):
        self.reactor.fail_spawns = 1
        self.crash()
        self.reactor.advance(1)
        self.assertIn(
            "worker 1 could not be started: Resource temporarily unavailable; trying again in 2 s",
            texts(self.events),
        )
        self.reactor.advance(2)
        self.assertEqual(len(self.reactor.processes), 2)

    def test_the_exits_are_counted(self):
        self.crash()
        self.reactor.advance(1)
        samples = {n: v for n, _, v in self.supervisor.metric_samples()}
        self.assertEqual(samples, {"workers_running": 1, "worker_exits": 1})


class HeartbeatTests(SynchronousTestCase):
    def setUp(self):
        self.events = captured_log(self)
        started(self, 2)

    def control(self, slot):
        return self.reactor.adopted[slot - 1][1]

    def answer(self, slot, samples=(), problems=(), summaries=None):
        report = {
            "samples": list(samples),
            "problems": list(problems),
            "summaries": summaries or {},
        }
        self.control(slot).received({"beat": 1, "report": report})

    def test_beats_are_sent_every_second(self):
        self.reactor.advance(1)
        self.reactor.advance(1)
        sent = self.reactor.adopted[0][2]
        self.assertEqual(len(sent), 2)
        self.assertIn(b'{"beat":2}', sent[-1])

    def test_a_worker_silent_for_thirty_seconds_is_killed(self):
        for _ in range(int(HUNG_AFTER) + 2):
            self.answer(2)
            self.reactor.advance(1)
        self.answer(2)
        self.reactor.advance(5)  # not killed twice while it dies
        self.assertEqual(self.reactor.processes[0].signals, ["KILL"])
        self.assertEqual(self.reactor.processes[1].signals, [])
        self.assertTrue(any("has not answered for" in t for t in texts(self.events)))

    def test_late_workers_are_named_for_the_watchdog(self):
        for slot in (1, 2):
            self.control(slot).received({"ready": 1})
        self.reactor.advance(3)
        self.answer(2)
        self.assertEqual([s.number for s in self.supervisor.late(1.5)], [1])
        self.assertEqual(self.supervisor.late(2.5), [])  # a beat a second: 3 s is not late

    def test_a_worker_still_starting_is_not_late(self):
        self.reactor.advance(10)
        self.assertEqual(self.supervisor.late(1.0), [])

    def test_ready_once_every_worker_said_so(self):
        ready = self.supervisor.when_ready()
        self.control(1).received({"ready": 2})
        self.assertNoResult(ready)
        self.control(2).received({"ready": 2})
        self.successResultOf(ready)

    def test_samples_of_the_workers_are_added_up(self):
        self.answer(
            1, [["echo", "requests", ["tcp"], 5], ["echo", "connections_open", ["tcp"], 2]]
        )
        self.answer(2, [["echo", "requests", ["tcp"], 7], ["timestamp", "requests", ["tcp"], 1]])
        reports = self.supervisor.reports("echo")
        collected = {
            f.name: {tuple(s.labels.values()): s.value for s in f.samples}
            for f in SuiteCollector(lambda: [("echo", reports)]).collect()
        }
        self.assertEqual(collected["suite_requests"], {("echo", "tcp"): 12})
        self.assertEqual(collected["suite_connections_open"], {("echo", "tcp"): 2})

    def test_counters_of_a_worker_that_ended_are_kept_and_gauges_are_not(self):
        histogram = Histogram()
        histogram.observe(0.01, 3)
        self.answer(
            1,
            [
                ["echo", "requests", ["tcp"], 5],
                ["echo", "connections_open", ["tcp"], 2],
                ["sleep", "request_duration_seconds", [], report_value(histogram)],
            ],
        )
        self.reactor.processes[0].end()
        self.reactor.advance(1)  # restarted; its successor has reported nothing yet
        echo = {n: v for n, _, v in self.supervisor.reports("echo").metric_samples()}
        self.assertEqual(echo, {"requests": 5})
        (kept,) = [v for _, _, v in self.supervisor.reports("sleep").metric_samples()]
        self.assertEqual(kept.counts, histogram.counts)
        self.reactor.processes[0].end()  # the same slot's next process, unanswered: nothing more
        self.assertEqual(
            {n: v for n, _, v in self.supervisor.reports("echo").metric_samples()},
            {"requests": 5},
        )

    def test_problems_are_marked_with_the_workers_that_have_them(self):
        self.answer(1, problems=[["names", "degraded", "etcd unreachable"]])
        self.answer(2, problems=[["names", "degraded", "etcd unreachable"]])
        self.assertEqual(
            self.supervisor.reports("names").health_problems(),
            [("degraded", "workers 1, 2: etcd unreachable")],
        )

    def test_the_summary_is_the_first_workers(self):
        self.answer(2, summaries={"names": {"instances": 3}})
        self.assertEqual(self.supervisor.reports("names").summary(), {"instances": 3})
        self.assertEqual(self.supervisor.reports("echo").summary(), {})


def report_value(histogram):
    (sample,) = report_of([("s", Samples(histogram))])["samples"]
    return sample[3]


class Samples:
    def __init__(self, value):
        self.value = value

    def metric_samples(self):
        yield "request_duration_seconds", (), self.value


classImplements(Samples, IMetricSource)


class ReportTests(SynchronousTestCase):
    def test_a_histogram_survives_the_trip(self):
        histogram = Histogram()
        histogram.observe(0.5, 2)
        back = sample_value(json.loads(json.dumps(report_value(histogram))))
        self.assertEqual((back.counts, back.total), (histogram.counts, histogram.total))


class StopTests(SynchronousTestCase):
    def setUp(self):
        self.events = captured_log(self)
        started(self, 2)

    def test_sigterm_to_each_and_done_when_all_ended(self):
        stopped = self.supervisor.stopService()
        self.assertEqual([p.signals for p in self.reactor.processes], [["TERM"], ["TERM"]])
        self.reactor.processes[0].end(Failure(error.ProcessDone(0)))
        self.assertNoResult(stopped)
        self.reactor.processes[1].end(Failure(error.ProcessDone(0)))
        self.successResultOf(stopped)
        self.reactor.advance(60)
        self.assertEqual(len(self.reactor.processes), 2)  # none restarted

    def test_one_still_running_after_the_grace_is_killed(self):
        stopped = self.supervisor.stopService()
        self.reactor.processes[0].end(Failure(error.ProcessDone(0)))
        self.reactor.advance(KILL_AFTER)
        self.assertEqual(self.reactor.processes[1].signals, ["TERM", "KILL"])
        self.reactor.processes[1].end()
        self.successResultOf(stopped)

    def test_a_pending_restart_is_cancelled(self):
        self.reactor.processes[0].end()
        stopped = self.supervisor.stopService()
        self.reactor.processes[1].end(Failure(error.ProcessDone(0)))
        self.successResultOf(stopped)
        self.reactor.advance(60)
        self.assertEqual(len(self.reactor.processes), 2)
        self.assertEqual(self.supervisor.health_problems(), [])  # stopping: nothing to fix

    def test_sighup_goes_to_every_worker(self):
        self.supervisor.reopen()
        self.assertEqual([p.signals for p in self.reactor.processes], [["HUP"], ["HUP"]])


class LogRelayTests(SynchronousTestCase):
    def setUp(self):
        self.events = captured_log(self)
        supervisor = WorkerSupervisor(1, LAUNCH, WorkerReactor())
        self.process = WorkerProcess(supervisor, supervisor.slots[0])

    def test_a_worker_event_is_logged_marked_with_its_slot(self):
        from twisted.logger import Logger, eventAsJSON

        event = {}
        Logger(namespace="suite.echo", observer=event.update).info("hello {who}", who="you")
        line = "\x1e" + eventAsJSON(event) + "\n"
        half = len(line) // 2
        self.process.childDataReceived(1, line[:half].encode())
        self.process.childDataReceived(1, line[half:].encode())
        (relayed,) = [e for e in self.events if e.get("worker") == 1]
        self.assertEqual(relayed["log_system"], "worker 1 suite.echo#info")
        self.assertEqual(relayed["log_level"], LogLevel.info)
        self.assertEqual(texts([relayed]), ["hello you"])

    def test_standard_error_is_logged_as_a_warning(self):
        self.process.childDataReceived(2, b"Traceback (most recent call last):\n")
        (relayed,) = self.events
        self.assertEqual(texts([relayed]), ["worker 1: Traceback (most recent call last):"])

    def test_a_line_without_end_is_cut(self):
        self.process.childDataReceived(2, b"x" * (supervising.MAX_LOG_LINE + 10))
        (relayed,) = self.events
        self.assertLessEqual(len(relayed["line"]), supervising.MAX_LOG_LINE)
