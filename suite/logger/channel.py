"""
The collector split across worker processes (`workers = N`).  Every worker
frames, parses and formats what its listeners read (the costly part,
L{suite.logger.delivery.Preparation}) and, when the output is a file and
there are no routes, appends its records to it itself (see
L{RemoteDelivery}); the parent alone holds the forward queues, the
reporter, the silent-source hearers and the route files, and writes the
lines it is sent and queues the messages
(L{suite.logger.delivery.Delivery.deliver}).  A worker talks to the parent
over one Unix stream connection the supervisor made for it.

On that connection each frame is a 4-byte big-endian length, then a
`marshal`led tuple whose first item says what it is (marshal: the two ends
are one program, a parent and its own child).  A worker sends one frame
per read of its listeners, so that one connection's messages stay in
order; the parent answers with what the worker needs to know:

  - what to send of each read (L{suite.logger.delivery.Needs}: routing
    fields when the parent has routes or hearers, the messages as received
    when it has forward targets), at once, and again when it changes;
  - that the delivery is full, or has room again: the worker then stops
    reading its clients, as a single process does;
  - that everything up to a worker's mark is written (fsynced with `sync`)
    and queued: what a RELP acknowledgement, and a worker's stop, wait for.

A worker is also full while the parent reads it more slowly than it sends
(its write buffer toward the parent is full), before the parent's first
word, and for good once the parent is gone.  No frame is longer than
L{frame_limit}: a worker cuts a larger read in parts, and the parent closes
the connection of a worker that sends a longer or malformed frame, with
one log line, serving the others on.
"""

import marshal
import os
import socket
import struct
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.application import service
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IPushProducer, IReactorSocket, IReactorTime
from twisted.internet.protocol import Factory, Protocol, ServerFactory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.foundation.jsonlines import BatchWriter
from suite.logger.delivery import Delivery, Frames, Needs, Preparation
from suite.logger.records import RecordSink
from suite.logger.sources import SourceLimits

if TYPE_CHECKING:
    from suite.logger.drain import ShutdownDrain
    from suite.logger.service import LoggerSettings

log = Logger()

MiB = 2**20
HEADER = struct.Struct(">I")
# Worker to parent.
MESSAGES, EVENT, MARK, DROPPED = 0, 1, 2, 3
# Parent to worker.
NEEDS, PRESSURE, WRITTEN = 10, 11, 12
# Bytes a worker may have waiting toward the parent before it is full (and
# so bytes it reads at once): a few reads' worth, so that pressure does not
# flap at every read.  The parent reads as much at once.
CHANNEL_BUFFER = 256 * 2**10
# Seconds a stopping worker waits for the parent to confirm what it sent.
CONFIRM_TIMEOUT = 5.0


def writes_own_records(settings: "LoggerSettings") -> bool:
    """
    Whether each worker appends its records to the output itself: the
    output is a file (not the standard output, which the parent alone
    holds) and no route chooses, record by record, where each goes.
    """
    return settings.output != "-" and not settings.route


def frame_limit(max_message: int) -> int:
    """
    The longest frame either end sends or takes: 16 MiB, or more when
    `max_message` is large enough that one message's record (escaped, up
    to 6.4 times its bytes, with the message as received) could exceed it.
    """
    return max(16 * MiB, 16 * max_message + MiB)


