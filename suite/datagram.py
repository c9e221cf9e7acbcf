"""The datagram rules of SPEC §4: no answer to empty datagrams, rate-limited replies."""

from typing import Callable

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from suite.config import Key, integer, number
from suite.ratelimit import SourceRateLimiter

log = Logger()

DATAGRAM_KEYS = (
    Key("udp_rate", number(0), 50.0, "UDP replies per second per source; 0 = unlimited"),
    Key("udp_burst", integer(1), 100, "UDP replies a source may get in one burst"),
    Key("udp_max_sources", integer(1), 10000, "UDP sources tracked by the rate limiter"),
)


def rate_limited_replier(service_name, answer, settings, clock) -> Callable[[], "RateLimitedReplier"]:
    """A maker of datagram protocols for one service, with its own limiter each."""

    def make():
        limiter = SourceRateLimiter(
            settings.udp_rate, settings.udp_burst, settings.udp_max_sources, clock
        )
        return RateLimitedReplier(service_name, answer, limiter)

    return make


class RateLimitedReplier(DatagramProtocol):
    """
    Answers each datagram with ANSWER(payload), at most `udp_rate` replies
    per second per source address (bursts of `udp_burst`).  Dropping is
    logged once per episode per source, not once per datagram, so a flood
    does not turn into a flood of log lines.
    """

    noisy = False

    def __init__(self, service_name: str, answer: Callable[[bytes], bytes],
                 limiter: SourceRateLimiter):
        self.service_name = service_name
        self.answer = answer
        self.limiter = limiter
        self._limited = set()

    def datagramReceived(self, data, address):
        if not data:
            return
        source = address[0]
        if not self.limiter.allow(source):
            if source not in self._limited and len(self._limited) < self.limiter.max_sources:
                self._limited.add(source)
                log.warn(
                    "{service}: dropping datagrams from {source}: over udp_rate",
                    service=self.service_name,
                    source=source,
                )
            return
        self._limited.discard(source)
        self.transport.write(self.answer(data), address)
