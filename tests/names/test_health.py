"""Health checks with a Clock: eviction timing is exact in fake time."""

from twisted.internet import defer, error, reactor, task
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from suite.names.health import SLOTS, HealthChecker, slot_of, tcp_ping
from suite.names.registry import Registry
from suite.names.service import NamesSettings
from tests.helpers import captured_log, elapse

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


def first_check(instance) -> float:
    """When INSTANCE (registered before the start) is first checked: its slot's tick."""
    return (slot_of(instance) + 1) * SETTINGS.ping_interval / SLOTS


def assert_spread(test, moments):
    """A thousand MOMENTS (seconds into a 10 s interval) spread over it: 50-150 in each second."""
    test.assertEqual(len(moments), 1000)
    tenths = [0] * 10
    for moment in moments:
        tenths[min(int(moment), 9)] += 1
    test.assertLessEqual(max(tenths), 150, tenths)  # 100 each if perfectly even
    test.assertGreaterEqual(min(tenths), 50, tenths)


class HealthTests(CheckerTestCase):
    def setUp(self):
        super().setUp()
        self.registry = Registry(2000)
        self.evicted = []
        self.start(self.registry, self.evict)

    def evict(self, instance, reason):
        self.registry.deregister(instance.name, instance.host, instance.port)
        self.evicted.append((instance.port, reason, self.clock.seconds()))

    def test_dead_instance_evicted_exactly_after_max_failures_intervals(self):
        instance, _ = self.registry.register("svc", "10.0.0.1", 1)
        due = first_check(instance) + 2 * SETTINGS.ping_interval
        elapse(self.clock, due - 0.05, step=0.05)
        self.assertEqual(len(self.registry.lookup("svc")), 1)
        self.assertEqual(self.ping.calls, 2)
        elapse(self.clock, 0.05, step=0.05)
        self.assertEqual(self.registry.lookup("svc"), [])
        self.assertEqual([(p, r) for p, r, _ in self.evicted], [(1, "connection refused")])
        self.assertAlmostEqual(self.evicted[0][2], due)

    def test_success_resets_the_count(self):
        self.registry.register("svc", "10.0.0.1", 1)
        elapse(self.clock, 20)  # two failures
        self.ping.alive.add(1)
        elapse(self.clock, 10)  # success
        self.ping.alive.clear()
        elapse(self.clock, 20)  # two failures again
        self.assertEqual(len(self.registry.lookup("svc")), 1)
        elapse(self.clock, 10)
        self.assertEqual(self.registry.lookup("svc"), [])

    def test_live_instances_stay(self):
        self.registry.register("svc", "10.0.0.1", 7)
        self.ping.alive.add(7)
        elapse(self.clock, 1000, step=1)
        self.assertEqual(self.ping.calls, 100)
        self.assertEqual(len(self.registry.lookup("svc")), 1)

    def test_a_late_reactor_catches_up_on_the_slots_it_missed(self):
        self.registry.register("svc", "10.0.0.1", 7)
        self.ping.alive.add(7)
        self.clock.advance(10)  # one call for the whole interval
        self.assertEqual(self.ping.calls, 1)

    def test_checks_run_concurrently_up_to_the_limit_and_never_twice_at_once(self):
        for port in range(1, 11):
            self.registry.register("svc", "10.0.0.1", port)
        self.ping.hold = True
        elapse(self.clock, 10)
        self.assertEqual(len(self.ping.pending), 4)  # ping_concurrency
        elapse(self.clock, 10)
        self.assertEqual(len(self.ping.pending), 4)  # queued checks are not queued again
        while self.ping.pending:
            self.ping.pending.pop(0).callback(None)
        self.assertEqual(self.ping.calls, 10)
        self.assertEqual(len(self.registry.lookup("svc")), 10)

    def test_a_thousand_instances_are_spread_over_the_interval(self):
        moments = []
        for port in range(1, 1001):
            self.registry.register(f"svc{port % 7}", "10.0.0.1", port)
            self.ping.alive.add(port)
        real = self.ping

        def timed(host, port):
            moments.append(self.clock.seconds())
            return real(host, port)

        checker = HealthChecker(self.registry, SETTINGS, self.clock, timed, self.evict)
        checker.startService()
        self.addCleanup(checker.stopService)
        elapse(self.clock, 10)
        assert_spread(self, moments)
        elapse(self.clock, 10)  # the next round keeps each instance's offset
        self.assertEqual(
            [b - a for a, b in zip(moments, moments[1000:], strict=False)], [10.0] * 1000
        )

    def test_a_new_instance_is_checked_within_one_interval(self):
        elapse(self.clock, 3.33)
        self.registry.register("svc", "10.0.0.1", 5)
        elapse(self.clock, 10)
        self.assertEqual(self.ping.calls, 1)


class FirstListingFails(Registry):
    """A registry whose first listing of instances raises, as a bug would."""

    listings = 0

    def instances(self):
        self.listings += 1
        if self.listings == 1:
            raise RuntimeError("bug in a listing")
        return super().instances()


