"""
The datagram side of the answering services: no answer to an empty
datagram, none to a source port below 1024 (or 0), and replies limited per
source address (`udp_rate`, `udp_burst`) and per network (/24, /56:
`udp_network_rate`, `udp_network_burst`) so the service cannot be used as
a traffic amplifier.

The ports below 1024 are those of other services (echo 7, chargen 19, DNS
53, NTP 123, ...) and never a client's own: a datagram "from" one is a
forged request whose answer would start a loop between two services (our
answer is their request, and so on) or hit a victim.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from zope.interface import implementer

from suite.foundation.config import integer, key, number
from suite.foundation.flood import FloodControl
from suite.foundation.interfaces import IBatchedDatagramProtocol, IMetricSource
from suite.foundation.metrics import Counts
from suite.net.addresses import plain_host
from suite.net.ratelimit import SourceRateLimiter
from suite.net.udpbuffer import DatagramLimits
from suite.net.udpport import reply_path

log = Logger()


@dataclass(frozen=True, kw_only=True)
class ReplyLimits(DatagramLimits):
    udp_rate: float = key(
        number(0), 50.0, "UDP replies per second per source; 0 = unlimited (per network too)"
    )
    udp_burst: int = key(integer(1), 100, "UDP replies a source may get in one burst")
    udp_network_rate: float = key(
        number(0), 500.0, "UDP replies per second per /24 (IPv4) or /56 (IPv6); 0 = unlimited"
    )
    udp_network_burst: int = key(integer(1), 1000, "UDP replies a network may get in one burst")
    udp_max_sources: int = key(
        integer(1), 10000, "UDP sources (and networks) tracked by the rate limiter"
    )


LOWEST_SOURCE_PORT = 1024  # below: another service's port, never a client's


def rate_limited_replier(
    settings: ReplyLimits, answer: Callable[[bytes], bytes | None], clock: IReactorTime
) -> Callable[[], "RateLimitedReplier"]:
    """A maker of datagram protocols for one service, with its own limiter each."""

    def make() -> RateLimitedReplier:
        return RateLimitedReplier(
            settings.section,
            answer,
            reply_limiter(settings, clock),
            FloodControl(clock, settings.section),
        )

    return make


def reply_limiter(settings: ReplyLimits, clock: IReactorTime) -> SourceRateLimiter:
    """A limiter of one datagram protocol's replies, within SETTINGS' budgets."""
    return SourceRateLimiter(
        settings.udp_rate,
        settings.udp_burst,
        settings.udp_max_sources,
        clock,
        settings.udp_network_rate,
        settings.udp_network_burst,
    )


@implementer(IBatchedDatagramProtocol, IMetricSource)
class RateLimitedReplier(DatagramProtocol):
    """
    Answers each datagram with ANSWER(payload) (unless None), never to a
    source port below 1024, within the LIMITER's budgets for the source's
    address and network.  Dropping is logged through WARNINGS
    (L{FloodControl}): the first time per source, then as a count every ten
    seconds, so a flood does not turn into a flood of log lines.  Counted:
    datagrams (requests), bytes, replies sent, and datagrams dropped for
    their source port, over the address's budget, over the network's.
    A batch read by the port is answered datagram by datagram, a failure on
    one logged without losing the rest.
    """

    noisy = False
    send: Callable[[bytes, tuple], object] | None = None  # suite.net.udpport.reply_path

    def __init__(
        self,
        service_name: str,
        answer: Callable[[bytes], bytes | None],
        limiter: SourceRateLimiter,
        warnings: FloodControl,
    ) -> None:
        self.service_name = service_name
        self.answer = answer
        self.limiter = limiter
        self.refusal = limiter.refusal
        self.warnings = warnings
        self.counts = Counts()
        self.answered = self.rate_limited = self.network_rate_limited = 0
        self.dropped_source_port = 0

    def metric_samples(self) -> Iterator[tuple[str, tuple, object]]:
        yield from self.counts.metric_samples("udp")
        yield "datagrams", ("answered",), self.answered
        yield "datagrams", ("rate_limited",), self.rate_limited
        yield "datagrams", ("network_rate_limited",), self.network_rate_limited
        yield "datagrams", ("dropped_source_port",), self.dropped_source_port

    def startProtocol(self) -> None:
        self.send = reply_path(self.transport)

    def datagramsReceived(self, datagrams: list[tuple[bytes, tuple]]) -> None:
        """
        datagramReceived's work over a batch read at one instant, written out
        (this loop is the whole work of the service): the clock asked once,
        the counts added once.
        """
        limiter = self.limiter
        now = limiter.clock.seconds() if limiter.active else None
        refusal, answer, send = self.refusal, self.answer, self.send
        requests = received = sent = answered = 0
        for data, address in datagrams:
            if not data:
                continue
            requests += 1
            received += len(data)
            if address[1] < LOWEST_SOURCE_PORT:
                self.low_port(address)
                continue
            if now is not None:
                over = refusal(address[0], now)
                if over is not None:
                    self.refused(address[0], over)
                    continue
            try:
                reply = answer(data)
                if reply is not None:  # None: nothing to say (a DNS response sent to us)
                    answered += 1
                    sent += len(reply)
                    send(reply, address)  # type: ignore[misc]  # set by startProtocol
            except Exception:
                log.failure("{protocol} failed on a datagram", protocol=self)
        counts = self.counts
        counts.requests += requests
        counts.received += received
        counts.sent += sent
        self.answered += answered

    def datagramReceived(self, data: bytes, address: tuple) -> None:
        if not data:
            return
        counts = self.counts
        counts.requests += 1
        counts.received += len(data)
        source = address[0]
        if address[1] < LOWEST_SOURCE_PORT:
            self.low_port(address)
            return
        over = self.refusal(source)
        if over is not None:
            self.refused(source, over)
            return
        reply = self.answer(data)
        if reply is not None:  # None: nothing to say (a DNS response sent to us)
            self.answered += 1
            counts.sent += len(reply)
            self.send(reply, address)  # type: ignore[misc]  # set by startProtocol, before reads

    def low_port(self, address: tuple) -> None:
        """A datagram from ADDRESS, whose port is below 1024: counted, told, not answered."""
        self.dropped_source_port += 1
        self.warnings.warn(
            "datagrams from a port below 1024",
            address[0],
            "{service}: not answering {source} port {port}: below 1024, "
            "a service's port, not a client's (a forged source?)",
            service=self.service_name,
            source=plain_host(address[0]),
            port=address[1],
        )

    def refused(self, source: str, over: str) -> None:
        """A datagram from SOURCE dropped, OVER (`udp_rate`, `udp_network_rate`): counted, told."""
        if over == "udp_rate":
            self.rate_limited += 1
        else:
            self.network_rate_limited += 1
        self.warnings.warn(
            "rate-limited datagrams",
            source,
            "{service}: dropping datagrams from {source}: over {limit}",
            service=self.service_name,
            source=plain_host(source),
            limit=over,
        )

    def stopProtocol(self) -> None:
        self.warnings.flush()
