"""The timestamp service: `suite-timestamp` plugin and [timestamp] section."""

from suite.config import BOOLEAN, ENABLED, Key, Section, text
from suite.datagram import DATAGRAM_KEYS, rate_limited_replier
from suite.endpoints import TLS_LISTEN, listen_key
from suite.lines import MAX_LINE
from suite.plugin import ServiceDefinition, make_service
from suite.streams import STREAM_KEYS
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
        *STREAM_KEYS,
        *DATAGRAM_KEYS,
    ),
)


def stream_factory(settings, clock):
    return TimestampFactory(
        SECTION.name,
        clock,
        settings.max_connections,
        settings.idle_timeout,
        settings.max_line,
        formatter(settings.format, settings.utc),
    )


def datagram_protocol(settings, clock):
    answer = datagram_answerer(formatter(settings.format, settings.utc), clock, settings.max_line)
    return rate_limited_replier(SECTION.name, answer, settings, clock)


SERVICE = ServiceDefinition(SECTION, stream_factory, datagram_protocol)
Options = SERVICE.options("Timestamp server: answers each line or datagram '[time] line'.")


def makeService(options, reactor=None):
    return make_service([SERVICE], options, reactor)