class HealthLoopSurvives(CheckerTestCase):
    def test_a_tick_that_raises_is_logged_and_the_next_tick_runs(self):
        registry = FirstListingFails(10)
        registry.register("svc", "10.0.0.1", 1)
        self.ping.alive.add(1)
        self.start(registry, lambda instance, reason: None)
        self.clock.advance(SETTINGS.ping_interval / SLOTS)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        elapse(self.clock, 10)
        self.assertEqual(self.ping.calls, 1)

    def test_an_eviction_that_raises_is_logged_and_checks_go_on(self):
        registry = Registry(10)
        for port in (1, 2):
            registry.register("svc", "10.0.0.1", port)

        def failing_evict(instance, reason):
            raise ZeroDivisionError(f"evicting {instance.port}")

        self.start(registry, failing_evict)
        elapse(self.clock, 30)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)
        # Not evicted, so still checked, and the eviction is tried again each round.
        self.assertEqual(len(registry.instances()), 2)
        elapse(self.clock, 10)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)
        self.assertEqual(self.ping.calls, 8)

    def test_stopping_waits_for_the_checks_in_flight(self):
        registry = Registry(10)
        registry.register("svc", "10.0.0.1", 1)
        self.ping.hold = True
        checker = HealthChecker(registry, SETTINGS, self.clock, self.ping, lambda *_: None)
        checker.startService()
        elapse(self.clock, 10)
        stopped = []
        checker.stopService().addCallback(stopped.append)
        self.assertEqual(stopped, [])
        self.ping.pending.pop().callback(None)
        self.assertEqual(stopped, [None])
        elapse(self.clock, 100, step=1)
        self.assertEqual(self.ping.calls, 1)

    def test_stopping_with_nothing_in_flight_is_immediate(self):
        checker = self.start(Registry(10), lambda *_: None)
        checker.stopService()
        elapse(self.clock, 100, step=1)
        self.assertEqual(self.ping.calls, 0)


class QuietPings(TestCase):
    async def test_a_ping_logs_nothing(self):
        port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        lines = captured_log(self)
        await tcp_ping(reactor, 2)("127.0.0.1", port.getHost().port)
        await task.deferLater(reactor, 0.05, lambda: None)  # the probe's close
        self.assertEqual([line for line in lines if "factory" in line.lower()], [])


class ChecksConnectToResolvedAddresses(CheckerTestCase):
    """A host name is checked at the addresses found at registration, never resolved again."""

    def test_addresses_are_tried_in_turn_until_one_answers(self):
        registry = Registry(10)
        registry.register("svc", "db.internal", 7, "", ("10.0.0.5", "fd00::5"))
        asked = []

        def ping(address, port):
            asked.append((address, port))
            if address == "fd00::5":
                return defer.succeed(None)
            return defer.fail(error.ConnectionRefusedError())

        checker = HealthChecker(registry, SETTINGS, self.clock, ping, lambda *_: None)
        checker.startService()
        self.addCleanup(checker.stopService)
        elapse(self.clock, 10)
        self.assertEqual(asked, [("10.0.0.5", 7), ("fd00::5", 7)])
        self.assertEqual(checker.pings, {"ok": 1, "failed": 0})

    def test_failed_pings_are_logged_first_per_source_then_counted(self):
        lines = captured_log(self)
        registry = Registry(2000)
        for port in range(1, 101):
            registry.register("svc", "10.0.0.1", port, source="192.0.2.7")
        registry.register("svc", "10.0.0.2", 1, source="192.0.2.8")
        checker = self.start(registry, lambda instance, reason: None)
        elapse(self.clock, 10)
        self.assertEqual(self.ping.calls, 101)
        failed = [line for line in lines if "failed 1/3" in line]
        self.assertEqual(len(failed), 2, failed)  # one per source, not 101
        checker.warnings.flush()
        self.assertEqual(lines[-1], "names: 99 more failed pings in the last 10 s")

    def test_a_failed_ping_of_an_ipv6_instance_writes_it_in_brackets(self):
        lines = captured_log(self)
        registry = Registry(10)
        registry.register("svc", "::1", 8002)
        self.start(registry, lambda instance, reason: None)
        elapse(self.clock, 10)
        self.assertIn("names: ping [::1]:8002 (svc) failed 1/3: connection refused", lines)


class ChecksOnSockets(TestCase):
    async def test_the_checker_connects_to_the_resolved_address_not_the_name(self):
        connected = []

        class Seen(Protocol):
            def connectionMade(self):
                connected.append(self.transport.getHost().host)

        port = reactor.listenTCP(0, Factory.forProtocol(Seen), interface="127.0.0.3")
        self.addCleanup(port.stopListening)
        registry = Registry(10)
        # A name that resolves nowhere now: only the address resolved at registration is used.
        registry.register("svc", "gone.invalid", port.getHost().port, "", ("127.0.0.3",))
        settings = NamesSettings(ping_interval=0.1, ping_timeout=2, max_failures=3)
        checker = HealthChecker(registry, settings, reactor, tcp_ping(reactor, 2), lambda *_: None)
        checker.startService()
        self.addCleanup(checker.stopService)
        for _ in range(100):
            if connected:
                break
            await task.deferLater(reactor, 0.02, lambda: None)
        self.assertEqual(connected[:1], ["127.0.0.3"])
        self.assertEqual(checker.pings["failed"], 0)
