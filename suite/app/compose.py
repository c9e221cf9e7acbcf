"""
Services declared once, composed into the running suite in two steps.

L{plan} is pure: from the declarations and the loaded config it decides
every listener, the one server TLS context every `tls_listen` shares, the
[metrics] site and the announcer, validating all of it (raising
ConfigError) without a reactor and before anything binds or opens a file.
A plugin's `Options` makes the plan in `postOptions`.

L{materialise} builds what the plan describes: each service's parts and
listeners under a L{NamedService} of its name, the metrics site's likewise,
and the announcer, under one L{SuiteService}.  Opening a service's files
(the logger's output, the name server's store) can still fail with a
ConfigError; `makeService` turns that into the same one line.
"""

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IReactorCore

from suite.app.announce import Announcer, AnnounceSettings, name_server_tls
from suite.app.lifecycle import ISuiteReactor, NamedService
from suite.app.lifecycle import SuiteService as SuiteService  # make_service's, for the taps
from suite.app.services import SERVICES
from suite.app.status_page import StatusPageService
from suite.app.status_site import MetricsSettings, metrics_site
from suite.app.supervisor import WorkerLaunch, WorkerSupervisor
from suite.app.workers import WorkersSettings
from suite.foundation import config
from suite.foundation.config import TOP_LEVEL, ConfigError, ServiceSettings, Settings
from suite.foundation.credentials import resolve_token
from suite.foundation.declaration import Parts, ServiceDeclaration
from suite.foundation.options import ConfigOptions, options_for
from suite.foundation.preflight import cannot_write
from suite.net.accept_share import AcceptShare
from suite.net.listeners import Listener, ListenerService, listener_services, parse_listeners
from suite.net.tls import TLSSettings, names_files, tls_options
from suite.net.udpbuffer import DatagramLimits

PLAN_SECTIONS: tuple[type[Settings], ...] = (
    WorkersSettings,
    TLSSettings,
    AnnounceSettings,
    MetricsSettings,
)
# Every section a config file may hold, whichever plugin reads it.
SECTIONS = tuple(kind.section for kind in (*PLAN_SECTIONS, *(d.settings for d in SERVICES)))
ListeningSettings = ServiceSettings | MetricsSettings  # sections with listen and tls_listen


@dataclass(frozen=True)
class ServicePlan:
    """
    One enabled service: its settings, the listeners its own parts serve
    (`listen` and `tls_listen`), and for each other listener key of its
    declaration (the name server's `dns_listen`) the listeners that key's
    parts serve.
    """

    declaration: ServiceDeclaration
    settings: ServiceSettings
    listeners: tuple[Listener, ...]
    other_listeners: tuple[tuple[str, tuple[Listener, ...]], ...] = ()

    @property
    def name(self) -> str:
        return self.declaration.name

    @property
    def every_listener(self) -> tuple[Listener, ...]:
        """Its own listeners and those of its other keys (whether any serves TLS)."""
        return self.listeners + tuple(one for _, group in self.other_listeners for one in group)

    @property
    def receive_buffer(self) -> int | None:
        """The kernel receive buffer its datagram listeners ask for; None: the kernel's."""
        if isinstance(self.settings, DatagramLimits):
            return self.settings.udp_receive_buffer
        return None


@dataclass(frozen=True)
class MetricsPlan:
    settings: MetricsSettings
    listeners: tuple[Listener, ...]


@dataclass(frozen=True)
class AnnouncePlan:
    """What the announcer needs: its settings, the token, each name server's client TLS."""

    settings: AnnounceSettings
    token: str | None
    tls: Mapping[str, IOpenSSLClientConnectionCreator]


@dataclass(frozen=True)
class PlanSource:
    """
    Where a plan came from: the config file, the values given on the command
    line and which services the plugin runs.  A worker process makes the
    same plan from it.
    """

    path: str | None
    overrides: Mapping[str, Mapping[str, Any]]
    services: tuple[str, ...]
    only_listed: bool


