"""Syslog reception: RFC 6587 over streams (TCP, TLS per RFC 5425, Unix), RFC 5426 over UDP."""

from collections.abc import Iterator
from typing import TYPE_CHECKING

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.foundation.interfaces import IBatchedDatagramProtocol, IMetricSource
from suite.foundation.metrics import Counts
from suite.logger.delivery import Delivery
from suite.logger.framing import SyslogFrameDecoder
from suite.net.addresses import host_port
from suite.net.connections import ConnectionPolicy, StreamFactory

if TYPE_CHECKING:
    from suite.logger.service import LoggerSettings


class SyslogFactory(StreamFactory):
    """
    Settings: L{suite.logger.service.LoggerSettings}; every connection feeds
    DELIVERY.  Connections that closed without sending a byte are only counted,
    in their transport's counts (`empty`).
    """

    settings: "LoggerSettings"

    def __init__(
        self, settings: "LoggerSettings", clock: IReactorTime, delivery: Delivery
    ) -> None:
        super().__init__(settings, clock)
        self.delivery = delivery
        self.open: set[SyslogStreamProtocol] = (
            set()
        )  # admitted connections, for the shutdown drain and back-pressure
        self.held = False
        delivery.on_pressure(self.hold)

    def charge(self, protocol: "ConnectionPolicy", messages: int) -> None:
        """
        MESSAGES more came from PROTOCOL's source: over `rate_per_source`, its
        connection is not read for a while (see L{suite.logger.sources}).
        """

    def hold(self, full: bool) -> None:
        """
        The delivery is full (the writer, or a queue that blocks): stop
        reading every connection (TCP back-pressure); or it has room again.
        """
        self.held = full
        for protocol in self.open:
            if full:
                protocol.stream.pauseProducing()
            else:
                protocol.stream.resumeProducing()


class SyslogStreamProtocol(ConnectionPolicy):
    """
    Frames each connection's bytes and hands the messages to the delivery, in
    order.  Over TLS the `connected` record waits for the handshake, so it
    can name the client certificate's subject (`client`), and a failed
    handshake gives an `error` record instead.

    A connection that never sends a byte (a port scan, a TCP health check,
    the name server's pings of an announced logger) writes no record at
    all, only a count: so the `connected` record is written with the first
    bytes, saying when the connection was made (over TLS, when its
    handshake was done).
    """

    factory: "SyslogFactory"
    refusal = b"ERROR too many connections\n"  # senders do not read it; a person with nc does
    decoder: SyslogFrameDecoder | None = None
    announced = False
    recorded = False  # whether any record of this connection was written
    connected_at = 0.0  # when it was made (over TLS: handshake done), for its `connected` record
    last_data = 0.0  # when the last bytes came, for the shutdown drain

    def connectionMade(self) -> None:
        super().connectionMade()
        if self.admitted:
            limits = self.factory.settings
            self.decoder = SyslogFrameDecoder(limits.max_message, limits.max_frame)
            self.factory.open.add(self)
            self.last_data = self.connected_at = self.factory.clock.seconds()
            if self.factory.held:
                self.stream.pauseProducing()

    def handshakeCompleted(self) -> None:
        super().handshakeCompleted()
        self.connected_at = self.factory.clock.seconds()

    def handshakeFailed(self, reason: str) -> None:
        self._event("error", f"TLS handshake failed: {reason}")

    def _event(self, event: str, message: str | None = None, at: float | None = None) -> None:
        self.recorded = True
        self.factory.delivery.event(event, self.peer, self.kind, message, self.client, at)

    def refused(self, reason: str) -> None:
        self._event("error", f"connection refused: {reason}")

    def dataReceived(self, data: bytes) -> None:
        if self.decoder is None or self.decoder.error:
            return
        decoder = self.decoder  # its error, none yet, may come with this read
        self.last_data = self.factory.clock.seconds()
        if not self.announced:
            self.announced = True
            self._event("connected", at=self.connected_at)
        super().dataReceived(data)
        frames = decoder.feed(data)
        if frames:
            self.counts.requests += len(frames)
            self.factory.delivery.messages(frames, self.peer, self.kind, self.client)
            self.factory.charge(self, len(frames))
        if decoder.error:
            self.warn_protocol_error(
                "bad_frame", "{service}: closing {peer}: {error}", error=decoder.error
            )
            self._event("error", f"{decoder.error}: connection closed")
            self.close()

    def _deliver_last_frame(self, cut: bool = False) -> None:
        if self.decoder is not None and not self.decoder.error:
            frames = self.decoder.finish(cut)
            if frames:
                self.factory.delivery.messages(frames, self.peer, self.kind, self.client)

    def readConnectionLost(self) -> None:
        self._deliver_last_frame()
        self.close()

    def close_at_shutdown(self) -> None:
        """The drain is over: what is left of a frame is written as truncated, then close."""
        self._deliver_last_frame(cut=True)
        self.close()

    def connectionLost(self, reason: Failure | None = connectionDone) -> None:
        self.factory.open.discard(self)
        if self.decoder is not None:
            # Not closed by the sender (a reset, or the server shutting down): a line cut short.
            self._deliver_last_frame(cut=reason is not None and not reason.check(ConnectionDone))
            self.decoder = None
            if not self.recorded:
                self.counts.empty += 1
        if self.announced:
            self._event("disconnected")
        super().connectionLost(reason)


SyslogFactory.protocol = SyslogStreamProtocol


@implementer(IBatchedDatagramProtocol, IMetricSource)
class SyslogDatagramProtocol(DatagramProtocol):
    """
    RFC 5426: one message per datagram; a trailing LF (CRLF), or the NUL
    Python's SysLogHandler ends each message with, is dropped.  Counted:
    messages (requests), bytes, and datagrams dropped while the delivery is
    full (the writer cannot keep up, or a queue that blocks has no room).
    It never answers, so C{send} stays unset.
    """

    noisy = False
    send = None

    def __init__(self, delivery: Delivery, max_message: int) -> None:
        self.delivery = delivery
        self.max_message = max_message
        self.counts = Counts()
        self.dropped = 0

    def metric_samples(self) -> Iterator[tuple[str, tuple, object]]:
        yield from self.counts.metric_samples("udp")
        yield "datagrams", ("dropped",), self.dropped

    def datagramReceived(self, data: bytes, address: tuple) -> None:
        self.datagramsReceived([(data, address)])

    def datagramsReceived(self, datagrams: list[tuple[bytes, tuple]]) -> None:
        """A batch read by the port: consecutive datagrams of one sender become one write."""
        delivery = self.delivery
        if delivery.full:
            if delivery.records.writer.full:
                delivery.records.writer.dropped += len(datagrams)  # told when writing resumes
            self.dropped += len(datagrams)
            return
        max_message = self.max_message
        frames: list[tuple[bytes, bool]] = []
        sender: tuple = ()  # no address is empty
        counts = self.counts
        counts.requests += len(datagrams)
        for data, address in datagrams:
            counts.received += len(data)
            if data[-1:] == b"\0":
                data = data[:-1]
            if data[-1:] == b"\n":
                data = data[:-2] if data[-2:] == b"\r\n" else data[:-1]
            if not data:
                continue
            if address != sender:
                if frames:
                    delivery.messages(frames, host_port(*sender), "udp")
                frames, sender = [], address
            frames.append((data[:max_message], len(data) > max_message))
        if frames:
            delivery.messages(frames, host_port(*sender), "udp")
