"""The runner of declared checks, with a Clock: schedules, results, TTLs, deregistration."""

from twisted.internet import defer, reactor, task
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import resource, server

from suite.contracts.names import Invalid
from suite.names import service as names_service
from suite.names.checks import MAX_TIMEOUT, TTL_EXPIRED, CheckRunner, phase_of
from suite.names.guard import EvictionGuard
from suite.names.health import HealthChecker
from suite.names.leader import Leadership
from suite.names.probes import Prober
from suite.names.registry import CRITICAL, PASSING, WARNING, Check, Instance, Registry
from suite.names.server import NameServer
from suite.names.service import NamesSettings
from suite.names.store import MemoryStore, StoreError
from tests.helpers import captured_events, captured_log, elapse
from tests.names.test_health import assert_spread
from tests.names.test_probes import Answer

SETTINGS = NamesSettings(ping_interval=10, ping_timeout=2, max_failures=3, check_concurrency=4)


class FakeProbe:
    """Answers checks as told by target (critical when not told), or holds them pending."""

    def __init__(self, clock):
        self.clock = clock
        self.outcomes = {}
        self.hold = False
        self.pending = []
        self.calls = []  # (time, target)
        self.timeouts = {}  # target -> the timeout of its last run

    def __call__(self, check, timeout):
        self.calls.append((self.clock.seconds(), check.target))
        self.timeouts[check.target] = timeout
        if self.hold:
            d = defer.Deferred()
            self.pending.append(d)
            return d
        return defer.succeed(self.outcomes.get(check.target, (CRITICAL, "refused")))

    def times(self, target):
        return [when for when, asked in self.calls if asked == target]


def rounded(times):
    return sorted(round(t, 6) for t in times)


class RunnerTestCase(SynchronousTestCase):
    settings = SETTINGS

    def setUp(self):
        self.clock = Clock()
        self.registry = Registry(3000)
        self.server = NameServer(self.registry, MemoryStore(), "", 5, self.clock)
        self.probe = FakeProbe(self.clock)
        self.guard = EvictionGuard(self.registry, 0.5, self.settings.ping_interval, self.clock)
        self.addCleanup(self.guard.stopService)
        self.runner = CheckRunner(self.server, self.settings, self.clock, self.probe, self.guard)
        self.runner.startService()
        self.addCleanup(self.runner.stopService)

    def register(self, port, *checks, name="web"):
        instance = Instance(
            name, "10.0.0.1", port, id=f"{name}-{port}", pinged=False, checks=list(checks)
        )
        self.successResultOf(self.server.put(instance, None, "test", "192.0.2.1"))
        return instance.id

    def check(self, instance_id, check_id):
        return self.registry.by_id(instance_id).check(check_id)

    def first_run(self, instance_id, check_id, interval, registered=0.0):
        """When a check seen at REGISTERED (plus the tick of following the registry) first runs."""
        seen = registered + self.settings.ping_interval / 100
        offset = phase_of((instance_id, check_id)) * interval
        while offset <= seen:
            offset += interval
        return offset


def advance_to(clock, until):
    """Move CLOCK to UNTIL, each delayed call run at its own time (not all at UNTIL)."""
    for _ in range(100_000):
        due = [call.getTime() for call in clock.getDelayedCalls()]
        soonest = min(due, default=until)
        if soonest > until:
            break
        clock.advance(max(soonest - clock.seconds(), 0.0))
        if soonest in [call.getTime() for call in clock.getDelayedCalls()]:
            clock.advance(1e-9)  # rounding left it a hair ahead
    clock.advance(max(until - clock.seconds(), 0.0))


def tcp(check_id, target="10.0.0.1:80", **fields):
    return Check(check_id, "tcp", target=target, **fields)


