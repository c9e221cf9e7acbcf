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
"""

from dataclasses import dataclass

from twisted.internet import defer
from twisted.protocols import amp

from suite.net.connections import ConnectionLimits, ConnectionPolicy
from suite.foundation.config import integer, key

KEY_LENGTH_LIMIT = amp.BinaryBoxProtocol._MAX_KEY_LENGTH


@dataclass(frozen=True, kw_only=True)
class AMPLimits(ConnectionLimits):
    max_box: int = key(integer(64), 65536, "largest AMP box in bytes; larger ones close the connection")
    max_pending: int = key(integer(1), 100, "commands in flight on one connection; more: OVERLOADED")


def _malformed(error: Exception) -> str:
    if isinstance(error, amp.NoEmptyBoxes):
        return "malformed box: no command, answer or error in it"
    if isinstance(error, KeyError):
        return "malformed box: an answer or error to no question"
    return f"malformed box: {error}"


class QuietAMP(amp.AMP):
    """
    AMP without its info line for every connection made and lost: a client
    opening connections in a loop would otherwise write two log lines each
    (and so would the announcer, every interval).
    """

    def makeConnection(self, transport):
        amp.BinaryBoxProtocol.makeConnection(self, transport)

    def connectionLost(self, reason):
        amp.BinaryBoxProtocol.connectionLost(self, reason)
        self.transport = None


class AMPPolicy(ConnectionPolicy, QuietAMP):
    """
    Base of the AMP services' protocols; the factory's settings are
    L{AMPLimits}.  Responders are declared as usual with
    C{Command.responder}.

    Boxes are parsed here rather than by Twisted's `Int16StringReceiver`,
    which makes a method call and a state change per key and per value:
    this parser walks a read's boxes in one loop, checks `max_box` as soon
    as a value's length is known (before the value is buffered), and hands
    each complete box to box_received (AMP's dispatch, unless a service
    answers it faster).  Answers given with send() leave in one write at
    the end of the read (the connection policy's batch).
    """

    _box_bytes = 0
    _in_flight = 0
    _rejected = False
    _box = None  # the box being parsed: its complete pairs so far
    _tail = b""  # the incomplete pair after them

    def flow_producer(self):
        return self

    def dataReceived(self, data):
        if self._rejected:
            return
        self.last_activity = self.factory.tick
        if self._tail:
            data = self._tail + data
        end, position = len(data), 0
        box, size, max_box = self._box, self._box_bytes, self.factory.settings.max_box
        self.start_batch()
        try:
            while end - position >= 2 and not self.paused:
                key_end = position + 2 + ((data[position] << 8) | data[position + 1])
                if key_end == position + 2:  # the empty key: the box is complete
                    position = key_end
                    self._box, self._box_bytes = None, 0
                    self._deliver(box)
                    if self._rejected:
                        return
                    box, size = None, 0
                    continue
                if key_end - position - 2 > KEY_LENGTH_LIMIT:
                    return self.lengthLimitExceeded(key_end - position - 2)
                if end < key_end + 2:
                    break
                value_end = key_end + 2 + ((data[key_end] << 8) | data[key_end + 1])
                if size + value_end - position > max_box:
                    return self.reject_box(
                        f"box larger than {max_box} bytes (max_box)", "box_too_large"
                    )
                if end < value_end:
                    break
                if box is None:
                    box = amp.AmpBox()
                box[data[position + 2:key_end]] = data[key_end + 2:value_end]
                size += value_end - position
                position = value_end
            self._box, self._box_bytes = box, size
            self._tail = data[position:] if position < end else b""
        finally:
            self.end_batch()

    def _deliver(self, box):
        if box is None:
            return self.reject_box(_malformed(amp.NoEmptyBoxes(box)))
        if self.box_received(box):
            return
        self.flush_batch()  # answers leave in the order their questions came
        try:
            self.ampBoxReceived(box)
        except Exception as e:  # raised by AMP's box dispatch: no command, unknown answer ...
            self.reject_box(_malformed(e))

    def box_received(self, box) -> bool:
        """A hook: answer BOX at once (with send) and return True, or leave it to AMP."""
        return False

    def lengthLimitExceeded(self, length):
        if not self._rejected:
            self.reject_box(f"key longer than {KEY_LENGTH_LIMIT} bytes")

    def reject_box(self, reason: str, kind: str = "bad_box"):
        """Count and log REASON once (flood-controlled) and close; what else arrives is ignored."""
        self._rejected = True
        self.warn_protocol_error(kind, "{service}: closing {peer}: {reason}", reason=reason)
        self.close()

    def unhandledError(self, failure):
        """
        A command sent without `_ask` failed, so no answer can say so: an
        AMP error of the client's making is one line and a closed
        connection; anything else is a bug and keeps its traceback.
        """
        if failure.check(amp.RemoteAmpError):
            if not self._rejected:
                self.reject_box(f"a command sent without _ask failed: {failure.value.description}")
        else:
            super().unhandledError(failure)

    def locateResponder(self, name):
        responder = super().locateResponder(name)
        if responder is None:
            return None  # AMP answers UNHANDLED
        max_pending = self.factory.settings.max_pending

        def bounded(box):
            if self._in_flight >= max_pending:
                return defer.fail(amp.RemoteAmpError(
                    b"OVERLOADED",
                    f"{max_pending} commands in flight on this connection (max_pending)",
                ))
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

    def _answered(self, result):
        self._in_flight -= 1
        return result
