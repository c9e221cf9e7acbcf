"""Logs checks, with a Clock: who is heard, when a source turns silent, and where it shows."""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.names import dns
from twisted.trial.unittest import SynchronousTestCase

from suite.contracts.names import Register, Watch
from suite.names import service as names_service
from suite.names.blocking import Blocking, HeldReads
from suite.names.checks import CheckRunner
from suite.names.protocol import NamesFactory
from suite.names.registry import CRITICAL, PASSING, WARNING, Check, Instance
from suite.names.silence import REPORT_GRACE, Report, Silence, parse_report, watched_host
from suite.names.store import StoreError
from suite.names.zone import ZoneAnswers
from tests.helpers import AMPPair, captured_events, elapse
from tests.names.test_checks import SETTINGS, RunnerTestCase
from tests.names.test_watch import Watcher
from tests.names.test_zone import parse, query, records

HOST = "web1.example"  # the instances' host: a name that resolves to 10.0.0.1
SILENT = "no message from web on web1.example for 60 s"
HEARD = "messages from web on web1.example"


def message(app="web", hostname=HOST, priority=14):
    return (priority, hostname, app)


def logs(check_id="logs", app="web", max_silence=60, **fields):
    fields.setdefault("status", PASSING)
    return Check(check_id, "logs", app=app, max_silence=max_silence, **fields)


class SilenceIndex(SynchronousTestCase):
    """The watch index and the heard table alone."""

    def setUp(self):
        self.clock = Clock()
        self.silence = Silence(self.clock)
        self.woken = []
        self.silence.woken = self.woken.extend

    def test_a_message_is_heard_by_its_hostname_whatever_its_case_or_by_its_sender(self):
        by_name = self.silence.watch(("i1", "c1"), "web", "Web1.Example.")
        by_address = self.silence.watch(("i2", "c2"), "web", "10.0.0.7")
        self.clock.advance(5)
        self.silence.heard([message(hostname="WEB1.example")], "10.0.0.9")
        self.assertEqual((by_name.last, by_address.last), (5, None))
        self.clock.advance(1)
        self.silence.heard([message(hostname="elsewhere"), None], "10.0.0.7")
        self.assertEqual((by_name.last, by_address.last), (5, 6))
        self.clock.advance(1)
        self.silence.heard([message(app="db"), message(app=None)], "10.0.0.7")
        self.assertEqual((by_name.last, by_address.last), (5, 6))  # another app: not them

    def test_ipv6_hosts_are_compared_in_their_compressed_form_and_ipv4_also_mapped(self):
        v6 = self.silence.watch(("i1", "c1"), "web", "2001:DB8:0::1")
        v4 = self.silence.watch(("i2", "c2"), "web", "192.0.2.5")
        self.clock.advance(3)
        self.silence.heard([message(hostname=None)], "2001:db8::1")
        self.silence.heard([message(hostname=None)], "::ffff:192.0.2.5")
        self.assertEqual((v6.last, v4.last), (3, 3))
        self.assertEqual(watched_host("2001:DB8:0::1"), "2001:db8::1")

    def test_only_watched_identities_are_kept(self):
        self.silence.watch(("i1", "c1"), "web", HOST)
        for number in range(1000):
            self.silence.heard([message(app=f"app{number}", hostname=f"h{number}")], "10.9.0.1")
            self.silence.reported([Report(f"app{number}", f"h{number}", "10.9.0.2", 1.0)])
        self.assertEqual(len(self.silence), 1)
        self.assertEqual(self.silence.identities(), [("web", HOST)])

    def test_an_identity_goes_with_its_last_check(self):
        self.silence.watch(("i1", "c1"), "web", HOST)
        self.silence.watch(("i2", "c2"), "web", HOST)
        self.silence.watch(("i3", "c3"), "web", "10.0.0.1")
        self.assertEqual(len(self.silence), 2)
        self.silence.unwatch(("i1", "c1"))
        self.assertEqual(len(self.silence), 2)
        self.silence.unwatch(("i2", "c2"))
        self.silence.watch(("i3", "c3"), "db", "10.0.0.1")  # redeclared: watches another app
        self.assertEqual(len(self.silence), 1)
        self.assertEqual(
            self.silence.identities(), [("db", "10.0.0.1"), ("db", "::ffff:10.0.0.1")]
        )

    def test_a_report_counts_with_its_grace_and_never_from_the_future(self):
        watched = self.silence.watch(("i1", "c1"), "web", HOST)
        self.clock.advance(100)
        self.silence.reported([Report("web", "WEB1.example", "10.0.0.9", 98.5)])
        self.assertEqual((watched.last, watched.since), (98.5, 98.5 + REPORT_GRACE))
        self.silence.reported([Report("web", HOST, "10.0.0.9", 90.0)])  # older: changes nothing
        self.assertEqual((watched.last, watched.since), (98.5, 98.5 + REPORT_GRACE))
        self.silence.reported([Report("web", HOST, "10.0.0.9", 1e12)])
        self.assertEqual((watched.last, watched.since), (100, 100 + REPORT_GRACE))

    def test_the_runner_is_told_only_of_identities_whose_checks_wait(self):
        watched = self.silence.watch(("i1", "c1"), "web", HOST)
        self.silence.heard([message()] * 3, "10.0.0.9")
        self.assertEqual(self.woken, [])
        watched.wait(("i1", "c1"))
        self.silence.heard([message()], "10.0.0.9")
        self.assertEqual(self.woken, [watched])

    def test_a_report_s_entries_are_checked_one_by_one(self):
        entry = {"app": "web", "hostname": None, "address": "10.0.0.1", "last": 17}
        self.assertEqual(parse_report([entry]), [Report("web", None, "10.0.0.1", 17.0)])
        for body, problem in [
            ({"app": "web"}, "a report is a JSON array"),
            ([entry, 3], "entry 1: not an object"),
            ([{**entry, "app": ""}], 'entry 0: "app" must be a non-empty string'),
            ([entry, {**entry, "hostname": 5}], 'entry 1: "hostname" must be a string or null'),
            ([{**entry, "address": None}], 'entry 0: "address" must be a string'),
            ([{**entry, "last": "now"}], 'entry 0: "last" must be a number (unix seconds)'),
            ([{**entry, "last": True}], 'entry 0: "last" must be a number (unix seconds)'),
        ]:
            with self.assertRaises(ValueError) as raised:
                parse_report(body)
            self.assertIn(problem, str(raised.exception))


