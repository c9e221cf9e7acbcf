"""The timestamp service: its [timestamp] section and how it is built."""

from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from suite.foundation.config import BOOLEAN, ServiceSettings, choice, key, listen, text
from suite.foundation.declaration import Parts, ServiceDeclaration
from suite.net.datagrams import ReplyLimits, rate_limited_replier
from suite.net.lines import LineLimits
from suite.timestamp.protocol import TimestampFactory, check_format, datagram_answerer


@dataclass(frozen=True, kw_only=True)
class TimestampSettings(ReplyLimits, LineLimits, ServiceSettings):
    section = "timestamp"

    # The datagram side on loopback only: a forged request makes it answer whomever the
    # forger names (reflection), so reaching it from the network is a deliberate choice.
    listen: tuple[str, ...] = listen("tcp:12345", "udp:12345:interface=127.0.0.1")
    format: str = key(text(check_format), "ctime", "ctime, iso, epoch or a strftime pattern")
    utc: bool = key(BOOLEAN, False, "stamp in UTC instead of local time")
    framing: str = key(
        choice("line", "read"),
        "line",
        "line: answer each line; read: answer each read as it comes (the textbook's clients)",
    )


def build(settings: TimestampSettings, clock: IReactorTime) -> Parts:
    factory = TimestampFactory(settings, clock)
    answer = datagram_answerer(factory.stamp, clock, settings.max_line)
    return Parts(factory, rate_limited_replier(settings, answer, clock))


SERVICE = ServiceDeclaration(
    TimestampSettings, build, "Timestamp server: answers each line or datagram '[time] line'."
)
