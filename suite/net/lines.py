"""
The line rules of the line services: lines end at LF, a CR before it is
dropped, replies end with CRLF, and a line longer than `max_line` gets
`ERROR line longer than N bytes` and a closed connection.

A client's next line is read only while that client reads its replies: the
protocol is the transport's streaming producer, and when the write buffer
fills, Twisted pauses it, which stops both the answering of lines already
received and the reading of new ones.  However many lines one read holds,
memory per client stays within `max_line` plus one read and one write
buffer (64 KiB each), and a client that never reads costs nothing more.

A connection answers at most LINES_PER_TURN lines per reactor turn, then
lets the others have theirs: a client pipelining thousands of lines (or a
flood of bare newlines) delays everyone else by one turn's worth, not by
everything it sent.  The replies to the lines of one read leave in one
write (the connection policy's batch).
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import cast

from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.foundation.config import integer, key
from suite.net.connections import ConnectionLimits, ConnectionPolicy

LINES_PER_TURN = 256


@dataclass(frozen=True, kw_only=True)
class LineLimits(ConnectionLimits):
    max_line: int = key(
        integer(1), 8192, "longest line in bytes; longer ones close the connection"
    )


@implementer(IPushProducer)
class LineProtocol(ConnectionPolicy, ABC):
    """
    Base of the line services: subclasses implement answerLine(line) and
    answer with reply(bytes) (CRLF added) or send(bytes).  The factory's
    settings are L{LineLimits}.

    Twisted's LineReceiver is not used: it copies the rest of its buffer for
    every line it splits off, which makes one read full of short lines cost
    time quadratic in its length (100 ms for 64 KiB of bare newlines).
    Here one split per turn finds up to LINES_PER_TURN lines, and the rest
    is copied once per turn.
    """

    refusal = b"ERROR too many connections\r\n"
    paused = False  # by the transport: its write buffer is full
    _next_turn: IDelayedCall | None = None  # while this connection lets the others have theirs
    _read_closed = False
    _buffer = b""

    @abstractmethod
    def answerLine(self, line: bytes) -> None:
        """Answer LINE (without its line end), with reply() or send()."""

    def connectionMade(self) -> None:
        settings = cast(LineLimits, self.factory.settings)  # a line service's factory has them
        self.max_line = settings.max_line
        super().connectionMade()

    def flow_producer(self) -> IPushProducer:
        return self

    def dataReceived(self, data: bytes) -> None:
        self.last_activity = self.factory.idle.tick
        if self.lingering:
            return
        self._buffer = self._buffer + data if self._buffer else data
        if self._next_turn is None:
            self._answer_lines()

    def _answer_lines(self) -> None:
        self.start_batch()
        try:
            self._answer_buffered_lines()
        finally:
            self.end_batch()

    def _answer_buffered_lines(self) -> None:
        transport = self.stream
        if self.paused or transport.disconnecting:
            return
        # At most LINES_PER_TURN splits: the rest of a long read is copied once a turn.
        lines = self._buffer.split(b"\n", LINES_PER_TURN)
        rest = lines.pop()
        answer, max_line, counts = self.answerLine, self.max_line, self.counts
        counts.requests += len(lines)  # less those left unanswered, below
        for index, line in enumerate(lines):
            if line[-1:] == b"\r":
                line = line[:-1]
            if len(line) > max_line:
                counts.requests -= len(lines) - index
                return self.lineLengthExceeded()
            answer(line)
            # mypy takes both as still false from the check above; answer() may pause or close.
            if self.paused or transport.disconnecting:  # type: ignore[redundant-expr]
                if index + 1 < len(lines):  # type: ignore[unreachable]
                    counts.requests -= len(lines) - index - 1
                    rest = b"\n".join([*lines[index + 1 :], rest])
                break
        else:
            if len(lines) == LINES_PER_TURN and b"\n" in rest:
                self._yield_turn()
        self._buffer = rest
        # As in the loop: answer() may have paused or closed.
        if self.paused or self._next_turn or self.lingering or transport.disconnecting:  # type: ignore[redundant-expr]
            return
        # Every complete line is answered; REST is a partial line.
        if self._read_closed:
            self._buffer = b""
            last = rest.removesuffix(b"\r")
            if len(last) > max_line:
                return self.lineLengthExceeded()
            if rest:
                self.counts.requests += 1
                self.answerLine(last)
            if not transport.disconnecting:
                self.close()
        elif len(rest) > max_line + 1:  # refused now, without waiting for its LF
            self.lineLengthExceeded()

    def _yield_turn(self) -> None:
        """Stop reading and answering until the reactor's next turn."""
        self.stream.pauseProducing()
        self._next_turn = self.factory.clock.callLater(0, self._take_turn)

    def _take_turn(self) -> None:
        self._next_turn = None
        if not self.paused and not self.lingering:
            self.stream.resumeProducing()
            self._answer_lines()

    def pauseProducing(self) -> None:
        self.paused = True
        self.stream.pauseProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        if self._next_turn is None and not self.lingering:
            self.stream.resumeProducing()
            self._answer_lines()

    def stopProducing(self) -> None:
        self.paused = True

    def lineLengthExceeded(self) -> None:
        limit = self.max_line
        self._buffer = b""
        self.warn_protocol_error(
            "line_too_long",
            "{service}: closing {peer}: line longer than {limit} bytes (max_line)",
            limit=limit,
        )
        self.close_after_error(b"ERROR line longer than %d bytes\r\n" % limit)

    def reply(self, data: bytes) -> None:
        self.send(data + b"\r\n")

    def readConnectionLost(self) -> None:
        """The client half-closed: answer its lines, the unterminated last one too, then close."""
        if self.lingering:
            self.close()
        else:
            self._read_closed = True
            if self._next_turn is None:
                self._answer_lines()

    def connectionLost(self, reason: Failure | None = connectionDone) -> None:
        if self._next_turn is not None:
            self._next_turn.cancel()
            self._next_turn = None
        super().connectionLost(reason)
