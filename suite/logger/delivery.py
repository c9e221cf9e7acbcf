"""
Where the collector's received messages go: the one object every listener
(syslog over TCP, TLS, UDP, and RELP) hands its frames to.  It writes their
records (L{RecordSink}), passes the messages as received to the forward
targets' queues, and says when everything handed over so far is safe, which
is when a RELP acknowledgement may be sent.

Without routes, every message goes to the output and to every forward
target; routes (`[[logger.route]]`) choose per message.
"""

from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from twisted.internet.defer import Deferred, gatherResults, succeed

from suite.logger.records import RecordSink

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


class Delivery:
    """
    The records of RECORDS (the logger's output) and the queues of OUTLETS
    (by target name), for every listener of one logger.
    """

    def __init__(self, records: RecordSink, outlets: Mapping[str, Outlet] | None = None) -> None:
        self.records = records
        self.outlets = dict(outlets or {})
        self._everywhere = list(self.outlets.values())
        self._pressure: list[Callable[[bool], object]] = []
        self.full = False
        records.writer.on_pressure(self._check_pressure)
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

    def _check_pressure(self, _: bool = False) -> None:
        full = self.records.writer.full or any(outlet.full for outlet in self._everywhere)
        if full != self.full:
            self.full = full
            for callback in self._pressure:
                callback(full)

    def messages(
        self, frames: Frames, peer: str, transport: str, client: str | None = None
    ) -> None:
        """The messages of one read from PEER over TRANSPORT (CLIENT: a TLS certificate's)."""
        self.records.messages(frames, peer, transport, client)
        if self._everywhere:
            raw = [message for message, _ in frames]
            for outlet in self._everywhere:
                outlet.put(raw)

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
        waits = [self.records.writer.when_written()]
        waits += [d for d in (outlet.stored() for outlet in self._everywhere) if d is not None]
        return _all(waits)


def _all(waits: Iterable["Deferred[None]"]) -> "Deferred[None]":
    pending = [d for d in waits if not d.called]
    if not pending:
        return succeed(None)
    if len(pending) == 1:
        return pending[0]
    return gatherResults(pending, consumeErrors=True).addCallback(lambda _: None)