@dataclass(frozen=True)
class SuitePlan:
    """
    The whole suite: its services in order, the server TLS context every
    `tls_listen` shares (None: no TLS served), the [metrics] site and the
    announcer (None: not configured), and how many worker processes serve
    its listeners (1: none, one process serves).
    """

    services: tuple[ServicePlan, ...]
    tls: ssl.CertificateOptions | None
    metrics: MetricsPlan | None
    announce: AnnouncePlan | None
    tls_settings: TLSSettings
    workers: int = 1
    source: PlanSource | None = None

    @property
    def written_files(self) -> list[str]:
        """Every file the services write (their directories are made when missing)."""
        return [
            written
            for service in self.services
            for _, written in service.declaration.written_files(service.settings)
        ]


def plan(
    declarations: Sequence[ServiceDeclaration],
    loaded: Mapping[str, Settings],
    path: str | None,
    problems: config.Problems | None = None,
    inherited: bool = False,
) -> SuitePlan:
    """
    The suite LOADED (L{config.load} of PATH, over the sections of
    DECLARATIONS and L{PLAN_SECTIONS}) describes; each mistake goes to
    PROBLEMS (by default the first is raised as a ConfigError), and the
    part it is in is left out of the plan.  INHERITED: the plan of a worker
    process, whose sockets its parent bound (what systemd passed is not
    looked for).
    """
    problems = problems or config.Problems()
    announce = loaded["announce"]
    assert isinstance(announce, AnnounceSettings)
    announce_plan = None
    if announce.name_server:
        with problems.step():
            token = resolve_token(announce)
            announce_plan = AnnouncePlan(announce, token, name_server_tls(announce))
    services = []
    for declaration in declarations:
        settings = loaded.get(declaration.name)
        if isinstance(settings, ServiceSettings):
            with problems.step():
                services.append(plan_service(declaration, settings, inherited))
    if not services and not problems.found:
        problems.report(ConfigError(f"{path}: no service enabled"))
    metrics = loaded["metrics"]
    assert isinstance(metrics, MetricsSettings)
    metrics_plan = None
    if metrics.enabled:
        with problems.step():
            metrics_plan = MetricsPlan(
                metrics, tuple(parse_listeners(metrics, False, inherited=inherited))
            )
    served: list[tuple[ListeningSettings, tuple[Listener, ...]]] = [
        (service.settings, service.every_listener) for service in services
    ]
    if metrics_plan is not None:
        served.append((metrics, metrics_plan.listeners))
    tls = loaded["tls"]
    assert isinstance(tls, TLSSettings)
    context = None
    with problems.step():
        context = server_tls(tls, served)
    workers = loaded[TOP_LEVEL]
    assert isinstance(workers, WorkersSettings)
    return SuitePlan(tuple(services), context, metrics_plan, announce_plan, tls, workers.count)


def check(
    declarations: Sequence[ServiceDeclaration], path: str
) -> tuple[SuitePlan | None, list[ConfigError]]:
    """
    Every mistake starting the `suite` plugin from the config file PATH would
    meet, found without binding a port or opening a file the services write:
    the plan (None when the file cannot be read at all) and the mistakes.
    """
    problems = config.Problems(collect=True)
    try:
        planned = load(declarations, path, {}, False, problems)
    except ConfigError as e:  # unreadable: nothing more can be checked
        return None, [e]
    for service in planned.services:
        for name, written in service.declaration.written_files(service.settings):
            problem = cannot_write(written)
            if problem is not None:
                problems.report(service.settings.error(name, problem))
        problems.found.extend(service.declaration.preflight(service.settings))
    return planned, problems.found


def plan_service(
    declaration: ServiceDeclaration, settings: ServiceSettings, inherited: bool = False
) -> ServicePlan:
    """
    The listeners of one service, checked without binding (no reactor: the
    endpoints parsed only to validate them never listen).
    """
    others = tuple(
        (
            key,
            tuple(
                parse_listeners(
                    settings,
                    key not in declaration.stream_only_keys,
                    (key,),
                    inherited=inherited,
                )
            ),
        )
        for key in declaration.other_listener_keys
    )
    return ServicePlan(
        declaration,
        settings,
        tuple(
            parse_listeners(
                settings,
                declaration.datagram_side,
                required=not any(group for _, group in others),
                inherited=inherited,
            )
        ),
        others,
    )


