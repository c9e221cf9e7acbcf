"""
The name server's DNS listeners (`dns_listen`): UDP answered datagram by
datagram, like every datagram side of the suite rate-limited per source and
per network and never answering a source port below 1024, and TCP (RFC
7766: each message after its two-byte length) answered whole and in order.
Both ask L{suite.names.zone.ZoneAnswers}.
"""

from collections.abc import Callable, Iterator
from struct import pack
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from zope.interface import implementer

from suite.names.zone import TCP_SIZE, ZoneAnswers
from suite.net.connections import ConnectionPolicy, StreamFactory
from suite.net.datagrams import RateLimitedReplier, ReplyLimits, rate_limited_replier

if TYPE_CHECKING:
    from suite.names.service import NamesSettings


@implementer(IPushProducer)
class DNSStreamProtocol(ConnectionPolicy, Protocol):
    """
    DNS over TCP.  Answers are written a batch at a time; when the
    transport's buffer is full (the client does not read) the queries
    still buffered wait, and reading stops, until it drains: a client
    cannot make the server hold more than one read and one batch.
    """

    factory: "DNSFactory"
    paused = False
    _buffer = b""

    def flow_producer(self) -> IPushProducer:
        return self

    def dataReceived(self, data: bytes) -> None:
        self.last_activity = self.factory.tick
        self._buffer = self._buffer + data if self._buffer else data
        self._answer_queries()

    def _answer_queries(self) -> None:
        buffer, position, end = self._buffer, 0, len(self._buffer)
        answer = self.factory.zone.answer
        self.start_batch()
        try:
            while not self.paused and end - position >= 2:
                message_end = position + 2 + (buffer[position] << 8 | buffer[position + 1])
                if message_end > end:
                    break
                response = answer(buffer[position + 2 : message_end], TCP_SIZE)
                position = message_end
                self.counts.requests += 1
                if response is not None:
                    self.send(pack("!H", len(response)) + response)
        finally:
            self._buffer = buffer[position:] if position < end else b""
            self.end_batch()

    def pauseProducing(self) -> None:
        self.paused = True
        self.stream.pauseProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        self.stream.resumeProducing()
        self._answer_queries()

    def stopProducing(self) -> None:
        self.paused = True


class DNSFactory(StreamFactory):
    """The TCP side's connections, under the [names] connection limits; ZONE answers."""

    protocol = DNSStreamProtocol

    def __init__(self, settings: "NamesSettings", clock: IReactorTime, zone: ZoneAnswers) -> None:
        super().__init__(settings, clock)
        self.zone = zone

    def metric_samples(self) -> Iterator[tuple[str, tuple, object]]:
        """The TCP side's connections, and the zone's DNS queries over TCP and UDP."""
        yield from super().metric_samples()
        yield from self.zone.metric_samples()


def dns_datagrams(
    settings: ReplyLimits, clock: IReactorTime, zone: ZoneAnswers
) -> Callable[[], RateLimitedReplier]:
    """A maker of the UDP side's protocols: one answer per query, within the reply limits."""
    return rate_limited_replier(settings, zone.answer, clock)
