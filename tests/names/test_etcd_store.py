"""
The registry on etcd, in process against a real etcd: replicas' copies,
every field and index of an instance, writes (conditional ones too),
heartbeats, the bound on the keys of names without instances, the move of
the previous layout's keys, the watch's resume and resync, leadership, and
an etcd outage.
"""

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from twisted.internet import defer, reactor, task
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from suite.contracts.names import Invalid, Unavailable
from suite.foundation.config import ConfigError, settings_for
from suite.foundation.interfaces import IHealthSource, IMetricSource
from suite.names import etcd_store
from suite.names.allowed import AllowedHosts
from suite.names.etcd import EtcdClient, decode, encode, prefix_end
from suite.names.etcd_layout import (
    MAX_TXN_BYTES,
    MAX_TXN_OPS,
    MIGRATION_BATCH,
    Layout,
    Write,
    packed,
    refused,
    transaction,
)
from suite.names.etcd_store import EtcdStore, NotLeader, etcd_endpoints
from suite.names.health import HealthChecker
from suite.names.leader import Leadership
from suite.names.registry import Check, Instance, Registry
from suite.names.server import NameServer
from suite.names.service import NamesSettings
from suite.names.store import IRegistryStore, StoreConflict
from tests.etcd import EtcdCluster
from tests.helpers import captured_log
from tests.names.test_protocol import FakeResolver

PREFIX = "/test/names/"


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


def indexes(server, instance_id, name) -> tuple:
    """What a replica serves of an instance's and its name's indexes, and the registry's."""
    instance = server.registry.by_id(instance_id)
    served = None if instance is None else (instance.create_index, instance.modify_index)
    return served, server.registry.name_index(name), server.registry.index