def server_tls(
    tls: TLSSettings, served: Sequence[tuple[ListeningSettings, tuple[Listener, ...]]]
) -> ssl.CertificateOptions | None:
    """
    The one decision on server TLS.  When [tls] names a file, its context is
    loaded whether or not a listener uses it yet (a bad file is a mistake
    now, not at the first handshake).  Otherwise a TLS listener among SERVED
    ((settings, listeners) of each section, in order) needs a [tls] that
    names none: the first such section's `tls_listen` is the mistake
    reported.  None: no TLS served.
    """
    if names_files(tls):
        return tls_options(tls)
    for settings, listeners in served:
        if any(listener.tls for listener in listeners):
            return tls_options(tls, settings)
    return None


@dataclass(frozen=True)
class WorkerRole:
    """
    A worker process's part of the plan: its SLOT number, the descriptors of
    the sockets its parent bound by (service, key, description), and of its
    connection to each split service's shared part by service name.
    """

    slot: int
    sockets: Mapping[tuple[str, str, str], int]
    channels: Mapping[str, int]
    share: AcceptShare | None = None  # the workers' open connections (taking turns)


def materialise(
    planned: SuitePlan, reactor: ISuiteReactor, worker: WorkerRole | None = None
) -> SuiteService:
    """
    The services and listeners PLANNED describes, unstarted, under one root.

    With `workers` above 1 this is the parent's tree unless WORKER is given:
    the parent binds and holds every listener, runs whole the services that
    run once (L{ServiceDeclaration.runs_once}) and the shared part of split
    ones, the [metrics] site and the announcer, and supervises the workers
    (L{WorkerSupervisor}); a worker (WORKER) runs the other services, or
    their worker part, on the sockets it inherited.
    """
    root = SuiteService(reactor)
    context = planned.tls
    parent = worker is None and planned.workers > 1
    supervisor = None
    if parent:
        assert planned.source is not None
        supervisor = WorkerSupervisor(planned.workers, launch_of(planned.source), reactor)
        root.supervisor = supervisor
    announced: list[ListenerService] = []
    built = []
    for service in planned.services:
        declaration, settings = service.declaration, service.settings
        once = declaration.runs_once(settings)
        if worker is not None and once:
            continue
        shared = parent and not once
        parts: Parts | None
        if shared:
            build_shared = declaration.build_shared
            parts = build_shared(settings, reactor) if build_shared is not None else None
        elif worker is not None and declaration.build_worker is not None:
            parts = declaration.build_worker(settings, reactor, worker.channels[service.name])
        else:
            parts = declaration.build(settings, reactor)
        factories: list[object] = []
        if parts is not None:
            built.append(parts)
            others = parts.other_listeners
            # Keys may share a factory (the name server's http_listen and http_tls_listen).
            factories = list(
                dict.fromkeys([parts.stream_factory, *(o.stream_factory for o in others.values())])
            )
        named = NamedService(service.name, factories)
        if parts is not None:
            for own in parts.services:
                own.setServiceParent(named)
        if supervisor is not None and shared:
            if parts is not None:
                supervisor.channels[service.name] = parts.stream_factory
            supervisor.reports(service.name).setServiceParent(named)
        for key, group in ((None, service.listeners), *service.other_listeners):
            served_by = None
            if parts is not None and not shared:
                served_by = parts if key is None else parts.other_listeners[key]
            inherited = None
            if worker is not None:
                inherited = {
                    (listener_key, description): fd
                    for (name, listener_key, description), fd in worker.sockets.items()
                    if name == service.name
                }
            for listener in listener_services(
                service.name,
                list(group),
                reactor,
                stream_factory=served_by.stream_factory if served_by else None,
                make_datagram_protocol=served_by.make_datagram_protocol if served_by else None,
                tls=context,
                receive_buffer=service.receive_buffer,
                reuse_port=service.settings.reuse_port,
                held=shared,
                inherited=inherited,
                share=worker.share if worker is not None else None,
            ):
                listener.setServiceParent(named)
                if supervisor is not None and shared:
                    supervisor.held.append((service.name, listener))
                if key is None and not listener.listener.datagram:
                    announced.append(listener)
        named.setServiceParent(root)
    connect_log_watchers(built)
    if worker is not None:
        return root
    page = StatusPageService(root, reactor, planned.workers)
    shown = show_status_page(built, page)
    if planned.metrics is not None:
        shown = True
        site = metrics_site(root, planned.metrics.settings, reactor, page)
        named = NamedService("metrics", [site])
        for listener in listener_services(
            "metrics", list(planned.metrics.listeners), reactor, stream_factory=site, tls=context
        ):
            listener.setServiceParent(named)
        named.setServiceParent(root)
    if planned.announce is not None:
        announce = planned.announce
        Announcer(
            announce.settings, announce.token, announced, reactor, dict(announce.tls)
        ).setServiceParent(root)
    if shown:
        page.setServiceParent(root)
    if supervisor is not None:
        named = NamedService("workers", [])
        supervisor.setServiceParent(named)
        named.setServiceParent(root)  # last: it starts once every listener is bound
    return root


