"""The echo protocols: the line echo, and RFC 862 over TCP and UDP."""

from suite.net.connections import ConnectionPolicy, StreamFactory
from suite.net.lines import LineProtocol


class LineEcho(LineProtocol):
    """`You said: L` for each line L; `quit` says `Goodbye.` and closes."""

    def answerLine(self, line: bytes) -> None:
        if line == b"quit":
            self.reply(b"Goodbye.")
            self.close()
        else:
            self.send(b"You said: " + line + b"\r\n")


class RawEcho(ConnectionPolicy):
    """
    RFC 862 over TCP: every byte sent back unchanged, with flow control.
    Each read echoed counts as a request.
    """

    def dataReceived(self, data: bytes) -> None:
        # The policy's dataReceived, which only notes the activity, inlined: this is
        # the whole work of the service, and two calls are a tenth of its cost.
        self.last_activity = self.factory.tick
        self.counts.requests += 1
        # The transport itself: `stream` (the same object, typed) is a property call.
        self.transport.write(data)  # type: ignore[union-attr]


class LineEchoFactory(StreamFactory):
    protocol = LineEcho


class RawEchoFactory(StreamFactory):
    protocol = RawEcho


def echo_datagram(payload: bytes) -> bytes:
    """RFC 862 over UDP: the datagram sent back unchanged."""
    return payload
