"""
Telling systemd how the process is doing (sd_notify): READY=1 once every
listener is bound and the reactor runs, STOPPING=1 when shutdown begins,
and WATCHDOG=1 from the reactor every half `WatchdogSec` when the unit
sets one.  Twisted has no sd_notify of its own; the protocol is one datagram.
"""

import os
import socket
from collections.abc import Callable, Mapping

from twisted.application import service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

log = Logger()


def notify(state: bytes, environ: Mapping[str, str] = os.environ) -> bool:
    """Send STATE (e.g. b"READY=1") to systemd's NOTIFY_SOCKET; False when there is none."""
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(state)
    return True


def watchdog_interval(environ: Mapping[str, str] = os.environ) -> float | None:
    """
    Seconds between watchdog pings: half of WATCHDOG_USEC, when systemd set
    it for this process (WATCHDOG_PID, when set, names it); else None.
    """
    pid = environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None  # meant for the process that started us
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


class Watchdog(service.Service):
    """
    Sends WATCHDOG=1 every half WATCHDOG_USEC, on CLOCK (the reactor): a
    reactor that is blocked or spinning sends none, and systemd, after
    `WatchdogSec`, kills and restarts the service.  A ping that cannot be
    sent is logged once, and pinging goes on.
    """

    def __init__(
        self,
        clock: IReactorTime,
        environ: Mapping[str, str] = os.environ,
        alive: Callable[[float], str | None] | None = None,
    ) -> None:
        self.environ = environ
        self._pings = LoopingCall(self.ping)
        self._pings.clock = clock
        self._failing = False
        # ALIVE(interval): None, or why no ping is sent (a worker process not answering).
        self._alive = alive
        self._withheld: str | None = None

    def startService(self) -> None:
        service.Service.startService(self)
        interval = watchdog_interval(self.environ)
        if interval is not None:
            log.info("systemd watchdog: WATCHDOG=1 every {interval:g} s", interval=interval)
            self._pings.start(interval, now=True)

    def ping(self) -> None:
        interval = watchdog_interval(self.environ)
        why = self._alive(interval or 0.0) if self._alive is not None else None
        if why is not None:
            if why != self._withheld:
                log.warn("systemd watchdog: not pinging: {why}", why=why)
            self._withheld = why
            return
        if self._withheld is not None:
            log.info("systemd watchdog: pinging again")
            self._withheld = None
        try:
            notify(b"WATCHDOG=1", self.environ)
        except OSError as e:
            if not self._failing:
                log.warn(
                    "systemd watchdog: cannot notify {socket}: {error}",
                    socket=self.environ.get("NOTIFY_SOCKET"),
                    error=e.strerror or str(e),
                )
            self._failing = True
        else:
            self._failing = False

    def stopService(self) -> None:
        service.Service.stopService(self)
        if self._pings.running:
            self._pings.stop()
