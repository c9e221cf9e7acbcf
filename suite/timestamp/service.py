"""The timestamp service: `suite-timestamp` plugin and [timestamp] section."""

from suite.config import BOOLEAN, ENABLED, Key, Section, text
from suite.datagram import DATAGRAM_KEYS, rate_limited_replier
from suite.endpoints import TLS_LISTEN, listen_key
from suite.lines import MAX_LINE
from suite.plugin import Parts, ServiceDefinition, make_service
from suite.streams import stream_keys
from suite.timestamp.protocol import TimestampFactory, check_format, datagram_answerer, formatter

SECTION = Section(
    "timestamp",
    (
        ENABLED,
        listen_key("tcp:12345", "udp:12345"),
        TLS_LISTEN,
        Key("format", text(check_format), "ctime", "ctime, iso, epoch or a strftime pattern"),
        Key("utc", BOOLEAN, False, "stamp in UTC instead of local time"),
        MAX_LINE,
        *stream_keys(),
        *DATAGRAM_KEYS,
    ),
)


def build(settings, clock) -> Parts:
    stamp = formatter(settings.format, settings.utc)
    factory = TimestampFactory(
        SECTION.name,
        clock,
        settings.max_connections,
        settings.idle_timeout,
        settings.max_line,
        stamp,
    )
    answer = datagram_answerer(stamp, clock, settings.max_line)
    return Parts(factory, rate_limited_replier(SECTION.name, answer, settings, clock))


SERVICE = ServiceDefinition(SECTION, build)
Options = SERVICE.options("Timestamp server: answers each line or datagram '[time] line'.")


def makeService(options, reactor=None):
    return make_service([SERVICE], options, reactor)
