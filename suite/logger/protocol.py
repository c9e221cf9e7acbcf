"""Syslog reception: RFC 6587 over streams (TCP, TLS per RFC 5425, Unix), RFC 5426 over UDP."""

from collections.abc import Iterator
from typing import TYPE_CHECKING

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.protocol import DatagramProtocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.foundation.interfaces import IBatchedDatagramProtocol, IMetricSource
from suite.foundation.metrics import Counts
from suite.logger.delivery import Deliverer
from suite.logger.framing import SyslogFrameDecoder
from suite.net.addresses import host_port
from suite.net.connections import ConnectionPolicy, StreamFactory

if TYPE_CHECKING:
    from suite.logger.service import LoggerSettings


class SyslogFactory(StreamFactory):
    """
    Settings: L{suite.logger.service.LoggerSettings}; every connection feeds
    DELIVERY (a L{suite.logger.delivery.Delivery}, or in a worker process the
    parent's, through L{suite.logger.channel.RemoteDelivery}).  Connections
    that closed without sending a byte are only counted, in their
    transport's counts (`empty`).
    """

    settings: "LoggerSettings"

    def __init__(
        self, settings: "LoggerSettings", clock: IReactorTime, delivery: Deliverer
    ) -> None:
        super().__init__(settings, clock)
        self.delivery = delivery
        self.sources = delivery.sources
        if self.sources is not None:
            self.admission = self.sources.admission(
                settings.max_connections, settings.max_connections_per_source
            )
        self.source_paused = 0  # connections paused for their source's rate_per_source
        self.open: set[SyslogStreamProtocol] = (
            set()
        )  # admitted connections, for the shutdown drain and back-pressure
        self.held = delivery.full  # a worker's is, until its parent says it has room
        delivery.on_pressure(self.hold)

    def charge(self, protocol: "SyslogStreamProtocol", messages: int) -> None:
        """
        MESSAGES more came from PROTOCOL's source: over `rate_per_source`, its
        connection is not read for a while (see L{suite.logger.sources}).
        """
        sources = self.sources
        if sources is not None and sources.charge(
            protocol.source, protocol, messages, self.update_reading
        ):
            self.source_paused += 1

    def hold(self, full: bool) -> None:
        """
        The delivery is full (the writer, or a queue that blocks): stop
        reading every connection (TCP back-pressure); or it has room again.
        """
        self.held = full
        for protocol in self.open:
            self.update_reading(protocol)

    def update_reading(self, protocol: "SyslogStreamProtocol") -> None:
        """
        The one place that decides whether PROTOCOL's connection is read:
        not while the delivery is full (`held`), nor while its write buffer
        is (`write_full`: a client that does not read its answers), nor
        while its source is over `rate_per_source`, nor while the protocol
        itself wants no more (wants_reading), so that the end of one of
        those never restarts reading another still holds back.
        """
        sources = self.sources
        if (
            self.held
            or protocol.write_full
            or not protocol.wants_reading()
            or (sources is not None and sources.paused(protocol.source, protocol))
        ):
            protocol.stream.pauseProducing()
        else:
            protocol.stream.resumeProducing()

    def metric_samples(self) -> Iterator[tuple[str, tuple, object]]:
        yield from super().metric_samples()
        if self.sources is not None and self.sources.buckets is not None:
            yield "source_paused", (), self.source_paused

    def stopFactory(self) -> None:
        super().stopFactory()
        if self.sources is not None:
            self.sources.stop()


