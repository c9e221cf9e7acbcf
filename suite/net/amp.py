"""
The policy of the AMP services (sleep, names): bounded boxes, bounded work
in flight, and a malformed box answered with one log line and a closed
connection instead of a traceback.

Twisted's AMP holds a box until its empty key ends it; keys are only
limited in length, not in number, so a box that never ends is held whole.
Here a box larger than `max_box` closes the connection, and at most
`max_pending` commands per connection are in flight (OVERLOADED beyond),
so memory per connection is bounded by one box, one read and one write
buffer.  The protocol is its own streaming producer: a client that stops
reading its answers stops having its commands read.

Built on AMP's documented split, public API only: L{BoxParser} (ours, in
place of `BinaryBoxProtocol`) cuts the stream into boxes, an
`amp.BoxDispatcher` matches answers to questions and commands to the
responders a `amp.CommandLocator` declares, and the protocol is the
`amp.IBoxSender` that dispatcher answers through.
"""

from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.foundation.config import integer, key
from suite.net.connections import ConnectionLimits, ConnectionPolicy, StreamFactory

log = Logger()

# AMP's documented limit on a key's length; a value's is its 16-bit length prefix, 65,535.
MAX_KEY_LENGTH = 255

Responder = Callable[[amp.AmpBox], defer.Deferred]


@dataclass(frozen=True, kw_only=True)
class AMPLimits(ConnectionLimits):
    max_box: int = key(
        integer(64), 65536, "largest AMP box in bytes; larger ones close the connection"
    )
    max_pending: int = key(
        integer(1), 100, "commands in flight on one connection; more: OVERLOADED"
    )


class AMPFactory(StreamFactory):
    """The factory of an AMP service's connections (L{AMPPolicy}); its settings: L{AMPLimits}."""

    settings: AMPLimits


class KeyTooLong(ValueError):
    """A key's length prefix is over AMP's limit (MAX_KEY_LENGTH)."""


class BoxTooLarge(ValueError):
    """A box grew over the parser's `max_box` bytes."""


class BoxParser:
    """
    AMP's wire format cut into boxes, at most MAX_BOX bytes each (keys,
    values and their length prefixes): a value's length is checked as soon
    as its prefix has arrived, before the value is buffered, so a box over
    the limit is refused after at most one pair's prefixes more.

    One loop walks a read's boxes; Twisted's `Int16StringReceiver` makes a
    method call and a state change per key and per value, which cost more
    than a lookup's answer.
    """

    def __init__(self, max_box: int) -> None:
        self.max_box = max_box
        self._box: amp.AmpBox | None = None  # the box being parsed: its complete pairs so far
        self._box_bytes = 0
        self._tail = b""  # the incomplete pair after them

    def hold(self, data: bytes) -> None:
        """Keep DATA for the next feed, unparsed: its reader is paused."""
        self._tail += data

    def feed(self, data: bytes, deliver: Callable[[amp.AmpBox], bool]) -> None:
        """
        Hand each box DATA completes to DELIVER, in order, until it returns
        False (stop: what follows is kept for the next feed).  An empty box
        is delivered empty.  Raises L{KeyTooLong} or L{BoxTooLarge}, after
        which the parser is not to be fed again.
        """
        if self._tail:
            data = self._tail + data
        end, position = len(data), 0
        box, size, max_box = self._box, self._box_bytes, self.max_box
        while end - position >= 2:
            key_length = (data[position] << 8) | data[position + 1]
            key_end = position + 2 + key_length
            if not key_length:  # the empty key: the box is complete
                position = key_end
                complete = amp.AmpBox() if box is None else box
                box, size = None, 0
                if not deliver(complete):
                    break
                continue
            if key_length > MAX_KEY_LENGTH:
                raise KeyTooLong(f"key longer than {MAX_KEY_LENGTH} bytes")
            if end < key_end + 2:
                break
            value_end = key_end + 2 + ((data[key_end] << 8) | data[key_end + 1])
            if size + value_end - position > max_box:
                raise BoxTooLarge(f"box larger than {max_box} bytes (max_box)")
            if end < value_end:
                break
            if box is None:
                box = amp.AmpBox()
            box[data[position + 2 : key_end]] = data[key_end + 2 : value_end]
            size += value_end - position
            position = value_end
        self._box, self._box_bytes = box, size
        self._tail = data[position:] if position < end else b""


def _malformed(error: Exception) -> str:
    if isinstance(error, amp.NoEmptyBoxes):
        return "malformed box: no command, answer or error in it"
    if isinstance(error, KeyError):
        return "malformed box: an answer or error to no question"
    return f"malformed box: {error}"