class Transitions(RunnerTestCase):
    def test_passing_critical_passing_and_nothing_written_when_nothing_changes(self):
        web = self.register(80, tcp("c", interval=5))
        self.probe.outcomes["10.0.0.1:80"] = (PASSING, "TCP connect 10.0.0.1:80: Success")
        first = self.first_run(web, "c", 5)
        advance_to(self.clock, first)
        self.assertEqual(rounded(self.probe.times("10.0.0.1:80")), rounded([first]))
        self.assertEqual(self.check(web, "c").status, PASSING)
        self.assertEqual(self.registry.lookup("web")[0].id, web)
        index = self.registry.index

        advance_to(self.clock, first + 5)  # passes again: nothing written, no index raised
        self.assertEqual(len(self.probe.calls), 2)
        self.assertEqual(self.registry.index, index)

        self.probe.outcomes["10.0.0.1:80"] = (CRITICAL, "dial tcp 10.0.0.1:80: refused")
        advance_to(self.clock, first + 10)
        check = self.check(web, "c")
        self.assertEqual((check.status, check.output), (CRITICAL, "dial tcp 10.0.0.1:80: refused"))
        self.assertEqual(self.registry.lookup("web"), [])
        self.assertGreater(self.registry.index, index)

        self.probe.outcomes["10.0.0.1:80"] = (PASSING, "back")
        advance_to(self.clock, first + 15)
        self.assertEqual(self.check(web, "c").status, PASSING)
        self.assertEqual(len(self.registry.lookup("web")), 1)

    def test_status_changes_are_audited(self):
        events = captured_events(self)
        web = self.register(80, tcp("c", interval=5))
        self.probe.outcomes["10.0.0.1:80"] = (WARNING, "HTTP GET x: 429 Too Many Requests")
        advance_to(self.clock, self.first_run(web, "c", 5))
        status = [e for e in events if e.get("names_event") == "status"]
        self.assertEqual([(e["status"], e["before"]) for e in status], [(WARNING, CRITICAL)])
        self.assertIn("429 Too Many Requests", status[0]["why"])
        self.assertEqual(len(self.registry.lookup("web")), 1)  # warning is served

    def test_without_an_interval_a_check_runs_every_ping_interval(self):
        web = self.register(80, tcp("c"))
        first = self.first_run(web, "c", 10)
        advance_to(self.clock, first + 25)
        self.assertEqual(
            rounded(self.probe.times("10.0.0.1:80")), rounded([first, first + 10, first + 20])
        )

    def test_an_interval_under_a_second_is_one_second(self):
        web = self.register(80, tcp("c", interval=0.01))
        first = self.first_run(web, "c", 1)
        advance_to(self.clock, first + 2.5)
        self.assertEqual(
            rounded(self.probe.times("10.0.0.1:80")), rounded([first, first + 1, first + 2])
        )

    def test_a_late_reactor_runs_a_check_once_not_once_per_missed_interval(self):
        self.register(80, tcp("c", interval=1))
        self.clock.advance(0.1)  # the registry followed
        self.clock.advance(100)
        self.assertEqual(len(self.probe.calls), 1)

    def test_a_deregistered_instance_is_no_longer_checked(self):
        web = self.register(80, tcp("c", interval=1))
        elapse(self.clock, 3)
        runs = len(self.probe.calls)
        self.assertGreaterEqual(runs, 2)
        self.successResultOf(self.server.deregister_id(web, None, "test", "192.0.2.1"))
        elapse(self.clock, 5)
        self.assertEqual(len(self.probe.calls), runs)

    def test_a_redeclared_check_runs_against_its_new_target(self):
        self.register(80, tcp("c", interval=1))
        elapse(self.clock, 2)
        self.register(80, tcp("c", target="10.0.0.1:81", interval=1))
        elapse(self.clock, 3)
        targets = [target for _, target in self.probe.calls]
        self.assertEqual(targets[-2:], ["10.0.0.1:81"] * 2)
        self.assertEqual(set(targets), {"10.0.0.1:80", "10.0.0.1:81"})

    def test_a_result_for_a_check_redeclared_while_it_ran_is_dropped(self):
        web = self.register(80, tcp("c", interval=1, status=PASSING))
        self.probe.hold = True
        elapse(self.clock, 2)
        self.register(80, tcp("c", target="10.0.0.1:81", interval=1, status=PASSING))
        self.probe.pending.pop(0).callback((CRITICAL, "old target"))
        self.assertEqual(self.check(web, "c").status, PASSING)

    def test_results_are_counted_by_kind_and_status(self):
        self.register(80, tcp("c", interval=1))
        self.probe.outcomes["10.0.0.1:80"] = (PASSING, "ok")
        elapse(self.clock, 3)
        samples = {(name, labels): value for name, labels, value in self.runner.metric_samples()}
        self.assertGreaterEqual(samples["checks", ("tcp", PASSING)], 2)
        self.assertNotIn(("checks", ("tcp", CRITICAL)), samples)


