"""
The root service's lifecycle: a start that fails to bind exits 1 with one
line; once every listener is bound and the reactor runs, the suite logs that
it is ready and tells systemd READY=1; while it runs, it pings systemd's
watchdog when the unit has one; SIGHUP reopens files (logrotate,
`systemctl reload`); stopping tells systemd STOPPING=1.
"""

import signal

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from suite.net.listeners import ListenerService, ListenFailed
from suite.foundation import systemd
from suite.foundation.interfaces import IReopenable

log = Logger()


class SuiteService(service.MultiService):
    """
    The root service.  A listener that cannot bind stops the start with its
    one-line reason and exit status 1 instead of a traceback.  SIGHUP asks
    every child providing L{IReopenable} to reopen its files.
    """

    def __init__(self, reactor):
        service.MultiService.__init__(self)
        self.reactor = reactor
        self._previous_hup = None
        self.components: list[tuple[str, object]] = []  # (service name, part), for metrics and health
        self._watchdog = systemd.Watchdog(reactor)  # its own, not a child: children are the parts

    def privilegedStartService(self):
        try:
            service.MultiService.privilegedStartService(self)
        except ListenFailed as e:
            log.critical("{reason}", reason=str(e))
            raise SystemExit(1) from None

    def startService(self):
        service.MultiService.startService(self)
        self._watchdog.startService()
        self._previous_hup = signal.signal(
            signal.SIGHUP, lambda *_: self.reactor.callFromThread(self.reload)
        )
        self.reactor.callWhenRunning(self._ready)

    def _ready(self):
        listeners = [child for child in self if isinstance(child, ListenerService)]
        count = len(listeners)
        log.info(
            "suite ready: {count} {listeners}",
            count=count, listeners="listener" if count == 1 else "listeners",
        )
        systemd.notify(b"READY=1")

    def reload(self):
        log.info("SIGHUP: reopening files")
        for child in self:
            if IReopenable.providedBy(child):
                child.reopen()

    def stopService(self):
        """
        Children marked `stops_first` (the announcer, deregistering) stop
        first and are waited for; then the others, listeners included.
        """
        systemd.notify(b"STOPPING=1")
        self._watchdog.stopService()
        if self._previous_hup is not None:
            signal.signal(signal.SIGHUP, self._previous_hup)
            self._previous_hup = None
        first = [defer.maybeDeferred(child.stopService)
                 for child in self if getattr(child, "stops_first", False) and child.running]
        if not first:
            return service.MultiService.stopService(self)
        stopped = defer.DeferredList(first, consumeErrors=True)
        return stopped.addCallback(lambda _: service.MultiService.stopService(self))
