"""The sleep RPC service: `suite-sleep` plugin and [sleep] section."""

from suite.config import ENABLED, Key, Section, integer, number
from suite.endpoints import TLS_LISTEN, listen_key
from suite.plugin import Parts, ServiceDefinition, make_service
from suite.sleep.protocol import SleepFactory
from suite.streams import stream_keys

SECTION = Section(
    "sleep",
    (
        ENABLED,
        listen_key("tcp:5200"),
        TLS_LISTEN,
        Key("max_seconds", number(0), 60.0, "longest sleep a client may ask for"),
        Key("max_pending", integer(1), 100, "sleeps pending on one connection"),
        Key("max_total", integer(1), 10000, "sleeps pending on the whole server"),
        *stream_keys(),
    ),
)


def build(settings, clock) -> Parts:
    return Parts(
        SleepFactory(
            SECTION.name, clock, settings.max_connections, settings.idle_timeout,
            settings.max_seconds, settings.max_pending, settings.max_total,
        )
    )


SERVICE = ServiceDefinition(SECTION, build, datagram_side=False)
Options = SERVICE.options("Sleep RPC over AMP: 'sleep N seconds, then answer'.")


def makeService(options, reactor=None):
    return make_service([SERVICE], options, reactor)
