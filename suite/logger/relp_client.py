"""
The client side of RELP, the Reliable Event Logging Protocol, as librelp
(rsyslog's `omrelp`) speaks it: frames `TXNR SP COMMAND SP DATALEN [SP
DATA] LF`; the session opens with `open` and its offers, answered `rsp`
`200 OK` with the server's; then `syslog` frames, each answered `rsp` with
its own TXNR, several in flight (the window); `close` ends it; the server
may say `serverclose` (TXNR 0) when it goes away.

A message leaves the queue only once the target answered it, and in
order: the queue is told "everything up to this message is delivered"
once every message before it was answered too.  What was sent and not
answered when the connection broke is sent again on the next one, so the
target may see it twice: RELP's at-least-once.

A message the target answers with an error (`rsp 500 ...`) is counted,
reported (flood-controlled, by the owner) and taken as done, exactly as
librelp does (it calls its error hook and forgets the frame): a target
that refuses a message refuses it again, and sending it forever would
hold up every message behind it.
"""

import re
from abc import ABCMeta, abstractmethod
from collections import deque
from collections.abc import Iterator
from typing import Protocol as TypingProtocol
from typing import cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.foundation.version import suite_version
from suite.net.client_endpoints import tls_failure
from suite.net.connections import ConnectionTransport

MAX_TXNR = 999_999_999  # RELP's TXNR has at most nine digits; after the last comes 1
MAX_DATA = 128 * 1024  # librelp's RELP_DFLT_MAX_DATA_SIZE: the largest answer taken
MAX_COMMAND = 32  # librelp's longest command name
_HEADER = re.compile(rb"(\d{1,9}) ([A-Za-z]{1,%d}) (\d{1,9})([ \n])" % MAX_COMMAND)
# What the start of a header may look like while it is still arriving.
_PARTIAL_HEADER = re.compile(rb"\d{0,9}(?: (?:[A-Za-z]{0,%d}(?: \d{0,9})?)?)?" % MAX_COMMAND)
_LONGEST_HEADER = 9 + 1 + MAX_COMMAND + 1 + 9 + 1
_CODE = re.compile(rb"(\d{3})(?: ([^\n]{0,80}))?(?:\n|$)")
OK = b"200 OK"
# Nearly every frame a target sends: an answer `200 OK` (read without the general parser).
_OK_ANSWER = re.compile(rb"(\d{1,9}) rsp 6 200 OK\n")

OFFERS = b"relp_version=0\nrelp_software=suite,%s\ncommands=syslog" % suite_version().encode()

Batch = list[tuple[int, bytes]]  # (queue sequence, message as received)


class RelpProtocolError(Exception):
    """The target spoke something that is not RELP, or not at this point."""


def next_txnr(txnr: int) -> int:
    return 1 if txnr >= MAX_TXNR else txnr + 1


def frame(txnr: int, command: bytes, data: bytes = b"") -> bytes:
    if not data:
        return b"%d %s 0\n" % (txnr, command)
    return b"%d %s %d %s\n" % (txnr, command, len(data), data)


class FrameReader:
    """
    RELP frames out of a byte stream, each byte looked at a bounded number
    of times; a frame's data is at most MAX_DATA bytes (a client only ever
    reads short answers).
    """

    def __init__(self, max_data: int = MAX_DATA) -> None:
        self.max_data = max_data
        self._buffer = bytearray()
        self._need = 0  # bytes the buffer must hold before the next frame can be complete

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes, bytes]]:
        """(TXNR, command, data) of each frame DATA completes; RelpProtocolError when broken."""
        self._buffer += data
        if len(self._buffer) < self._need:
            return
        buffer, start = self._buffer, 0
        try:
            while True:
                answer = _OK_ANSWER.match(buffer, start)
                if answer is not None:
                    start = answer.end()
                    yield int(answer[1]), b"rsp", OK
                    continue
                header = _HEADER.match(buffer, start)
                if header is None:
                    rest = bytes(buffer[start : start + _LONGEST_HEADER])
                    if len(rest) >= _LONGEST_HEADER or not _PARTIAL_HEADER.fullmatch(rest):
                        raise RelpProtocolError(f"not a RELP frame: {rest[:40]!r}")
                    self._need = 0
                    return
                txnr, command, length = int(header[1]), header[2], int(header[3])
                if length > self.max_data:
                    raise RelpProtocolError(f"a frame of {length} bytes (at most {self.max_data})")
                if header[4] == b"\n":
                    if length:
                        raise RelpProtocolError("a frame ends before its data")
                    body, start = b"", header.end()
                else:
                    if not length:
                        raise RelpProtocolError("a frame of no data has a space after its length")
                    end = header.end() + length
                    if len(buffer) <= end:
                        self._need = end + 1 - start
                        return
                    if buffer[end] != 0x0A:
                        raise RelpProtocolError("a frame's data is not followed by LF")
                    body = bytes(buffer[header.end() : end])
                    start = end + 1
                yield txnr, command.lower(), body
        finally:
            del buffer[:start]


