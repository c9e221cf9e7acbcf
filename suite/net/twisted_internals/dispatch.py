"""
The fast path's event dispatch, on Twisted's epoll reactor.

Twisted's `EPollReactor.doPoll` hands every ready descriptor to
`_doReadOrWrite` through `log.callWithLogger`, which sets up a legacy
logging context (the `system` prefix of `log.msg` lines) around each
event: about 1.5 µs per event, a sixth of what a short request costs the
suite in all.  L{install} gives the running reactor a `doIteration` that
dispatches a plain read-readiness event (EPOLLIN alone) on the suite's own
transports and ports (L{LEAN_TYPES}: none of them logs through the legacy
context) straight to `doRead`, with Twisted's own rules: a selectable whose
descriptor is gone is skipped, what `doRead` returns or raises disconnects
it through the reactor's `_disconnectSelectable`.  Every other event (a
write, a hang-up, an error, another selectable: the waker, processes,
client connections) goes Twisted's way unchanged.

It relies on (read in Twisted 26.4.0 and 26.10.0, identical there):
  - `twisted.internet.epollreactor.EPollReactor.doPoll` being its
    `doIteration`, `._poller` (a `select.epoll`), `._selectables` (fd ->
    selectable), `._doReadOrWrite` and `._disconnectSelectable`;
  - `log.callWithLogger` being what `doPoll` wraps each event in.
Public route, if Twisted offered one: an option to dispatch without the
legacy log context (twisted/twisted#12143 discusses its cost), or a
reactor method to replace per selectable.
"""

import errno
import select
import socket
import sys
import weakref
from collections.abc import Callable
from typing import Any

from twisted.internet import epollreactor
from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger
from twisted.python import log as legacy_log
from zope.interface import implementer

log = Logger()

EPollReactor = epollreactor.EPollReactor
LEAN_TYPES: set[type] = set()  # the suite's own transports and ports, registered by their modules
_installed: "weakref.WeakSet[Any]" = weakref.WeakSet()

REQUIRED = (
    ("twisted.internet.epollreactor.EPollReactor.doPoll", EPollReactor, "doPoll"),
    ("twisted.internet.epollreactor.EPollReactor.doIteration", EPollReactor, "doIteration"),
    (
        "twisted.internet.epollreactor.EPollReactor._doReadOrWrite",
        EPollReactor,
        "_doReadOrWrite",
    ),
    (
        "twisted.internet.epollreactor.EPollReactor._disconnectSelectable",
        EPollReactor,
        "_disconnectSelectable",
    ),
)


def lean_poll(reactor: Any) -> Callable[[float | None], None]:
    """REACTOR's `doPoll`, dispatching plain reads of L{LEAN_TYPES} without the log context."""
    poller = reactor._poller
    selectables = reactor._selectables
    read_or_write = reactor._doReadOrWrite
    disconnect = reactor._disconnectSelectable
    with_logger = legacy_log.callWithLogger
    lean = LEAN_TYPES
    readable = select.EPOLLIN

    def doPoll(timeout: float | None) -> None:
        if timeout is None:
            timeout = -1
        try:
            ready = poller.poll(timeout, len(selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        for fd, event in ready:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            if event != readable or type(selectable) not in lean:
                with_logger(selectable, read_or_write, selectable, fd, event)
                continue
            try:
                if selectable.fileno() == -1:
                    continue  # closed by an earlier event of this batch
                why = selectable.doRead()
            except BaseException:
                why = sys.exc_info()[1]
                log.failure("{selectable} failed to read", selectable=selectable)
            if why:
                disconnect(selectable, why, True)

    return doPoll


def install(reactor: Any) -> bool:
    """
    Give REACTOR the lean `doIteration` when it is Twisted's epoll reactor
    as Twisted wrote it (not another reactor, nor one already changed);
    whether it has it.
    """
    if reactor in _installed:
        return True
    stock = getattr(type(reactor), "doIteration", None) is EPollReactor.doPoll
    if not stock or "doIteration" in vars(reactor):
        return False
    if not all(hasattr(reactor, name) for name in ("_poller", "_selectables")):
        return False
    reactor.doIteration = lean_poll(reactor)
    _installed.add(reactor)
    return True


@implementer(IReadDescriptor)
class _Probe:
    """A selectable of a lean type for the self-test: counts its reads."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reads = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def doRead(self) -> None:
        self.sock.recv(100)
        self.reads += 1

    def logPrefix(self) -> str:
        return "probe"

    def connectionLost(self, reason: object) -> None:
        pass


class _StockProbe(_Probe):
    """One of another type: the self-test's stand-in for Twisted's own selectables."""


def self_test() -> str | None:
    """
    On a fresh epoll reactor, never run: a lean read is dispatched to
    `doRead` without the log context, and another selectable's read still
    goes through `callWithLogger`; what failed, or None.
    """
    reactor = EPollReactor()
    ours, peer = socket.socketpair()
    other_ours, other_peer = socket.socketpair()
    wrapped: list[object] = []
    real = legacy_log.callWithLogger

    def counting(logger: object, func: Callable[..., object], *args: object) -> object:
        wrapped.append(logger)
        return real(logger, func, *args)

    try:
        legacy_log.callWithLogger = counting  # before install, which looks it up once
        if not install(reactor):
            return "EPollReactor.doIteration could not be replaced"
        lean, stock = _Probe(ours), _StockProbe(other_ours)
        LEAN_TYPES.add(_Probe)
        reactor.addReader(lean)
        reactor.addReader(stock)
        peer.send(b"x")
        other_peer.send(b"y")
        reactor.doIteration(0.1)
        if lean.reads != 1 or stock.reads != 1:
            return "a read was not dispatched"
        if wrapped != [stock]:
            return "the log context was not skipped for the suite's own selectable alone"
        return None
    finally:
        legacy_log.callWithLogger = real
        LEAN_TYPES.discard(_Probe)
        reactor.removeAll()
        for sock in (ours, peer, other_ours, other_peer):
            sock.close()
        reactor._poller.close()
        waker = getattr(reactor, "waker", None)
        if waker is not None:
            waker.connectionLost(None)


SELF_TESTS: tuple[tuple[str, Callable[[], str | None]], ...] = (
    ("the event dispatch's self-test", self_test),
)