class Spreading(RunnerTestCase):
    def test_a_thousand_checks_are_spread_over_their_interval(self):
        for port in range(1, 1001):
            self.register(port, tcp(f"c{port}", target=f"10.0.0.1:{port}"), name=f"svc{port % 7}")
        self.clock.advance(0.1)  # the registry followed
        start = self.clock.seconds()
        elapse(self.clock, 10)
        assert_spread(self, [when - start for when, _ in self.probe.calls])
        elapse(self.clock, 10)  # each keeps its offset
        self.assertEqual(len(self.probe.calls), 2000)
        first = {target: when for when, target in self.probe.calls[:1000]}
        self.assertEqual(
            rounded(when - first[target] for when, target in self.probe.calls[1000:]),
            [10.0] * 1000,
        )


class Concurrency(RunnerTestCase):
    def test_at_most_check_concurrency_run_and_never_one_check_twice(self):
        for port in range(1, 11):
            self.register(port, tcp(f"c{port}", target=f"10.0.0.1:{port}", interval=1))
        self.probe.hold = True
        elapse(self.clock, 2)
        self.assertEqual(len(self.probe.pending), 4)  # check_concurrency
        elapse(self.clock, 5)
        self.assertEqual(len(self.probe.pending), 4)  # nothing queued twice, nothing more run
        self.assertEqual(len({target for _, target in self.probe.calls}), 4)
        self.probe.hold = False
        while self.probe.pending:
            self.probe.pending.pop(0).callback((PASSING, "ok"))
        self.assertEqual(len({target for _, target in self.probe.calls}), 10)

    def test_a_check_takes_at_most_its_interval_and_five_minutes(self):
        ten_years = 10 * 365 * 86400
        self.register(1, tcp("short", target="10.0.0.1:1", interval=5, timeout=ten_years))
        self.register(2, tcp("long", target="10.0.0.1:2", interval=3600, timeout=ten_years))
        self.register(3, tcp("own", target="10.0.0.1:3", interval=5, timeout=2))
        self.register(4, tcp("default", target="10.0.0.1:4", timeout=ten_years))
        elapse(self.clock, 3600)
        self.assertEqual(
            self.probe.timeouts,
            {"10.0.0.1:1": 5, "10.0.0.1:2": MAX_TIMEOUT, "10.0.0.1:3": 2, "10.0.0.1:4": 10},
        )
        self.assertEqual(MAX_TIMEOUT, 300)

    def test_stopping_cancels_checks_in_flight_and_keeps_none_of_their_results(self):
        web = self.register(80, tcp("c", interval=1, status=PASSING))
        self.probe.hold = True
        elapse(self.clock, 2)
        [pending] = self.probe.pending
        stopped = []
        self.runner.stopService().addCallback(stopped.append)
        self.assertEqual(stopped, [None])
        self.assertTrue(pending.called)  # cancelled
        self.assertEqual(self.check(web, "c").status, PASSING)
        elapse(self.clock, 5)
        self.assertEqual(len(self.probe.calls), 1)

    def test_a_restart_follows_the_registry_again(self):
        self.register(80, tcp("c", interval=1))
        self.runner.stopService()
        elapse(self.clock, 3)
        self.assertEqual(self.probe.calls, [])
        self.runner.startService()
        elapse(self.clock, 3)
        self.assertGreaterEqual(len(self.probe.calls), 2)


class PingsApart(SynchronousTestCase):
    """The name server as built: declared checks that hang never hold the pings back."""

    def test_pings_run_while_checks_fill_their_own_limit(self):
        clock = MemoryReactorClock()
        settings = NamesSettings(
            store="memory", lookup_audit="", ping_interval=10, ping_concurrency=2
        )
        services = names_service.build(settings, clock).services
        [server] = [s for s in services if isinstance(s, NameServer)]
        for service in services:
            service.startService()
            self.addCleanup(service.stopService)
        ten_years = 10 * 365 * 86400
        for port in range(1, 5):  # connects that never complete: they hang until timed out
            instance = Instance(
                "slow",
                "10.0.0.1",
                port,
                pinged=False,
                checks=[tcp(f"c{port}", target=f"10.0.0.9:{port}", timeout=ten_years)],
            )
            self.successResultOf(server.put(instance, None, "test", "192.0.2.1"))
        elapse(clock, 10)  # every check has started, and hangs
        for port in range(1001, 1004):
            server.registry.register("amp", "10.0.0.2", port)
        elapse(clock, 10)
        pinged = sorted(port for host, port, *_ in clock.tcpClients if host == "10.0.0.2")
        self.assertEqual(pinged, [1001, 1002, 1003])
        checks = [port for host, port, *_ in clock.tcpClients if host == "10.0.0.9"]
        self.assertEqual(sorted(set(checks)), [1, 2, 3, 4])  # all four: a limit of their own


