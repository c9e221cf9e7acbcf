"""
twistd's own log, for journald and for log shippers.

`twistd --logger=suite.journal.observer` writes each line with its priority
prefix (`<3>` error ... `<6>` info, `<7>` debug) when standard output is
the journal (JOURNAL_STREAM matches it), and plain text otherwise.
journald adds its own timestamps, so the lines carry none.

`twistd --logger=suite.journal.json_observer` writes one JSON object per
event and line on standard output: twisted.logger's own JSON encoding of
the event (its fields, `log_namespace`, `log_format` ...; Twisted's
`eventsFromJSONLogFile` reads it back), without the logger and source
objects (which JSON cannot hold), and with three fields added for
shippers: `time` (ISO 8601, UTC), `level` (`info`, `warn` ...) and
`message`, the event as text, with its traceback if it has one.
"""

import os
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TextIO

from twisted.logger import (
    FileLogObserver,
    LogEvent,
    LogLevel,
    eventAsJSON,
    eventAsText,
    textFileLogObserver,
)

PRIORITIES = {
    LogLevel.critical: 2,
    LogLevel.error: 3,
    LogLevel.warn: 4,
    LogLevel.info: 6,
    LogLevel.debug: 7,
}


def connected_to_journal(stream: TextIO, environ: Mapping[str, str] = os.environ) -> bool:
    """True when STREAM is the very journal stream systemd gave us (see systemd.exec(5))."""
    expected = environ.get("JOURNAL_STREAM", "")
    try:
        status = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return expected == f"{status.st_dev}:{status.st_ino}"


class JournalObserver:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, event: LogEvent) -> None:
        text = eventAsText(event, includeTimestamp=False)
        if not text:
            return
        priority = PRIORITIES.get(event.get("log_level"), 6)
        self.stream.write("".join(f"<{priority}>{line}\n" for line in text.splitlines()))
        self.stream.flush()


def observer() -> Callable[[LogEvent], None]:
    """twistd --logger factory; called before twistd redirects sys.stdout to the log."""
    stream = sys.stdout
    if connected_to_journal(stream):
        return JournalObserver(stream)
    return textFileLogObserver(stream)


def json_line(event: LogEvent) -> str:
    """EVENT as one line of JSON (see the module docstring)."""
    record = {k: v for k, v in event.items() if k not in ("log_logger", "log_source")}
    level = event.get("log_level")
    record["time"] = datetime.fromtimestamp(event.get("log_time") or 0, UTC).isoformat(
        timespec="microseconds"
    )
    record["level"] = level.name if level is not None else "info"
    record["message"] = eventAsText(event, includeTimestamp=False, includeSystem=False)
    return eventAsJSON(record) + "\n"


def json_observer() -> FileLogObserver:
    """twistd --logger factory: JSON lines on the real standard output."""
    return FileLogObserver(sys.stdout, json_line)
