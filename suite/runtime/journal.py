"""
Log lines for journald: `twistd --logger=suite.runtime.journal.observer` writes each
line with its priority prefix (`<3>` error ... `<6>` info, `<7>` debug) when
standard output is the journal (JOURNAL_STREAM matches it), and plain text
otherwise.  journald adds its own timestamps, so the lines carry none.
"""

import os
import sys

from twisted.logger import LogLevel, eventAsText, textFileLogObserver

PRIORITIES = {
    LogLevel.critical: 2,
    LogLevel.error: 3,
    LogLevel.warn: 4,
    LogLevel.info: 6,
    LogLevel.debug: 7,
}


def connected_to_journal(stream, environ=os.environ) -> bool:
    """True when STREAM is the very journal stream systemd gave us (see systemd.exec(5))."""
    expected = environ.get("JOURNAL_STREAM", "")
    try:
        status = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return expected == f"{status.st_dev}:{status.st_ino}"


class JournalObserver:
    def __init__(self, stream):
        self.stream = stream

    def __call__(self, event):
        text = eventAsText(event, includeTimestamp=False)
        if not text:
            return
        priority = PRIORITIES.get(event.get("log_level"), 6)
        self.stream.write("".join(f"<{priority}>{line}\n" for line in text.splitlines()))
        self.stream.flush()


def observer():
    """twistd --logger factory; called before twistd redirects sys.stdout to the log."""
    stream = sys.stdout
    if connected_to_journal(stream):
        return JournalObserver(stream)
    return textFileLogObserver(stream)
