"""
The RELP server (`relp_listen`, `relp_tls_listen`), as rsyslog's `omrelp`
expects it of librelp's `imrelp`: `open` answered with the offers, each
`syslog` message answered `rsp 200 OK` only once its record is written (and
fsynced with `sync`) and every forward queue holds it, `close` answered
and followed by `serverclose`.  A message not acknowledged is one omrelp
sends again on its next connection, so a crash loses nothing acknowledged
and may bring duplicates (RELP is at least once).
"""

from collections import deque
from dataclasses import dataclass, field

from twisted.python.failure import Failure

from suite.foundation.metrics import Counts
from suite.foundation.version import suite_version
from suite.logger.protocol import SyslogFactory, SyslogStreamProtocol
from suite.logger.relp import (
    SERVERCLOSE,
    RelpFrame,
    RelpFrameDecoder,
    encode_offers,
    next_txnr,
    parse_offers,
    rsp,
    rsp_ok,
)
from suite.net.connections import ConnectionPolicy

# The offers librelp's server answers with: omrelp requires `commands=syslog`
# and a relp_version no higher than its own (0).
OPEN_ANSWER = b"200 OK\n" + encode_offers(
    [
        ("relp_version", ["0"]),
        ("relp_software", ["suite", suite_version()]),
        ("commands", ["syslog"]),
    ]
)
# librelp's own texts, which rsyslog logs on the sender's side.
NOT_OPEN = b"500 command disabled"
ALREADY_OPEN = b"500 protocol error: connection already open"
NO_SYSLOG = b"500 required command not supported by client"


def relp_transport(kind: str) -> str:
    """`relp+tls` over TLS, else `relp`: the transport of RELP records and metrics."""
    return "relp+tls" if kind == "tls" else "relp"


@dataclass
class _Turn:
    """
    The answers to one read, in transaction order: sent once the read's
    messages are safe (at once when it had none), after every earlier turn.
    """

    answers: list[bytes] = field(default_factory=list)
    messages: int = 0  # syslog messages among them, waiting for their answer
    safe: bool = False
    close: bool = False  # then `serverclose`, and the connection is closed


class RelpFactory(SyslogFactory):
    """
    The connections of every RELP listener of the logger: the syslog
    listeners' limits, back-pressure, per-source rate and shutdown drain,
    counted under the transports `relp` and `relp+tls`.
    """

    def count_bytes_of(self, transport: object, kind: str) -> Counts:
        return super().count_bytes_of(transport, relp_transport(kind))