class FrameReader(Protocol):
    """
    Cuts the bytes received into frames of at most `limit` bytes and hands
    each decoded tuple to `received`; anything else goes to `malformed`,
    after which nothing more is read.
    """

    limit = 16 * MiB
    broken = False

    def __init__(self) -> None:
        # The start of a frame not yet whole: the reads' bytes (views of them),
        # joined once when the frame is, so that a frame longer than a read is
        # copied once on its way to marshal.
        self._held: list[bytes | memoryview] = []
        self._held_bytes = 0
        self._needed = HEADER.size  # bytes _held must reach before a frame can end

    def dataReceived(self, data: bytes) -> None:
        if self.broken:
            return
        if self._held:
            self._held.append(data)
            self._held_bytes += len(data)
            if self._held_bytes < self._needed:
                return
            data = b"".join(self._held)
            self._held.clear()
        view = memoryview(data)
        end, offset, limit = len(data), 0, self.limit
        while end - offset >= 4:
            (size,) = HEADER.unpack_from(data, offset)
            if size > limit:
                self._malformed(f"a frame of {size} bytes, above the limit of {limit}")
                return
            start = offset + 4
            if end - start < size:
                break
            offset = start + size
            try:
                item = marshal.loads(view[start:offset])
            except (EOFError, ValueError, TypeError) as e:
                self._malformed(f"a frame that does not decode ({e})")
                return
            if type(item) is not tuple or not item:
                self._malformed("a frame that is not a tuple")
                return
            try:
                self.received(item)
            except (TypeError, ValueError, IndexError, KeyError, AttributeError) as e:
                self._malformed(f"a frame {item[0]!r} that does not fit ({e!r})")
                return
            if not self.reading:
                return
        if offset < end:
            self._held.append(view[offset:])
            rest = self._held_bytes = end - offset
            self._needed = (
                HEADER.size + HEADER.unpack_from(data, offset)[0] if rest >= 4 else HEADER.size
            )

    @property
    def reading(self) -> bool:
        """Whether frames are still taken: not after a malformed one."""
        return not self.broken

    def send(self, item: tuple) -> None:
        """ITEM as one frame."""
        payload = marshal.dumps(item)
        if self.transport is not None:
            self.transport.write(HEADER.pack(len(payload)) + payload)

    def _malformed(self, reason: str) -> None:
        self.broken = True
        self._held.clear()
        self.malformed(reason)

    def received(self, item: tuple) -> None:
        """One frame's tuple."""

    def malformed(self, reason: str) -> None:
        """The other end sent what it should not have: REASON."""


# The parent's end.


class WorkerChannel(FrameReader):
    """
    The parent's end of one worker's connection: hands what the worker
    prepared to the delivery and tells the worker what it needs to know.
    """

    factory: "WorkerChannelFactory"

    def __init__(self, factory: "WorkerChannelFactory") -> None:
        super().__init__()
        self.factory = factory
        self.limit = factory.limit
        self.delivery = factory.delivery

    def connectionMade(self) -> None:
        # Reads of up to CHANNEL_BUFFER, not Twisted's 64 KiB: a frame (one
        # read's records, several times the bytes of the read) then comes in
        # one or two reads, not four or more, each joined to the others.
        self.transport.bufferSize = CHANNEL_BUFFER  # type: ignore[union-attr]
        self.factory.open.add(self)
        self.send((NEEDS, *self.delivery.needs))
        self.pressure(self.delivery.full)

    def pressure(self, full: bool) -> None:
        """The delivery is FULL, or has room: the worker holds back, and is not read."""
        self.send((PRESSURE, full))
        if self.transport is not None and not self.broken:
            if full:
                self.transport.pauseProducing()  # type: ignore[attr-defined]
            else:
                self.transport.resumeProducing()  # type: ignore[attr-defined]

    def received(self, item: tuple) -> None:
        kind = item[0]
        if kind == MESSAGES:
            _, lines, routing, frames, peer, records = item
            if type(lines) is not bytes and (  # routed: one line per message, with its fields
                type(lines) is not list or type(routing) is not list or len(routing) != len(lines)
            ):
                raise ValueError("routed lines without their routing fields")
            if type(peer) is not str:
                raise TypeError("a peer that is not a str")
            if type(records) is not int:
                raise TypeError("a count of records that is not an int")
            if frames is not None and (
                type(frames) is not list or (routing is not None and len(frames) != len(routing))
            ):
                raise ValueError("messages as received that do not match their records")
            self.delivery.deliver(lines, routing, frames, peer, records)
        elif kind == EVENT:
            _, event, peer, transport, message, client, at = item
            self.delivery.event(event, peer, transport, message, client, float(at))
        elif kind == MARK:
            mark = int(item[1])
            self.delivery.written().addCallback(self._written, mark)
        elif kind == DROPPED:
            self.delivery.dropped_while_full(int(item[1]))
        else:
            raise ValueError(f"unknown kind {kind!r}")

    def _written(self, _: None, mark: int) -> None:
        if self.transport is not None and not self.broken:
            self.send((WRITTEN, mark))

    def malformed(self, reason: str) -> None:
        log.error(
            "{service}: closing the channel of a worker process: it sent {reason}",
            service=self.factory.service_name,
            reason=reason,
        )
        if self.transport is not None:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.factory.open.discard(self)


