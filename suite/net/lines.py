"""
The line rules of the line services: lines end at LF, a CR before it is
dropped, replies end with CRLF, and a line longer than `max_line` gets
`ERROR line longer than N bytes` and a closed connection.
"""

from dataclasses import dataclass

from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver

from suite.net.addresses import describe_peer
from suite.net.connections import ConnectionLimits, ConnectionPolicy
from suite.runtime.config import integer, key

log = Logger()


@dataclass(frozen=True, kw_only=True)
class LineLimits(ConnectionLimits):
    max_line: int = key(integer(1), 8192, "longest line in bytes; longer ones close the connection")


class LineProtocol(ConnectionPolicy, LineReceiver):
    """
    Base of the line services: subclasses implement answerLine(line) and
    answer with reply(bytes).  The factory's settings are L{LineLimits}.
    """

    delimiter = b"\n"
    refusal = b"ERROR too many connections\r\n"

    def connectionMade(self):
        self.max_line = self.factory.settings.max_line
        # One byte of room for the CR that is dropped before the LF.
        self.MAX_LENGTH = self.max_line + 1
        super().connectionMade()

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
