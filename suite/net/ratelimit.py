"""Per-source token buckets, so a datagram service cannot be used as an amplifier."""

from collections import OrderedDict


class SourceRateLimiter:
    """
    Allows RATE datagrams per second from each source, in bursts of BURST.

    The table of sources is bounded by MAX_SOURCES.  When it is full, the
    least recently seen source is forgotten only if its bucket has had time to
    refill completely (forgetting it then changes nothing); otherwise the new
    source is refused.  Flooding from spoofed addresses therefore cannot reset
    a victim's bucket: the limiter fails closed.
    """

    def __init__(self, rate: float, burst: int, max_sources: int, clock):
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self.clock = clock
        self.refill_time = burst / rate if rate else 0.0
        self._buckets: OrderedDict = OrderedDict()  # source -> [tokens, stamp]

    def __len__(self):
        return len(self._buckets)

    def allow(self, source) -> bool:
        """Take one token for SOURCE; False when it has none left."""
        if not self.rate:
            return True
        now = self.clock.seconds()
        bucket = self._buckets.get(source)
        if bucket is None:
            if len(self._buckets) >= self.max_sources:
                oldest = next(iter(self._buckets.values()))
                if now - oldest[1] < self.refill_time:
                    return False
                self._buckets.popitem(last=False)
            bucket = self._buckets[source] = [float(self.burst), now]
        else:
            self._buckets.move_to_end(source)
            bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
        if bucket[0] < 1:
            return False
        bucket[0] -= 1
        return True
