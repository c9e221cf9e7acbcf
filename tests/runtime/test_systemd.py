"""sd_notify and the journald log observer."""

import io
import os
import shutil
import socket
import tempfile

from twisted.logger import Logger, LogPublisher
from twisted.trial.unittest import SynchronousTestCase

from suite.runtime import journal, systemd
from tests.helpers import tmp_dir


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