def launch_of(source: PlanSource) -> WorkerLaunch:
    """How workers make the plan SOURCE describes, on the reactor this process runs."""
    from twisted.internet import reactor as running

    module = type(running).__module__
    reactor_name = {
        "twisted.internet.epollreactor": "epoll",
        "twisted.internet.pollreactor": "poll",
        "twisted.internet.selectreactor": "select",
    }.get(module, "")
    return WorkerLaunch(
        source.path, source.overrides, source.services, source.only_listed, reactor_name
    )


def show_status_page(built: Sequence[Parts], page: StatusPageService) -> bool:
    """The status page on every service's own HTTP site that shows it; whether one does."""
    shown = False
    for parts in built:
        for each in (parts, *parts.other_listeners.values()):
            if each.show_page is not None:
                each.show_page(page.page, page.live)
                shown = True
    return shown


def connect_log_watchers(built: Sequence[Parts]) -> None:
    """
    Every service of the suite that hears logs tells every service that
    watches for silent sources (the collector, the name server's logs checks).
    """
    watchers = [parts.log_watcher for parts in built if parts.log_watcher is not None]
    for parts in built:
        if parts.on_logs_heard is not None:
            for watcher in watchers:
                parts.on_logs_heard(watcher)


def load(
    declarations: Sequence[ServiceDeclaration],
    path: str | None,
    overrides: Mapping[str, Mapping[str, Any]],
    only_listed: bool,
    problems: config.Problems | None = None,
    inherited: bool = False,
) -> SuitePlan:
    """
    The plan of the config file PATH with OVERRIDES (command-line values);
    its mistakes go to PROBLEMS (by default the first is raised).
    INHERITED: a worker's plan (see L{plan}).
    """
    loaded = config.load(
        path,
        [*PLAN_SECTIONS, *(d.settings for d in declarations)],
        dict(overrides),
        only_listed,
        problems,
        known_sections=SECTIONS,
    )
    planned = plan(declarations, loaded, path, problems, inherited)
    source = PlanSource(path, overrides, tuple(d.name for d in declarations), only_listed)
    return dataclasses.replace(planned, source=source)


def build(
    declarations: Sequence[ServiceDeclaration],
    path: str | None,
    overrides: Mapping[str, Mapping[str, Any]],
    reactor: ISuiteReactor,
    only_listed: bool,
) -> SuiteService:
    """Plan and materialise in one step; every config mistake is a ConfigError."""
    return materialise(load(declarations, path, overrides, only_listed), reactor)


def plugin_options(
    declarations: Sequence[ServiceDeclaration],
    description: str,
    only_listed: bool = True,
    config_default: str | None = None,
) -> type[ConfigOptions]:
    """
    The `Options` of a plugin running DECLARATIONS: one option per key of a
    single service's sections (the `suite` plugin, ONLY_LISTED false, has
    only --config), validated into a L{SuitePlan} kept as `validated`.
    """
    keyed: list[type[Settings]] = [WorkersSettings]
    if only_listed:
        keyed += [*(d.settings for d in declarations), TLSSettings]

    def validate(path: str | None, overrides: dict[str, dict[str, Any]]) -> SuitePlan:
        return load(declarations, path, overrides, only_listed)

    return options_for(keyed, description, validate, config_default)


def make_service(options: ConfigOptions, reactor: IReactorCore | None = None) -> SuiteService:
    """
    twistd's makeService, from OPTIONS' validated plan: a service that cannot
    open its files exits with its one line, never a traceback.
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    # Every reactor Twisted has provides time and threads as well as IReactorCore.
    suite_reactor = cast(ISuiteReactor, reactor)
    planned = options.validated
    assert isinstance(planned, SuitePlan)
    try:
        return materialise(planned, suite_reactor)
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
