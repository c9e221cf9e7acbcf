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

The work has two halves, so that with `workers` the costly one runs in
every worker and the other once, in the parent (L{suite.logger.channel}):
L{Preparation} frames nothing but formats, turning one read's frames into
record lines (already encoded, unless routes must sort them one by one),
with the routing fields when routes or hearers want them;
L{Delivery.deliver} appends those lines, routes, queues the messages as
received and tells the hearers.  In one process L{Delivery.messages} calls
both in turn.
"""

import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from typing import NamedTuple, Protocol

from twisted.internet.defer import Deferred, gatherResults, succeed

from suite.foundation.heard import Hearing
from suite.logger.records import RecordSink, RoutingFields, encode_lines
from suite.logger.routing import Route, Router, peer_host
from suite.logger.sources import SourceLimits

Frames = list[tuple[bytes, bool]]  # (message as received, whether it was cut at max_message)
# One read's records: encoded and joined, or (with routes) one str per message.
Lines = bytes | list[str]
Routing = list[RoutingFields | None]


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


class Needs(NamedTuple):
    """What the delivering half wants of the preparing half, besides the records."""

    fields: bool = False  # each message's routing fields: routes, or hearers of names
    routed: bool = False  # the record lines one by one, not encoded: there are routes
    raw: bool = False  # the messages as received: there are forward targets
    hashes: bool = False  # each message's identity hashes: hearers by hash


class Preparation:
    """
    The preparing half of a delivery: the record lines of one read, and its
    messages' routing fields when NEEDS say so.  Its RECORDS' clock stamps
    the records; their writer is not used.
    """

    def __init__(self, records: RecordSink, needs: Needs) -> None:
        self.records = records
        self.needs = needs

    @property
    def needs(self) -> Needs:
        return self._needs

    @needs.setter
    def needs(self, needs: Needs) -> None:
        self._needs = needs
        # read for every read
        self._fields, self._routed, self._hashes = needs.fields, needs.routed, needs.hashes

    def lines(
        self, frames: Frames, peer: str, transport: str, client: str | None = None
    ) -> tuple[Lines, Routing | None, bytes | None]:
        """
        (the record lines, the routing fields or None, the identity hashes
        or None) of FRAMES, one read from PEER.  The hashes come only from
        the compiled formatting (not with routes, which format in Python);
        without it, a read whose hashes were asked for alone has its
        routing fields instead.
        """
        if not self._fields and not self._hashes:
            return self.records.message_bytes(frames, peer, transport, client), None, None
        routing: Routing = []
        if self._routed:
            lines = self.records.message_lines(frames, peer, transport, client, routing)
            return lines, routing, None
        if not self._hashes:
            data = self.records.message_bytes(frames, peer, transport, client, routing)
            return data, routing, None
        hashes = bytearray()
        data = self.records.message_bytes(
            frames, peer, transport, client, routing, hashes, fields=self._fields
        )
        if len(hashes) != 16 * len(frames):  # not compiled: the fields of every message
            return data, routing, None
        return data, routing if self._fields else None, bytes(hashes)


class Deliverer(Protocol):
    """What the listeners use of a delivery: a L{Delivery}, or a worker's remote one."""

    sources: SourceLimits | None
    full: bool

    def on_pressure(self, callback: Callable[[bool], object]) -> None: ...

    def messages(
        self, frames: Frames, peer: str, transport: str, client: str | None = None
    ) -> None: ...

    def event(
        self,
        event: str,
        peer: str,
        transport: str,
        message: str | None = None,
        client: str | None = None,
        at: float | None = None,
    ) -> None: ...

    def written(self) -> "Deferred[None]": ...

    def dropped_while_full(self, count: int) -> None: ...


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
        self._write = records.writer.write_lines
        self.preparation = Preparation(records, self.needs)
        self._prepare = self.preparation.lines
        self._needs_told: list[Callable[[Needs], object]] = []
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

    @property
    def needs(self) -> Needs:
        """What L{deliver} wants of the preparation of each read."""
        return Needs(
            fields=self.router is not None
            or any(not hearer.wants_hashes for hearer in self.hearers),
            routed=self.router is not None,
            raw=bool(self.outlets),
            hashes=any(hearer.wants_hashes for hearer in self.hearers),
        )

    def on_needs(self, callback: Callable[[Needs], object]) -> None:
        """CALLBACK(needs) each time L{needs} changes (a hearer added): for the workers."""
        self._needs_told.append(callback)

    def add_hearer(self, hearer: Hearing) -> None:
        """HEARER is told from now on, once per read, who sent the read's messages."""
        before = self.needs
        self.hearers.append(hearer)
        needs = self.preparation.needs = self.needs
        if needs != before:
            for callback in self._needs_told:
                callback(needs)

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
        lines, routing, hashes = self._prepare(frames, peer, transport, client)
        self.deliver(lines, routing, frames, peer, len(frames), hashes)

    def deliver(
        self,
        lines: Lines,
        routing: Routing | None,
        frames: Frames | None,
        peer: str,
        records: int,
        hashes: bytes | None = None,
    ) -> None:
        """
        The delivering half: one read's record LINES, ROUTING fields and
        identity HASHES (None when not made), as L{Preparation} made them
        for L{needs}, and its FRAMES (None when no target wants the
        messages as received), from PEER; RECORDS: how many messages the
        read had (one record each).
        """
        router = self.router
        raw: list[bytes] | None
        if router is not None:
            kept, raw = router.deliver(lines, routing, frames or (), peer)  # type: ignore[arg-type]
            if kept:
                self._write([encode_lines(kept)], len(kept))
        else:
            if lines:
                self._write([lines], records)  # type: ignore[list-item]  # bytes without routes
            raw = [message for message, _ in frames] if self._everywhere and frames else None
        if raw:
            for outlet in self._everywhere:
                outlet.put(raw)
        if self.hearers and (routing is not None or hashes is not None):
            # Told once the messages are delivered, so that a hearer cannot lose them.
            address = sender_address(peer)
            for hearer in self.hearers:
                hearer.heard(routing, address, hashes)

    def dropped_while_full(self, count: int) -> None:
        """COUNT datagrams were dropped while `full`: the writer says so when it writes again."""
        writer = self.records.writer
        if writer.full:
            writer.dropped += count

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
