"""Health checks with a Clock: eviction timing is exact in fake time."""

from twisted.internet import defer, error, reactor, task
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from suite.names.health import HealthChecker, tcp_ping
from suite.names.registry import Registry
from suite.names.service import NamesSettings
from tests.helpers import captured_log

SETTINGS = NamesSettings(ping_interval=10, ping_timeout=2, max_failures=3, ping_concurrency=4)


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


class CheckerTestCase(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.ping = FakePing()

    def start(self, registry, on_evict):
        checker = HealthChecker(registry, SETTINGS, self.clock, self.ping, on_evict)
        checker.startService()
        self.addCleanup(checker.stopService)
        return checker


class HealthTests(CheckerTestCase):
    def setUp(self):
        super().setUp()
        self.registry = Registry(2000)
        self.evicted = []
        self.start(self.registry, self.evict)

    def evict(self, instance, reason):
        self.registry.deregister(*instance.key)
        self.evicted.append((instance.port, reason, self.clock.seconds()))

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


class FirstRoundFails(Registry):
    """A registry whose first listing of instances raises, as a bug would."""

    rounds = 0

    def instances(self):
        self.rounds += 1
        if self.rounds == 1:
            raise RuntimeError("bug in a round")
        return super().instances()


class HealthLoopSurvives(CheckerTestCase):
    def test_a_round_that_raises_is_logged_and_the_next_round_runs(self):
        registry = FirstRoundFails(10)
        registry.register("svc", "h", 1)
        self.ping.alive.add(1)
        self.start(registry, lambda instance, reason: None)
        self.clock.advance(10)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.ping.calls, 0)
        self.clock.advance(10)
        self.assertEqual(self.ping.calls, 1)

    def test_an_eviction_that_raises_is_logged_and_checks_go_on(self):
        registry = Registry(10)
        for port in (1, 2):
            registry.register("svc", "h", port)

        def failing_evict(instance, reason):
            raise ZeroDivisionError(f"evicting {instance.port}")

        self.start(registry, failing_evict)
        self.clock.pump([10] * 3)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)
        # Not evicted, so still checked, and the eviction is tried again each round.
        self.assertEqual(len(registry.instances()), 2)
        self.clock.advance(10)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)
        self.assertEqual(self.ping.calls, 8)

    def test_stopping_waits_for_the_round_in_flight(self):
        registry = Registry(10)
        registry.register("svc", "h", 1)
        self.ping.hold = True
        checker = HealthChecker(registry, SETTINGS, self.clock, self.ping, lambda *_: None)
        checker.startService()
        self.clock.advance(10)
        stopped = []
        checker.stopService().addCallback(stopped.append)
        self.assertEqual(stopped, [])
        self.ping.pending.pop().callback(None)
        self.assertEqual(stopped, [None])
        self.clock.advance(100)
        self.assertEqual(self.ping.calls, 1)

    def test_stopping_between_rounds_is_immediate(self):
        checker = self.start(Registry(10), lambda *_: None)
        checker.stopService()
        self.clock.advance(100)
        self.assertEqual(self.ping.calls, 0)


class QuietPings(TestCase):
    async def test_a_ping_logs_nothing(self):
        port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        lines = captured_log(self)
        await tcp_ping(reactor, 2)("127.0.0.1", port.getHost().port)
        await task.deferLater(reactor, 0.05, lambda: None)  # the probe's close
        self.assertEqual([line for line in lines if "factory" in line.lower()], [])
