"""The echo service: `suite-echo` plugin and [echo] section."""

from suite.config import ENABLED, Key, Section, choice
from suite.datagram import DATAGRAM_KEYS, rate_limited_replier
from suite.echo.protocol import LineEchoFactory, RawEchoFactory, echo_datagram
from suite.endpoints import TLS_LISTEN, listen_key
from suite.lines import MAX_LINE
from suite.plugin import Parts, ServiceDefinition, make_service
from suite.streams import stream_keys

SECTION = Section(
    "echo",
    (
        ENABLED,
        listen_key("tcp:5001", "udp:5001"),
        TLS_LISTEN,
        Key("mode", choice("line", "raw"), "line", "line ('You said: ...') or raw (RFC 862)"),
        MAX_LINE,
        *stream_keys(),
        *DATAGRAM_KEYS,
    ),
)


def build(settings, clock) -> Parts:
    limits = (SECTION.name, clock, settings.max_connections, settings.idle_timeout)
    if settings.mode == "raw":
        factory = RawEchoFactory(*limits)
    else:
        factory = LineEchoFactory(*limits, settings.max_line)
    return Parts(factory, rate_limited_replier(SECTION.name, echo_datagram, settings, clock))


SERVICE = ServiceDefinition(SECTION, build)
Options = SERVICE.options("Echo server: line echo ('You said: ...') or RFC 862 raw echo.")


def makeService(options, reactor=None):
    return make_service([SERVICE], options, reactor)