class LogsTestCase(RunnerTestCase):
    """Instances on web1.example with logs checks: registered at 0, first seen at 0.1."""

    def setUp(self):
        super().setUp()
        self.server.resolve = lambda host: defer.succeed(["10.0.0.1"])
        self.silence = self.runner.silence

    def register(self, port, *checks, name="web"):
        """An instance NAME-PORT on web1.example; check IDs are made its own (IDs are global)."""
        instance_id = f"{name}-{port}"
        for check in checks:
            check.check_id = f"{check.check_id}:{instance_id}"
        instance = Instance(name, HOST, port, id=instance_id, pinged=False, checks=list(checks))
        self.successResultOf(self.server.put(instance, None, "test", "192.0.2.1"))
        return instance.id

    def hear(self, *messages, address="10.0.0.9"):
        self.silence.heard(list(messages) or [message()], address)

    def state(self, instance_id):
        """(status, output) of the instance's first check."""
        check = self.registry.by_id(instance_id).checks[0]
        return check.status, check.output


class LogsChecks(LogsTestCase):
    def test_heard_within_max_silence_it_stays_passing_and_nothing_is_written(self):
        web = self.register(80, logs())
        elapse(self.clock, 1)
        index = self.registry.index
        for _ in range(30):  # a message every 10 s for 5 minutes
            self.hear()
            elapse(self.clock, 10)
        self.assertEqual(self.state(web), (PASSING, ""))
        self.assertEqual(self.registry.index, index)

    def test_silent_after_max_silence_then_passing_at_once_when_heard_again(self):
        web = self.register(80, logs())
        elapse(self.clock, 5)
        self.hear()
        elapse(self.clock, 59.875)  # 64.875
        self.assertEqual(self.state(web), (PASSING, ""))
        elapse(self.clock, 0.25)
        self.assertEqual(self.state(web), (WARNING, SILENT))
        self.assertEqual(len(self.registry.lookup("web")), 1)  # a warning is still served
        elapse(self.clock, 300)
        self.assertEqual(self.state(web), (WARNING, SILENT))  # its output keeps its first text
        self.hear()
        self.assertEqual(self.state(web), (PASSING, HEARD))  # at once: no clock advanced
        index = self.registry.index
        self.hear()
        self.assertEqual(self.registry.index, index)
        elapse(self.clock, 60.125)
        self.assertEqual(self.state(web), (WARNING, SILENT))

    def test_a_blocking_query_of_its_name_is_woken_by_each_transition(self):
        web = self.register(80, logs())
        held = HeldReads(self.registry, self.clock, max_held=10, jitter=lambda: 1.0)
        woken = []

        def hold():
            index = self.registry.name_index("web")
            held.hold("web", Blocking(index, 600.0), lambda _: woken.append(self.state(web)[0]))

        hold()
        elapse(self.clock, 59.75)
        self.assertEqual(woken, [])  # still passing: nothing to tell
        elapse(self.clock, 0.5)
        self.assertEqual(woken, [WARNING])
        hold()
        self.hear()
        self.clock.advance(0)
        self.assertEqual(woken, [WARNING, PASSING])
        hold()
        self.hear()  # heard while passing: no change, the read stays held
        elapse(self.clock, 1)
        self.assertEqual(woken, [WARNING, PASSING])

    def test_never_heard_it_turns_silent_max_silence_after_it_was_registered(self):
        web = self.register(80, logs())
        elapse(self.clock, 60)
        self.assertEqual(self.state(web), (PASSING, ""))
        elapse(self.clock, 0.25)
        self.assertEqual(self.state(web), (WARNING, SILENT))
        self.assertEqual(self.probe.calls, [])  # nothing is connected to

    def test_a_critical_silence_drops_the_instance_from_lookups(self):
        web = self.register(80, logs(silence_status=CRITICAL))
        elapse(self.clock, 60.25)
        self.assertEqual(self.state(web), (CRITICAL, SILENT))
        self.assertEqual(self.registry.lookup("web"), [])
        self.hear()
        self.assertEqual(len(self.registry.lookup("web")), 1)

    def test_matched_by_hostname_whatever_its_case_by_sender_address_or_its_target(self):
        by_host = self.register(1, logs())  # default: the instance's host
        by_address = self.register(2, logs(target="10.0.0.7"))
        other = self.register(3, logs(target="db7.example"))
        quiet = self.register(4, logs(app="worker"))
        elapse(self.clock, 30)
        self.hear(message(hostname="WEB1.Example"))
        self.hear(message(hostname="localhost"), address="10.0.0.7")
        self.hear(message(hostname="db7.example"), message(app="worker", hostname="db7.example"))
        elapse(self.clock, 45)  # 75: only what was heard at 30 still passes
        self.assertEqual(
            [self.state(i)[0] for i in (by_host, by_address, other, quiet)],
            [PASSING, PASSING, PASSING, WARNING],
        )
        self.assertEqual(
            self.state(quiet), (WARNING, "no message from worker on web1.example for 60 s")
        )

    def test_an_ip_address_host_is_matched_by_the_sender_s_address(self):
        web = self.register(80, logs(target="10.0.0.7"))
        elapse(self.clock, 30)
        self.hear(message(hostname="web-7"), address="10.0.0.7")
        elapse(self.clock, 45)
        self.assertEqual(self.state(web), (PASSING, ""))
        elapse(self.clock, 15.25)
        self.assertEqual(self.state(web), (WARNING, "no message from web on 10.0.0.7 for 60 s"))

    def test_a_report_counts_report_grace_seconds_longer(self):
        web = self.register(80, logs())
        elapse(self.clock, 10)
        self.silence.reported([Report("web", HOST, "10.0.0.9", 9.5)])
        elapse(self.clock, 61.375)  # 71.375: 9.5 + 60 + REPORT_GRACE is 71.5
        self.assertEqual(self.state(web), (PASSING, ""))
        elapse(self.clock, 0.25)
        self.assertEqual(
            self.state(web), (WARNING, "no message from web on web1.example for 62 s")
        )

    def test_a_report_of_a_message_older_than_max_silence_leaves_it_silent(self):
        web = self.register(80, logs())
        elapse(self.clock, 100)
        self.assertEqual(self.state(web)[0], WARNING)
        self.silence.reported([Report("web", HOST, "10.0.0.9", 30.0)])
        self.assertEqual(self.state(web)[0], WARNING)
        self.silence.reported([Report("web", None, HOST, 99.0)])
        self.assertEqual(self.state(web), (PASSING, HEARD))

    def test_each_transition_is_audited_once_and_counted(self):
        events = captured_events(self)
        web = self.register(80, logs())
        elapse(self.clock, 60.25)
        for _ in range(100):
            self.hear()
        elapse(self.clock, 30)
        for _ in range(100):
            self.hear()
        elapse(self.clock, 61)
        self.server.status_audit.flush()
        audited = [e for e in events if e.get("flood_kind") == "status changes"]
        self.assertEqual(
            [(e["status"], e["before"]) for e in audited if e.get("names_event") == "status"],
            [(WARNING, PASSING), (PASSING, WARNING), (WARNING, PASSING)],
        )
        self.assertEqual(audited[0]["why"], f"logs check logs:{web}: {SILENT}")
        self.assertFalse([e for e in audited if "flood_count" in e])  # none left to count
        self.assertEqual(self.state(web)[0], WARNING)
        samples = {(name, labels): value for name, labels, value in self.runner.metric_samples()}
        self.assertEqual(samples["checks", ("logs", WARNING)], 2)
        self.assertEqual(samples["checks", ("logs", PASSING)], 1)

    def test_a_message_while_the_silence_is_being_written_turns_it_passing(self):
        web = self.register(80, logs())
        saving = self.server.store.save
        held = []

        def held_save(instance, expected=None):
            held.append(defer.Deferred())
            held[-1].addCallback(lambda _: saving(instance, expected))
            return held[-1]

        self.server.store.save = held_save
        elapse(self.clock, 60.25)
        self.assertEqual(len(held), 1)  # the silence, on its way
        self.hear()
        self.server.store.save = saving
        held[0].callback(None)
        elapse(self.clock, 0.25)
        self.assertEqual(self.state(web), (PASSING, HEARD))

    def test_a_recovery_the_store_did_not_keep_is_tried_again_at_the_next_message(self):
        web = self.register(80, logs())
        elapse(self.clock, 60.25)
        saving = self.server.store.save
        self.server.store.save = lambda instance, expected=None: defer.fail(StoreError("full"))
        self.hear()
        self.assertEqual(self.state(web)[0], WARNING)
        self.server.store.save = saving
        self.hear()
        self.assertEqual(self.state(web), (PASSING, HEARD))

    def test_a_critical_silence_deregisters_after_deregister_after(self):
        web = self.register(80, logs(silence_status=CRITICAL, deregister_after=30))
        elapse(self.clock, 60.25)
        self.assertEqual(self.state(web)[0], CRITICAL)
        elapse(self.clock, 29.5)
        self.assertIsNotNone(self.registry.by_id(web))
        elapse(self.clock, 0.5)
        self.assertIsNone(self.registry.by_id(web))
        self.assertEqual(len(self.silence), 0)  # its identity went with it

    def test_the_eviction_guard_does_not_hold_silences_back(self):
        for port in range(1, 13):
            check = Check(f"c{port}", "tcp", target=f"10.0.0.1:{port}", interval=5, status=PASSING)
            self.register(port, check, name="other")
        elapse(self.clock, 20)
        self.assertTrue(self.guard.holding)
        web = self.register(80, logs(silence_status=CRITICAL))
        elapse(self.clock, 60.25)
        self.assertEqual(self.state(web)[0], CRITICAL)

    def test_a_deregistered_or_redeclared_check_is_no_longer_watched(self):
        web = self.register(80, logs())
        elapse(self.clock, 1)
        self.assertEqual(len(self.silence), 1)
        self.register(80, Check("logs", "ttl", ttl=30, status=PASSING))
        elapse(self.clock, 1)
        self.assertEqual(len(self.silence), 0)
        self.register(80, logs())
        elapse(self.clock, 1)
        self.successResultOf(self.server.deregister_id(web, None, "test", "192.0.2.1"))
        elapse(self.clock, 1)
        self.assertEqual(len(self.silence), 0)

    def test_stopping_forgets_everything_and_a_start_grants_one_max_silence(self):
        web = self.register(80, logs())
        elapse(self.clock, 50)
        self.runner.stopService()
        self.assertEqual(len(self.silence), 0)
        self.hear()  # nothing watched: dropped
        elapse(self.clock, 50)
        self.runner.startService()  # at 100: as a new leader would
        elapse(self.clock, 59.75)
        self.assertEqual(self.state(web)[0], PASSING)
        elapse(self.clock, 0.5)
        self.assertEqual(self.state(web)[0], WARNING)

    def test_metrics_count_silent_instances_and_the_longest_silence_of_each_name(self):
        self.register(1, logs())
        self.register(2, logs())
        self.register(3, logs(app="db"), name="db")
        self.register(4, Check("t", "ttl", ttl=600, status=PASSING), name="plain")
        elapse(self.clock, 10)
        self.hear()  # web-1 and web-2: web1.example
        elapse(self.clock, 55)  # 65: db silent, web heard 55 s ago
        samples = {(name, labels): value for name, labels, value in self.runner.metric_samples()}
        self.assertEqual(samples["silent_instances", ()], 1)
        self.assertAlmostEqual(samples["log_silence_seconds", ("web",)], 55)
        self.assertAlmostEqual(
            samples["log_silence_seconds", ("db",)], 64.875
        )  # first seen at the tick after 0.1
        self.assertNotIn(("log_silence_seconds", ("plain",)), samples)
        elapse(self.clock, 10)
        samples = {(name, labels): value for name, labels, value in self.runner.metric_samples()}
        self.assertEqual(samples["silent_instances", ()], 3)
        self.assertAlmostEqual(samples["log_silence_seconds", ("web",)], 65)
        self.assertAlmostEqual(samples["log_silence_seconds", ("db",)], 74.875)


