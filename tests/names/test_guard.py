"""The eviction guard: when most checked instances fail at once, nothing is evicted."""

from twisted.internet import defer, error
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from suite.foundation.health import health_report
from suite.names import service as names_service
from suite.names.checks import CheckRunner
from suite.names.guard import EvictionGuard
from suite.names.health import HealthChecker
from suite.names.registry import Check, Instance, Registry
from suite.names.service import NamesSettings
from tests.helpers import captured_events, elapse

SETTINGS = NamesSettings(ping_interval=10, ping_timeout=2, max_failures=3, ping_concurrency=8)


def amp_instances(registry, count):
    """COUNT pinged instances (AMP registrations): ports 1 to COUNT."""
    return [registry.register("svc", "10.0.0.1", port)[0] for port in range(1, count + 1)]


class GuardTestCase(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.registry = Registry(1000)
        self.guard = EvictionGuard(self.registry, 0.5, 10, self.clock)
        self.guard.startService()
        self.addCleanup(self.guard.stopService)
        self.events = captured_events(self)

    def guard_events(self):
        return [
            (e["log_level"].name, e["failing"], e["checked"])
            for e in self.events
            if e.get("names_event") == "eviction_guard"
        ]

    def fail_all(self, instances, lasts=0.0):
        return [self.guard.failed(i.id, i.id, lasts) for i in instances]


class Fractions(GuardTestCase):
    def test_more_than_the_fraction_and_ten_at_least_hold(self):
        instances = amp_instances(self.registry, 20)
        self.assertEqual(self.fail_all(instances[:10]), [False] * 10)  # half: not more than half
        self.assertEqual(self.fail_all(instances[10:11]), [True])
        self.assertTrue(self.guard.holding)
        self.assertEqual(self.guard_events(), [("warn", 11, 20)])

    def test_fewer_than_ten_never_hold_whatever_the_fraction(self):
        instances = amp_instances(self.registry, 9)
        self.assertEqual(self.fail_all(instances), [False] * 9)
        self.assertFalse(self.guard.holding)
        self.assertEqual(self.guard_events(), [])

    def test_ten_of_ten_hold(self):
        instances = amp_instances(self.registry, 10)
        self.assertEqual(self.fail_all(instances)[-1], True)

    def test_an_instance_failing_several_checks_counts_once(self):
        instances = amp_instances(self.registry, 20)
        for probe in range(15):
            self.guard.failed((instances[0].id, f"c{probe}"), instances[0].id)
        self.assertEqual(self.guard.failing(), 1)
        self.assertFalse(self.guard.holding)

    def test_ttl_only_instances_are_not_checked_instances(self):
        amp_instances(self.registry, 10)
        for port in range(1, 31):
            instance = Instance(
                "ttl", "10.0.0.2", port, pinged=False, checks=[Check(f"t{port}", "ttl", ttl=5)]
            )
            self.registry.put(instance, self.registry.index + 1)
        http = Instance(
            "web", "10.0.0.3", 80, pinged=False, checks=[Check("h", "http", target="http://x/")]
        )
        self.registry.put(http, self.registry.index + 1)
        self.assertEqual(self.guard.checked(), 11)

    def test_zero_is_off(self):
        guard = EvictionGuard(self.registry, 0, 10, self.clock)
        instances = amp_instances(self.registry, 50)
        self.assertEqual([guard.failed(i.id, i.id) for i in instances], [False] * 50)


class EntryAndExit(GuardTestCase):
    def test_passes_bring_the_fraction_back_and_exit_is_logged_once(self):
        instances = amp_instances(self.registry, 20)
        self.fail_all(instances)
        self.assertEqual(self.guard_events(), [("warn", 11, 20)])
        self.fail_all(instances)  # failing again: no second line
        for instance in instances[:9]:
            self.guard.passed(instance.id)
        self.assertTrue(self.guard.holding)  # 11 of 20 still
        self.guard.passed(instances[9].id)
        self.assertFalse(self.guard.holding)
        self.guard.passed(instances[10].id)
        self.assertEqual(self.guard_events(), [("warn", 11, 20), ("info", 10, 20)])

    def test_failures_older_than_the_window_no_longer_count(self):
        instances = amp_instances(self.registry, 20)
        self.fail_all(instances)
        elapse(self.clock, 9.875)
        self.assertTrue(self.guard.holding)
        elapse(self.clock, 0.25)  # nothing failed again within the interval
        self.assertFalse(self.guard.holding)
        self.assertEqual([level for level, *_ in self.guard_events()], ["warn", "info"])

    def test_a_check_with_a_longer_interval_counts_until_its_next_run(self):
        instances = amp_instances(self.registry, 20)
        self.fail_all(instances, lasts=30)
        elapse(self.clock, 29.875)
        self.assertTrue(self.guard.holding)
        elapse(self.clock, 0.25)
        self.assertFalse(self.guard.holding)

    def test_a_sliding_window_keeps_failures_refreshed_each_interval(self):
        instances = amp_instances(self.registry, 20)
        for _ in range(5):
            self.fail_all(instances)
            elapse(self.clock, 9)
        self.assertTrue(self.guard.holding)
        self.assertEqual(len(self.guard_events()), 1)


class Reports(GuardTestCase):
    def test_metric_and_health_while_it_holds(self):
        instances = amp_instances(self.registry, 20)
        self.assertEqual(list(self.guard.metric_samples()), [("eviction_guard", (), 0)])
        self.assertEqual(health_report([("names", self.guard)])["status"], "ok")
        self.fail_all(instances)
        self.assertEqual(list(self.guard.metric_samples()), [("eviction_guard", (), 1)])
        report = health_report([("names", self.guard)])
        self.assertEqual(report["status"], "degraded")
        [problem] = report["services"]["names"]["problems"]
        self.assertIn("eviction guard: 20 of 20 checked instances failing", problem)
        elapse(self.clock, 11)
        self.assertEqual(list(self.guard.metric_samples()), [("eviction_guard", (), 0)])
        self.assertEqual(health_report([("names", self.guard)])["status"], "ok")


def refused(address, port):
    return defer.fail(error.ConnectionRefusedError())


class GuardHoldsThePings(GuardTestCase):
    def start_pinger(self, ping=refused):
        evicted = []

        def evict(instance, reason):
            self.registry.remove(instance.id, self.registry.index + 1)
            evicted.append(instance.port)

        checker = HealthChecker(self.registry, SETTINGS, self.clock, ping, evict, self.guard)
        checker.startService()
        self.addCleanup(checker.stopService)
        return evicted

    def test_twelve_instances_failing_at_once_are_not_evicted(self):
        amp_instances(self.registry, 12)
        evicted = self.start_pinger()
        elapse(self.clock, 100)
        self.assertEqual(evicted, [])
        self.assertEqual(len(self.registry.lookup("svc")), 12)
        self.assertEqual([level for level, *_ in self.guard_events()], ["warn"])

    def test_once_most_recover_the_dead_are_evicted(self):
        amp_instances(self.registry, 12)
        alive = set()

        def ping(address, port):
            return defer.succeed(None) if port in alive else refused(address, port)

        evicted = self.start_pinger(ping)
        elapse(self.clock, 40)
        self.assertEqual(evicted, [])
        alive.update(range(1, 9))  # 4 still dead: fewer than 10
        elapse(self.clock, 10)
        self.assertFalse(self.guard.holding)
        elapse(self.clock, 10)  # each dead one failed once more since the guard let go
        self.assertEqual(sorted(evicted), [9, 10, 11, 12])  # their failures counted all along

    def test_nine_instances_failing_are_evicted_after_max_failures(self):
        amp_instances(self.registry, 9)
        evicted = self.start_pinger()
        elapse(self.clock, 30)
        self.assertEqual(sorted(evicted), list(range(1, 10)))
        self.assertFalse(self.guard.holding)

    def test_a_few_dead_among_many_live_are_evicted(self):
        instances = amp_instances(self.registry, 40)
        alive = {i.port for i in instances[12:]}

        def ping(address, port):
            return defer.succeed(None) if port in alive else refused(address, port)

        evicted = self.start_pinger(ping)
        elapse(self.clock, 30)
        self.assertEqual(sorted(evicted), list(range(1, 13)))  # 12 of 40: not more than half
        self.assertFalse(self.guard.holding)


class Wiring(SynchronousTestCase):
    def parts(self, **settings):
        built = names_service.build(
            NamesSettings(store="memory", lookup_audit="", **settings), MemoryReactorClock()
        )
        return built.services

    def test_build_hands_in_the_guard_the_pinger_and_the_runner_each_with_its_limit(self):
        services = self.parts(eviction_guard=0.3, ping_concurrency=7, check_concurrency=9)
        [guard] = [s for s in services if isinstance(s, EvictionGuard)]
        [checker] = [s for s in services if isinstance(s, HealthChecker)]
        [runner] = [s for s in services if isinstance(s, CheckRunner)]
        self.assertEqual(guard.fraction, 0.3)
        self.assertIs(checker.guard, guard)
        self.assertIs(runner.guard, guard)
        self.assertEqual((checker.limit.limit, runner.limit.limit), (7, 9))

    def test_checks_have_a_limit_of_their_own_by_default(self):
        settings = NamesSettings()
        self.assertEqual((settings.ping_concurrency, settings.check_concurrency), (256, 256))

    def test_the_default_is_one_half(self):
        self.assertEqual(NamesSettings().eviction_guard, 0.5)
