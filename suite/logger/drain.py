"""
The logger's shutdown drain.  When the suite stops, the listeners close
first; then every open connection is still read until it has been quiet for
QUIET seconds or `shutdown_timeout` has passed, so what senders had already
handed to the kernel before SIGTERM reaches the file.  The reactor reads a
connection one buffer per turn, so a burst can outlast `shutdown_timeout`
with megabytes still waiting in the kernel: before closing, the drain reads
every connection's receive queue directly, in turns, until it is empty (for
at most FINAL_READ seconds, within the exit's 2 s of grace).  Only then are
the connections closed, a frame still incomplete being written as
truncated; what the kernel still held then (a sender that never stopped) is
discarded, counted and logged in one line.  RELP connections answer what
they took once it is written, then say `serverclose`: the drain waits for
that (at most ANSWERS seconds), so what was acknowledged is what was kept.
In a worker process the channel to the parent waits for the drain's end
(L{ShutdownDrain.when_done}) before it waits for the parent's last word.
"""

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from twisted.application import service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from suite.net.transport import held_bytes, read_held

if TYPE_CHECKING:
    from suite.logger.protocol import SyslogFactory, SyslogStreamProtocol

log = Logger()

QUIET = 0.2
POLL = 0.05
FINAL_READ = 1.0
ANSWERS = 0.5


class ShutdownDrain(service.Service):
    """
    Drains the connections of FACTORY (a SyslogFactory), and of OTHERS (the
    RELP listeners'), on stop, timed by CLOCK.
    """

    def __init__(
        self,
        factory: "SyslogFactory",
        clock: IReactorTime,
        timeout: float,
        others: Sequence["SyslogFactory"] = (),
    ) -> None:
        self.factory = factory
        self.factories = (factory, *others)
        self.clock = clock
        self.timeout = timeout
        self._stopping: Deferred[None] | None = None
        self._waiting: list[Deferred[None]] = []

    def when_done(self) -> "Deferred[None]":
        """
        Fires once the stop's drain is over (at once when it is not under way):
        services stop all at once, and a worker's channel must outlast it.
        """
        if self._stopping is None:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._waiting.append(waiter)
        return waiter

    def _done(self, result: object) -> object:
        self._stopping = None
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.callback(None)
        return result

    def _open(self) -> Iterator["SyslogStreamProtocol"]:
        for factory in self.factories:
            yield from list(factory.open)

    def stopService(self) -> Deferred:
        service.Service.stopService(self)
        deadline = self.clock.seconds() + self.timeout

        def check() -> None:
            now = self.clock.seconds()
            reading = any(now - p.last_data < QUIET for p in self._open())
            if not reading or now >= deadline:
                loop.stop()

        loop = LoopingCall(check)
        loop.clock = self.clock
        stopping = loop.start(POLL, now=True).addCallback(lambda _: self._close_all())
        self._stopping = stopping
        stopping.addBoth(self._done)
        return stopping

    def _closed(self) -> Deferred:
        """Fires once every connection is closed, or ANSWERS seconds from now."""
        deadline = self.clock.seconds() + ANSWERS

        def check() -> None:
            if not any(self._open()) or self.clock.seconds() >= deadline:
                loop.stop()

        loop = LoopingCall(check)
        loop.clock = self.clock
        return loop.start(POLL / 5, now=True)

    def _read_what_the_kernel_holds(self) -> None:
        """One buffer from each connection in turn, until none holds any or FINAL_READ is up."""
        until = self.clock.seconds() + FINAL_READ
        reading = list(self._open())
        while reading and self.clock.seconds() < until:
            reading = [p for p in reading if p.transport is not None and read_held(p.transport)]

    def _close_all(self) -> Deferred:
        self._read_what_the_kernel_holds()
        discarded = connections = 0
        for protocol in list(self._open()):
            held = held_bytes(protocol.transport)
            discarded += held
            connections += held > 0
            protocol.close_at_shutdown()
        if discarded:
            log.warn(
                "{service}: stopping: discarded {bytes} bytes still unread from {connections} "
                "{noun} (sent faster than it could be read within shutdown_timeout "
                "{timeout:g} s and {final:g} s more)",
                service=self.factory.service_name,
                bytes=discarded,
                connections=connections,
                noun="connection" if connections == 1 else "connections",
                timeout=self.timeout,
                final=FINAL_READ,
                discarded_bytes=discarded,
            )
        return self._closed()
