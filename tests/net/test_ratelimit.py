from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.net.ratelimit import SourceRateLimiter


class TokenBucketTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.limiter = SourceRateLimiter(rate=50, burst=100, max_sources=3, clock=self.clock)

    def allowed(self, source, count):
        return sum(self.limiter.allow(source) for _ in range(count))

    def test_burst_then_refused(self):
        self.assertEqual(self.allowed("a", 150), 100)

    def test_refills_at_rate(self):
        self.allowed("a", 100)
        self.clock.advance(0.1)
        self.assertEqual(self.allowed("a", 10), 5)
        self.clock.advance(1000)
        self.assertEqual(self.allowed("a", 200), 100)

    def test_sources_are_independent(self):
        self.allowed("a", 100)
        self.assertTrue(self.limiter.allow("b"))

    def test_table_is_bounded_and_fails_closed(self):
        for source in "abc":
            self.limiter.allow(source)
        self.assertFalse(self.limiter.allow("d"))
        self.assertEqual(len(self.limiter), 3)

    def test_a_refilled_source_is_forgotten_to_make_room(self):
        self.limiter.allow("a")
        self.clock.advance(2)  # burst / rate: "a" is full again
        self.limiter.allow("b")
        self.limiter.allow("c")
        self.assertTrue(self.limiter.allow("d"))
        self.assertEqual(len(self.limiter), 3)

    def test_flood_of_new_sources_cannot_reset_a_drained_bucket(self):
        self.allowed("victim", 100)
        for source in range(10):
            self.limiter.allow(source)
        self.assertFalse(self.limiter.allow("victim"))

    def test_rate_zero_is_unlimited_and_keeps_no_table(self):
        limiter = SourceRateLimiter(rate=0, burst=1, max_sources=1, clock=self.clock)
        self.assertEqual(sum(limiter.allow(s % 7) for s in range(10000)), 10000)
        self.assertEqual(len(limiter), 0)