class WhereSilenceShows(LogsTestCase):
    """A silent instance as AMP watchers and DNS see it."""

    def test_an_amp_watcher_is_pushed_the_warning_and_the_recovery(self):
        factory = NamesFactory(SETTINGS, self.clock, self.server)
        pair = AMPPair(factory, Watcher())
        pair.answer(Watch, name="web")
        self.register(80, logs())
        pair.pump()
        elapse(self.clock, 60.25)
        pair.pump()
        self.hear()
        pair.pump()
        self.assertEqual(
            [[i["status"] for i in pushed] for pushed in pair.client.pushed],
            [[PASSING], [WARNING], [PASSING]],
        )

    def test_dns_serves_a_warning_with_its_weight_and_leaves_a_critical_out(self):
        zone = ZoneAnswers(self.registry, "suite", ttl=5)

        def srv():
            answer = parse(zone.answer(query("web.service.suite", dns.SRV), 65535))
            return sorted((r[3][2], r[3][1]) for r in records(answer.answers))

        for port, status in ((80, WARNING), (81, CRITICAL)):
            instance = Instance(
                "web",
                HOST,
                port,
                id=f"web-{port}",
                pinged=False,
                weights=(10, 2),
                checks=[logs(f"logs-{port}", silence_status=status)],
            )
            self.successResultOf(self.server.put(instance, None, "test", "192.0.2.1"))
        self.assertEqual(srv(), [(80, 10), (81, 10)])
        elapse(self.clock, 60.25)
        self.assertEqual(srv(), [(80, 2)])
        self.hear()
        self.assertEqual(srv(), [(80, 10), (81, 10)])


