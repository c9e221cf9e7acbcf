"""The name server: its [names] section and how it is built."""

import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from twisted.application.service import IService
from twisted.internet.interfaces import IReactorSocket

from suite.foundation.config import (
    STRING_LIST,
    ConfigError,
    ServiceSettings,
    integer,
    key,
    listen,
    number,
    path,
    string_list,
    text,
)
from suite.foundation.credentials import resolve_token
from suite.foundation.declaration import Parts, ServiceDeclaration
from suite.foundation.jsonlines import BatchWriter, open_output
from suite.foundation.version import suite_version
from suite.names.allowed import (
    DEFAULT_NETWORKS,
    AllowedHosts,
    IResolvingClock,
    check_network,
    host_resolver,
)
from suite.names.audit import LookupAudit
from suite.names.blocking import HeldReads
from suite.names.checks import CheckRunner
from suite.names.dnsfront import DNSFactory, dns_datagrams
from suite.names.etcd import EtcdClient
from suite.names.etcd_store import EtcdStore, etcd_endpoints
from suite.names.exposure import warn_about_exposure
from suite.names.guard import EvictionGuard
from suite.names.health import HealthChecker, IConnectingClock, tcp_ping
from suite.names.http_api import APIRoot, ConsulAPI, api_site
from suite.names.leader import Leadership
from suite.names.probes import Prober
from suite.names.protocol import NamesFactory
from suite.names.registry import Registry
from suite.names.server import MAX_INSTANCES_PER_SOURCE, NameServer, load_registry
from suite.names.silence import Silence
from suite.names.store import IRegistryStore, StoreError, open_store, read_stored
from suite.names.zone import ZoneAnswers
from suite.net.amp import AMPLimits
from suite.net.datagrams import ReplyLimits

MiB = 2**20
DOMAIN_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
DATACENTER = re.compile(r"[a-z0-9_-]{1,64}")
AUDIT_FLUSH_INTERVAL = 0.5  # seconds a lookup's audit line may wait
AUDIT_BATCH = MiB


class INamesReactor(IResolvingClock, IConnectingClock, IReactorSocket):
    """
    What the name server asks of its reactor: a clock, a name resolver, TCP
    connections (the health checks) and sockets systemd passed (a
    `systemd:` listener's address).  No reactor declares it: it is the type
    of a reactor that is all of these, as Twisted's are.
    """


def check_domain(value: str) -> None:
    labels = value.rstrip(".").split(".")
    if not all(DOMAIN_LABEL.fullmatch(label) for label in labels) or len(value) > 200:
        raise ValueError("must be a DNS name such as suite or svc.example.com (lowercase)")


def check_datacenter(value: str) -> None:
    if not DATACENTER.fullmatch(value):
        raise ValueError("must be 1-64 of a-z 0-9 _ - (such as dc1)")


def check_store(value: str) -> None:
    if value.startswith("etcd:"):
        etcd_endpoints(value)
    elif value != "memory" and not (value.startswith("sqlite:") and len(value) > len("sqlite:")):
        raise ValueError("must be memory, sqlite:PATH or etcd:http://HOST:PORT[,…]")


def check_prefix(value: str) -> None:
    if not value.startswith("/") or not value.endswith("/"):
        raise ValueError("must start and end with / (such as /suite/names/)")


