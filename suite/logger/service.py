"""The log collector: its [logger] section and how it is built."""

from collections.abc import Iterator
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from twisted.application.service import IService
from twisted.internet.interfaces import IReactorTime

from suite.foundation.allocator import keep_freed_memory
from suite.foundation.config import (
    BOOLEAN,
    STRING_LIST,
    ConfigError,
    ServiceSettings,
    integer,
    key,
    listen,
    number,
    path,
    string_list,
    tables,
    text,
)
from suite.foundation.declaration import Parts, ServiceDeclaration
from suite.foundation.jsonlines import file_mode_key
from suite.logger.channel import (
    ParentLink,
    RemoteDelivery,
    WorkerChannelFactory,
    connect_to_parent,
    frame_limit,
    writes_own_records,
)
from suite.logger.delivery import Deliverer, Delivery
from suite.logger.drain import ShutdownDrain
from suite.logger.forward import forward_mistakes, open_forwarders
from suite.logger.protocol import SyslogDatagramProtocol, SyslogFactory
from suite.logger.records import RecordSink
from suite.logger.relay_settings import (
    ForwardSettings,
    RouteSettings,
    parse_network,
    relay_mistakes,
)
from suite.logger.relp_server import RelpFactory
from suite.logger.report import open_reporter, report_mistakes
from suite.logger.routing import open_routes, open_writer, route_file_mistakes, route_writers
from suite.logger.sources import SourceLimits
from suite.net.connections import ConnectionLimits, idle_timeout
from suite.net.udpbuffer import DatagramLimits

MiB = 2**20


def check_report_url(value: str) -> None:
    """A report_to URL: http or https, with a host (ValueError otherwise)."""
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018  # raises ValueError when out of range
    except ValueError:
        raise ValueError(f"{value!r}: a port of 1-65535") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r}: an http:// or https:// URL of a name server's HTTP API")
    if not value.isascii():
        raise ValueError(f"{value!r}: ASCII only (a host name in its xn-- form)")


@dataclass(frozen=True, kw_only=True)
class LoggerSettings(DatagramLimits, ConnectionLimits, ServiceSettings):
    section = "logger"

    listen: tuple[str, ...] = listen("tcp:5140", "udp:5140")
    output: str = key(
        path(),
        "log/messages.jsonl",
        "JSON lines file of the records (its directory is created); - = standard output",
    )
    max_message: int = key(
        integer(1), 8192, "bytes of a message kept; longer ones are cut and marked truncated"
    )
    max_frame: int = key(
        integer(1),
        MiB,
        "largest octet-counted frame in bytes; a larger count closes the connection",
    )
    # Senders such as rsyslog keep a forwarding connection open while idle.
    idle_timeout: float = idle_timeout(0.0)
    rotate_bytes: int = key(integer(0), 16 * MiB, "rotate the output at this size; 0 = never")
    keep: int = key(integer(1), 10, "rotated files kept (FILE.1 ... FILE.N)")
    file_mode: int = file_mode_key("the output files")
    flush_interval: float = key(number(0), 0.2, "seconds a message may wait before it is written")
    max_batch: int = key(integer(1), MiB, "pending bytes that are written at once")
    max_buffer: int = key(
        integer(1),
        64 * MiB,
        "bytes of records held while the output cannot be written; then senders are held back",
    )
    shutdown_timeout: float = key(
        number(0),
        3.0,
        "seconds open connections are still read when the suite stops, until each has been "
        "quiet for 0.2 s; then one last read (at most 1 s more), the rest discarded and counted",
    )
    relp_listen: tuple[str, ...] = key(
        STRING_LIST,
        (),
        "RELP endpoints (tcp:PORT, tcp6:PORT, unix:PATH, systemd:…), for rsyslog's omrelp: "
        "each message is acknowledged once its record is written",
    )
    relp_tls_listen: tuple[str, ...] = key(
        STRING_LIST, (), 'the same, served through TLS ([tls]), for omrelp\'s tls="on"'
    )
    sync: bool = key(
        BOOLEAN,
        False,
        "fsync the output before a RELP message is acknowledged; forward queues then keep "
        "every message on disk (fsynced) before it is acknowledged",
    )
    relp_window: int = key(
        integer(1),
        1024,
        "RELP messages of one connection waiting for their acknowledgement at most; beyond, "
        "the connection is not read until some are acknowledged",
    )
    rate_per_source: float = key(
        number(0),
        0.0,
        "messages per second from one source address (a token bucket): over it, stream and "
        "RELP senders are not read, datagrams are dropped and counted; 0 = no limit",
    )
    burst_per_source: int = key(
        integer(0),
        0,
        "messages a source may send at once above rate_per_source; 0 = one second's worth",
    )
    max_rate_sources: int = key(
        integer(1),
        10000,
        "source addresses whose rate_per_source bucket is remembered; while every one is still "
        "refilling, datagrams from a new address are dropped (rate_limited) and the messages "
        "of its connections are charged to one bucket that all such addresses share",
    )
    allowed_sources: tuple[str, ...] = key(
        string_list(parse_network),
        (),
        "addresses or networks (CIDR) senders may come from: others are refused at connect, "
        "their datagrams dropped and counted; empty: every source",
    )
    forward: tuple[ForwardSettings, ...] = key(
        tables(ForwardSettings),
        (),
        "targets messages are passed on to, each through its own queue",
    )
    report_to: tuple[str, ...] = key(
        string_list(check_report_url),
        (),
        "name servers' HTTP APIs (http://HOST:PORT or https://…) told at most once a second "
        "which apps on which hosts were heard, for their logs checks; every replica's with etcd",
    )
    report_token: str = key(
        text(), "", "the name servers' write token for report_to (or credential:NAME)", secret=True
    )
    report_token_file: str = key(
        path(), "", "a file holding report_token (or credential:NAME); not together with it"
    )
    report_ca: str = key(
        path(),
        "",
        "PEM CA certificate(s) an https report_to name server is verified against, or "
        "credential:NAME; default: the system's CAs",
    )
    max_reported_sources: int = key(
        integer(1),
        10000,
        "distinct (app, hostname, address) kept between two reports; beyond, new ones wait "
        "for the next report (counted)",
    )
    route: tuple[RouteSettings, ...] = key(
        tables(RouteSettings),
        (),
        "rules tried in order choosing each message's files and targets; none: every message "
        "goes to output and to every target",
    )


