"""Health checks with a Clock: eviction timing is exact in fake time."""

from twisted.internet import defer, error
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.names.health import HealthChecker
from suite.names.registry import Registry


class FakePing:
    """Answers pings as told: alive ports succeed, others are refused; or keeps them pending."""

    def __init__(self):
        self.alive = set()
        self.hold = False
        self.pending = []
        self.calls = 0

    def __call__(self, host, port):
        self.calls += 1
        if self.hold:
            d = defer.Deferred()
            self.pending.append(d)
            return d
        if port in self.alive:
            return defer.succeed(None)
        return defer.fail(error.ConnectionRefusedError())


class HealthTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.registry = Registry(2000)
        self.ping = FakePing()
        self.evicted = []
        self.checker = HealthChecker(
            self.registry, self.clock, self.ping, interval=10, timeout=2, max_failures=3,
            concurrency=4, on_evict=lambda instance, reason: self.evicted.append(
                (instance.port, reason, self.clock.seconds())
            ),
        )
        self.checker.startService()
        self.addCleanup(self.checker.stopService)

    def test_dead_instance_evicted_exactly_after_max_failures_intervals(self):
        self.registry.register("svc", "h", 1)
        self.clock.pump([10, 10, 9.75])
        self.assertEqual(len(self.registry.lookup("svc")), 1)
        self.clock.advance(0.25)
        self.assertEqual(self.registry.lookup("svc"), [])
        self.assertEqual(self.evicted, [(1, "connection refused", 30.0)])

    def test_success_resets_the_count(self):
        self.registry.register("svc", "h", 1)
        self.clock.pump([10, 10])  # two failures
        self.ping.alive.add(1)
        self.clock.advance(10)  # success
        self.ping.alive.clear()
        self.clock.pump([10, 10])  # two failures again
        self.assertEqual(len(self.registry.lookup("svc")), 1)
        self.clock.advance(10)
        self.assertEqual(self.registry.lookup("svc"), [])

    def test_live_instances_stay(self):
        self.registry.register("svc", "h", 7)
        self.ping.alive.add(7)
        self.clock.pump([10] * 100)
        self.assertEqual(self.ping.calls, 100)
        self.assertEqual(len(self.registry.lookup("svc")), 1)

    def test_checks_run_concurrently_up_to_the_limit_and_rounds_never_overlap(self):
        for port in range(1, 11):
            self.registry.register("svc", "h", port)
        self.ping.hold = True
        self.clock.advance(10)
        self.assertEqual(len(self.ping.pending), 4)  # ping_concurrency
        self.clock.advance(10)
        self.assertEqual(len(self.ping.pending), 4)  # the next round waits for this one
        while self.ping.pending:
            self.ping.pending.pop(0).callback(None)
        self.assertEqual(self.ping.calls, 10)
        self.assertEqual(len(self.registry.lookup("svc")), 10)

    def test_a_thousand_instances_are_checked_within_one_interval(self):
        for port in range(1, 1001):
            self.registry.register(f"svc{port % 7}", "h", port)
            self.ping.alive.add(port)
        self.clock.advance(10)
        self.assertEqual(self.ping.calls, 1000)
