"""Echo protocols (SPEC §4): the line echo and RFC 862."""

from zope.interface import implementer

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol

from suite.lines import LineFactory, LineProtocol
from suite.streams import StreamFactory, StreamProtocol


class LineEcho(LineProtocol):
    """`You said: L` for each line L; `quit` says `Goodbye.` and closes."""

    def answerLine(self, line):
        if line == b"quit":
            self.reply(b"Goodbye.")
            self.close()
        else:
            self.transport.write(b"You said: " + line + b"\r\n")


@implementer(IHalfCloseableProtocol)
class RawEcho(StreamProtocol, Protocol):
    """RFC 862 over TCP: every byte sent back unchanged, with flow control."""

    def dataReceived(self, data):
        self.resetTimeout()
        self.transport.write(data)

    def connectionLost(self, reason):
        StreamProtocol.connectionLost(self, reason)


class LineEchoFactory(LineFactory):
    protocol = LineEcho


class RawEchoFactory(StreamFactory):
    protocol = RawEcho


def echo_datagram(payload: bytes) -> bytes:
    """RFC 862 over UDP: the datagram sent back unchanged."""
    return payload
