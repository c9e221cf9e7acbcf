"""
From plugin options to a running MultiService: the path shared by the `suite`
plugin and every single-service plugin, so they refuse bad config the same way.
"""

import signal
from dataclasses import dataclass
from typing import Callable

from twisted.application import service
from twisted.logger import Logger

from suite import config, systemd
from suite.config import ConfigError, Section, Settings
from suite.endpoints import (
    TLS,
    ListenerService,
    ListenFailed,
    listener_services,
    parse_listeners,
    tls_options,
)

log = Logger()


@dataclass(frozen=True)
class Parts:
    """
    What a service serves with: the factory for its stream listeners, a maker
    of datagram protocols (one per datagram listener), and services of its
    own (such as the logger's writer), started before and stopped after its
    listeners.
    """

    stream_factory: object
    make_datagram_protocol: Callable[[], object] | None = None
    services: tuple = ()


@dataclass(frozen=True)
class ServiceDefinition:
    """A service as compose sees it: its config section and how to build its Parts."""

    section: Section
    build: Callable[[Settings, object], Parts]
    datagram_side: bool = True

    @property
    def name(self) -> str:
        return self.section.name

    def options(self, description: str):
        return config.options_for([self.section, TLS], description)


class SuiteService(service.MultiService):
    """
    The root service.  A listener that cannot bind stops the start with its
    one-line reason and exit status 1 instead of a traceback.  Once the
    reactor runs (signal handlers installed, every listener bound) it logs
    that it is ready and tells systemd (READY=1).  SIGHUP asks every service
    that keeps files open to reopen them (logrotate, `systemctl reload`).
    """

    def __init__(self, reactor):
        service.MultiService.__init__(self)
        self.reactor = reactor
        self._previous_hup = None

    def privilegedStartService(self):
        try:
            service.MultiService.privilegedStartService(self)
        except ListenFailed as e:
            log.critical("{reason}", reason=str(e))
            raise SystemExit(1) from None

    def startService(self):
        service.MultiService.startService(self)
        self._previous_hup = signal.signal(
            signal.SIGHUP, lambda *_: self.reactor.callFromThread(self.reload)
        )
        self.reactor.callWhenRunning(self._ready)

    def _ready(self):
        log.info("suite ready: {count} listeners", count=len(self._listeners()))
        systemd.notify(b"READY=1")

    def _listeners(self):
        return [child for child in self if isinstance(child, ListenerService)]

    def reload(self):
        log.info("SIGHUP: reopening files")
        for child in self:
            reopen = getattr(child, "reopen", None)
            if reopen is not None:
                reopen()

    def stopService(self):
        systemd.notify(b"STOPPING=1")
        if self._previous_hup is not None:
            signal.signal(signal.SIGHUP, self._previous_hup)
            self._previous_hup = None
        return service.MultiService.stopService(self)


def build(definitions, path, overrides, reactor, only_listed) -> SuiteService:
    """Validate everything (raising ConfigError) before creating any listener."""
    loaded = config.load(path, [TLS, *(d.section for d in definitions)], overrides, only_listed)
    tls_context = None
    planned = []
    for definition in definitions:
        settings = loaded.get(definition.name)
        if settings is None:
            continue
        listeners = parse_listeners(settings, definition.datagram_side, reactor)
        if tls_context is None and any(listener.tls for listener in listeners):
            tls_context = tls_options(loaded["tls"], settings)
        planned.append((definition, settings, listeners))
    if not planned:
        raise ConfigError(f"{path}: no service enabled")
    root = SuiteService(reactor)
    for definition, settings, listeners in planned:
        parts = definition.build(settings, reactor)
        for child in (
            *parts.services,
            *listener_services(
                definition.name,
                listeners,
                reactor,
                stream_factory=parts.stream_factory,
                make_datagram_protocol=parts.make_datagram_protocol,
                tls=tls_context,
            ),
        ):
            child.setServiceParent(root)
    return root


def make_service(definitions, options, reactor=None, only_listed=True) -> SuiteService:
    """twistd's makeService: a config mistake exits with its one line, never a traceback."""
    if reactor is None:
        from twisted.internet import reactor
    try:
        return build(
            definitions, options.get("config"), getattr(options, "overrides", {}), reactor,
            only_listed,
        )
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