def ttl(check_id, seconds=30, **fields):
    return Check(check_id, "ttl", ttl=seconds, **fields)


class TTLChecks(RunnerTestCase):
    def heartbeat(self, instance_id, check_id, status=PASSING):
        """What the HTTP API does for a pass: the TTL starts again, the status is set."""
        self.server.ttl_updated(check_id)

        def mutate(changed):
            changed.check(check_id).status = status
            changed.check(check_id).output = ""

        self.successResultOf(self.server.change(self.registry.by_id(instance_id), mutate, "pass"))

    def test_a_ttl_check_not_passed_within_its_ttl_expires(self):
        web = self.register(80, ttl("t", status=PASSING))
        elapse(self.clock, 30)  # first seen at 0.1: a grace of one TTL
        self.assertEqual(self.check(web, "t").status, PASSING)
        elapse(self.clock, 0.25)
        check = self.check(web, "t")
        self.assertEqual((check.status, check.output), (CRITICAL, TTL_EXPIRED))
        self.assertEqual(self.probe.calls, [])  # nothing is connected to

    def test_a_heartbeat_restarts_the_ttl(self):
        web = self.register(80, ttl("t", status=PASSING))
        elapse(self.clock, 20)
        self.clock.advance(0.1)
        self.server.ttl_updated("t")  # a pass that changes nothing: the TTL starts again
        elapse(self.clock, 29.875)
        self.assertEqual(self.check(web, "t").status, PASSING)
        elapse(self.clock, 0.25)
        self.assertEqual(self.check(web, "t").status, CRITICAL)

    def test_an_expired_check_passes_again_from_outside_only_and_expires_again(self):
        web = self.register(80, ttl("t", status=PASSING))
        elapse(self.clock, 31)
        self.assertEqual(self.check(web, "t").status, CRITICAL)
        elapse(self.clock, 100)
        self.assertEqual(self.check(web, "t").status, CRITICAL)  # never passed by the runner
        index = self.registry.index
        elapse(self.clock, 100)
        self.assertEqual(self.registry.index, index)  # expiring again writes nothing
        self.heartbeat(web, "t")
        self.assertEqual(self.check(web, "t").status, PASSING)
        elapse(self.clock, 29.875)
        self.assertEqual(self.check(web, "t").status, PASSING)
        elapse(self.clock, 0.25)
        self.assertEqual(self.check(web, "t").output, TTL_EXPIRED)

    def test_a_change_to_another_check_keeps_the_ttl_running_from_its_heartbeat(self):
        web = self.register(80, ttl("t", status=PASSING), tcp("c", interval=5, status=PASSING))
        self.probe.outcomes["10.0.0.1:80"] = (PASSING, "ok")
        elapse(self.clock, 20)
        self.server.ttl_updated("t")
        self.probe.outcomes["10.0.0.1:80"] = (WARNING, "busy")  # the instance changes
        elapse(self.clock, 29.75)
        self.assertEqual(self.check(web, "c").status, WARNING)
        self.assertEqual(self.check(web, "t").status, PASSING)
        elapse(self.clock, 0.5)
        self.assertEqual(self.check(web, "t").status, CRITICAL)

    def test_a_heartbeat_from_before_the_start_counts(self):
        self.runner.stopService()
        web = self.register(80, ttl("t", status=PASSING))
        self.server.ttl_updated("t")
        elapse(self.clock, 25)
        self.runner.startService()
        elapse(self.clock, 5)
        self.assertEqual(self.check(web, "t").status, CRITICAL)


