"""
The datagram side of the answering services: no answer to an empty
datagram, and replies limited per source address (`udp_rate`, `udp_burst`)
so the service cannot be used as a traffic amplifier.
"""

from dataclasses import dataclass
from typing import Callable

from twisted.internet.protocol import DatagramProtocol

from suite.net.addresses import plain_host
from suite.net.ratelimit import SourceRateLimiter
from suite.net.udpbuffer import DatagramLimits
from suite.runtime.config import integer, key, number
from suite.runtime.flood import FloodControl
from suite.runtime.metrics import Counts


@dataclass(frozen=True, kw_only=True)
class ReplyLimits(DatagramLimits):
    udp_rate: float = key(number(0), 50.0, "UDP replies per second per source; 0 = unlimited")
    udp_burst: int = key(integer(1), 100, "UDP replies a source may get in one burst")
    udp_max_sources: int = key(integer(1), 10000, "UDP sources tracked by the rate limiter")


def rate_limited_replier(settings: ReplyLimits, answer: Callable[[bytes], bytes],
                         clock) -> Callable[[], "RateLimitedReplier"]:
    """A maker of datagram protocols for one service, with its own limiter each."""

    def make():
        limiter = SourceRateLimiter(
            settings.udp_rate, settings.udp_burst, settings.udp_max_sources, clock
        )
        return RateLimitedReplier(
            settings.section, answer, limiter, FloodControl(clock, settings.section)
        )

    return make


class RateLimitedReplier(DatagramProtocol):
    """
    Answers each datagram with ANSWER(payload) (unless None), at most `udp_rate` replies
    per second per source address (bursts of `udp_burst`).  Dropping is
    logged through WARNINGS (L{FloodControl}): the first time per source,
    then as a count every ten seconds, so a flood does not turn into a
    flood of log lines.  Counted: datagrams (requests), bytes, replies sent
    and datagrams rate-limited.
    """

    noisy = False
    send = None  # the port's `reply` (see suite.net.udpport), else its `write`

    def __init__(self, service_name: str, answer: Callable[[bytes], bytes],
                 limiter: SourceRateLimiter, warnings: FloodControl):
        self.service_name = service_name
        self.answer = answer
        self.limiter = limiter
        self.allow = limiter.allow
        self.warnings = warnings
        self.counts = Counts()
        self.answered = self.rate_limited = 0

    def metric_samples(self):
        yield from self.counts.metric_samples("udp")
        yield "datagrams", ("answered",), self.answered
        yield "datagrams", ("rate_limited",), self.rate_limited

    def startProtocol(self):
        self.send = getattr(self.transport, "reply", self.transport.write)

    def datagramReceived(self, data, address):
        if not data:
            return
        counts = self.counts
        counts.requests += 1
        counts.received += len(data)
        source = address[0]
        if not self.allow(source):
            self.rate_limited += 1
            self.warnings.warn(
                "rate-limited datagrams", source,
                "{service}: dropping datagrams from {source}: over udp_rate",
                service=self.service_name, source=plain_host(source),
            )
            return
        reply = self.answer(data)
        if reply is not None:  # None: nothing to say (a DNS response sent to us)
            self.answered += 1
            counts.sent += len(reply)
            self.send(reply, address)

    def stopProtocol(self):
        self.warnings.flush()
