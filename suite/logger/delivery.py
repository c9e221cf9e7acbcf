"""
Where the collector's received messages go: the one object every listener
(syslog over TCP, TLS, UDP, and RELP) hands its frames to.  It writes their
records (L{RecordSink}), passes the messages as received to the forward
targets' queues, and says when everything handed over so far is safe, which
is when a RELP acknowledgement may be sent.

Without routes, every message goes to the output and to every forward
target; routes (`[[logger.route]]`, L{suite.logger.routing}) choose per
message.  The listeners also find here the limits per source they share
(L{suite.logger.sources}).
"""

import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Protocol

from twisted.internet.defer import Deferred, gatherResults, succeed

from suite.foundation.heard import Hearing
from suite.logger.records import RecordSink, RoutingFields, encode_lines
from suite.logger.routing import Route, Router, peer_host
from suite.logger.sources import SourceLimits

Frames = list[tuple[bytes, bool]]  # (message as received, whether it was cut at max_message)


class Outlet(Protocol):
    """A forward target's queue, as the delivery sees it."""

    name: str
    full: bool  # new messages would block (when_full = "block" and no room)

    def put(self, messages: list[bytes]) -> None:
        """Queue MESSAGES (each as received); a full "drop" queue drops and counts them."""

    def stored(self) -> "Deferred[None] | None":
        """
        None when what was put is as safe as it will be; else fires once it is
        on disk (and fsynced), with `sync`.
        """

    def on_pressure(self, callback: Callable[[bool], object]) -> None:
        """CALLBACK(full) each time `full` changes."""


@lru_cache(maxsize=4096)
def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def sender_address(peer: str) -> str:
    """
    The IP address of a record's PEER; "" for a Unix-socket peer, whose
    socket name is a path (a name its client chose that reads as an
    address and port claims no more than the message's own hostname can).
    """
    host = peer_host(peer)
    return host if host is not None and _is_address(host) else ""


class Delivery:
    """
    The records of RECORDS (the logger's output) and the queues of OUTLETS
    (by target name), for every listener of one logger, through ROUTES
    (none: everything goes to the output and every target).  SOURCES: the
    limits per source every listener applies (None: none).  HEARERS are
    told who logged (more with L{add_hearer}).
    """

    def __init__(
        self,
        records: RecordSink,
        outlets: Mapping[str, Outlet] | None = None,
        routes: Sequence[Route] = (),
        sources: SourceLimits | None = None,
        hearers: Sequence[Hearing] = (),
    ) -> None:
        self.records = records
        self.outlets = dict(outlets or {})
        self.sources = sources
        self.hearers = list(hearers)
        self.router = Router(routes, self.outlets) if routes else None
        # The targets of what reaches the output: those no route names.
        self._everywhere = (
            list(self.outlets.values()) if self.router is None else self.router.unnamed
        )
        self._writers = [records.writer, *(self.router.writers if self.router else ())]
        self._pressure: list[Callable[[bool], object]] = []
        self.full = False
        for writer in self._writers:
            writer.on_pressure(self._check_pressure)
        for outlet in self.outlets.values():
            outlet.on_pressure(self._check_pressure)
        self._check_pressure()

    def on_pressure(self, callback: Callable[[bool], object]) -> None:
        """
        CALLBACK(full) each time the delivery becomes full (the output cannot
        keep up, or a blocking queue has no room) or has room again: stream
        listeners stop reading while full, datagram listeners drop.
        """
        self._pressure.append(callback)

    def add_hearer(self, hearer: Hearing) -> None:
        """HEARER is told from now on, once per read, who sent the read's messages."""
        self.hearers.append(hearer)

    def _check_pressure(self, _: bool = False) -> None:
        full = any(writer.full for writer in self._writers) or any(
            outlet.full for outlet in self.outlets.values()
        )
        if full != self.full:
            self.full = full
            for callback in self._pressure:
                callback(full)

    def messages(
        self, frames: Frames, peer: str, transport: str, client: str | None = None
    ) -> None:
        """The messages of one read from PEER over TRANSPORT (CLIENT: a TLS certificate's)."""
        if self.router is not None or self.hearers:
            self._parsed(frames, peer, transport, client)
            return
        self.records.messages(frames, peer, transport, client)
        if self._everywhere:
            raw = [message for message, _ in frames]
            for outlet in self._everywhere:
                outlet.put(raw)

    def _parsed(self, frames: Frames, peer: str, transport: str, client: str | None) -> None:
        """The messages of one read, their fields kept for the routes and the hearers."""
        routing: list[RoutingFields | None] = []
        lines = self.records.message_lines(frames, peer, transport, client, routing)
        if self.router is None:
            raw = [message for message, _ in frames] if self._everywhere else None
        else:
            lines, raw = self.router.deliver(lines, routing, frames, peer)
        if lines:
            self.records.writer.write_lines([encode_lines(lines)])
        if raw:
            for outlet in self._everywhere:
                outlet.put(raw)
        if self.hearers:
            # Told once the messages are delivered, so that a hearer cannot lose them.
            address = sender_address(peer)
            for hearer in self.hearers:
                hearer.heard(routing, address)

    def event(
        self,
        event: str,
        peer: str,
        transport: str,
        message: str | None = None,
        client: str | None = None,
        at: float | None = None,
    ) -> None:
        """A connection's `connected`, `disconnected` or `error` record (the output only)."""
        self.records.event(event, peer, transport, message, client, at)

    def written(self) -> "Deferred[None]":
        """
        Fires once every message handed over so far is written where it goes
        (fsynced with `sync`) and held by the queue of every target it goes
        to (on disk with `sync`).
        """
        waits = [writer.when_written() for writer in self._writers]
        waits += [
            d for d in (outlet.stored() for outlet in self.outlets.values()) if d is not None
        ]
        return _all(waits)


def _all(waits: Iterable["Deferred[None]"]) -> "Deferred[None]":
    pending = [d for d in waits if not d.called]
    if not pending:
        return succeed(None)
    if len(pending) == 1:
        return pending[0]
    return gatherResults(pending, consumeErrors=True).addCallback(lambda _: None)