class RegisteredOverAMP(SynchronousTestCase):
    """AMP's Register with logs_app, on the name server as built: heard from its host's address."""

    def test_register_with_logs_app_then_silent_then_heard(self):
        clock = MemoryReactorClock()
        settings = names_service.NamesSettings(
            store="memory", lookup_audit="", ping_interval=10, max_failures=1000
        )
        parts = names_service.build(settings, clock)
        [runner] = [s for s in parts.services if isinstance(s, CheckRunner)]
        self.assertIs(parts.log_watcher, runner.silence)
        server = runner.server
        for service in parts.services:
            service.startService()
            self.addCleanup(service.stopService)
        pair = AMPPair(NamesFactory(settings, clock, server))
        pair.answer(
            Register, name="echo", host="127.0.0.1", port=7, logs_app="echo", max_silence=30.0
        )
        [instance] = server.registry.instances_of("echo")
        self.assertEqual(
            [(c.kind, c.app, c.max_silence, c.status) for c in instance.checks],
            [("logs", "echo", 30, PASSING)],
        )
        elapse(clock, 20)
        parts.log_watcher.heard([message(app="echo", hostname="localhost")], "127.0.0.1")
        elapse(clock, 29.75)
        check = server.registry.instances_of("echo")[0].checks[0]
        self.assertEqual(check.status, PASSING)
        elapse(clock, 0.5)
        check = server.registry.instances_of("echo")[0].checks[0]
        self.assertEqual(
            (check.status, check.output), (WARNING, "no message from echo on 127.0.0.1 for 30 s")
        )
