"""The echo service: `suite-echo` plugin and [echo] section."""

from suite.config import ENABLED, Key, Section, choice
from suite.datagram import DATAGRAM_KEYS, rate_limited_replier
from suite.echo.protocol import LineEchoFactory, RawEchoFactory, echo_datagram
from suite.endpoints import TLS_LISTEN, listen_key
from suite.lines import MAX_LINE
from suite.plugin import ServiceDefinition, make_service
from suite.streams import STREAM_KEYS

SECTION = Section(
    "echo",
    (
        ENABLED,
        listen_key("tcp:5001", "udp:5001"),
        TLS_LISTEN,
        Key("mode", choice("line", "raw"), "line", "line ('You said: ...') or raw (RFC 862)"),
        MAX_LINE,
        *STREAM_KEYS,
        *DATAGRAM_KEYS,
    ),
)


def stream_factory(settings, clock):
    limits = (SECTION.name, clock, settings.max_connections, settings.idle_timeout)
    if settings.mode == "raw":
        return RawEchoFactory(*limits)
    return LineEchoFactory(*limits, settings.max_line)


def datagram_protocol(settings, clock):
    return rate_limited_replier(SECTION.name, echo_datagram, settings, clock)


SERVICE = ServiceDefinition(SECTION, stream_factory, datagram_protocol)
Options = SERVICE.options("Echo server: line echo ('You said: ...') or RFC 862 raw echo.")


def makeService(options, reactor=None):
    return make_service([SERVICE], options, reactor)