def every_field() -> Instance:
    """An instance with every field away from its default, its ID needing quotes in a key."""
    return Instance(
        "web",
        "127.0.0.1",
        8080,
        "front door",
        id="web/1 50%",
        tags=("v1", "prom"),
        meta={"version": "1.2", "team": "core"},
        weights=(10, 2),
        pinged=False,
        checks=[
            Check(
                "web:tcp",
                "tcp",
                name="port",
                target="127.0.0.1:8080",
                interval=5.0,
                timeout=2.0,
                status="passing",
                output="connected",
                notes="the port",
                deregister_after=60.0,
            ),
            Check(
                "web:http",
                "http",
                target="http://127.0.0.1:8080/health",
                interval=10.0,
                method="HEAD",
                header={"X-Probe": ["1", "2"]},
                tls_skip_verify=True,
                status="warning",
                output="429 Too Many Requests",
            ),
            Check("web:ttl", "ttl", ttl=30.0, status="passing"),
        ],
    )


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
        if registry is None:
            registry = Registry(1000, AllowedHosts())
        return EtcdStore(client, registry, PREFIX, reactor)

    async def replica(self, max_instances_per_source=1000, store=None, **options) -> NameServer:
        """A started replica (on STORE, or a new one), once it read the registry."""
        store = store or self.store(**options)
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

    def kv(self, key: str) -> dict | None:
        """The key (under the prefix) as etcd holds it now, None if absent."""
        answer = self.etcd.call("/v3/kv/range", {"key": encode(PREFIX + key)})
        found = answer.get("kvs", [])
        return found[0] if found else None

    def keys(self, section: str) -> list[str]:
        """The keys (under the prefix) of a section, as etcd holds them now."""
        start = PREFIX + section
        answer = self.etcd.call(
            "/v3/kv/range", {"key": encode(start), "range_end": prefix_end(start)}
        )
        return [decode(kv["key"]).removeprefix(PREFIX) for kv in answer.get("kvs", [])]

    def revision(self, key: str) -> int:
        """The mod revision of the key (under the prefix) now."""
        return int(self.kv(key)["mod_revision"])

    async def hold_watch(self, server) -> Callable[[], None]:
        """
        Stop SERVER's watch, its copy left as it is, until the function
        returned is called (the watch then resumes where it stopped).
        """
        store = server.store
        store._reconnect_call = None
        connect, store._connect = store._connect, lambda: None
        store._watching.cancel()
        await until(lambda: store._watching is None)

        def resume():
            if store._reconnect_call is not None and store._reconnect_call.active():
                store._reconnect_call.cancel()  # the held one's
            store._connect = connect
            connect()

        return resume

    def put_old(self, rest: str, value: str) -> None:
        """A key of the previous layout, `instances/REST`, as that version wrote it."""
        self.etcd.call(
            "/v3/kv/put", {"key": encode(f"{PREFIX}instances/{rest}"), "value": encode(value)}
        )


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

    async def test_a_registration_on_one_replica_reaches_the_other_within_a_second(self):
        one, two = await self.replica(), await self.replica()
        await self.register(one, "echo", 7001, "line echo")
        # answered after etcd acknowledged, and after this replica's own copy holds it
        self.assertEqual(instances(one), [("echo", "127.0.0.1", 7001, "line echo")])
        self.assertEqual(self.keys("services/"), ["services/echo%40127.0.0.1%3A7001"])
        self.assertLess(await until(lambda: instances(two) == instances(one)), 1.0)

        await self.register(two, "echo", 7001, "updated")
        await until(lambda: instances(one) == [("echo", "127.0.0.1", 7001, "updated")], 1.0)
        await two.deregister("echo", "127.0.0.1", 7001, None, "test", "test")
        self.assertEqual(instances(two), [])
        self.assertEqual(self.keys("services/"), [])
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
        await until(lambda: set(heard) == {"echo"} and len(two.registry) == 1, 1.0)

    async def test_writes_asked_together_go_as_few_transactions(self):
        one = await self.replica()
        transactions = []
        call = one.store.client.call
        one.store.client.call = lambda path, body: transactions.append(path) or call(path, body)
        await defer.gatherResults([self.register(one, "echo", port) for port in range(1, 201)])
        self.assertEqual(len(one.registry), 200)
        # 200 instances' keys and their name's: 201 operations
        self.assertEqual(transactions.count("/v3/kv/txn"), -(-201 // MAX_TXN_OPS))

    async def test_each_transaction_holds_its_instances_names_within_etcds_limit(self):
        one, two = await self.replica(), await self.replica()
        bodies = []
        call = one.store.client.call
        one.store.client.call = lambda path, body: bodies.append(body) or call(path, body)
        await defer.gatherResults([self.register(one, f"n{port}", port) for port in range(1, 151)])
        await defer.gatherResults(
            [
                one.deregister(f"n{port}", "127.0.0.1", port, None, "test", "test")
                for port in range(1, 151)
            ]
        )
        self.assertEqual(len(one.registry), 0)
        await until(lambda: len(two.registry) == 0, 1.0)
        for body in bodies:
            keys = [decode(next(iter(op.values()))["key"]) for op in body["success"]]
            self.assertLessEqual(len(keys), MAX_TXN_OPS)
            self.assertEqual(len(set(keys)), len(keys))
            services, names = PREFIX + "services/n", PREFIX + "names/n"
            changed = {
                k.removeprefix(services).partition("%")[0] for k in keys if k.startswith(services)
            }
            named = {k.removeprefix(names) for k in keys if k.startswith(names)}
            self.assertLessEqual(changed, named)
        self.assertGreater(len(bodies), 2)  # more than fits one transaction
        self.assertEqual(len(self.keys("names/")), 150)  # deregistrations leave their index

    async def test_large_instances_asked_together_go_in_transactions_etcd_takes(self):
        one, two = await self.replica(), await self.replica()

        def large(port):
            checks = [Check(f"{port}:{n}", "ttl", ttl=30.0, output="é" * 4000) for n in range(4)]
            return Instance("big", "127.0.0.1", port, checks=checks, pinged=False)

        await defer.gatherResults(
            [one.put(large(port), None, "test", "test") for port in range(1, 101)]
        )
        self.assertEqual(len(one.registry), 100)
        await until(lambda: len(two.registry) == 100, 3.0)

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
        for name, instance_id in (
            ("gone", "gone@127.0.0.1:7000"),
            ("echo", "echo@127.0.0.1:7001"),
        ):
            self.assertEqual(indexes(two, instance_id, name), indexes(one, instance_id, name))

    async def test_keys_that_are_not_instances_are_ignored(self):
        log = captured_log(self)
        record = every_field().record()
        for key, value in (
            ("instances/x", "?"),
            ("services/x", "{"),
            ("services/y", json.dumps({**record, "id": "y", "port": "80"})),
            ("services/z", json.dumps(record)),  # the key does not name its ID
            ("names/Not_A_Name", ""),
            ("elsewhere", ""),
        ):
            self.etcd.call("/v3/kv/put", {"key": encode(PREFIX + key), "value": encode(value)})
        one = await self.replica()
        self.assertEqual(len(one.registry), 0)
        for key in ("instances/x", "services/x", "services/y", "services/z", "names/Not_A_Name"):
            self.assertTrue(
                any(f"{PREFIX}{key} is not an instance" in line for line in log), (key, log)
            )
        self.etcd.call("/v3/kv/put", {"key": encode(PREFIX + "services/w"), "value": encode("[]")})
        await until(lambda: any(f"{PREFIX}services/w is not" in line for line in log), 1.0)


class FieldsAndIndexesTests(ReplicaTestCase):
    async def test_every_field_survives_etcd_and_reaches_another_replica(self):
        one, two = await self.replica(), await self.replica()
        await one.put(every_field(), None, "192.0.2.7:1", "192.0.2.7", command="Register")
        served = one.registry.by_id("web/1 50%")
        await one.change(served, lambda i: setattr(i, "maintenance", "upgrade"), "maintenance")
        served = one.registry.by_id("web/1 50%")
        expected = {
            **every_field().record(),
            "addresses": ["127.0.0.1"],
            "source": "192.0.2.7",
            "maintenance": "upgrade",
        }
        self.assertEqual(served.record(), expected)
        stored = self.kv("services/" + quote("web/1 50%", safe=""))
        self.assertEqual(json.loads(decode(stored["value"])), expected)
        self.assertEqual(
            (served.create_index, served.modify_index),
            (int(stored["create_revision"]), int(stored["mod_revision"])),
        )
        self.assertLess(served.create_index, served.modify_index)
        await until(lambda: two.registry.by_id("web/1 50%") is not None, 1.0)
        await until(lambda: two.registry.by_id("web/1 50%").maintenance == "upgrade", 1.0)
        copy = two.registry.by_id("web/1 50%")
        self.assertEqual(copy.record(), expected)
        self.assertEqual(
            (copy.create_index, copy.modify_index), (served.create_index, served.modify_index)
        )
        three = await self.replica()
        self.assertEqual(three.registry.by_id("web/1 50%").record(), expected)

    async def test_indexes_are_etcds_revisions_the_same_on_every_replica(self):
        one, two = await self.replica(), await self.replica()
        await self.register(one, "a", 1, "first")
        created = int(self.kv("services/a%40127.0.0.1%3A1")["create_revision"])
        await self.register(two, "a", 1, "second")
        modified = int(self.kv("services/a%40127.0.0.1%3A1")["mod_revision"])
        await self.register(one, "b", 2)
        await until(lambda: len(two.registry) == 2, 1.0)
        await two.deregister("b", "127.0.0.1", 2, None, "test", "test")
        gone = int(self.kv("names/b")["mod_revision"])
        self.assertEqual(int(self.kv("names/a")["mod_revision"]), modified)
        self.assertLess(created, modified)
        self.assertLess(modified, gone)
        a = ((created, modified), modified, gone)
        b = (None, gone, gone)
        await until(lambda: indexes(one, "b@127.0.0.1:2", "b") == b, 1.0)
        await until(lambda: indexes(two, "a@127.0.0.1:1", "a") == a, 1.0)
        self.assertEqual(indexes(one, "a@127.0.0.1:1", "a"), a)
        self.assertEqual(indexes(two, "b@127.0.0.1:2", "b"), b)
        later = await self.replica()  # started after every change
        self.assertEqual(indexes(later, "a@127.0.0.1:1", "a"), a)
        self.assertEqual(indexes(later, "b@127.0.0.1:2", "b"), b)

        for server in (one, two, later):
            await server.stopService()
        restarted = await self.replica()
        self.assertEqual(indexes(restarted, "a@127.0.0.1:1", "a"), a)
        self.assertEqual(indexes(restarted, "b@127.0.0.1:2", "b"), b)

    async def test_an_id_registered_under_another_name_changes_both_names(self):
        one, two = await self.replica(), await self.replica()
        await one.put(Instance("a", "127.0.0.1", 1, id="x"), None, "test", "test")
        await one.put(Instance("b", "127.0.0.1", 1, id="x"), None, "test", "test")
        moved = int(self.kv("services/x")["mod_revision"])
        self.assertEqual(int(self.kv("names/a")["mod_revision"]), moved)
        self.assertEqual(int(self.kv("names/b")["mod_revision"]), moved)
        await until(lambda: two.registry.by_id("x") is not None, 1.0)
        await until(lambda: two.registry.by_id("x").name == "b", 1.0)
        for server in (one, two, await self.replica()):
            self.assertEqual(
                [server.registry.name_index(name) for name in ("a", "b")], [moved, moved]
            )
            self.assertEqual(server.registry.instances_of("a"), [])

    async def test_a_write_answers_the_revision_of_its_change(self):
        one = await self.replica()
        instance = Instance("a", "127.0.0.1", 1, addresses=("127.0.0.1",))
        saved = await one.store.save(instance)
        self.assertEqual(int(self.kv("services/a%40127.0.0.1%3A1")["mod_revision"]), saved)
        self.assertEqual(one.registry.by_id(instance.id).modify_index, saved)  # the copy has it
        deleted = await one.store.delete(instance)
        self.assertEqual(int(self.kv("names/a")["mod_revision"]), deleted)
        self.assertGreater(deleted, saved)


class HeartbeatTests(ReplicaTestCase):
    async def test_a_heartbeat_reaches_another_replica_and_changes_no_index(self):
        one, two = await self.replica(), await self.replica()
        await one.put(every_field(), None, "test", "test")
        await until(lambda: two.registry.owner_of_check("web:ttl") is not None, 1.0)
        before = indexes(two, "web/1 50%", "web")
        self.assertIsNone(two.registry.last_heartbeat("web:ttl"))
        one.ttl_updated("web:ttl")
        await until(lambda: two.registry.last_heartbeat("web:ttl") is not None, 1.0)
        self.assertEqual(self.keys("heartbeats/"), ["heartbeats/web%3Attl"])
        self.assertEqual(indexes(two, "web/1 50%", "web"), before)
        self.assertEqual(indexes(one, "web/1 50%", "web"), before)
        later = await self.replica()  # a start gives the check a grace of one TTL instead
        self.assertIsNone(later.registry.last_heartbeat("web:ttl"))

    async def test_a_deregistration_or_a_dropped_check_takes_its_heartbeat_key_along(self):
        one = await self.replica()
        await one.put(every_field(), None, "test", "test")
        for check_id in ("web:ttl", "web:tcp"):
            await one.store.heartbeat(check_id)
        self.assertEqual(len(self.keys("heartbeats/")), 2)
        fewer = every_field()
        fewer.checks = fewer.checks[1:]  # without web:tcp
        await one.put(fewer, None, "test", "test")
        self.assertEqual(self.keys("heartbeats/"), ["heartbeats/web%3Attl"])
        await one.deregister_id("web/1 50%", None, "test", "test")
        self.assertEqual(self.keys("heartbeats/"), [])

    async def test_a_heartbeat_of_no_check_is_not_remembered(self):
        one, two = await self.replica(), await self.replica()
        await one.store.heartbeat("nobody's")
        await self.register(one, "echo", 7001)  # after the heartbeat: the watch passed it
        await until(lambda: len(two.registry) == 1, 1.0)
        self.assertIsNone(two.registry.last_heartbeat("nobody's"))


OLD_VALUES = (
    '{"description": "oldest"}',  # the first version's: the address is the IP literal's own
    '{"description": "older", "addresses": ["127.0.0.1"], "source": "192.0.2.7"}',
)


class MigrationTests(ReplicaTestCase):
    def old_keys(self, count: int) -> None:
        for port in range(1, count + 1):
            self.put_old(f"old/127.0.0.1/{port}", OLD_VALUES[port % 2])

    def moved(self, log: list[str]) -> list[int]:
        found = (re.search(r"migrated (\d+) instances in etcd", line) for line in log)
        return [int(match.group(1)) for match in found if match]

    async def test_two_replicas_starting_together_move_each_key_once(self):
        count = 2 * MIGRATION_BATCH + 5
        self.old_keys(count)
        log = captured_log(self)
        one, two = await defer.gatherResults(
            [defer.ensureDeferred(self.replica()) for _ in range(2)]
        )
        await until(lambda: not self.keys("instances/"), 3.0)
        await until(lambda: sum(self.moved(log)) == count, 1.0)
        self.assertLessEqual(len(self.moved(log)), 2)  # once per replica that moved any
        stored = self.etcd.call(
            "/v3/kv/range",
            {"key": encode(PREFIX + "services/"), "range_end": prefix_end(PREFIX + "services/")},
        )["kvs"]
        self.assertEqual(len(stored), count)
        self.assertEqual({kv["version"] for kv in stored}, {"1"})  # each put once
        for kv in stored:
            record = json.loads(decode(kv["value"]))
            old = json.loads(OLD_VALUES[record["port"] % 2])
            self.assertEqual(
                record, {**Instance("old", "127.0.0.1", record["port"]).record(), **old}
            )
        for server in (one, two):
            await until(lambda server=server: server.store.old == {}, 1.0)
            self.assertEqual(len(server.registry), count)
            self.assertEqual(
                [i.addresses for i in server.registry.instances()], [("127.0.0.1",)] * count
            )
        name_index = int(self.kv("names/old")["mod_revision"])
        for server in (one, two, await self.replica()):
            self.assertEqual(server.registry.name_index("old"), name_index)

    async def test_a_replica_that_lost_the_race_moves_nothing_and_logs_nothing(self):
        self.old_keys(3)
        log = captured_log(self)
        late = self.store()
        gate = defer.Deferred()
        request = late.request

        async def held(path, body):
            if "compare" in body:  # the move: after the other replica's
                await gate
            return await request(path, body)

        late.request = lambda path, body: defer.ensureDeferred(held(path, body))
        slow = await self.replica(store=late)
        self.assertEqual(len(slow.registry), 3)  # served from the old keys meanwhile
        await self.replica()
        await until(lambda: self.moved(log) == [3], 3.0)
        gate.callback(None)
        await until(lambda: late._migrating is None, 3.0)
        self.assertEqual(self.moved(log), [3])
        self.assertEqual(
            self.keys("services/"), [f"services/old%40127.0.0.1%3A{port}" for port in (1, 2, 3)]
        )
        self.assertEqual(late.old, {})
        self.assertEqual(len(slow.registry), 3)

    async def test_old_keys_are_served_until_moved_and_a_deregistration_removes_them(self):
        self.old_keys(2)
        held = self.store()
        held._migrating = defer.Deferred()  # as if a move was under way: none starts
        one = await self.replica(store=held)
        self.assertEqual(
            sorted(i.description for i in one.registry.instances()), ["older", "oldest"]
        )
        await one.deregister("old", "127.0.0.1", 1, None, "test", "test")
        self.assertEqual(self.keys("instances/"), ["instances/old/127.0.0.1/2"])
        self.assertEqual([i.port for i in one.registry.instances()], [2])
        await self.register(one, "old", 2, "new")
        self.assertEqual(self.keys("instances/"), [])
        self.assertEqual(self.keys("services/"), ["services/old%40127.0.0.1%3A2"])
        self.assertEqual([i.description for i in one.registry.instances()], ["new"])
        two = await self.replica()
        self.assertEqual(instances(two), [("old", "127.0.0.1", 2, "new")])

    async def test_values_of_the_previous_version_that_no_longer_pass_are_skipped(self):
        self.put_old("echo/127.0.0.1/7001", '{"description": "kept"}')
        self.put_old("meta/169.254.169.254/80", '{"description": ""}')
        self.put_old("named/db.internal/5432", '{"description": ""}')
        log = captured_log(self)
        one = await self.replica()
        self.assertEqual(instances(one), [("echo", "127.0.0.1", 7001, "kept")])
        await until(lambda: self.moved(log) == [3], 1.0)  # moved all the same
        skipped = [line for line in log if "not served" in line]
        self.assertEqual(len(skipped), 1, skipped)
        self.assertTrue(skipped[0].startswith("names: 2 instances in etcd not served"), skipped)
        self.put_old("wide/0.0.0.0/1", '{"description": ""}')  # a replica of that version's
        await until(lambda: any("0.0.0.0 is an unspecified" in line for line in log), 1.0)
        self.assertEqual(len(one.registry), 1)


def in_maintenance(instance) -> None:
    instance.maintenance = "upgrade"


class ConditionalSaveTests(ReplicaTestCase):
    async def test_a_stale_change_after_a_deregistration_elsewhere_writes_nothing(self):
        one, two = await self.replica(), await self.replica()
        await self.register(one, "echo", 7001)
        await until(lambda: len(two.registry) == 1, 1.0)
        stale = two.registry.by_id("echo@127.0.0.1:7001")
        resume = await self.hold_watch(two)
        await one.deregister("echo", "127.0.0.1", 7001, None, "test", "test")
        gone = self.revision("names/echo")
        log = captured_log(self)
        self.assertFalse(await two.change(stale, in_maintenance, "maintenance"))
        self.assertEqual(self.keys("services/"), [])  # not brought back
        self.assertEqual(self.revision("names/echo"), gone)  # nor its name's index raised
        self.assertEqual(log, [])  # no outage either
        resume()
        await until(lambda: len(two.registry) == 0, 1.0)

    async def test_a_stale_change_after_a_registration_elsewhere_writes_nothing(self):
        one, two = await self.replica(), await self.replica()
        await self.register(one, "echo", 7001, "first")
        await until(lambda: len(two.registry) == 1, 1.0)
        stale = two.registry.by_id("echo@127.0.0.1:7001")
        resume = await self.hold_watch(two)
        await self.register(one, "echo", 7001, "second")
        registered = self.kv("services/echo%40127.0.0.1%3A7001")
        self.assertFalse(await two.change(stale, in_maintenance, "maintenance"))
        self.assertEqual(self.kv("services/echo%40127.0.0.1%3A7001"), registered)
        resume()
        await until(lambda: instances(two) == [("echo", "127.0.0.1", 7001, "second")], 1.0)

    async def test_two_saves_expecting_the_same_revision_the_second_is_refused(self):
        one = await self.replica()
        await self.register(one, "echo", 7001)
        seen = one.registry.by_id("echo@127.0.0.1:7001")
        first, second = seen.copy(maintenance="first"), seen.copy(maintenance="second")
        results = await defer.DeferredList(
            [one.store.save(c, expected=seen.modify_index) for c in (first, second)],
            consumeErrors=True,
        )
        [(first_ok, index), (second_ok, failure)] = results
        self.assertTrue(first_ok)
        self.assertFalse(second_ok)
        failure.trap(StoreConflict)
        stored = self.kv("services/echo%40127.0.0.1%3A7001")
        self.assertEqual(json.loads(decode(stored["value"]))["maintenance"], "first")
        self.assertEqual(int(stored["mod_revision"]), index)

    async def test_a_change_on_the_current_revision_writes(self):
        one, two = await self.replica(), await self.replica()
        await self.register(one, "echo", 7001)
        await until(lambda: len(two.registry) == 1, 1.0)
        current = two.registry.by_id("echo@127.0.0.1:7001")
        self.assertTrue(await two.change(current, in_maintenance, "maintenance"))
        stored = self.kv("services/echo%40127.0.0.1%3A7001")
        self.assertEqual(json.loads(decode(stored["value"]))["maintenance"], "upgrade")
        self.assertEqual(self.revision("names/echo"), int(stored["mod_revision"]))
        await until(lambda: one.registry.by_id(current.id).maintenance == "upgrade", 1.0)

    async def test_an_overtaken_save_sent_with_others_is_refused_alone(self):
        one = await self.replica()
        for port in (1, 2):
            await self.register(one, "echo", port)
        a, b = (one.registry.by_id(f"echo@127.0.0.1:{port}") for port in (1, 2))
        stale = a.modify_index
        await self.register(one, "echo", 1, "registered again")
        bodies = []
        call = one.store.client.call
        one.store.client.call = lambda path, body: bodies.append(body) or call(path, body)
        results = await defer.DeferredList(
            [
                one.store.save(a.copy(maintenance="x"), expected=stale),
                one.store.save(b.copy(maintenance="y"), expected=b.modify_index),
                one.store.save(Instance("web", "127.0.0.1", 3, addresses=("127.0.0.1",))),
            ],
            consumeErrors=True,
        )
        [(a_ok, a_failure), (b_ok, b_index), (web_ok, web_index)] = results
        self.assertFalse(a_ok)
        a_failure.trap(StoreConflict)
        self.assertTrue(b_ok and web_ok)
        self.assertEqual(b_index, self.revision("services/echo%40127.0.0.1%3A2"))
        self.assertEqual(web_index, self.revision("services/web%40127.0.0.1%3A3"))
        record = json.loads(decode(self.kv("services/echo%40127.0.0.1%3A1")["value"]))
        self.assertEqual(
            (record["description"], record["maintenance"]), ("registered again", None)
        )
        # the conditional writes together, then without a; the unconditional one alone
        self.assertEqual([len(body.get("compare", [])) for body in bodies], [2, 1, 0])


class TombstoneTests(ReplicaTestCase):
    async def bounded(self, bound: int) -> NameServer:
        return await self.replica(store=self.store(Registry(bound, AllowedHosts())))

    async def come_and_go(self, server, names: list[str]) -> dict[str, int]:
        """Register and deregister each of NAMES in turn: the index each was left at."""
        left = {}
        for port, name in enumerate(names, 1):
            await self.register(server, name, port)
            await server.deregister(name, "127.0.0.1", port, None, "test", "test")
            left[name] = self.revision("names/" + name)
        await until(lambda: not server.store._reaping, 1.0)
        return left

    async def test_the_oldest_keys_of_names_without_instances_give_way_to_the_floor(self):
        one, two = await self.bounded(10), await self.bounded(10)
        names = [f"n{number}" for number in range(25)]
        left = await self.come_and_go(one, names)
        kept = self.keys("names/")
        self.assertLessEqual(len(kept), 10)
        self.assertEqual(kept, sorted("names/" + name for name in names[-len(kept) :]))
        floor = int(decode(self.kv("floor")["value"]))
        self.assertEqual(floor, left[names[-len(kept) - 1]])  # the highest of those deleted
        await until(lambda: two.registry.floor == floor, 1.0)
        for server in (one, two, await self.bounded(10)):
            self.assertEqual(server.registry.floor, floor)
            self.assertLessEqual(server.registry.tombstones(), 10)
            for name, index in left.items():  # no index went back
                self.assertGreaterEqual(server.registry.name_index(name), index)

    async def test_a_range_read_raises_the_floor_and_forgets_the_names_reaped(self):
        one, two = await self.bounded(10), await self.bounded(10)
        before = await self.come_and_go(one, [f"a{number}" for number in range(10)])
        await until(lambda: two.registry.tombstones() == 10, 1.0)
        resume = await self.hold_watch(two)
        await self.come_and_go(one, ["b0", "b1"])
        floor = int(decode(self.kv("floor")["value"]))
        answer = self.etcd.call("/v3/kv/range", {"key": encode("x")})
        self.etcd.call("/v3/kv/compaction", {"revision": answer["header"]["revision"]})
        resume()  # the revision it resumes from is compacted: a range read
        await until(lambda: two.registry.floor == floor, 3.0)
        self.assertLessEqual(two.registry.tombstones(), 10)
        for name, index in before.items():
            self.assertGreaterEqual(two.registry.name_index(name), index)

    async def test_the_floor_only_rises(self):
        one = await self.bounded(2)
        self.etcd.call("/v3/kv/put", {"key": encode(PREFIX + "floor"), "value": encode("900")})
        await until(lambda: one.registry.floor == 900, 1.0)
        await self.come_and_go(one, ["a", "b", "c"])
        self.assertEqual(len(self.keys("names/")), 1)  # reaped, down to nine tenths of 2
        self.assertEqual(decode(self.kv("floor")["value"]), "900")
        self.assertEqual(int(self.kv("floor")["version"]), 2)  # written again, not lowered
        self.assertEqual(one.registry.name_index("a"), 900)

    async def test_a_reap_overtaken_by_a_registration_deletes_nothing(self):
        one = await self.replica()
        left = await self.come_and_go(one, ["a"])
        await self.register(one, "a", 1)  # since the reap below read the key
        reap = one.store.layout.reap([(left["a"], "a")], 0, left["a"])
        sent = await one.store._enqueue(reap)
        self.assertIn(reap.key, sent.refused)
        self.assertEqual(self.keys("names/"), ["names/a"])
        self.assertIsNone(self.kv("floor"))


class CatchUpTests(ReplicaTestCase):
    async def test_a_write_the_watch_is_late_with_does_not_run_the_index_ahead(self):
        self.patch(etcd_store, "CATCH_UP", 0.1)
        one, two = await self.replica(), await self.replica()
        held = []
        store = one.store
        watch_message, store._watch_message = store._watch_message, held.append
        store._watching.cancel()  # the next watch's messages wait in HELD
        await until(lambda: held, 3.0)  # the next watch is there
        copied = store.revision
        await self.register(two, "before", 7001)
        before = self.revision("names/before")
        await self.register(one, "mine", 7002)
        mine = self.revision("names/mine")
        # served at once, at the copy's index: a read of the whole registry at that
        # index would not see "before", applied later at a lower one
        self.assertEqual([i.name for i in one.registry.instances()], ["mine"])
        self.assertEqual(one.registry.index, copied)
        self.assertLess(copied, before)
        for message in held:
            watch_message(message)
        store._watch_message = watch_message
        self.assertEqual(sorted(i.name for i in one.registry.instances()), ["before", "mine"])
        self.assertEqual(one.registry.index, mine)
        self.assertEqual(one.registry.by_id("mine@127.0.0.1:7002").modify_index, mine)
        self.assertEqual(one.registry.name_index("before"), before)


class LayoutTests(SynchronousTestCase):
    layout = Layout(PREFIX)

    def test_an_instances_key_quotes_its_id(self):
        self.assertEqual(self.layout.service("a/b %"), PREFIX + "services/a%2Fb%20%25")
        self.assertEqual(self.layout.section(PREFIX + "services/a%2Fb"), ("services/", "a%2Fb"))
        self.assertIsNone(self.layout.section(PREFIX + "leader"))

    def test_a_deletion_takes_its_checks_heartbeats_and_changes_its_name(self):
        instance = every_field()
        ops = self.layout.instance_ops(instance, False, old_key=PREFIX + "instances/x/h/1")
        self.assertEqual(
            sorted(k.removeprefix(PREFIX) for k in ops),
            [
                "heartbeats/web%3Ahttp",
                "heartbeats/web%3Atcp",
                "heartbeats/web%3Attl",
                "instances/x/h/1",
                "names/web",
                "services/web%2F1%2050%25",
            ],
        )
        self.assertTrue(
            all("request_delete_range" in op for k, op in ops.items() if "names" not in k)
        )
        saved = self.layout.instance_ops(instance, True, {"gone"})
        self.assertEqual(
            sorted(k.removeprefix(PREFIX) for k in saved),
            ["heartbeats/gone", "names/web", "services/web%2F1%2050%25"],
        )

    def test_writes_are_packed_whole_within_etcds_limit(self):
        def write(number, size):
            return Write(number, {f"k{number}.{i}": {"request_put": {}} for i in range(size)})

        writes = [write(n, 19) for n in range(20)]
        transactions = packed(writes)
        self.assertEqual([w for members, _ in transactions for w in members], writes)
        for members, ops in transactions:
            self.assertLessEqual(len(ops), MAX_TXN_OPS)
            self.assertEqual(len(ops), 19 * len(members))
        self.assertEqual(len(transactions), -(-20 // (MAX_TXN_OPS // 19)))

    def test_writes_are_packed_within_a_size_etcd_takes(self):
        def write(number, size):
            return Write(
                number, {f"k{number}": {"request_put": {"key": "k", "value": "v" * size}}}
            )

        writes = [write(n, 300_000) for n in range(10)] + [write(10, 2 * MAX_TXN_BYTES)]
        transactions = packed(writes)
        self.assertEqual([len(members) for members, _ in transactions], [3, 3, 3, 1, 1])
        self.assertEqual([w for members, _ in transactions for w in members], writes)

    def test_conditional_writes_share_transactions_of_their_own(self):
        def write(key, expected=None):
            return Write(key, {f"k{key}": {"request_put": {}}}, expected or {})

        writes = [write(1), write(2, {"k2": 5}), write(3, {"k3": 6}), write(4)]
        transactions = packed(writes)
        self.assertEqual([[w.key for w in m] for m, _ in transactions], [[1], [2, 3], [4]])
        many = [write(n, {f"c{n}.{i}": 1 for i in range(50)}) for n in range(3)]
        self.assertEqual([len(m) for m, _ in packed(many)], [2, 1])  # 128 compares at most
        again = [write(5, {"k5": 1}), Write(6, {"k5": {"request_put": {}}}, {"k5": 1})]
        self.assertEqual([len(m) for m, _ in packed(again)], [1, 1])  # the second sees the first

    def test_a_conditional_transaction_reads_back_what_it_compared(self):
        a = Write("a", {"ka": {"request_put": {}}}, {"ka": 5})
        b = Write("b", {"kb": {"request_put": {}}}, {"kb": 6, "floor": 0})
        body = transaction([a, b], [{"request_put": {}}])
        self.assertEqual(
            [(decode(c["key"]), c["mod_revision"]) for c in body["compare"]],
            [("ka", "5"), ("kb", "6"), ("floor", "0")],
        )
        self.assertEqual(len(body["failure"]), 3)
        self.assertEqual(transaction([Write("c", {})], [])["success"], [])

        def answer(*revisions):
            kvs = [{"kvs": [{"mod_revision": str(r)}]} if r else {} for r in revisions]
            return {"responses": [{"response_range": kv} for kv in kvs]}

        self.assertEqual(refused([a, b], answer(7, 6, 0)), [a])  # ka changed
        self.assertEqual(refused([a, b], answer(5, 6, 3)), [b])  # the floor was written
        self.assertEqual(refused([a, b], answer(0, 6, 0)), [a])  # ka deleted
        self.assertEqual(refused([a, b], {}), [a, b])  # no telling: none is retried

    def test_a_reap_puts_the_floor_and_deletes_names_that_did_not_change(self):
        write = self.layout.reap([(3, "a"), (5, "b")], 2, 5)
        self.assertEqual(
            [
                (decode(next(iter(op.values()))["key"]), next(iter(op)))
                for op in write.ops.values()
            ],
            [
                (PREFIX + "floor", "request_put"),
                (PREFIX + "names/a", "request_delete_range"),
                (PREFIX + "names/b", "request_delete_range"),
            ],
        )
        self.assertEqual(decode(write.ops[PREFIX + "floor"]["request_put"]["value"]), "5")
        self.assertEqual(
            write.expected, {PREFIX + "floor": 2, PREFIX + "names/a": 3, PREFIX + "names/b": 5}
        )

    def test_a_key_is_once_in_a_transaction_and_a_delete_wins(self):
        deleted = {"request_delete_range": {"key": "h"}}
        writes = [
            Write("a", {"n": {"request_put": {}}, "h": deleted}),
            Write("b", {"n": {"request_put": {}}, "h": {"request_put": {"key": "h"}}}),
        ]
        [(members, ops)] = packed(writes)
        self.assertEqual(members, writes)
        self.assertEqual(ops, [{"request_put": {}}, deleted])


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