@dataclass(frozen=True, kw_only=True)
class NamesSettings(ReplyLimits, AMPLimits, ServiceSettings):
    section = "names"

    listen: tuple[str, ...] = listen("tcp:5300:interface=127.0.0.1")
    dns_listen: tuple[str, ...] = key(
        STRING_LIST, (), "DNS listeners: udp:PORT, tcp:PORT, systemd-udp:, systemd: (none: no DNS)"
    )
    domain: str = key(text(check_domain), "suite", "the DNS zone the registry's names live in")
    dns_cache_bytes: int = key(
        integer(64 * 1024),
        16 * MiB,
        "bytes of DNS answers and of the exact queries asking them kept ready (half each); "
        "the least recently used are forgotten first",
    )
    http_listen: tuple[str, ...] = key(
        STRING_LIST,
        (),
        "listeners of the Consul-compatible HTTP API: tcp:PORT, unix:PATH, systemd: (none: no "
        "HTTP API)",
    )
    http_tls_listen: tuple[str, ...] = key(STRING_LIST, (), "the same, served through TLS ([tls])")
    datacenter: str = key(
        text(check_datacenter), "dc1", "the datacenter the HTTP API says it serves (Consul's)"
    )
    max_blocking_queries: int = key(
        integer(1),
        10000,
        "HTTP reads held at once waiting for a change (blocking queries); more: 429",
    )
    token: str = key(
        text(), "", "when set, Register and Deregister need it (or credential:NAME)", secret=True
    )
    token_file: str = key(
        path(), "", "a file holding the token (or credential:NAME); not together with token"
    )
    read_token: str = key(
        text(),
        "",
        "when set, reads over AMP and HTTP need it or the token (or credential:NAME); DNS stays "
        "open",
        secret=True,
    )
    read_token_file: str = key(
        path(),
        "",
        "a file holding the read token (or credential:NAME); not together with read_token",
    )
    store: str = key(
        path(check_store, prefix="sqlite:"),
        "sqlite:data/names.sqlite",
        "memory, sqlite:PATH (registrations survive a restart), or "
        "etcd:http://HOST:PORT[,…] (one registry shared by several name servers)",
    )
    etcd_prefix: str = key(
        text(check_prefix), "/suite/names/", "etcd store: the keys under which the registry lives"
    )
    leader_ttl: int = key(
        integer(3),
        10,
        "etcd store: seconds within which another name server takes over the "
        "health checks when the one running them dies",
    )
    etcd_timeout: float = key(
        number(0.1),
        5.0,
        "etcd store: seconds an etcd request may take before the next "
        "endpoint is tried (and, all tried, UNAVAILABLE)",
    )
    ping_interval: float = key(
        number(0.01), 10.0, "seconds between health checks of each instance"
    )
    ping_timeout: float = key(number(0.01), 2.0, "seconds a health check may take to connect")
    max_failures: int = key(integer(1), 3, "failed checks in a row that evict an instance")
    ping_concurrency: int = key(
        integer(1), 256, "pings of AMP registrations in flight at once (declared checks apart)"
    )
    check_concurrency: int = key(
        integer(1),
        256,
        "declared checks (TCP, HTTP) in flight at once, apart from the pings; each takes at "
        "most its Timeout, its Interval and 5 minutes",
    )
    eviction_guard: float = key(
        number(0, 1),
        0.5,
        "when checks of more than this fraction of all checked instances (and at least 10) "
        "fail within one interval, nothing is evicted or turned critical until it falls "
        "back; 0 = off",
    )
    cache_ttl: int = key(integer(0), 5, "seconds clients may cache a lookup (the ttl answered)")
    max_instances: int = key(integer(1), 10000, "instances the registry holds; more: INVALID")
    max_instances_per_source: int = key(
        integer(1),
        MAX_INSTANCES_PER_SOURCE,
        "instances one source address may register; more: INVALID",
    )
    allowed_networks: tuple[str, ...] = key(
        string_list(check_network),
        DEFAULT_NETWORKS,
        "CIDR networks instances may be in (an IP literal, or every address a host name "
        "resolves to); link-local, unspecified, multicast, broadcast never are",
    )
    max_watches: int = key(integer(1), 100, "names one connection may watch; more: OVERLOADED")
    max_change_backlog: int = key(
        integer(1024),
        MiB,
        "bytes of Changed calls a watcher may leave unanswered; beyond, it is disconnected",
    )
    lookup_audit: str = key(
        path(),
        "log/names-lookups.jsonl",
        "JSON lines file auditing every lookup; - = standard output, empty = no lookup audit",
    )
    lookup_audit_rotate_bytes: int = key(
        integer(0), 16 * MiB, "rotate the lookup audit at this size; 0 = never"
    )
    lookup_audit_keep: int = key(integer(1), 10, "rotated lookup audit files kept")
    lookup_audit_max_buffer: int = key(
        integer(1),
        16 * MiB,
        "bytes of lookup audit held while the file cannot be written; then lines are dropped",
    )


def open_lookup_audit(settings: NamesSettings, reactor: INamesReactor) -> BatchWriter | None:
    if not settings.lookup_audit:
        return None
    try:
        output = open_output(
            settings.lookup_audit,
            settings.lookup_audit_rotate_bytes,
            settings.lookup_audit_keep,
            label="names",
        )
    except OSError as e:
        raise settings.error("lookup_audit", f"cannot open: {e.strerror}") from None
    return BatchWriter(
        output,
        reactor,
        AUDIT_FLUSH_INTERVAL,
        AUDIT_BATCH,
        settings.lookup_audit_max_buffer,
        label="names",
        essential=False,
    )


def open_registry_store(
    settings: NamesSettings, registry: Registry, reactor: INamesReactor
) -> IRegistryStore:
    """The store the settings name: memory, SQLite, or the copy of a registry on etcd."""
    if settings.store.startswith("etcd:"):
        client = EtcdClient(reactor, etcd_endpoints(settings.store), settings.etcd_timeout)
        return EtcdStore(client, registry, settings.etcd_prefix, reactor)
    try:
        return open_store(settings.store, reactor, registry.max_tombstones)
    except StoreError as e:
        raise settings.error("store", str(e)) from None


