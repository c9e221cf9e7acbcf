"""
The root service's lifecycle: a start that fails to bind exits 1 with one
line; once every listener is bound and the reactor runs, the suite logs that
it is ready and tells systemd READY=1; while it runs, it pings systemd's
watchdog when the unit has one; SIGHUP reopens files (logrotate,
`systemctl reload`); stopping tells systemd STOPPING=1.

The tree: the root holds one L{NamedService} per service (`timestamp`,
`echo` ... and `metrics`), each holding its own services and listeners,
and the announcer.  What the root does to its parts it finds by walking
that tree and asking each service for the interfaces of
L{suite.foundation.interfaces}.
"""

import signal
from collections.abc import Iterable, Iterator
from types import FrameType
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorCore, IReactorThreads, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from suite.foundation import systemd
from suite.foundation.interfaces import IHealthSource, IMetricSource, IReopenable, IStopsFirst
from suite.net.listeners import ListenerService, ListenFailed

log = Logger()


class ISuiteReactor(IReactorCore, IReactorTime, IReactorThreads):
    """
    What the application layer asks of the reactor: running (start and
    shutdown), time (watchdog, announcement rounds, timeouts) and threads
    (SIGHUP handled from a signal, DNS asked in a thread).  Twisted's
    reactors provide all three.
    """


def walk(top: service.IService) -> Iterator[service.IService]:
    """TOP and every service under it, parents before their children, in start order."""
    yield top
    if service.IServiceCollection.providedBy(top):
        for child in top:
            yield from walk(child)


@implementer(IMetricSource, IHealthSource)
class NamedService(service.MultiService):
    """
    One service of the suite under its NAME (`root.getServiceNamed("logger")`):
    its own services and listeners are its children.  The stream factories
    its listeners share are not services, so it holds them as FACTORIES and
    reports what they count and what ails them as its own.
    """

    name: str  # always set: the service's name

    def __init__(self, name: str, factories: Iterable[object]) -> None:
        service.MultiService.__init__(self)
        self.setName(name)
        self.factories = tuple(factories)

    def metric_samples(self) -> Iterator[tuple[str, tuple, object]]:
        for factory in self.factories:
            if IMetricSource.providedBy(factory):
                yield from factory.metric_samples()

    def health_problems(self) -> list[tuple[str, str]]:
        return [
            problem
            for factory in self.factories
            if IHealthSource.providedBy(factory)
            for problem in factory.health_problems()
        ]


class SuiteService(service.MultiService):
    """
    The root service.  A listener that cannot bind stops the start with its
    one-line reason and exit status 1 instead of a traceback.  SIGHUP asks
    every service of the tree providing L{IReopenable} to reopen its files.
    """

    def __init__(self, reactor: ISuiteReactor) -> None:
        service.MultiService.__init__(self)
        self.reactor = reactor
        self._previous_hup: Any = None
        # With workers, the parent's supervisor: ready once they are, alive while they answer.
        self.supervisor: Any = None
        # Its own, not a child: children are the parts.
        self._watchdog = systemd.Watchdog(reactor, alive=self._workers_answering)

    def parts(self) -> Iterator[tuple[str, service.IService]]:
        """(service name, part) of each named service's parts: what /metrics and /health read."""
        for child in list(self):
            if isinstance(child, NamedService):
                for part in walk(child):
                    yield child.name, part

    def privilegedStartService(self) -> None:
        try:
            service.MultiService.privilegedStartService(self)
        except ListenFailed as e:
            log.critical("{reason}", reason=str(e))
            raise SystemExit(1) from None

    def startService(self) -> None:
        service.MultiService.startService(self)
        self._watchdog.startService()
        self._previous_hup = signal.signal(signal.SIGHUP, self._hangup)
        self.reactor.callWhenRunning(self._ready)

    def _hangup(self, number: int, frame: FrameType | None) -> None:
        self.reactor.callFromThread(self.reload)

    def _workers_answering(self, within: float) -> str | None:
        """None while every worker answers; else which one is late (the watchdog waits)."""
        late = self.supervisor.late(within) if self.supervisor is not None else []
        if late:
            return f"worker {late[0].number} has not answered for over {within:g} s"
        return None

    def _ready(self) -> None:
        if self.supervisor is not None:
            self.supervisor.when_ready().addCallback(lambda _: self._all_ready())
        else:
            self._all_ready()

    def _all_ready(self) -> None:
        listeners = [part for part in walk(self) if isinstance(part, ListenerService)]
        count = len(listeners)
        log.info(
            "suite ready: {count} {listeners}",
            count=count,
            listeners="listener" if count == 1 else "listeners",
        )
        systemd.notify(b"READY=1")

    def reload(self) -> None:
        log.info("SIGHUP: reopening files")
        for part in walk(self):
            if IReopenable.providedBy(part):
                part.reopen()

    def stopService(self) -> defer.Deferred[None] | None:
        """
        Services providing L{IStopsFirst} (the announcer, deregistering) stop
        first and are waited for; then the others, listeners included.
        """
        systemd.notify(b"STOPPING=1")
        self._watchdog.stopService()
        if self._previous_hup is not None:
            signal.signal(signal.SIGHUP, self._previous_hup)
            self._previous_hup = None
        first = [
            defer.maybeDeferred(part.stopService)
            for part in walk(self)
            if IStopsFirst.providedBy(part) and part.running
        ]
        if not first:
            stopping: defer.Deferred[None] | None = service.MultiService.stopService(self)
            return stopping
        stopped = defer.DeferredList(first, consumeErrors=True)
        return stopped.addCallback(lambda _: service.MultiService.stopService(self))