class WorkerChannelFactory(Factory):
    """
    The parent's end of every worker's channel, all to one DELIVERY (no
    limits per source: the workers apply them); frames of at most LIMIT
    bytes.
    """

    noisy = False

    def __init__(self, delivery: Delivery, limit: int, service_name: str = "logger") -> None:
        self.delivery = delivery
        self.limit = limit
        self.service_name = service_name
        self.open: set[WorkerChannel] = set()
        delivery.on_pressure(self._pressure)
        delivery.on_needs(self._needs)

    def buildProtocol(self, addr: object) -> Protocol:
        return WorkerChannel(self)

    def _pressure(self, full: bool) -> None:
        for channel in list(self.open):
            channel.pressure(full)

    def _needs(self, needs: Needs) -> None:
        for channel in list(self.open):
            channel.send((NEEDS, *needs))


# A worker's end.


class RecordLines(RecordSink):
    """A RecordSink's formatting without its writer: the parent writes a worker's records."""

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock


class RemoteDelivery:
    """
    A worker's delivery: what its listeners use of a L{Delivery}, the
    records prepared here and delivered by the parent over CHANNEL (set
    once connected, L{connect_to_parent}).  SOURCES: the limits per
    source of this worker's listeners (each worker has its own).

    With a WRITER of its own (the output is a file, L{writes_own_records}),
    and unless the parent's needs say it routes the records one by one,
    the worker appends its records to the output itself (a
    L{SharedRotatingFile}) and sends the parent only what its needs say
    (routing fields for hearers, the messages for forward targets), nothing
    at all when it needs none: the parent then does no work per message.
    """

    channel: "ParentChannel | None" = None

    def __init__(
        self, settings: "LoggerSettings", clock: IReactorTime, writer: BatchWriter | None = None
    ) -> None:
        self.clock = clock
        self.limit = frame_limit(settings.max_message)
        self.sources = SourceLimits.of(settings, clock)
        self.writer = writer
        self._own = False  # whether it writes its records itself: told by the parent's needs
        self.records = RecordLines(clock) if writer is None else RecordSink(writer, clock)
        self.preparation = Preparation(self.records, Needs())
        self._prepare = self.preparation.lines
        self._raw = False
        self._pressure: list[Callable[[bool], object]] = []
        self.full = True  # until the parent's first word
        self.greeted = False  # the parent said what it needs
        self.parent_full = False  # the parent's delivery is full
        self.write_full = False  # the bytes toward the parent wait in the write buffer
        self.gone = False  # the parent is gone
        self.closing = False  # this worker's stop closes the channel
        self.lost = 0  # messages handed over once the parent was gone
        self.dropped = 0  # datagrams dropped while full, not yet told to the parent
        self._mark = 0
        self._sent = False  # whether anything was sent since the last mark
        self._marks: deque[tuple[int, list[Deferred[None]]]] = deque()
        self._early: list[tuple[Frames, str, str, str | None]] = []  # before the parent's word
        self._on_gone: list[Callable[[], object]] = []
        if writer is not None:
            writer.on_pressure(lambda _: self._update())

    def on_pressure(self, callback: Callable[[bool], object]) -> None:
        """CALLBACK(full) each time `full` changes."""
        self._pressure.append(callback)

    def _update(self) -> None:
        full = (
            not self.greeted
            or self.parent_full
            or self.write_full
            or self.gone
            or (self.writer is not None and self.writer.full)
        )
        if full != self.full:
            self.full = full
            for callback in self._pressure:
                callback(full)
        if not full and self.dropped:
            self._send_dropped()

    def messages(
        self, frames: Frames, peer: str, transport: str, client: str | None = None
    ) -> None:
        """One read's messages, prepared here and sent to the parent in one frame."""
        channel = self.channel
        if channel is None or self.gone:
            self.lost += len(frames)
            return
        if not self.greeted:  # not read while full: a connection's last frame, at most
            self._early.append((frames, peer, transport, client))
            self._sent = True
            return
        lines, routing, _ = self._prepare(frames, peer, transport, client)
        if self._own:
            self.writer.write_lines([lines], len(frames))  # type: ignore[union-attr,list-item]
            if routing is None and not self._raw:
                return  # the parent needs nothing of this read
            lines = b""
        payload = marshal.dumps(
            (MESSAGES, lines, routing, frames if self._raw else None, peer, len(frames))
        )
        if len(payload) > self.limit - HEADER.size and len(frames) > 1:
            half = len(frames) // 2  # rare: a batch of datagrams, or a huge max_message
            self.messages(frames[:half], peer, transport, client)
            self.messages(frames[half:], peer, transport, client)
            return
        self._sent = True
        channel.transport.write(HEADER.pack(len(payload)) + payload)  # type: ignore[union-attr]

    def event(
        self,
        event: str,
        peer: str,
        transport: str,
        message: str | None = None,
        client: str | None = None,
        at: float | None = None,
    ) -> None:
        """A connection's record, stamped here, written here or by the parent."""
        if self._own:
            self.records.event(event, peer, transport, message, client, at)
            return
        if self.channel is None or self.gone:
            return
        self._sent = True
        when = self.clock.seconds() if at is None else at
        self.channel.send((EVENT, event, peer, transport, message, client, when))

    def written(self) -> "Deferred[None]":
        """
        Fires once everything handed over so far is written (fsynced with
        `sync`) and queued: by this worker's writer, when it has one, and by
        the parent, which says so.  Never, once the parent is gone: what was
        not confirmed is not acknowledged.
        """
        if not self._own:
            return self._confirmed_by_parent()
        own = self.writer.when_written()  # type: ignore[union-attr]
        if not self._sent and not self._marks:
            return own
        both = gatherResults([own, self._confirmed_by_parent()], consumeErrors=True)
        return both.addCallback(lambda _: None)

    def _confirmed_by_parent(self) -> "Deferred[None]":
        waiter: Deferred[None] = Deferred()
        if self._sent and self.channel is not None and not self.gone:
            self._mark += 1
            self._sent = False
            self._marks.append((self._mark, [waiter]))
            self.channel.send((MARK, self._mark))
        elif self._marks:
            self._marks[-1][1].append(waiter)
        elif not self._sent:
            waiter.callback(None)
        return waiter

    def dropped_while_full(self, count: int) -> None:
        """COUNT datagrams dropped while full: counted by the writer, or told to the parent."""
        if self._own:
            if self.writer.full:  # type: ignore[union-attr]
                self.writer.dropped += count  # type: ignore[union-attr]
            return
        self.dropped += count
        if not self.full:
            self._send_dropped()

    def _send_dropped(self) -> None:
        if self.channel is not None and not self.gone:
            self.channel.send((DROPPED, self.dropped))
            self.dropped = 0

    def received(self, item: tuple) -> None:
        """One frame from the parent."""
        kind = item[0]
        if kind == WRITTEN:
            mark, marks = item[1], self._marks
            while marks and marks[0][0] <= mark:
                for waiter in marks.popleft()[1]:
                    waiter.callback(None)
        elif kind == PRESSURE:
            self.parent_full = bool(item[1])
        elif kind == NEEDS:
            # Routing fields, not identity hashes: hashes are made with a process's own
            # seed, and the parent's heard table hashes the fields itself.
            told = Needs(*item[1:])
            needs = Needs(told.fields or told.hashes, told.routed, told.raw, hashes=False)
            self.preparation.needs = needs
            self._raw = needs.raw
            self._own = self.writer is not None and not needs.routed
            self.greeted = True
            early, self._early = self._early, []
            for args in early:
                self.messages(*args)
        self._update()

    def writing(self, full: bool) -> None:
        """The write buffer toward the parent is FULL, or has drained."""
        self.write_full = full
        self._update()

    def parent_gone(self, why: str) -> None:
        """No more can be sent: full for good."""
        if self.gone:
            return
        self.gone = True
        if self.closing:  # this worker's own stop closed it, once everything was confirmed
            self._update()
            return
        log.warn(
            "logger: the channel to the parent process is gone ({why}): no more messages "
            "are taken; {waiting} marks were never confirmed",
            why=why,
            waiting=len(self._marks),
        )
        self._update()
        for callback in self._on_gone:
            callback()

    def confirmed(self, timeout: float) -> "Deferred[None]":
        """
        Fires once the parent confirmed everything sent so far, the parent
        is gone, or TIMEOUT seconds have passed (one log line then).
        """
        if self.gone or self.channel is None:
            return succeed(None)
        done: Deferred[None] = Deferred()

        def finish(_: object = None, late: bool = False) -> None:
            if done.called:
                return
            if timer.active():
                timer.cancel()
            if late:
                log.error(
                    "logger: stopping: the parent process did not confirm within {timeout:g} s "
                    "that it wrote what this worker took",
                    timeout=timeout,
                )
            done.callback(None)

        timer = self.clock.callLater(timeout, finish, late=True)
        self._on_gone.append(finish)
        self.written().addCallback(finish)
        return done


