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
from suite.runtime.config import integer, key

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


class _QuietAMP(amp.AMP):
    """
    AMP without its info line for every connection made and lost: a client
    opening connections in a loop would otherwise write two log lines each.
    """

    def makeConnection(self, transport):
        amp.BinaryBoxProtocol.makeConnection(self, transport)

    def connectionLost(self, reason):
        amp.BinaryBoxProtocol.connectionLost(self, reason)
        self.transport = None


class AMPPolicy(ConnectionPolicy, _QuietAMP):
    """
    Base of the AMP services' protocols; the factory's settings are
    L{AMPLimits}.  Responders are declared as usual with
    C{Command.responder}.
    """

    _box_bytes = 0
    _in_flight = 0
    _rejected = False

    def flow_producer(self):
        return self

    def dataReceived(self, data):
        if not self._rejected:
            super().dataReceived(data)

    def stringReceived(self, string):
        if self._rejected:
            return
        self._box_bytes += 2 + len(string)
        max_box = self.factory.settings.max_box
        if self._box_bytes > max_box:
            return self.reject_box(f"box larger than {max_box} bytes (max_box)")
        try:
            super().stringReceived(string)
        except Exception as e:  # raised by AMP's box dispatch: no command, unknown answer ...
            return self.reject_box(_malformed(e))
        if self.state == "init":  # a box ended
            self._box_bytes = 0

    def lengthLimitExceeded(self, length):
        if not self._rejected:
            self.reject_box(f"key longer than {KEY_LENGTH_LIMIT} bytes")

    def reject_box(self, reason: str):
        """Log REASON once (flood-controlled) and close; what else arrives is ignored."""
        self._rejected = True
        self.warn_protocol_error("{service}: closing {peer}: {reason}", reason=reason)
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
            return answer.addBoth(self._answered)

        return bounded

    def _answered(self, result):
        self._in_flight -= 1
        return result
