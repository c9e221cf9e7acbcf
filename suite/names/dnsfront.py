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
from twisted.logger import Logger
from zope.interface import implementer

from suite.foundation.flood import FloodControl
from suite.names.zone import TCP_SIZE, ZoneAnswers
from suite.net.connections import ConnectionPolicy, StreamFactory
from suite.net.datagrams import (
    LOWEST_SOURCE_PORT,
    RateLimitedReplier,
    ReplyLimits,
    reply_limiter,
)
from suite.net.ratelimit import SourceRateLimiter

if TYPE_CHECKING:
    from suite.names.service import NamesSettings

log = Logger()


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


class DNSDatagrams(RateLimitedReplier):
    """
    The UDP side: L{RateLimitedReplier}'s rules (counts, the source port,
    the rate limits per source and per network), with a lean path for a
    query asked before.  A query whose bytes after the ID the zone has
    `ready` (L{ZoneAnswers.exact}) is answered from the batch loop itself
    with its ID and the ready answer, as the zone's `answer` would answer
    it, byte for byte: no call per datagram beyond the rate limiter's (none
    when it is off) and the send.  The limiter reads the clock once per
    batch, the counts are added once per batch; any other datagram takes
    L{RateLimitedReplier.datagramReceived}, the zone's full path.
    """

    # Datagrams handed over per call by a batched port: the first answers of
    # a burst leave while its later queries wait (a client keeping 100
    # queries in flight gets its answers sooner), and what each call sets up
    # is still shared by a few.  Under dnsperf, sizes from 4 to 512 measured
    # within the noise of a shared two-core machine; below 4 each call's
    # setup shows.
    batch_size = 16

    def __init__(
        self,
        service_name: str,
        zone: ZoneAnswers,
        limiter: SourceRateLimiter,
        warnings: FloodControl,
    ) -> None:
        super().__init__(service_name, zone.answer, limiter, warnings)
        self.zone = zone

    def datagramsReceived(self, datagrams: list[tuple[bytes, tuple]]) -> None:
        exact_queries = self.zone.exact
        find, touch = exact_queries.get, exact_queries.move_to_end
        take_turn = self.zone.registry.take_turn
        limiter = self.limiter
        refusal = limiter.refusal if limiter.active else None
        now = limiter.clock.seconds() if refusal is not None else 0.0
        send: Callable[[bytes, tuple], object] = self.send  # type: ignore[assignment]
        full_path = self.datagramReceived
        requests = received = answered = sent = 0
        try:
            for data, address in datagrams:
                try:
                    key = data[2:]
                    exact = find(key)
                    if (
                        exact is None
                        or not exact.ready
                        or not exact.prepared.valid
                        or address[1] < LOWEST_SOURCE_PORT
                    ):
                        full_path(data, address)
                        continue
                    requests += 1
                    received += len(data)
                    if refusal is not None:
                        over = refusal(address[0], now)
                        if over is not None:
                            self.refused(address[0], over)
                            continue
                    touch(key)
                    # ZoneAnswers.ready_answer, written out: this runs for every query.
                    answers = exact.ready
                    prepared = exact.prepared
                    prepared.tally[0] += 1  # type: ignore[index]  # set for every Prepared
                    turns = len(answers)
                    turn = 0 if turns == 1 else take_turn(prepared.turn_name, turns)  # type: ignore[arg-type]
                    reply = data[:2] + answers[turn]
                    answered += 1
                    sent += len(reply)
                    send(reply, address)
                except Exception:
                    log.failure("{protocol} failed on a datagram", protocol=self)
        finally:
            counts = self.counts
            counts.requests += requests
            counts.received += received
            counts.sent += sent
            self.answered += answered


def dns_datagrams(
    settings: ReplyLimits, clock: IReactorTime, zone: ZoneAnswers
) -> Callable[[], DNSDatagrams]:
    """A maker of the UDP side's protocols: one answer per query, within the reply limits."""

    def make() -> DNSDatagrams:
        return DNSDatagrams(
            settings.section,
            zone,
            reply_limiter(settings, clock),
            FloodControl(clock, settings.section),
        )

    return make
