"""
The timestamp protocols: each line or datagram answered `[T] line`, or, with
`framing = "read"`, each read answered `[T] DATA` as the textbook servers do.
"""

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IReactorTime

from suite.net.connections import ConnectionPolicy, StreamFactory
from suite.net.lines import LineProtocol

if TYPE_CHECKING:
    from suite.timestamp.service import TimestampSettings

NAMED_FORMATS = ("ctime", "iso", "epoch")


# The directives of C99/POSIX strftime and glibc's, plus Python's %f; flags and widths allowed.
STRFTIME_DIRECTIVE = re.compile(r"%[-_0^#]?\d*[EO]?(.)", re.S)
KNOWN_DIRECTIVES = set("aAbBcCdDeFgGhHIjklmMnpPrRsStTuUVwWxXyYzZf%+")


def check_format(pattern: str) -> None:
    """
    Config check: a named format, or a strftime pattern using only known
    directives (strftime copies an unknown one such as %Q into every stamp).
    """
    if pattern in NAMED_FORMATS:
        return
    directives = STRFTIME_DIRECTIVE.findall(pattern)
    if not directives:
        raise ValueError("must be ctime, iso, epoch or a strftime pattern with % directives")
    unknown = sorted({d for d in directives if d not in KNOWN_DIRECTIVES})
    if unknown:
        raise ValueError("unknown strftime directive " + ", ".join(f"%{d}" for d in unknown))
    if "%" in STRFTIME_DIRECTIVE.sub("", pattern):
        raise ValueError("a % that starts no directive")
    formatter(pattern, utc=True)(0.0)


def formatter(pattern: str, utc: bool) -> Callable[[float], bytes]:
    """A function turning POSIX seconds into the `T` of the reply."""
    zone = UTC if utc else None

    def moment(seconds: float) -> datetime:
        if utc:
            return datetime.fromtimestamp(seconds, zone)
        return datetime.fromtimestamp(seconds).astimezone()

    if pattern == "ctime":
        split = time.gmtime if utc else time.localtime
        return once_a_second(lambda seconds: time.asctime(split(seconds)).encode())
    if pattern == "iso":
        return lambda seconds: moment(seconds).isoformat(timespec="microseconds").encode()
    if pattern == "epoch":
        return lambda seconds: b"%.6f" % seconds

    def strftime(seconds: float) -> bytes:
        return moment(seconds).strftime(pattern).encode()

    return strftime if "%f" in pattern else once_a_second(strftime)


def once_a_second(format_whole_seconds: Callable[[int], bytes]) -> Callable[[float], bytes]:
    """A stamp with one-second resolution is formatted once a second, not once a line."""
    last_whole: int | None = None
    last_stamp = b""

    def stamp(seconds: float) -> bytes:
        nonlocal last_whole, last_stamp
        whole = int(seconds)
        if whole != last_whole:
            last_whole, last_stamp = whole, format_whole_seconds(whole)
        return last_stamp

    return stamp


class TimestampFactory(StreamFactory):
    """Settings: L{suite.timestamp.service.TimestampSettings}; `framing` picks the protocol."""

    settings: "TimestampSettings"

    def __init__(self, settings: "TimestampSettings", clock: IReactorTime) -> None:
        super().__init__(settings, clock)
        self.stamp = formatter(settings.format, settings.utc)
        self.protocol = TimestampReadProtocol if settings.framing == "read" else TimestampProtocol

    def now(self) -> bytes:
        return self.stamp(self.clock.seconds())


class TimestampProtocol(LineProtocol):
    """TCP: `[T] line` for every line, on a connection that stays open."""

    factory: TimestampFactory

    def answerLine(self, line: bytes) -> None:
        self.send(b"[%s] %s\r\n" % (self.factory.now(), line))


class TimestampReadProtocol(ConnectionPolicy):
    """
    `framing = "read"`: each read from the connection answered `[T] DATA`,
    DATA exactly as read (its own line end, if any; nothing added), in pieces
    of at most `max_line` bytes.  This is what the textbook servers (tsTserv,
    tsTservTW) do, for their clients, which send no line end and wait for the
    answer.  TCP reads are arbitrary pieces of what was sent, so a service
    should frame by lines (the default); this mode is for those clients.
    Limits, flow control and the idle timeout are the connection policy's.
    """

    factory: TimestampFactory
    refusal = LineProtocol.refusal

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        self.counts.requests += 1
        stamp = self.factory.now()
        size = self.factory.settings.max_line
        write = self.stream.write
        for start in range(0, len(data), size):
            write(b"[%s] %s" % (stamp, data[start : start + size]))


def datagram_answerer(
    stamp: Callable[[float], bytes], clock: IReactorTime, max_line: int
) -> Callable[[bytes], bytes]:
    """UDP: `[T] payload` (trailing CR/LF stripped), or an error for an oversize payload."""

    def answer(payload: bytes) -> bytes:
        if len(payload) > max_line:
            return b"ERROR datagram longer than %d bytes" % max_line
        return b"[%s] %s" % (stamp(clock.seconds()), payload.rstrip(b"\r\n"))

    return answer
