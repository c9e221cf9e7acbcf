from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.net.ratelimit import SourceRateLimiter, network_of


class TokenBucketTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.limiter = SourceRateLimiter(rate=50, burst=100, max_sources=3, clock=self.clock)

    def allowed(self, source, count, limiter=None):
        limiter = limiter or self.limiter
        return sum(limiter.refusal(source) is None for _ in range(count))

    def test_burst_then_refused(self):
        self.assertEqual(self.allowed("a", 150), 100)
        self.assertEqual(self.limiter.refusal("a"), "udp_rate")

    def test_refills_at_rate(self):
        self.allowed("a", 100)
        self.clock.advance(0.1)
        self.assertEqual(self.allowed("a", 10), 5)
        self.clock.advance(1000)
        self.assertEqual(self.allowed("a", 200), 100)

    def test_a_batch_read_at_one_instant_passes_its_time_and_the_clock_is_not_read(self):
        self.assertEqual(sum(self.limiter.refusal("a", 0.0) is None for _ in range(150)), 100)
        self.clock.advance(1000)  # not what the batch says its time is
        self.assertEqual(self.limiter.refusal("a", 0.0), "udp_rate")
        self.assertEqual(sum(self.limiter.refusal("a", 0.1) is None for _ in range(10)), 5)

    def test_active_unless_the_rate_is_zero(self):
        self.assertTrue(self.limiter.active)
        off = SourceRateLimiter(rate=0, burst=1, max_sources=3, clock=self.clock)
        self.assertFalse(off.active)
        self.assertIsNone(off.refusal("a"))

    def test_sources_are_independent(self):
        self.allowed("a", 100)
        self.assertIsNone(self.limiter.refusal("b"))

    def test_table_is_bounded_and_fails_closed(self):
        for source in "abc":
            self.limiter.refusal(source)
        self.assertEqual(self.limiter.refusal("d"), "udp_rate")
        self.assertEqual(len(self.limiter), 3)

    def test_a_refilled_source_is_forgotten_to_make_room(self):
        self.limiter.refusal("a")
        self.clock.advance(2)  # burst / rate: "a" is full again
        self.limiter.refusal("b")
        self.limiter.refusal("c")
        self.assertIsNone(self.limiter.refusal("d"))
        self.assertEqual(len(self.limiter), 3)

    def test_flood_of_new_sources_cannot_reset_a_drained_bucket(self):
        self.allowed("victim", 100)
        for source in range(10):
            self.limiter.refusal(str(source))
        self.assertEqual(self.limiter.refusal("victim"), "udp_rate")

    def test_rate_zero_is_unlimited_and_keeps_no_table(self):
        limiter = SourceRateLimiter(
            rate=0, burst=1, max_sources=1, clock=self.clock, network_rate=1, network_burst=1
        )
        self.assertEqual(
            sum(limiter.refusal(f"10.0.0.{s % 7}") is None for s in range(10000)), 10000
        )
        self.assertEqual(len(limiter), 0)