@implementer(IPushProducer)
class WriteBufferFlow:
    """
    What the transport pauses when PROTOCOL's write buffer is full, in
    place of the transport itself: Twisted's pause and resume only set the
    protocol's `write_full`, which the factory's update_reading weighs with
    the other reasons not to read.  Were the transport its own producer, a
    window, rate or back-pressure release would undo Twisted's pause (a
    client that never reads would have its answers buffered without
    bound), and a drained write buffer would undo back-pressure.
    """

    def __init__(self, protocol: "SyslogStreamProtocol") -> None:
        self.protocol = protocol

    def pauseProducing(self) -> None:
        self.protocol.write_buffer_full(True)

    def resumeProducing(self) -> None:
        self.protocol.write_buffer_full(False)

    def stopProducing(self) -> None:
        """The connection is gone: connectionLost does the rest."""


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
    write_full = False  # the transport's write buffer is full: not read until it drains

    def connectionMade(self) -> None:
        super().connectionMade()
        if self.admitted:
            self.start_framing()
            self.factory.open.add(self)
            self.last_data = self.connected_at = self.factory.clock.seconds()
            if self.factory.held:
                self.stream.pauseProducing()

    def start_framing(self) -> None:
        """The connection is admitted: its bytes are cut into frames from now on."""
        limits = self.factory.settings
        self.decoder = SyslogFrameDecoder(limits.max_message, limits.max_frame)

    def flow_producer(self) -> IPushProducer:
        return WriteBufferFlow(self)

    def write_buffer_full(self, full: bool) -> None:
        """Twisted says the write buffer is FULL, or has drained: read (or not) accordingly."""
        self.write_full = full
        if self.connected:
            self.factory.update_reading(self)

    @property
    def record_transport(self) -> str:
        """The `transport` its records name: tcp, tls or unix."""
        return self.kind

    def handshakeCompleted(self) -> None:
        super().handshakeCompleted()
        self.connected_at = self.factory.clock.seconds()

    def wants_reading(self) -> bool:
        """
        Whether the protocol itself would read more now (a hook, for RELP's
        window); the factory's update_reading weighs it with the others.
        """
        return True

    def handshakeFailed(self, reason: str) -> None:
        self._event("error", f"TLS handshake failed: {reason}")

    def _event(self, event: str, message: str | None = None, at: float | None = None) -> None:
        self.recorded = True
        self.factory.delivery.event(
            event, self.peer, self.record_transport, message, self.client, at
        )

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
        if self.factory.sources is not None:
            self.factory.sources.forget(self.source, self)
        if self.admitted:
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
    messages (requests), bytes, datagrams dropped while the delivery is
    full (the writer cannot keep up, or a queue that blocks has no room),
    and those of a source not in `allowed_sources` or over `rate_per_source`.
    It never answers, so C{send} stays unset.
    """

    noisy = False
    send = None

    def __init__(self, delivery: Deliverer, max_message: int) -> None:
        self.delivery = delivery
        self.max_message = max_message
        self.counts = Counts()
        self.dropped = 0
        self.refused: dict[str, int] = {}  # by L{SourceLimits.datagram_refusal}'s reason

    def metric_samples(self) -> Iterator[tuple[str, tuple, object]]:
        yield from self.counts.metric_samples("udp")
        yield "datagrams", ("dropped",), self.dropped
        for reason, count in list(self.refused.items()):
            yield "datagrams", (reason,), count

    def datagramReceived(self, data: bytes, address: tuple) -> None:
        self.datagramsReceived([(data, address)])

    def datagramsReceived(self, datagrams: list[tuple[bytes, tuple]]) -> None:
        """A batch read by the port: consecutive datagrams of one sender become one write."""
        delivery = self.delivery
        if delivery.full:
            delivery.dropped_while_full(len(datagrams))  # told when writing resumes
            self.dropped += len(datagrams)
            return
        max_message = self.max_message
        frames: list[tuple[bytes, bool]] = []
        sender: tuple = ()  # no address is empty
        counts = self.counts
        counts.requests += len(datagrams)
        limits = delivery.sources
        for data, address in datagrams:
            counts.received += len(data)
            if limits is not None:
                refusal = limits.datagram_refusal(address[0])
                if refusal is not None:
                    self.refused[refusal] = self.refused.get(refusal, 0) + 1
                    continue
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
