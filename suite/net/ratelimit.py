"""
Token buckets per source address and per network, so a datagram service
cannot be used as an amplifier: spoofing many addresses of one network
(a /24, a /56) gets that network no more replies than its own budget.
"""

from collections import OrderedDict
from socket import AF_INET6, inet_pton

from twisted.internet.interfaces import IReactorTime

IPV6_NETWORK_BYTES = 7  # a /56


def network_of(address: str) -> str | bytes:
    """
    The key of the network holding ADDRESS: its /24 for IPv4 (an IPv4
    address mapped into IPv6 too), its /56 for IPv6.  Text slicing for
    IPv4, the one case on the hot path of most listeners.
    """
    if "." in address:
        return address.rpartition(".")[0]
    return inet_pton(AF_INET6, address.partition("%")[0])[:IPV6_NETWORK_BYTES]


class SourceRateLimiter:
    """
    Replies to a source: RATE per second in bursts of BURST for its own
    address, and NETWORK_RATE in bursts of NETWORK_BURST for its network
    (L{network_of}).  A RATE of 0 turns the limiter off altogether; a
    NETWORK_RATE of 0 only the networks' buckets.  A datagram refused by
    either budget spends nothing of the other.

    Each address's bucket holds its network's, so a known source costs one
    table lookup, not two.  The table of addresses is bounded by
    MAX_SOURCES (the networks, each used by at least one address, follow).
    When it is full, the least recently seen address is forgotten only if
    forgetting it changes nothing: its bucket has had time to refill
    completely, and so has its network's unless other addresses still use
    it.  Otherwise the new source is refused.  Flooding from spoofed
    addresses therefore cannot reset a victim's budget: the limiter fails
    closed.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        max_sources: int,
        clock: IReactorTime,
        network_rate: float = 0.0,
        network_burst: int = 1,
    ) -> None:
        self.rate, self.burst = rate, burst
        self.network_rate, self.network_burst = network_rate, network_burst
        self.max_sources = max_sources
        self.clock = clock
        self.refill_time = burst / rate if rate else 0.0
        self.network_refill_time = network_burst / network_rate if network_rate else 0.0
        self._addresses: OrderedDict = OrderedDict()  # address -> [tokens, stamp, network's]
        self._networks: dict = {}  # network key -> [tokens, stamp, addresses using it, key]

    def __len__(self) -> int:
        return len(self._addresses)

    @property
    def active(self) -> bool:
        """Whether it limits anything (a rate of 0 turns it off): a caller may skip it if not."""
        return bool(self.rate)

    def refusal(self, source: str, now: float | None = None) -> str | None:
        """
        Take a token for a reply to SOURCE; None when it may go, else the
        key whose budget it is over (`udp_rate` or `udp_network_rate`).
        NOW (the clock's time when None) lets a caller answering a batch
        read at one instant ask the clock once for the whole batch.
        """
        if not self.rate:
            return None
        if now is None:
            now = self.clock.seconds()
        bucket = self._addresses.get(source)
        if bucket is None:
            bucket = self._track(source, now)
            if bucket is None:
                return "udp_rate"
            tokens = bucket[0]
        elif bucket[1] == now:  # again at this instant (a batch): refilled, and last already
            tokens = bucket[0]
        else:
            self._addresses.move_to_end(source)
            # Each bucket ([tokens, stamp, ...]) refilled at its rate up to its burst until
            # now, written out rather than called: this runs for every datagram.
            tokens = bucket[0] + (now - bucket[1]) * self.rate
            if tokens > self.burst:
                tokens = self.burst
            bucket[1] = now
        if tokens < 1:
            bucket[0] = tokens
            return "udp_rate"
        network = bucket[2]
        if network is not None:
            network_tokens = network[0]
            if network[1] != now:
                network_tokens += (now - network[1]) * self.network_rate
                if network_tokens > self.network_burst:
                    network_tokens = self.network_burst
                network[1] = now
            if network_tokens < 1:
                network[0] = network_tokens
                bucket[0] = tokens
                return "udp_network_rate"
            network[0] = network_tokens - 1
        bucket[0] = tokens - 1
        return None

    def _track(self, source: str, now: float) -> list | None:
        """A full bucket for a new SOURCE, making room if that changes nothing; else None."""
        addresses = self._addresses
        if len(addresses) >= self.max_sources:
            oldest = next(iter(addresses.values()))
            if not self._forgettable(oldest, now):
                return None
            addresses.popitem(last=False)
            network = oldest[2]
            if network is not None:
                network[2] -= 1
                if not network[2]:
                    del self._networks[network[3]]
        network = None
        if self.network_rate:
            key = network_of(source)
            network = self._networks.get(key)
            if network is None:
                network = self._networks[key] = [float(self.network_burst), now, 0, key]
            network[2] += 1
        bucket = addresses[source] = [float(self.burst), now, network]
        return bucket

    def _forgettable(self, bucket: list, now: float) -> bool:
        if now - bucket[1] < self.refill_time:
            return False
        network = bucket[2]
        return network is None or network[2] > 1 or now - network[1] >= self.network_refill_time