class NetworkBudgetTests(SynchronousTestCase):
    """The network's bucket: many spoofed neighbours get no more than one network's budget."""

    def setUp(self):
        self.clock = Clock()
        self.limiter = SourceRateLimiter(
            rate=50,
            burst=100,
            max_sources=1000,
            clock=self.clock,
            network_rate=500,
            network_burst=1000,
        )

    def replies(self, sources, each):
        return sum(self.limiter.refusal(source) is None for source in sources for _ in range(each))

    def test_a_24_shares_one_budget(self):
        victims = [f"192.0.2.{host}" for host in range(256)]
        self.assertEqual(self.replies(victims, 100), 1000)  # not 256 × 100
        self.assertEqual(self.limiter.refusal("192.0.2.200"), "udp_network_rate")
        self.assertIsNone(self.limiter.refusal("192.0.3.7"))  # the next /24 has its own

    def test_the_network_refills_at_its_rate(self):
        self.replies([f"192.0.2.{host}" for host in range(20)], 100)
        self.clock.advance(0.1)  # 50 tokens for the network, 5 for each address
        self.assertEqual(self.replies([f"192.0.2.{host}" for host in range(20)], 100), 50)

    def test_a_refusal_by_one_budget_spends_nothing_of_the_other(self):
        self.replies([f"192.0.2.{host}" for host in range(10)], 100)  # the network's 1000
        self.assertEqual(self.limiter.refusal("192.0.2.200"), "udp_network_rate")
        self.clock.advance(1)  # 500 for the network, 50 for each address
        self.assertEqual(self.replies(["192.0.2.200"], 200), 100)  # its burst was kept

    def test_one_source_over_its_own_budget_spends_nothing_of_its_neighbours(self):
        self.assertEqual(self.replies(["192.0.2.1"], 5000), 100)
        self.assertEqual(self.replies([f"192.0.2.{host}" for host in range(2, 12)], 100), 900)

    def test_ipv6_networks_are_56s(self):
        same = [f"2001:db8:0:ff{host:02x}:{host:x}::1" for host in range(0, 256, 16)]
        self.assertEqual(self.replies([*same, "2001:db8:0:ff00::2%eth0"], 100), 1000)
        self.assertIsNone(self.limiter.refusal("2001:db8:0:fe00::1"))

    def test_network_keys(self):
        self.assertEqual(network_of("10.1.2.3"), network_of("10.1.2.250"))
        self.assertNotEqual(network_of("10.1.2.3"), network_of("10.1.3.3"))
        self.assertEqual(network_of("::ffff:10.1.2.3"), network_of("::ffff:10.1.2.9"))
        self.assertNotEqual(network_of("::ffff:10.1.2.3"), network_of("::ffff:10.1.3.3"))
        self.assertEqual(network_of("fe80::1%lo"), network_of("fe80::2"))

    def test_network_rate_zero_leaves_the_addresses_buckets(self):
        limiter = SourceRateLimiter(rate=50, burst=100, max_sources=1000, clock=self.clock)
        self.assertEqual(
            sum(limiter.refusal(f"192.0.2.{h}") is None for h in range(256) for _ in range(101)),
            256 * 100,
        )

    def test_forgetting_an_address_never_resets_its_network(self):
        limiter = SourceRateLimiter(
            rate=50, burst=100, max_sources=2, clock=self.clock, network_rate=1, network_burst=10
        )
        self.assertEqual(sum(limiter.refusal("192.0.2.1") is None for _ in range(20)), 10)
        self.clock.advance(3)  # the address is full again; the network holds 3 of its 10
        self.assertIsNone(limiter.refusal("198.51.100.1"))
        # The table is full; forgetting 192.0.2.1 would forget its drained network: refused.
        self.assertEqual(limiter.refusal("192.0.2.2"), "udp_rate")
        self.assertEqual(len(limiter), 2)
        self.clock.advance(7)  # the network is full again: forgetting changes nothing now
        self.assertIsNone(limiter.refusal("192.0.2.2"))
        self.assertEqual(len(limiter), 2)

    def test_an_address_whose_network_others_use_is_forgotten_and_the_network_kept(self):
        limiter = SourceRateLimiter(
            rate=50, burst=100, max_sources=2, clock=self.clock, network_rate=1, network_burst=10
        )
        self.assertEqual(sum(limiter.refusal("192.0.2.1") is None for _ in range(20)), 10)
        self.clock.advance(3)
        self.assertIsNone(limiter.refusal("192.0.2.2"))  # the network's 3rd-last token
        self.assertIsNone(limiter.refusal("198.51.100.1"))  # 192.0.2.1 forgotten to make room
        self.assertEqual(len(limiter), 2)
        self.assertEqual(
            [limiter.refusal("192.0.2.2") for _ in range(3)], [None, None, "udp_network_rate"]
        )
        self.assertEqual(len(limiter._networks), 2)