def response(data: bytes) -> tuple[int, str, bytes]:
    """An `rsp` frame's data: (code, text, what follows the first line)."""
    found = _CODE.match(data)
    if found is None:
        raise RelpProtocolError(f"an answer without a status code: {data[:40]!r}")
    text = (found[2] or b"").decode("utf-8", "replace")
    return int(found[1]), text, data[found.end() :]


def offers(data: bytes) -> dict[bytes, list[bytes]]:
    """`name=value,value` lines, as librelp's relpOffersConstructFromFrame reads them."""
    found: dict[bytes, list[bytes]] = {}
    for line in data.split(b"\n"):
        if line:
            name, _, values = line.partition(b"=")
            found[name] = [value for value in values.split(b",") if value]
    return found


class SessionOwner(TypingProtocol):
    """What a forwarding session tells the one who owns it (L{suite.logger.forward.Forwarder})."""

    def established(self, session: "Session") -> None:
        """SESSION may be sent messages now (`room()` says how many)."""

    def delivered(self, upto: int, count: int) -> None:
        """COUNT more messages, the last with queue sequence UPTO, are done with."""

    def refused(self, count: int, answer: str) -> None:
        """The target answered COUNT messages with an error, the last saying ANSWER."""

    def more_room(self) -> None:
        """`room()` has grown: more may be sent."""

    def lost(self, session: "Session", reason: str) -> None:
        """SESSION's connection is gone, for REASON."""


@implementer(IPushProducer)
class Session(Protocol, metaclass=ABCMeta):
    """
    A connection OWNER sends queued messages over (RELP, or octet-counted
    syslog).  It is its transport's streaming producer: while the
    transport's buffer is full it has no room, so what waits for the network
    stays in the queue, bounded, not in memory here.
    """

    reason: str | None = None  # why it ended, when the session knows better than its transport

    def __init__(self, owner: SessionOwner) -> None:
        self.owner = owner
        self.ready = False  # messages may be sent
        self.paused = False
        self._gone: Deferred[None] = Deferred()

    @property
    def _transport(self) -> ConnectionTransport:
        return cast(ConnectionTransport, self.transport)

    def connectionMade(self) -> None:
        self._transport.registerProducer(self, True)

    @property
    def in_flight(self) -> int:
        """Messages sent and not yet done with."""
        return 0

    @abstractmethod
    def room(self) -> int:
        """How many messages may be sent now (0: paused, or answers awaited)."""

    @abstractmethod
    def send(self, batch: Batch) -> None:
        """Send BATCH in one write."""

    def close(self) -> Deferred[None]:
        """End the session politely; fires once the connection is gone."""
        if self.transport is not None and not self._gone.called:
            self._transport.loseConnection()
        return self._gone

    def abort(self) -> None:
        if self.transport is not None:
            self._transport.abortConnection()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        if self.room():
            self.owner.more_room()

    def stopProducing(self) -> None:
        self.paused = True

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.ready = False
        self.owner.lost(self, self.reason or describe(reason))
        if not self._gone.called:
            self._gone.callback(None)


def describe(reason: Failure) -> str:
    """Why a connection failed or ended, in one line (OpenSSL's words for TLS)."""
    return tls_failure(reason.value) or reason.getErrorMessage() or type(reason.value).__name__


