"""The name server: `suite-names` plugin and [names] section."""

from suite.config import ENABLED, Key, Section, integer, number, text
from suite.endpoints import TLS_LISTEN, listen_key
from suite.names.health import HealthChecker, tcp_ping
from suite.names.protocol import NamesFactory
from suite.names.registry import Registry
from suite.names.server import NameServer
from suite.names.store import StoreError, open_store
from suite.plugin import Parts, ServiceDefinition, make_service
from suite.streams import stream_keys


def check_store(value: str) -> None:
    if value != "memory" and not (value.startswith("sqlite:") and len(value) > len("sqlite:")):
        raise ValueError("must be memory or sqlite:PATH")


SECTION = Section(
    "names",
    (
        ENABLED,
        listen_key("tcp:5300"),
        TLS_LISTEN,
        Key("token", text(), "", "when set, Register and Deregister need it"),
        Key("store", text(check_store), "sqlite:var/lib/suite/names.sqlite",
            "memory, or sqlite:PATH (registrations survive a restart)"),
        Key("ping_interval", number(0.01), 10.0, "seconds between health checks of each instance"),
        Key("ping_timeout", number(0.01), 2.0, "seconds a health check may take to connect"),
        Key("max_failures", integer(1), 3, "failed checks in a row that evict an instance"),
        Key("ping_concurrency", integer(1), 256, "health checks in flight at once"),
        Key("cache_ttl", integer(0), 5, "seconds clients may cache a lookup (the ttl answered)"),
        Key("max_instances", integer(1), 10000, "instances the registry holds"),
        *stream_keys(),
    ),
)


def build(settings, reactor) -> Parts:
    try:
        store = open_store(settings.store, reactor)
    except StoreError as e:
        raise settings.error("store", str(e)) from None
    registry = Registry(settings.max_instances)
    server = NameServer(registry, store, settings.token, settings.cache_ttl)
    checker = HealthChecker(
        registry, reactor, tcp_ping(reactor, settings.ping_timeout), settings.ping_interval,
        settings.ping_timeout, settings.max_failures, settings.ping_concurrency, server.evicted,
    )
    factory = NamesFactory(
        SECTION.name, reactor, settings.max_connections, settings.idle_timeout, server
    )
    return Parts(factory, services=(server, checker))


SERVICE = ServiceDefinition(SECTION, build, datagram_side=False)
Options = SERVICE.options("Name server over AMP: register, look up, health-check, evict.")


def makeService(options, reactor=None):
    return make_service([SERVICE], options, reactor)
