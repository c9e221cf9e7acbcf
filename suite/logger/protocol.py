"""Syslog reception: RFC 6587 over streams (TCP, TLS per RFC 5425, Unix), RFC 5426 over UDP."""

from zope.interface import implementer

from twisted.internet.address import UNIXAddress
from twisted.internet.interfaces import IHalfCloseableProtocol, ISSLTransport
from twisted.internet.protocol import DatagramProtocol, Protocol
from twisted.logger import Logger

from suite.logger.framing import SyslogFrameDecoder
from suite.streams import StreamFactory, StreamProtocol, describe_peer, host_port

log = Logger()


def transport_kind(transport) -> str:
    if ISSLTransport.providedBy(transport):
        return "tls"
    if isinstance(transport.getHost(), UNIXAddress):
        return "unix"
    return "tcp"


class SyslogFactory(StreamFactory):
    def __init__(self, service_name, clock, max_connections, idle_timeout, sink,
                 max_message, max_frame):
        super().__init__(service_name, clock, max_connections, idle_timeout)
        self.sink = sink
        self.max_message = max_message
        self.max_frame = max_frame


@implementer(IHalfCloseableProtocol)
class SyslogStreamProtocol(StreamProtocol, Protocol):
    """Frames each connection's bytes and hands the messages to the sink, in order."""

    decoder = None

    def connectionMade(self):
        self.peer = describe_peer(self.transport.getPeer())
        self.kind = transport_kind(self.transport)
        StreamProtocol.connectionMade(self)
        if self.admitted:
            self.decoder = SyslogFrameDecoder(self.factory.max_message, self.factory.max_frame)
            self.factory.sink.event("connected", self.peer, self.kind)

    def refused(self):
        self.factory.sink.event(
            "error", self.peer, self.kind,
            f"connection refused: max_connections ({self.factory.max_connections}) reached",
        )

    def dataReceived(self, data):
        decoder = self.decoder
        if decoder is None or decoder.error:
            return
        self.resetTimeout()
        frames = decoder.feed(data)
        if frames:
            self.factory.sink.messages(frames, self.peer, self.kind)
        if decoder.error:
            log.warn("logger: closing {peer}: {error}", peer=self.peer, error=decoder.error)
            self.factory.sink.event(
                "error", self.peer, self.kind, f"{decoder.error}: connection closed"
            )
            self.close()

    def _deliver_last_frame(self):
        if self.decoder is not None and not self.decoder.error:
            frames = self.decoder.finish()
            if frames:
                self.factory.sink.messages(frames, self.peer, self.kind)

    def readConnectionLost(self):
        self._deliver_last_frame()
        self.close()

    def connectionLost(self, reason):
        if self.decoder is not None:
            self._deliver_last_frame()
            self.decoder = None
            self.factory.sink.event("disconnected", self.peer, self.kind)
        StreamProtocol.connectionLost(self, reason)


SyslogFactory.protocol = SyslogStreamProtocol


class SyslogDatagramProtocol(DatagramProtocol):
    """RFC 5426: one message per datagram; a trailing LF (CRLF) is dropped."""

    noisy = False

    def __init__(self, sink, max_message: int):
        self.sink = sink
        self.max_message = max_message

    def datagramReceived(self, data, address):
        if data.endswith(b"\n"):
            data = data[:-2] if data.endswith(b"\r\n") else data[:-1]
        if not data:
            return
        truncated = len(data) > self.max_message
        frame = (data[: self.max_message], truncated)
        self.sink.messages([frame], host_port(address[0], address[1]), "udp")