class Deregistration(RunnerTestCase):
    def test_an_instance_critical_for_deregister_after_is_evicted(self):
        events = captured_events(self)
        web = self.register(80, tcp("c", interval=5, deregister_after=60, status=PASSING))
        first = self.first_run(web, "c", 5)
        advance_to(self.clock, first)
        self.assertEqual(self.check(web, "c").status, CRITICAL)
        advance_to(self.clock, first + 59.99)
        self.assertIsNotNone(self.registry.by_id(web))
        advance_to(self.clock, first + 60)
        self.assertIsNone(self.registry.by_id(web))
        self.server.warnings.flush()
        [evicted] = [e for e in events if e.get("names_event") == "evict"]
        self.assertIn("check c critical for 60 s", evicted["reason"])
        self.assertIn("names: evict web 10.0.0.1:80: check c critical", formatEvent(evicted))
        self.assertEqual(self.server.evictions, 1)

    def test_a_check_that_recovers_in_time_keeps_its_instance(self):
        web = self.register(80, tcp("c", interval=5, deregister_after=60, status=PASSING))
        elapse(self.clock, 40)
        self.probe.outcomes["10.0.0.1:80"] = (PASSING, "ok")
        elapse(self.clock, 10)
        self.probe.outcomes.clear()
        elapse(self.clock, 40)
        self.assertIsNotNone(self.registry.by_id(web))

    def test_a_ttl_check_critical_too_long_deregisters(self):
        web = self.register(80, ttl("t", 10, deregister_after=30, status=PASSING))
        elapse(self.clock, 10.25)
        self.assertEqual(self.check(web, "t").status, CRITICAL)
        elapse(self.clock, 29.5)
        self.assertIsNotNone(self.registry.by_id(web))
        elapse(self.clock, 0.5)
        self.assertIsNone(self.registry.by_id(web))

    def test_without_deregister_after_a_critical_instance_stays(self):
        web = self.register(80, tcp("c", interval=5))
        elapse(self.clock, 1000, step=1)
        self.assertEqual(self.check(web, "c").status, CRITICAL)
        self.assertIsNotNone(self.registry.by_id(web))


class GuardHoldsTheRunner(RunnerTestCase):
    def register_many(self, count, **fields):
        ids = []
        for port in range(1, count + 1):
            ids.append(
                self.register(
                    port, tcp(f"c{port}", target=f"10.0.0.1:{port}", status=PASSING, **fields)
                )
            )
        return ids

    def statuses(self, ids):
        return [self.registry.by_id(i).checks[0].status for i in ids]

    def test_failures_of_most_instances_at_once_turn_nothing_more_critical(self):
        lines = captured_log(self)
        ids = self.register_many(40, interval=5, deregister_after=20)
        elapse(self.clock, 100)
        self.assertTrue(self.guard.holding)
        statuses = self.statuses(ids)
        # The first 20 failed before more than half had: those turned critical, no more.
        self.assertEqual(statuses.count(CRITICAL), 20)
        self.assertEqual(len(self.registry), 40)  # nothing deregistered while it holds
        self.assertEqual(len([line for line in lines if "eviction guard on" in line]), 1)

        for port in range(1, 41):
            self.probe.outcomes[f"10.0.0.1:{port}"] = (PASSING, "ok")
        elapse(self.clock, 5)
        self.assertFalse(self.guard.holding)
        # The time under the guard did not count: each was checked again, not deregistered.
        self.assertEqual(len(self.registry), 40)
        self.assertEqual(self.statuses(ids), [PASSING] * 40)
        self.assertEqual(len([line for line in lines if "eviction guard off" in line]), 1)

    def test_fewer_than_ten_failing_are_turned_critical_and_deregistered(self):
        ids = self.register_many(9, interval=5, deregister_after=20)
        elapse(self.clock, 10)
        self.assertFalse(self.guard.holding)
        self.assertEqual(self.statuses(ids), [CRITICAL] * 9)
        elapse(self.clock, 20)
        self.assertEqual(len(self.registry), 0)

    def test_ttl_expiries_are_not_held_back(self):
        self.register_many(12, interval=5)
        elapse(self.clock, 20)
        self.assertTrue(self.guard.holding)
        web = self.register(99, ttl("t", 10, status=PASSING))
        elapse(self.clock, 10.25)
        self.assertTrue(self.guard.holding)
        self.assertEqual(self.check(web, "t").output, TTL_EXPIRED)


class RefusingStore(MemoryStore):
    """A memory store that refuses every save with `refusal`, once it is set."""

    refusal = None

    def save(self, instance, expected=None):
        if self.refusal is not None:
            return defer.fail(self.refusal)
        return super().save(instance, expected)


