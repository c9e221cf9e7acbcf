"""The line rules of SPEC §4: LF framing, CR dropped, CRLF replies, max_line."""

from zope.interface import implementer

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver

from suite.config import Key, integer
from suite.streams import StreamFactory, StreamProtocol, describe_peer

log = Logger()

MAX_LINE = Key("max_line", integer(1), 8192, "longest line in bytes; longer ones close the connection")


class LineFactory(StreamFactory):
    """A StreamFactory whose protocols read lines of at most MAX_LINE bytes."""

    def __init__(self, service_name, clock, max_connections, idle_timeout, max_line):
        super().__init__(service_name, clock, max_connections, idle_timeout)
        self.max_line = max_line


@implementer(IHalfCloseableProtocol)
class LineProtocol(StreamProtocol, LineReceiver):
    """
    Base of the line services: subclasses implement answerLine(line) and
    answer with reply(bytes).
    """

    delimiter = b"\n"
    refusal = b"ERROR too many connections\r\n"

    def connectionMade(self):
        self.max_line = self.factory.max_line
        # One byte of room for the CR that is dropped before the LF.
        self.MAX_LENGTH = self.max_line + 1
        StreamProtocol.connectionMade(self)

    def dataReceived(self, data):
        self.resetTimeout()
        LineReceiver.dataReceived(self, data)

    def lineReceived(self, line):
        if line[-1:] == b"\r":
            line = line[:-1]
        if len(line) > self.max_line:
            self.lineLengthExceeded(line)
        else:
            self.answerLine(line)

    def lineLengthExceeded(self, line):
        limit = self.max_line
        log.warn(
            "{service}: closing {peer}: line longer than {limit} bytes (max_line)",
            service=self.factory.service_name,
            peer=describe_peer(self.transport.getPeer()),
            limit=limit,
        )
        self.transport.write(b"ERROR line longer than %d bytes\r\n" % limit)
        self.close()

    def reply(self, data: bytes):
        self.transport.write(data + b"\r\n")

    def readConnectionLost(self):
        """The client half-closed: answer its unterminated last line, then close."""
        pending = self.clearLineBuffer()
        if pending and not self.transport.disconnecting:
            self.lineReceived(pending)
        if not self.transport.disconnecting:
            self.close()

    def connectionLost(self, reason):
        StreamProtocol.connectionLost(self, reason)