@dataclass(frozen=True)
class ReadTokenKeys:
    """`read_token` and `read_token_file` as the token keys resolve_token reads."""

    settings: NamesSettings

    @property
    def token(self) -> str:
        return self.settings.read_token

    @property
    def token_file(self) -> str:
        return self.settings.read_token_file

    def error(self, name: str, problem: str, value: Any = None) -> ConfigError:
        return self.settings.error(f"read_{name}", problem, value)


def http_parts(
    settings: NamesSettings,
    server: NameServer,
    reactor: INamesReactor,
    silence: Silence | None = None,
) -> Parts:
    """
    The HTTP API's listeners: one site, under the [names] connection
    limits; reports of who logged go to SILENCE.
    """
    held = HeldReads(server.registry, reactor, settings.max_blocking_queries)
    api = ConsulAPI(
        server, held, settings.datacenter, socket.gethostname(), suite_version(), silence
    )
    root = APIRoot(api)
    return Parts(api_site(root, settings, reactor), show_page=root.show_page)


def build(settings: NamesSettings, reactor: INamesReactor) -> Parts:
    token = resolve_token(settings)
    read_token = resolve_token(ReadTokenKeys(settings))
    warn_about_exposure(settings, token, reactor)
    audit_writer = open_lookup_audit(settings, reactor)
    registry = Registry(
        settings.max_instances,
        AllowedHosts(settings.allowed_networks),
        # names without instances whose index is kept; on etcd the store decides
        max_tombstones=None if settings.store.startswith("etcd:") else settings.max_instances,
    )
    store = open_registry_store(settings, registry, reactor)
    try:
        server = NameServer(
            registry,
            store,
            token,
            settings.cache_ttl,
            reactor,
            None if audit_writer is None else LookupAudit(audit_writer, reactor),
            resolve=host_resolver(reactor),
            max_instances_per_source=settings.max_instances_per_source,
            read_token=read_token,
        )
    except StoreError as e:
        store.close()
        raise settings.error("store", str(e)) from None
    guard = EvictionGuard(registry, settings.eviction_guard, settings.ping_interval, reactor)
    ping = tcp_ping(reactor, settings.ping_timeout)
    checker = HealthChecker(registry, settings, reactor, ping, server.evict, guard)
    prober = Prober(reactor, host_resolver(reactor), registry.addresses)
    silence = Silence(reactor)  # what the logs checks listen for: told by collectors
    runner = CheckRunner(server, settings, reactor, prober.probe, guard, silence)
    checks: tuple[IService, ...] = (checker, runner)
    if isinstance(store, EtcdStore):  # one replica checks: the leader
        lease = max(settings.leader_ttl - 1, 2)
        checks = (Leadership(store, lease, reactor, checker, runner=runner),)
    services: tuple[IService, ...] = (server, guard, *checks)
    if audit_writer is not None:
        services = (audit_writer, *services)
    zone = ZoneAnswers(
        server.registry,
        settings.domain,
        settings.cache_ttl,
        lambda: store.loaded,
        settings.dns_cache_bytes,
    )
    dns = Parts(DNSFactory(settings, reactor, zone), dns_datagrams(settings, reactor, zone))
    http = http_parts(settings, server, reactor, silence)
    return Parts(
        NamesFactory(settings, reactor, server),
        services=services,
        other_listeners={"dns_listen": dns, "http_listen": http, "http_tls_listen": http},
        log_watcher=silence,
    )


def preflight(settings: NamesSettings) -> Iterator[ConfigError]:
    """
    What build would refuse besides its files: a token it cannot read, a
    SQLite store whose rows do not load (read only, never written here).
    """
    for keys in (settings, ReadTokenKeys(settings)):
        try:
            resolve_token(keys)
        except ConfigError as e:
            yield e
    stored = NamesSettings.kind_of("store").path_in(settings.store)
    if stored is not None:
        try:
            registry = Registry(settings.max_instances, AllowedHosts(settings.allowed_networks))
            load_registry(registry, read_stored(stored))
        except StoreError as e:
            yield settings.error("store", str(e))


SERVICE = ServiceDeclaration(
    NamesSettings,
    build,
    "Name server over AMP, DNS and HTTP (Consul's API): register, look up, watch, health-check, "
    "evict.",
    datagram_side=False,
    other_listener_keys=("dns_listen", "http_listen", "http_tls_listen"),
    stream_only_keys=("http_listen", "http_tls_listen"),
    writes=("lookup_audit", "store"),
    preflight=preflight,
    # A memory or SQLite registry exists once: with workers it is served by the parent alone;
    # on etcd every worker is one more replica of the shared registry.
    runs_once=lambda settings: not settings.store.startswith("etcd:"),
)