class UnkeptResults(RunnerTestCase):
    def setUp(self):
        super().setUp()
        self.store = self.server.store = RefusingStore()

    def refused_results_are_logged_once_per_source_then_counted(self, refusal, error):
        lines = captured_log(self)
        ids = []
        for port, source in ((1, "192.0.2.1"), (2, "192.0.2.1"), (3, "192.0.2.2")):
            check = tcp(f"c{port}", target=f"10.0.0.1:{port}", interval=1)
            instance = Instance("web", "10.0.0.1", port, id=f"web-{port}", checks=[check])
            self.successResultOf(self.server.put(instance, None, "test", source))
            ids.append(instance.id)
        self.store.refusal = refusal
        elapse(self.clock, 10)  # about ten runs of each check, each result refused
        runs = len(self.probe.calls)
        self.assertGreaterEqual(runs, 27)
        self.assertEqual([self.registry.by_id(i).checks[0].output for i in ids], [""] * 3)
        unkept = [line for line in lines if "was not kept" in line]
        self.assertEqual(len(unkept), 2)  # one per source
        named = sorted(line.split(" of web-")[1][0] for line in unkept)  # web-N: N
        self.assertIn(named, (["1", "3"], ["2", "3"]))  # one instance of each source
        for line in unkept:
            self.assertTrue(line.endswith(f" (web) was not kept: {error}"), line)
        self.runner.stopService()
        summaries = [line for line in lines if "more unkept check results" in line]
        self.assertEqual(
            summaries, [f"names: {runs - 2} more unkept check results in the last 10 s"]
        )
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_results_the_registry_refuses_are_logged_once_per_source_then_counted(self):
        self.refused_results_are_logged_once_per_source_then_counted(
            Invalid("instance larger than 512 KiB as stored"),
            "instance larger than 512 KiB as stored",
        )

    def test_results_the_store_cannot_write_are_logged_once_per_source_then_counted(self):
        self.refused_results_are_logged_once_per_source_then_counted(
            StoreError("disk full"), "registry store unavailable: disk full"
        )

    def test_a_failure_nobody_expected_is_logged_with_its_traceback_once(self):
        events = captured_events(self)
        web = self.register(80, tcp("c", interval=1))
        self.server.change = lambda *args: defer.fail(ZeroDivisionError("a bug"))
        elapse(self.clock, 5)
        logged = [e for e in events if e.get("flood_kind") == "unkept check results"]
        self.assertEqual(len(logged), 1)
        self.assertIn(f"of {web} (web) was not kept: a bug", formatEvent(logged[0]))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class FakeEtcdStore:
    """What Leadership reads and writes of its store here: the leader's term and watch."""

    term = None
    on_leader = None


class UnderLeadership(RunnerTestCase):
    def test_the_leader_runs_the_checks_and_stops_them_when_it_steps_down(self):
        self.runner.stopService()
        self.register(80, tcp("c", interval=1))
        checker = HealthChecker(self.registry, SETTINGS, self.clock, None, None)
        leadership = Leadership(FakeEtcdStore(), 3, self.clock, checker, runner=self.runner)
        leadership.running = True
        elapse(self.clock, 3)
        self.assertEqual(self.probe.calls, [])  # not leading: nothing runs
        leadership._lead(7)
        self.assertTrue(self.runner.running and checker.running)
        elapse(self.clock, 3)
        runs = len(self.probe.calls)
        self.assertGreaterEqual(runs, 2)
        self.assertIn(("checks", ("tcp", CRITICAL), runs), list(leadership.metric_samples()))
        leadership._step_down("another leads")
        self.assertFalse(self.runner.running or checker.running)
        elapse(self.clock, 3)
        self.assertEqual(len(self.probe.calls), runs)


class RealChecks(TestCase):
    """The runner with its prober against a loopback site: a check turns the instance live."""

    async def test_an_http_check_passes_and_the_instance_is_served(self):
        root = resource.Resource()
        root.putChild(b"health", Answer(200, b"fine"))
        port = reactor.listenTCP(0, server.Site(root), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}/health"
        registry = Registry(10)
        names = NameServer(registry, MemoryStore(), "", 5, reactor)
        settings = NamesSettings(ping_interval=0.05, check_concurrency=4)
        prober = Prober(reactor, lambda host: defer.succeed([]), registry.addresses)
        runner = CheckRunner(names, settings, reactor, prober.probe)
        runner.startService()
        self.addCleanup(runner.stopService)
        instance = Instance(
            "web", "127.0.0.1", 80, pinged=False, checks=[Check("h", "http", target=url)]
        )
        await names.put(instance, None, "test", "192.0.2.1")
        self.assertEqual(registry.lookup("web"), [])  # critical until checked
        for _ in range(100):
            if registry.lookup("web"):
                break
            await task.deferLater(reactor, 0.02, lambda: None)
        check = registry.by_id(instance.id).check("h")
        self.assertEqual(check.status, PASSING)
        self.assertEqual(check.output, f"HTTP GET {url}: 200 OK Output: fine")