class QuietAMP(amp.BinaryBoxProtocol, amp.BoxDispatcher, amp.CommandLocator):
    """
    A client's AMP connection: the three parts the `amp.AMP` class joins
    (parser, dispatcher, responder locator), without that class's info line
    at each connection made and lost, which a client connecting in a loop
    (the announcer, every interval) would write twice per connection.  As
    with `amp.AMP`, the transport is dropped when the connection is lost.
    """

    def __init__(self) -> None:
        amp.BoxDispatcher.__init__(self, self)
        amp.BinaryBoxProtocol.__init__(self, self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        amp.BinaryBoxProtocol.connectionLost(self, reason)
        self.transport = None


@implementer(amp.IBoxSender, IPushProducer)
class AMPPolicy(ConnectionPolicy, amp.CommandLocator):
    """
    Base of the AMP services' protocols; the factory's settings are
    L{AMPLimits}.  Responders are declared as usual with
    C{Command.responder}: the protocol is the locator its `dispatcher`
    (an `amp.BoxDispatcher`) finds them with, and the box sender it
    answers through.  Commands to the client go through the dispatcher
    (`self.dispatcher.callRemote`).

    Each complete box goes to box_received (a service's faster answer),
    else to the dispatcher.  Answers given with send() leave in one write
    at the end of the read (the connection policy's batch); a box the
    dispatcher sends first writes what the batch holds, so answers leave
    in the order their questions came.
    """

    factory: AMPFactory
    _in_flight = 0
    _rejected = False
    paused = False

    _parser: BoxParser  # made when the connection is, with the factory's max_box

    def __init__(self) -> None:
        self.dispatcher = amp.BoxDispatcher(self)

    def connectionMade(self) -> None:
        self._parser = BoxParser(self.factory.settings.max_box)
        self.dispatcher.startReceivingBoxes(self)
        super().connectionMade()

    def flow_producer(self) -> IPushProducer:
        return self

    def pauseProducing(self) -> None:
        self.paused = True
        self.stream.pauseProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        self.stream.resumeProducing()
        self.dataReceived(b"")  # the boxes held while paused

    def stopProducing(self) -> None:
        self.paused = True
        self.stream.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        if self._rejected:
            return
        self.last_activity = self.factory.idle.tick
        if self.paused:
            self._parser.hold(data)
            return
        self.start_batch()
        try:
            self._parser.feed(data, self._deliver)
        except BoxTooLarge as e:
            self.reject_box(str(e), "box_too_large")
        except KeyTooLong as e:
            self.reject_box(str(e))
        finally:
            self.end_batch()

    def _deliver(self, box: amp.AmpBox) -> bool:
        """Answer BOX; whether to read on."""
        if not self.box_received(box):
            try:
                self.dispatcher.ampBoxReceived(box)
            except Exception as e:  # raised by the dispatch: no command, unknown answer ...
                self.reject_box(_malformed(e))
        return not (self.paused or self._rejected)

    def box_received(self, box: amp.AmpBox) -> bool:
        """A hook: answer BOX at once (with send) and return True, or leave it for dispatch."""
        return False

    def sendBox(self, box: amp.AmpBox) -> None:
        """
        Write BOX for the dispatcher, after the answers the batch holds.
        Raises ConnectionLost once the connection is gone, which the
        dispatcher takes as an answer with no one left to read it.
        """
        if self.transport is None:
            raise ConnectionLost()
        self.flush_batch()
        self.transport.write(box.serialize())

    def reject_box(self, reason: str, kind: str = "bad_box") -> None:
        """Count and log REASON once (flood-controlled) and close; what else arrives is ignored."""
        self._rejected = True
        self.warn_protocol_error(kind, "{service}: closing {peer}: {reason}", reason=reason)
        self.close()

    def unhandledError(self, failure: Failure) -> None:
        """
        A command sent without `_ask` failed, so no answer can say so: an
        AMP error of the client's making is one line and a closed
        connection; anything else is a bug and keeps its traceback.
        """
        error = failure.value
        if isinstance(error, amp.RemoteAmpError):
            if not self._rejected:
                self.reject_box(f"a command sent without _ask failed: {error.description}")
            return
        log.failure(
            "{service}: an AMP command failed with no one to tell; closing its connection",
            failure,
            service=self.factory.service_name,
        )
        if self.transport is not None:
            self.transport.loseConnection()

    def locateResponder(self, name: bytes) -> Responder | None:
        responder: Responder | None = super().locateResponder(name)
        if responder is None:
            return None  # the dispatcher answers UNHANDLED
        max_pending = self.factory.settings.max_pending

        def bounded(box: amp.AmpBox) -> defer.Deferred:
            if self._in_flight >= max_pending:
                return defer.fail(
                    amp.RemoteAmpError(
                        b"OVERLOADED",
                        f"{max_pending} commands in flight on this connection (max_pending)",
                    )
                )
            try:
                answer = responder(box)  # parses the arguments, then calls the responder
            except Exception as e:
                reason = f"bad arguments to {name.decode(errors='replace')}: {e}"
                self.reject_box(reason)
                return defer.fail(amp.RemoteAmpError(b"INVALID", reason, fatal=True))
            self._in_flight += 1
            self.counts.requests += 1
            return answer.addBoth(self._answered)

        return bounded

    def _answered(self, result: object) -> object:
        self._in_flight -= 1
        return result

    def connectionLost(self, reason: Failure | None = connectionDone) -> None:
        super().connectionLost(reason)
        self.dispatcher.stopReceivingBoxes(reason or connectionDone)
        self.transport = None