def build(settings: LoggerSettings, reactor: IReactorTime) -> Parts:
    """The logger in one process: the delivery and its listeners together."""
    keep_freed_memory()
    delivery, services = _open_delivery(settings, reactor, SourceLimits.of(settings, reactor))
    parts, drain = _listening(settings, reactor, delivery)
    return replace(parts, services=(*services, drain), on_logs_heard=delivery.add_hearer)


def build_shared(settings: LoggerSettings, reactor: IReactorTime) -> Parts:
    """
    With `workers`, the parent's part, run once: the output, the routes, the
    forward queues, the reporter and the hearers, fed by every worker's
    channel (L{suite.logger.channel}).  The limits per source are the
    workers'.
    """
    keep_freed_memory()
    delivery, services = _open_delivery(settings, reactor, None, writes_own_records(settings))
    channels = WorkerChannelFactory(delivery, frame_limit(settings.max_message))
    return Parts(channels, services=services, on_logs_heard=delivery.add_hearer)


def build_worker(settings: LoggerSettings, reactor: IReactorTime, fd: int) -> Parts:
    """
    With `workers`, a worker's part: the listeners, framing and formatting
    what they read and handing it to the parent over the channel FD.  Its
    stop waits for the drain, then for the parent to confirm what it sent.
    """
    keep_freed_memory()
    own = (
        open_writer(settings, settings, reactor, shared=True, first=False)
        if writes_own_records(settings)
        else None
    )
    remote = RemoteDelivery(settings, reactor, own)
    connect_to_parent(reactor, fd, remote)  # type: ignore[arg-type]  # the real reactor
    parts, drain = _listening(settings, reactor, remote)
    # Services stop all at once: the link waits for the drain by itself.
    writing = () if own is None else (own,)
    return replace(parts, services=(*writing, ParentLink(remote, drain), drain))


def _open_delivery(
    settings: LoggerSettings,
    reactor: IReactorTime,
    sources: SourceLimits | None,
    shared: bool = False,
) -> tuple[Delivery, tuple[IService, ...]]:
    """
    The delivery to the files and queues of SETTINGS, and their services;
    SHARED: the workers append to the output too.
    """
    for mistake in preflight(settings):
        raise mistake  # before any file is opened
    writer = open_writer(settings, settings, reactor, shared=shared)
    routes = open_routes(settings, reactor)
    forwarders = open_forwarders(settings.forward, settings.sync, reactor)
    reporter = open_reporter(settings, reactor)
    reporting = () if reporter is None else (reporter,)
    delivery = Delivery(
        RecordSink(writer, reactor),
        {forwarder.settings.name: forwarder.queue for forwarder in forwarders},
        routes=routes,
        sources=sources,
        hearers=reporting,
    )
    return delivery, (writer, *route_writers(routes), *forwarders, *reporting)


def _listening(
    settings: LoggerSettings, reactor: IReactorTime, delivery: Deliverer
) -> tuple[Parts, ShutdownDrain]:
    """The listeners' parts feeding DELIVERY, and their shutdown drain."""
    factory = SyslogFactory(settings, reactor, delivery)
    relp_factory = RelpFactory(settings, reactor, delivery)
    relp = Parts(relp_factory)
    drain = ShutdownDrain(factory, reactor, settings.shutdown_timeout, others=(relp_factory,))
    parts = Parts(
        factory,
        lambda: SyslogDatagramProtocol(delivery, settings.max_message),
        other_listeners={"relp_listen": relp, "relp_tls_listen": relp},
    )
    return parts, drain


def preflight(settings: LoggerSettings) -> Iterator[ConfigError]:
    """
    What the relay tables and the report_* keys get wrong (found without
    opening anything).
    """
    yield from relay_mistakes(settings.forward, settings.route, settings.output)
    yield from route_file_mistakes(settings)
    yield from forward_mistakes(settings.forward)
    yield from report_mistakes(settings)


SERVICE = ServiceDeclaration(
    LoggerSettings,
    build,
    "Syslog collector (RFC 5424/3164 over TCP, UDP, TLS) writing JSON lines.",
    writes=("output",),
    preflight=preflight,
    other_listener_keys=("relp_listen", "relp_tls_listen"),
    stream_only_keys=("relp_listen", "relp_tls_listen"),
    build_shared=build_shared,
    build_worker=build_worker,
)
