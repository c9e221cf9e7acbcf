"""
A service declared once, and composed into the running suite.

Each service folder's `service.py` declares its settings (a section of
keys with typed defaults), how it builds its L{Parts} and its one-line
description; the twistd plugin's `Options` and `makeService` are derived from
that declaration here, so the `suite` plugin and every single-service plugin
refuse bad config the same way.
"""

from suite.net.listeners import listener_services, parse_listeners
from suite.net.tls import TLSSettings, names_files, tls_options
from suite.foundation import config
from suite.app.announce import AnnounceSettings, Announcer, name_server_tls
from suite.foundation.config import ConfigError, ServiceSettings
from suite.foundation.credentials import resolve_token
from suite.app.lifecycle import SuiteService
from suite.app.status_site import MetricsSettings, metrics_site
from suite.foundation.declaration import ServiceDeclaration
from suite.foundation.options import options_for


def service_plugin(declaration: ServiceDeclaration):
    """(Options, makeService) of DECLARATION's own twistd plugin."""
    options = options_for([declaration.settings, TLSSettings], declaration.description)

    def makeService(options, reactor=None):
        return make_service([declaration], options, reactor)

    return options, makeService


def build(declarations, path, overrides, reactor, only_listed) -> SuiteService:
    """
    Validate everything (raising ConfigError) before creating any listener.
    Every part and listener of a service is one of the root's `components`
    under the service's name: what /metrics and /health report on.
    """
    loaded = config.load(
        path,
        [TLSSettings, AnnounceSettings, MetricsSettings, *(d.settings for d in declarations)],
        overrides, only_listed,
    )
    announce = loaded["announce"]
    metrics = loaded["metrics"]
    token = resolve_token(announce) if announce.name_server else None
    announce_tls = name_server_tls(announce)
    tls = loaded["tls"]
    tls_context = tls_options(tls) if names_files(tls) else None
    planned = []
    for declaration in declarations:
        settings = loaded.get(declaration.name)
        if settings is None:
            continue
        listeners = {None: parse_listeners(settings, declaration.datagram_side, reactor)}
        for key in declaration.other_listener_keys:
            listeners[key] = parse_listeners(settings, True, reactor, keys=(key,))
        if tls_context is None and any(listener.tls for listener in listeners[None]):
            tls_context = tls_options(tls, settings)
        planned.append((declaration, settings, listeners))
    if not planned:
        raise ConfigError(f"{path}: no service enabled")
    if metrics.enabled:
        monitor_listeners = parse_listeners(metrics, False, reactor)
        if tls_context is None and any(listener.tls for listener in monitor_listeners):
            tls_context = tls_options(tls, metrics)
    root = SuiteService(reactor)
    announced = []
    for declaration, settings, listeners in planned:
        parts = declaration.build(settings, reactor)
        components = [parts.stream_factory, *parts.services]
        components += [other.stream_factory for other in parts.other_listeners.values()]
        for service in parts.services:
            service.setServiceParent(root)
        for key, group in listeners.items():
            served_by = parts if key is None else parts.other_listeners[key]
            for listener in listener_services(
                declaration.name,
                group,
                reactor,
                stream_factory=served_by.stream_factory,
                make_datagram_protocol=served_by.make_datagram_protocol,
                tls=tls_context,
                receive_buffer=getattr(settings, "udp_receive_buffer", None),
                reuse_port=settings.reuse_port,
            ):
                listener.setServiceParent(root)
                components.append(listener)
                if key is None and not listener.listener.datagram:
                    announced.append(listener)
        root.components += [(declaration.name, component) for component in components]
    if metrics.enabled:
        site = metrics_site(root, metrics, reactor)
        root.components.append(("metrics", site))
        for listener in listener_services(
            "metrics", monitor_listeners, reactor, stream_factory=site, tls=tls_context
        ):
            listener.setServiceParent(root)
            root.components.append(("metrics", listener))
    if announce.name_server:
        Announcer(announce, token, announced, reactor, announce_tls).setServiceParent(root)
    return root


def make_service(declarations, options, reactor=None, only_listed=True) -> SuiteService:
    """twistd's makeService: a config mistake exits with its one line, never a traceback."""
    if reactor is None:
        from twisted.internet import reactor
    try:
        return build(
            declarations, options.get("config"), getattr(options, "overrides", {}), reactor,
            only_listed,
        )
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