@implementer(IPushProducer)
class ParentChannel(FrameReader):
    """
    A worker's end of its connection to the parent, for REMOTE; it is its
    own transport's producer, so that a full write buffer makes the worker
    full instead of growing.
    """

    def __init__(self, remote: RemoteDelivery) -> None:
        super().__init__()
        self.remote = remote
        self.limit = remote.limit

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.bufferSize = CHANNEL_BUFFER
        transport.registerProducer(self, True)
        self.remote.channel = self

    def received(self, item: tuple) -> None:
        self.remote.received(item)

    def malformed(self, reason: str) -> None:
        log.error("logger: the parent process sent {reason}", reason=reason)
        if self.transport is not None:
            self.transport.loseConnection()

    def pauseProducing(self) -> None:
        self.remote.writing(True)

    def resumeProducing(self) -> None:
        self.remote.writing(False)

    def stopProducing(self) -> None:
        """The connection is gone: connectionLost says so."""

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.remote.parent_gone(reason.getErrorMessage())


class _ToParent(ServerFactory):
    """The one connection of a worker's end: its ParentChannel for REMOTE."""

    noisy = False

    def __init__(self, remote: RemoteDelivery) -> None:
        self.remote = remote

    def buildProtocol(self, addr: object) -> Protocol:
        return ParentChannel(self.remote)


def connect_to_parent(reactor: IReactorSocket, fd: int, remote: RemoteDelivery) -> None:
    """Serve the worker's end FD (then closed: the reactor has its own copy) for REMOTE."""
    try:
        reactor.adoptStreamConnection(fd, socket.AF_UNIX, _ToParent(remote))
    finally:
        os.close(fd)


class ParentLink(service.Service):
    """
    A worker's stop: once the DRAIN is over (services stop all at once),
    wait for the parent to confirm what REMOTE sent (at most TIMEOUT
    seconds), then close the channel, so that nothing the worker took
    before SIGTERM is lost.
    """

    def __init__(
        self, remote: RemoteDelivery, drain: "ShutdownDrain", timeout: float = CONFIRM_TIMEOUT
    ) -> None:
        self.remote = remote
        self.drain = drain
        self.timeout = timeout

    def stopService(self) -> "Deferred[None]":
        service.Service.stopService(self)

        def close(_: object) -> None:
            channel = self.remote.channel
            if channel is not None and channel.transport is not None:
                self.remote.closing = True
                channel.transport.loseConnection()

        drained = self.drain.when_done()
        drained.addCallback(lambda _: self.remote.confirmed(self.timeout))
        return drained.addCallback(close)
