"""sd_notify and the journald log observer."""

import io
import os
import socket

from twisted.logger import Logger, LogPublisher

from suite import journal, systemd


def test_notify_sends_to_notify_socket(tmp_path):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(path)
        assert systemd.notify(b"READY=1", {"NOTIFY_SOCKET": path})
        assert listener.recv(100) == b"READY=1"


def test_notify_abstract_namespace():
    name = f"suite-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        assert systemd.notify(b"STOPPING=1", {"NOTIFY_SOCKET": "@" + name})
        assert listener.recv(100) == b"STOPPING=1"


def test_notify_without_systemd_does_nothing():
    assert systemd.notify(b"READY=1", {}) is False


def log_through(observer):
    publisher = LogPublisher(observer)
    log = Logger(namespace="suite.test", observer=publisher)
    log.info("listening on {port}", port=5001)
    log.error("two\nlines")
    log.critical("cannot listen")


def test_journal_lines_carry_priorities(tmp_path):
    with open(tmp_path / "journal", "w+") as stream:
        status = os.fstat(stream.fileno())
        environ = {"JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}"}
        assert journal.connected_to_journal(stream, environ)
        log_through(journal.JournalObserver(stream))
        stream.seek(0)
        assert stream.read() == (
            "<6>[suite.test#info] listening on 5001\n"
            "<3>[suite.test#error] two\n"
            "<3>lines\n"
            "<2>[suite.test#critical] cannot listen\n"
        )


def test_plain_text_unless_stdout_is_the_journal(tmp_path, monkeypatch):
    with open(tmp_path / "other", "w") as stream:
        assert not journal.connected_to_journal(stream, {"JOURNAL_STREAM": "1:2"})
        assert not journal.connected_to_journal(stream, {})
    assert not journal.connected_to_journal(io.StringIO(), {"JOURNAL_STREAM": "1:2"})
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    assert not isinstance(journal.observer(), journal.JournalObserver)