class RelpSession(Session):
    """
    One RELP session for OWNER: at most WINDOW messages sent and not yet
    answered.  The messages in flight have consecutive TXNRs (wrapping), so
    an answer finds its message by its distance from the oldest.
    """

    def __init__(self, owner: SessionOwner, window: int) -> None:
        Session.__init__(self, owner)
        self.window = window
        self._reader = FrameReader()
        self._txnr = 0  # the last one used
        self._open_txnr = 0
        self._close_txnr: int | None = None
        self._sequences: deque[int] = deque()  # the queue's, of the messages in flight
        self._oldest = 0  # the TXNR of the oldest in flight
        self._early: set[int] = set()  # TXNRs answered before an older one

    def _next(self) -> int:
        self._txnr = next_txnr(self._txnr)
        return self._txnr

    @property
    def in_flight(self) -> int:
        return len(self._sequences)

    def connectionMade(self) -> None:
        Session.connectionMade(self)
        self._open_txnr = self._next()
        self._transport.write(frame(self._open_txnr, b"open", OFFERS))

    def room(self) -> int:
        if not self.ready or self.paused or self._close_txnr is not None:
            return 0
        return self.window - len(self._sequences)

    def send(self, batch: Batch) -> None:
        txnr = self._txnr
        if not self._sequences:
            self._oldest = next_txnr(txnr)
        frames = []
        for sequence, message in batch:
            txnr = 1 if txnr >= MAX_TXNR else txnr + 1
            if message:
                frames.append(b"%d syslog %d %s\n" % (txnr, len(message), message))
            else:
                frames.append(b"%d syslog 0\n" % txnr)
            self._sequences.append(sequence)
        self._txnr = txnr
        self._transport.write(b"".join(frames))

    def dataReceived(self, data: bytes) -> None:
        refused, answer = 0, ""
        upto, count = 0, 0
        try:
            for txnr, command, body in self._reader.feed(data):
                if command != b"rsp":
                    if command == b"serverclose":
                        self._end("the target closed the session (serverclose)")
                        break
                    raise RelpProtocolError(f"the target sent the command {command[:32]!r}")
                if txnr == self._close_txnr:  # answered with no data by librelp
                    self._end("closed")
                    break
                if not self.ready:
                    if txnr != self._open_txnr:
                        raise RelpProtocolError(f"an answer to transaction {txnr} before open's")
                    self._opened(*response(body))
                    continue
                if body is not OK:
                    code, text, _ = response(body)
                    if code != 200:
                        refused += 1
                        answer = f"{code} {text}".rstrip()
                if txnr != self._oldest or not self._sequences:
                    self._answered_early(txnr)
                    continue
                upto = self._sequences.popleft()
                oldest = next_txnr(txnr)
                count += 1
                while oldest in self._early:
                    self._early.remove(oldest)
                    upto = self._sequences.popleft()
                    oldest = next_txnr(oldest)
                    count += 1
                self._oldest = oldest
        except RelpProtocolError as e:
            self._end(f"RELP protocol error: {e}")
        if refused:
            self.owner.refused(refused, answer)
        if count:
            self.owner.delivered(upto, count)
            if self.room():
                self.owner.more_room()

    def _answered_early(self, txnr: int) -> None:
        """An answer to a message other than the oldest: kept until the older ones are."""
        distance = (txnr - self._oldest) % MAX_TXNR
        if not 0 < distance < len(self._sequences) or txnr in self._early:
            raise RelpProtocolError(f"an answer to transaction {txnr}, not awaited")
        self._early.add(txnr)

    def _opened(self, code: int, text: str, rest: bytes) -> None:
        if code != 200:
            raise RelpProtocolError(f"the target refused the session: {code} {text}".rstrip())
        offered = offers(rest)
        version = offered.get(b"relp_version", [b"0"])
        if version != [b"0"]:
            raise RelpProtocolError(f"the target offers RELP version {version[:2]!r}, not 0")
        if b"syslog" not in offered.get(b"commands", []):
            raise RelpProtocolError("the target does not take the syslog command")
        self.ready = True
        self.owner.established(self)

    def _end(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        if self.transport is not None:
            self.transport.loseConnection()

    def close(self) -> Deferred[None]:
        """Send `close` (librelp sends it even with answers outstanding) and wait for the end."""
        if self.transport is not None and self._close_txnr is None and not self._gone.called:
            self._close_txnr = self._next()
            self._transport.write(frame(self._close_txnr, b"close"))
        return self._gone
