"""
The registry on etcd, in process against a real etcd: replicas' copies,
writes, the watch's resume and resync, leadership, and an etcd outage.
"""

import time
from pathlib import Path

from twisted.internet import defer, reactor, task
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from suite.contracts.names import Invalid, Unavailable
from suite.foundation.config import ConfigError, settings_for
from suite.foundation.interfaces import IHealthSource, IMetricSource
from suite.names.allowed import AllowedHosts
from suite.names.etcd import EtcdClient, encode
from suite.names.etcd_store import MAX_TXN_OPS, EtcdStore, NotLeader, etcd_endpoints
from suite.names.health import HealthChecker
from suite.names.leader import Leadership
from suite.names.registry import Instance, Registry
from suite.names.server import NameServer
from suite.names.service import NamesSettings
from suite.names.store import IRegistryStore
from tests.etcd import EtcdCluster
from tests.helpers import captured_log
from tests.names.test_protocol import FakeResolver


async def until(predicate, timeout: float = 5.0, step: float = 0.01) -> float:
    """Seconds until PREDICATE() held (AssertionError after TIMEOUT)."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s")
        await task.deferLater(reactor, step, lambda: None)
    return time.monotonic() - started


def instances(server) -> list[tuple]:
    return [(i.name, i.host, i.port, i.description) for i in server.registry.instances()]


class ReplicaTestCase(TestCase):
    """Replicas (NameServers on EtcdStores) of one registry, on a real etcd started per test."""

    members = 1

    def setUp(self):
        self.directory = Path(self.mktemp())
        self.directory.mkdir(parents=True)
        self.etcd = EtcdCluster(self.directory, self.members)
        self.addCleanup(self.etcd.stop_all)

    def store(self, registry=None, timeout=2.0) -> EtcdStore:
        client = EtcdClient(reactor, self.etcd.endpoints, timeout)
        return EtcdStore(
            client, registry or Registry(1000, AllowedHosts()), "/test/names/", reactor
        )

    async def replica(self, max_instances_per_source=1000, **store_options) -> NameServer:
        store = self.store(**store_options)
        server = NameServer(
            store.registry,
            store,
            "",
            5,
            reactor,
            resolve=FakeResolver(),
            max_instances_per_source=max_instances_per_source,
        )
        server.startService()
        self.addCleanup(server.stopService)
        await until(lambda: store.loaded)
        return server

    def register(self, server, name, port, description=""):
        return server.register(name, "127.0.0.1", port, description, None, "test", "test")


class ReplicaTests(ReplicaTestCase):
    async def test_addresses_and_sources_are_shared_by_the_replicas(self):
        one, two = (
            await self.replica(max_instances_per_source=2),
            await self.replica(max_instances_per_source=2),
        )
        await one.register("db", "db.internal", 5432, "", None, "192.0.2.7:1", "192.0.2.7")
        await until(lambda: len(two.registry) == 1, 1.0)
        instance = two.registry.get("db", "db.internal", 5432)
        self.assertEqual(
            (instance.addresses, instance.source), (("10.0.0.5", "fd00::5"), "192.0.2.7")
        )
        await two.register("db", "10.0.0.1", 1, "", None, "192.0.2.7:2", "192.0.2.7")
        await until(lambda: len(one.registry) == 2, 1.0)
        with self.assertRaisesRegex(Invalid, "max_instances_per_source"):
            await one.register("db", "10.0.0.1", 2, "", None, "192.0.2.7:3", "192.0.2.7")

    async def test_values_of_the_previous_version_that_no_longer_pass_are_skipped(self):
        def put(key, value):
            self.etcd.call(
                "/v3/kv/put",
                {"key": encode("/test/names/instances/" + key), "value": encode(value)},
            )

        put("echo/127.0.0.1/7001", '{"description": "kept"}')
        put("meta/169.254.169.254/80", '{"description": ""}')
        put("named/db.internal/5432", '{"description": ""}')
        log = captured_log(self)
        one = await self.replica()
        self.assertEqual(instances(one), [("echo", "127.0.0.1", 7001, "kept")])
        skipped = [line for line in log if "not served" in line]
        self.assertEqual(len(skipped), 1, skipped)
        self.assertTrue(skipped[0].startswith("names: 2 instances in etcd not served"), skipped)
        put("wide/0.0.0.0/1", '{"description": ""}')  # as a replica of the previous version would
        await until(lambda: any("0.0.0.0 is an unspecified" in line for line in log), 1.0)
        self.assertEqual(len(one.registry), 1)

    async def test_a_registration_on_one_replica_reaches_the_other_within_a_second(self):
        one, two = await self.replica(), await self.replica()
        await self.register(one, "echo", 7001, "line echo")
        # answered after etcd acknowledged, and after this replica's own copy holds it
        self.assertEqual(instances(one), [("echo", "127.0.0.1", 7001, "line echo")])
        stored = self.etcd.call(
            "/v3/kv/range", {"key": encode("/test/names/instances/echo/127.0.0.1/7001")}
        )
        self.assertEqual(stored["count"], "1")
        self.assertLess(await until(lambda: instances(two) == instances(one)), 1.0)

        await self.register(two, "echo", 7001, "updated")
        await until(lambda: instances(one) == [("echo", "127.0.0.1", 7001, "updated")], 1.0)
        await two.deregister("echo", "127.0.0.1", 7001, None, "test", "test")
        self.assertEqual(instances(two), [])
        self.assertLess(await until(lambda: instances(one) == []), 1.0)

    async def test_a_new_replica_reads_the_registry_whole(self):
        one = await self.replica()
        for port in (7001, 7002):
            await self.register(one, "echo", port)
        two = await self.replica()
        self.assertEqual(instances(two), instances(one))
        self.assertEqual(two.lookup("echo", "")["instances"][0]["port"], 7001)

    async def test_watchers_on_another_replica_hear_of_changes(self):
        one, two = await self.replica(), await self.replica()
        heard = []
        two.registry.on_change(heard.append)
        await self.register(one, "echo", 7001)
        await until(lambda: heard == ["echo"], 1.0)

    async def test_writes_asked_together_go_as_few_transactions(self):
        one = await self.replica()
        transactions = []
        call = one.store.client.call
        one.store.client.call = lambda path, body: transactions.append(path) or call(path, body)
        await defer.gatherResults([self.register(one, "echo", port) for port in range(1, 201)])
        self.assertEqual(len(one.registry), 200)
        self.assertEqual(transactions.count("/v3/kv/txn"), -(-200 // MAX_TXN_OPS))

    async def test_the_watch_resumes_from_its_revision_after_a_reconnect(self):
        one, two = await self.replica(), await self.replica()
        reads = []
        request = two.store.request
        two.store.request = lambda path, body: reads.append(path) or request(path, body)
        two.store._watching.cancel()
        await self.register(one, "echo", 7001)
        await until(lambda: len(two.registry) == 1, 3.0)
        self.assertNotIn("/v3/kv/range", reads)

    async def test_a_compacted_revision_is_resynced_with_a_range_read(self):
        one, two = await self.replica(), await self.replica()
        await self.register(one, "gone", 7000)
        await until(lambda: len(two.registry) == 1)
        log = captured_log(self)
        heard = []
        two.registry.on_change(heard.append)
        two.store._reconnect_call = None
        connect, two.store._connect = two.store._connect, lambda: None  # keep it away meanwhile
        two.store._watching.cancel()
        await until(lambda: two.store._watching is None)
        await one.deregister("gone", "127.0.0.1", 7000, None, "test", "test")
        await self.register(one, "echo", 7001)
        answer = self.etcd.call("/v3/kv/range", {"key": encode("x")})
        self.etcd.call("/v3/kv/compaction", {"revision": answer["header"]["revision"]})
        two.store._connect = connect
        connect()
        await until(lambda: instances(two) == [("echo", "127.0.0.1", 7001, "")], 3.0)
        self.assertEqual(sorted(heard), ["echo", "gone"])  # the differences, no more
        self.assertTrue(any("compacted" in line for line in log), log)

    async def test_keys_that_are_not_instances_are_ignored(self):
        log = captured_log(self)
        self.etcd.call(
            "/v3/kv/put", {"key": encode("/test/names/instances/x"), "value": encode("?")}
        )
        one = await self.replica()
        self.assertEqual(len(one.registry), 0)
        self.assertTrue(any("/test/names/instances/x is not an instance" in line for line in log))


class OutageTests(ReplicaTestCase):
    async def test_etcd_stopped_unavailable_lookups_go_on_and_it_recovers(self):
        one = await self.replica()
        await self.register(one, "echo", 7001)
        log = captured_log(self)
        self.etcd.stop("m0")
        stopped = time.monotonic()
        for _ in range(3):
            with self.assertRaises(Unavailable):
                await self.register(one, "web", 7002)
        self.assertEqual(one.lookup("echo", "")["instances"][0]["port"], 7001)
        [(severity, text)] = one.health_problems()
        self.assertEqual(severity, "degraded")
        self.assertIn("etcd unreachable", text)
        self.assertEqual(
            sum("etcd unreachable" in line or "refused" in line for line in log), 1, log
        )
        self.assertEqual(self.flushLoggedErrors(), [])

        self.etcd.start("m0")
        self.etcd.wait_healthy("m0")
        await until(lambda: not one.health_problems(), 5.0)
        self.assertLess(time.monotonic() - stopped, 30)
        await self.register(one, "web", 7002)
        two = await self.replica()
        await until(lambda: len(two.registry) == 2, 1.0)
        self.assertEqual(sum("reached again" in line for line in log), 1, log)

    async def test_lookups_before_the_first_read_are_unavailable(self):
        self.etcd.stop("m0")
        store = self.store(timeout=0.5)
        server = NameServer(store.registry, store, "", 5, reactor)
        server.startService()
        self.addCleanup(server.stopService)
        with self.assertRaises(Unavailable):
            server.lookup("echo", "")
        with self.assertRaises(Unavailable):
            server.watch("echo", object())
        self.assertIn("not been read", server.health_problems()[0][1])


class ClusterTests(ReplicaTestCase):
    members = 3

    async def test_one_member_stopped_the_registry_keeps_working(self):
        one, two = await self.replica(), await self.replica()
        self.etcd.stop("m0")  # the first endpoint: requests go on to the next
        await self.register(one, "echo", 7001)
        await until(lambda: len(two.registry) == 1, 3.0)
        await two.deregister("echo", "127.0.0.1", 7001, None, "test", "test")
        await until(lambda: len(one.registry) == 0, 3.0)


class NoCheck(HealthChecker):
    """A checker that only says whether it runs (the leader's)."""

    def __init__(self):
        self.running = 0

    def startService(self):
        self.running = 1

    def stopService(self):
        self.running = 0

    def metric_samples(self):
        return ()


class LeadershipTests(ReplicaTestCase):
    async def candidates(self, count, lease_ttl=2):
        candidates = []
        for number in range(count):
            server = await self.replica()
            leadership = Leadership(
                server.store, lease_ttl, reactor, NoCheck(), f"replica {number}"
            )
            leadership.startService()
            self.addCleanup(leadership.stopService)
            candidates.append(leadership)
        return candidates

    async def test_one_leads_and_another_takes_over_when_it_dies(self):
        candidates = await self.candidates(3)
        await until(lambda: sum(c.leading for c in candidates) == 1, 5.0)
        await task.deferLater(reactor, 1.0, lambda: None)  # renewals keep it
        [leader] = [c for c in candidates if c.leading]
        self.assertEqual(sum(c.checker.running for c in candidates), 1)
        self.assertEqual(leader.checker.running, 1)

        leader._rounds.stop()  # dies: no more renewals, no revoke
        leader.lease = None
        leader.store.on_leader = lambda holder, revision: None
        died = time.monotonic()
        others = [c for c in candidates if c is not leader]
        await until(lambda: any(c.leading for c in others), 6.0)
        takeover = time.monotonic() - died
        self.assertLess(takeover, 3)  # leader_ttl 3: a lease of 2 s
        self.assertEqual(sum(c.leading for c in others), 1)

        # the old leader still believes it leads: its eviction is refused
        instance = Instance("echo", "127.0.0.1", 7001)
        with self.assertRaises(NotLeader):
            await leader.store.evict(instance)

    async def test_a_leader_that_stops_hands_over_at_once(self):
        candidates = await self.candidates(2, lease_ttl=5)
        await until(lambda: sum(c.leading for c in candidates) == 1, 5.0)
        [leader] = [c for c in candidates if c.leading]
        [other] = [c for c in candidates if c is not leader]
        await leader.stopService()
        self.assertLess(await until(lambda: other.leading, 5.0), 1.0)

    async def test_evictions_happen_only_through_the_leader(self):
        one = await self.replica()
        await self.register(one, "echo", 7001)
        instance = one.registry.get("echo", "127.0.0.1", 7001)
        with self.assertRaises(NotLeader):
            await one.store.evict(instance)
        [leadership] = await self.candidates(1)
        await until(lambda: leadership.leading)
        await leadership.store.evict(instance)
        await until(lambda: len(one.registry) == 0, 1.0)


class SettingsTests(SynchronousTestCase):
    def test_store_endpoints(self):
        self.assertEqual(
            etcd_endpoints("etcd:http://127.0.0.1:2379, http://[::1]:2379/"),
            ["http://127.0.0.1:2379", "http://[::1]:2379"],
        )
        for bad in (
            "etcd:",
            "etcd:127.0.0.1:2379",
            "etcd:https://h:1",
            "etcd:http://h",
            "etcd:http://h:1/v3",
        ):
            with self.assertRaises(ValueError):
                etcd_endpoints(bad)

    def test_settings(self):
        def read(table):
            return settings_for(NamesSettings, table, "suite.toml")

        settings = read({"store": "etcd:http://127.0.0.1:2379"})
        self.assertEqual((settings.etcd_prefix, settings.leader_ttl), ("/suite/names/", 10))
        with self.assertRaises(ConfigError) as raised:
            read({"store": "etcd:localhost:2379"})
        self.assertIn("'localhost:2379' is not http://HOST:PORT", str(raised.exception))
        for bad in ({"leader_ttl": 2}, {"etcd_prefix": "suite"}):
            self.assertRaises(ConfigError, read, bad)


class ContractTests(SynchronousTestCase):
    def test_the_etcd_store_keeps_the_store_contract_metrics_and_health_included(self):
        store = EtcdStore(
            EtcdClient(Clock(), ["http://127.0.0.1:2379"], 1.0),
            Registry(10, AllowedHosts()),
            "/test/names/",
            Clock(),
        )
        for interface in (IRegistryStore, IMetricSource, IHealthSource):
            self.assertTrue(verifyObject(interface, store))
