"""sd_notify, the watchdog, the journald and JSON log observers."""

import io
import json
import os
import shutil
import socket
import tempfile
import threading
import time

from twisted.internet import reactor, task
from twisted.internet.task import Clock
from twisted.logger import Logger, LogPublisher, eventsFromJSONLogFile, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase

from suite import journal
from suite import journal as named_journal
from suite.foundation import systemd
from tests.helpers import captured_log, tmp_dir


def notify_socket(test) -> tuple[socket.socket, str]:
    """A datagram socket standing for systemd's NOTIFY_SOCKET, and its path."""
    directory = tempfile.mkdtemp()  # short: a Unix socket path has at most 107 bytes
    test.addCleanup(shutil.rmtree, directory)
    path = os.path.join(directory, "notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    test.addCleanup(listener.close)
    listener.bind(path)
    return listener, path


class WatchdogTests(SynchronousTestCase):
    def test_interval_is_half_watchdog_usec_for_this_process_only(self):
        pid = str(os.getpid())
        self.assertEqual(systemd.watchdog_interval({"WATCHDOG_USEC": "30000000"}), 15.0)
        self.assertEqual(
            systemd.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": pid}), 15.0
        )
        self.assertIsNone(
            systemd.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"})
        )
        for usec in ("", "0", "-5", "soon"):
            self.assertIsNone(systemd.watchdog_interval({"WATCHDOG_USEC": usec}))
        self.assertIsNone(systemd.watchdog_interval({}))

    def test_pings_every_half_interval_from_the_start(self):
        listener, path = notify_socket(self)
        listener.setblocking(False)
        clock = Clock()
        watchdog = systemd.Watchdog(clock, {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
        watchdog.startService()
        self.assertEqual(listener.recv(100), b"WATCHDOG=1")
        clock.advance(0.9)
        self.assertRaises(BlockingIOError, listener.recv, 100)
        clock.advance(0.1)
        self.assertEqual(listener.recv(100), b"WATCHDOG=1")
        watchdog.stopService()
        clock.advance(5)
        self.assertRaises(BlockingIOError, listener.recv, 100)

    def test_no_ping_while_a_part_is_not_alive_and_each_change_is_logged(self):
        lines = captured_log(self)
        listener, path = notify_socket(self)
        listener.setblocking(False)
        clock = Clock()
        late: list[str] = []
        watchdog = systemd.Watchdog(
            clock,
            {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"},
            alive=lambda within: late[0] if late else None,
        )
        watchdog.startService()
        self.assertEqual(listener.recv(100), b"WATCHDOG=1")
        late.append("worker 2 has not answered for over 1 s")
        for _ in range(3):
            clock.advance(1)
        self.assertRaises(BlockingIOError, listener.recv, 100)
        late.clear()
        clock.advance(1)
        self.assertEqual(listener.recv(100), b"WATCHDOG=1")
        self.assertEqual(
            [line for line in lines if "watchdog" in line],
            [
                "systemd watchdog: WATCHDOG=1 every 1 s",
                "systemd watchdog: not pinging: worker 2 has not answered for over 1 s",
                "systemd watchdog: pinging again",
            ],
        )
        watchdog.stopService()

    def test_nothing_without_watchdog_usec(self):
        clock = Clock()
        systemd.Watchdog(clock, {"NOTIFY_SOCKET": "/nonexistent"}).startService()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_an_unreachable_socket_is_logged_once_and_pinging_goes_on(self):
        lines = captured_log(self)
        clock = Clock()
        watchdog = systemd.Watchdog(
            clock, {"NOTIFY_SOCKET": "/nonexistent/notify", "WATCHDOG_USEC": "200000"}
        )
        watchdog.startService()
        for _ in range(5):
            clock.advance(0.1)
        self.assertEqual(sum("cannot notify /nonexistent/notify" in line for line in lines), 1)
        self.assertTrue(watchdog.running and clock.getDelayedCalls())


class BlockedReactorTests(TestCase):
    async def test_no_pings_while_the_reactor_is_blocked(self):
        listener, path = notify_socket(self)
        arrivals = []

        def receive():
            listener.settimeout(5)
            while len(arrivals) < 100:
                try:
                    listener.recv(100)
                except OSError:
                    return
                arrivals.append(time.monotonic())

        reader = threading.Thread(target=receive, daemon=True)
        reader.start()
        watchdog = systemd.Watchdog(reactor, {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"})
        watchdog.startService()
        self.addCleanup(watchdog.stopService)
        await task.deferLater(reactor, 0.3, lambda: None)
        time.sleep(0.6)  # the reactor is blocked: a wedged service
        await task.deferLater(reactor, 0.3, lambda: None)
        watchdog.stopService()
        gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
        self.assertGreaterEqual(len(gaps), 6, gaps)
        self.assertEqual(len([gap for gap in gaps if gap > 0.5]), 1, gaps)  # the block
        self.assertLess(sorted(gaps)[len(gaps) // 2], 0.1, gaps)  # every 50 ms otherwise


class NotifyTests(SynchronousTestCase):
    def test_notify_sends_to_notify_socket(self):
        directory = tempfile.mkdtemp()  # short: a Unix socket path has at most 107 bytes
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
            listener.bind(path)
            self.assertTrue(systemd.notify(b"READY=1", {"NOTIFY_SOCKET": path}))
            self.assertEqual(listener.recv(100), b"READY=1")

    def test_notify_abstract_namespace(self):
        name = f"suite-test-{os.getpid()}"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
            listener.bind("\0" + name)
            self.assertTrue(systemd.notify(b"STOPPING=1", {"NOTIFY_SOCKET": "@" + name}))
            self.assertEqual(listener.recv(100), b"STOPPING=1")

    def test_notify_without_systemd_does_nothing(self):
        self.assertIs(systemd.notify(b"READY=1", {}), False)


def log_through(observer):
    publisher = LogPublisher(observer)
    log = Logger(namespace="suite.test", observer=publisher)
    log.info("listening on {port}", port=5001)
    log.error("two\nlines")
    log.critical("cannot listen")


class JournalTests(SynchronousTestCase):
    def test_journal_lines_carry_priorities(self):
        with open(tmp_dir(self) / "journal", "w+") as stream:
            status = os.fstat(stream.fileno())
            environ = {"JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}"}
            self.assertTrue(journal.connected_to_journal(stream, environ))
            log_through(journal.JournalObserver(stream))
            stream.seek(0)
            self.assertEqual(
                stream.read(),
                "<6>[suite.test#info] listening on 5001\n"
                "<3>[suite.test#error] two\n"
                "<3>lines\n"
                "<2>[suite.test#critical] cannot listen\n",
            )

    def test_plain_text_unless_stdout_is_the_journal(self):
        with open(tmp_dir(self) / "other", "w") as stream:
            self.assertFalse(journal.connected_to_journal(stream, {"JOURNAL_STREAM": "1:2"}))
            self.assertFalse(journal.connected_to_journal(stream, {}))
        self.assertFalse(journal.connected_to_journal(io.StringIO(), {"JOURNAL_STREAM": "1:2"}))
        saved = os.environ.pop("JOURNAL_STREAM", None)
        if saved is not None:
            self.addCleanup(os.environ.__setitem__, "JOURNAL_STREAM", saved)
        self.assertNotIsInstance(journal.observer(), journal.JournalObserver)


class JSONObserverTests(SynchronousTestCase):
    def test_one_json_object_per_line_with_time_level_and_message(self):
        stream = io.StringIO()
        log_through(journal.FileLogObserver(stream, journal.json_line))
        lines = stream.getvalue().splitlines()
        self.assertEqual(len(lines), 3)
        records = [json.loads(line) for line in lines]
        self.assertEqual([r["level"] for r in records], ["info", "error", "critical"])
        self.assertEqual(
            [r["message"] for r in records], ["listening on 5001", "two\nlines", "cannot listen"]
        )
        self.assertEqual(records[0]["port"], 5001)
        self.assertEqual(records[0]["log_namespace"], "suite.test")
        self.assertRegex(records[0]["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")
        stream.seek(0)
        read_back = list(eventsFromJSONLogFile(stream))  # Twisted's own reader
        self.assertEqual(
            [formatEvent(e) for e in read_back],
            ["listening on 5001", "two\nlines", "cannot listen"],
        )

    def test_a_failure_carries_its_traceback(self):
        stream = io.StringIO()
        log = Logger(
            namespace="suite.test",
            observer=LogPublisher(journal.FileLogObserver(stream, journal.json_line)),
        )
        try:
            raise ZeroDivisionError("division by zero")
        except ZeroDivisionError:
            log.failure("checking failed")
        record = json.loads(stream.getvalue())
        self.assertEqual(record["level"], "critical")
        self.assertIn("ZeroDivisionError", record["message"])
        self.assertTrue(record["message"].startswith("checking failed"))

    def test_the_names_operators_type(self):
        self.assertIs(named_journal.observer, journal.observer)
        self.assertIsInstance(named_journal.json_observer(), journal.FileLogObserver)