class RelpProtocol(SyslogStreamProtocol):
    """
    One RELP session.  Frames are taken in order; a read's messages go to
    the delivery in one call, and their answers leave in one write once
    the delivery says they are safe, in order across reads.  With
    `relp_window` messages or more waiting for their answer, the
    connection is not read until some are answered (a read already under
    way may take it a little past: the window bounds memory, it is not
    exact to the message).

    A malformed frame, a transaction number out of sequence, an unknown
    command or a second `open` ends the session: one `error` record, one
    log line, the earlier answers, `serverclose`, and the connection is
    closed, as librelp does (which leaves an unknown command unanswered;
    here it gets `500 unknown command`, for a person trying by hand).
    A `syslog` before `open` is answered `500 command disabled`, as
    librelp does, and the session goes on.
    """

    factory: RelpFactory
    refusal = SERVERCLOSE  # what omrelp understands: it retries later
    relp: RelpFrameDecoder | None = None
    opened = False
    ending = False  # a close, an error, the sender's half-close or the shutdown
    window_full = False  # not read for `relp_window`
    waiting = 0  # syslog messages waiting for their answer
    expected = 1  # the transaction number due next

    def start_framing(self) -> None:
        self.relp = RelpFrameDecoder(self.factory.settings.max_frame)
        self.turns: deque[_Turn] = deque()

    @property
    def record_transport(self) -> str:
        return relp_transport(self.kind)

    def dataReceived(self, data: bytes) -> None:
        relp = self.relp
        if relp is None or self.ending:
            return
        self.last_data = self.factory.clock.seconds()
        if not self.announced:
            self.announced = True
            self._event("connected", at=self.connected_at)
        ConnectionPolicy.dataReceived(self, data)
        turn = _Turn()
        messages: list[tuple[bytes, bool]] = []
        error = self._take(relp.feed(data), turn, messages)
        if error is None and not turn.close:
            error = relp.error
        if messages:
            self.counts.requests += len(messages)
            self.factory.delivery.messages(messages, self.peer, self.record_transport, self.client)
            turn.messages = len(messages)
            self.waiting += len(messages)
        else:
            turn.safe = True
        if error is not None:
            self.warn_protocol_error(
                "bad_frame", "{service}: closing {peer}: {error}", error=error
            )
            self._event("error", f"{error}: connection closed")
            turn.close = True
        if not turn.answers and not turn.close:
            return  # a read within a frame: nothing to answer yet
        self.turns.append(turn)
        if turn.close:
            self._stop_reading()
        if messages:
            self.factory.delivery.written().addCallback(self._safe, turn)
            self.factory.charge(self, len(messages))
        else:
            self._answer()
        if self.waiting >= self.factory.settings.relp_window:
            self.window_full = True
            self.factory.update_reading(self)

    def _take(
        self, frames: list[RelpFrame], turn: _Turn, messages: list[tuple[bytes, bool]]
    ) -> str | None:
        """
        Take FRAMES: their answers into TURN, their syslog messages (cut at
        max_message) into MESSAGES; the reason the session must end, if any.
        """
        max_message = self.factory.settings.max_message
        answers = turn.answers
        for txnr, command, data in frames:
            if txnr != self.expected:
                return f"transaction number {txnr} where {self.expected} was due"
            self.expected = next_txnr(txnr)
            if command == "syslog" and self.opened:
                messages.append((data[:max_message], len(data) > max_message))
                answers.append(rsp_ok(txnr))
            elif command == "syslog":
                answers.append(rsp(txnr, NOT_OPEN))
                self.warn_protocol_error(
                    "relp_not_open", "{service}: {peer} sent a message before `open`: refused"
                )
            elif command == "open":
                answer = self._open(data)
                answers.append(rsp(txnr, answer))
                if answer is not OPEN_ANSWER:
                    return f"`open` refused: {answer[4:].decode()}"
            elif command == "close":
                answers.append(rsp(txnr, b""))
                turn.close = True
                return None
            else:
                answers.append(rsp(txnr, b"500 unknown command"))
                return f"unknown command {command!r}"
        return None

    def _open(self, offers: bytes) -> bytes:
        """The answer to `open` with OFFERS: OPEN_ANSWER (now `opened`) when they suit."""
        if self.opened:
            return ALREADY_OPEN
        if "syslog" not in parse_offers(offers).get("commands", []):
            return NO_SYSLOG
        self.opened = True
        return OPEN_ANSWER

    def _safe(self, _: None, turn: _Turn) -> None:
        turn.safe = True
        self._answer()

    def _answer(self) -> None:
        """Send the answers of the turns that are safe, up to the first that is not, at once."""
        turns, out = self.turns, []
        closing = False
        while turns and turns[0].safe:
            turn = turns.popleft()
            out += turn.answers
            self.waiting -= turn.messages
            if turn.close:
                out.append(SERVERCLOSE)
                closing = True
                turns.clear()
                break
        if not out or self.transport is None or self.relp is None:
            return  # the connection is gone: omrelp sends those messages again
        self.stream.write(b"".join(out))
        if closing:
            self.close()
        elif self.window_full and self.waiting < self.factory.settings.relp_window:
            self.window_full = False
            self.factory.update_reading(self)

    def wants_reading(self) -> bool:
        """Not while `relp_window` messages wait for their answer, nor once the session ends."""
        return not self.ending and self.waiting < self.factory.settings.relp_window

    def _stop_reading(self) -> None:
        """No more frames are taken: the session ends once its answers are out."""
        self.ending = True
        self.stream.pauseProducing()

    def _deliver_last_frame(self, cut: bool = False) -> None:
        """A RELP frame cut short is not written: it was not acknowledged, omrelp resends it."""

    def readConnectionLost(self) -> None:
        """The sender will send nothing more: answer what it sent, then close."""
        self._end_after_answers()

    def close_at_shutdown(self) -> None:
        """The drain is over: what was taken is answered, then `serverclose`."""
        self._end_after_answers()

    def _end_after_answers(self) -> None:
        if self.relp is None:
            return
        if not self.ending:
            self._stop_reading()
            self.turns.append(_Turn(safe=True, close=True))
        self._answer()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.relp = None
        super().connectionLost(reason)


RelpFactory.protocol = RelpProtocol
