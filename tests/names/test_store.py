"""The sqlite store: writes go through adbapi; what was written is read back at start."""

import sqlite3
from pathlib import Path

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from suite.contracts.names import Invalid, Unavailable
from suite.foundation.interfaces import IHealthSource, IMetricSource
from suite.names.allowed import AllowedHosts
from suite.names.registry import Check, Instance, Registry
from suite.names.server import NameServer
from suite.names.store import (
    BatchedWrites,
    IRegistryStore,
    MemoryStore,
    SqliteStore,
    StoreError,
    read_stored,
)
from tests.helpers import captured_log
from tests.names.test_protocol import FakeResolver

VERSION_1 = """
CREATE TABLE instances (
    name TEXT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (name, host, port)
);
PRAGMA user_version = 1;
"""


class SqliteStoreTests(TestCase):
    def setUp(self):
        self.directory = Path(self.mktemp())
        self.path = str(self.directory / "sub" / "names.sqlite")

    def server(self, max_instances_per_source=1000) -> NameServer:
        server = NameServer(
            Registry(10, AllowedHosts()),
            SqliteStore(self.path, reactor),
            "",
            5,
            reactor,
            resolve=FakeResolver(),
            max_instances_per_source=max_instances_per_source,
        )
        server.startService()
        return server

    async def test_registrations_survive_a_new_store(self):
        server = self.server()
        await server.register("echo", "127.0.0.1", 5001, "first", None, "test", "test")
        await server.register("echo", "127.0.0.1", 5002, "", None, "test", "test")
        await server.register("echo", "127.0.0.1", 5001, "updated", None, "test", "test")
        await server.register("gone", "h", 1, "", None, "test", "test")
        await server.deregister("gone", "h", 1, None, "test", "test")
        await server.stopService()
        reopened = self.server()
        self.addCleanup(reopened.stopService)
        instances = [
            (i.name, i.host, i.port, i.description) for i in reopened.registry.instances()
        ]
        self.assertEqual(
            instances, [("echo", "127.0.0.1", 5001, "updated"), ("echo", "127.0.0.1", 5002, "")]
        )

    async def test_resolved_addresses_and_sources_survive_a_new_store(self):
        server = self.server(max_instances_per_source=2)
        await server.register("db", "db.internal", 5432, "", None, "192.0.2.7:1", "192.0.2.7")
        await server.register("db", "10.0.0.9", 5432, "", None, "192.0.2.7:1", "192.0.2.7")
        await server.stopService()
        reopened = self.server(max_instances_per_source=2)
        self.addCleanup(reopened.stopService)
        instance = reopened.registry.get("db", "db.internal", 5432)
        self.assertEqual(
            (instance.addresses, instance.source), (("10.0.0.5", "fd00::5"), "192.0.2.7")
        )
        with self.assertRaisesRegex(Invalid, "max_instances_per_source"):
            await reopened.register("db", "10.0.0.10", 5432, "", None, "192.0.2.7:1", "192.0.2.7")

    async def test_rows_of_the_previous_version_that_no_longer_pass_are_skipped_in_one_line(self):
        Path(self.path).parent.mkdir(parents=True)
        with sqlite3.connect(self.path) as database:
            database.executescript(VERSION_1)
            database.executemany(
                "INSERT INTO instances VALUES (?, ?, ?, ?)",
                [
                    ("echo", "127.0.0.1", 5001, ""),
                    ("meta", "169.254.169.254", 80, ""),
                    ("scoped", "fe80::1%eth0", 22, ""),
                    ("named", "db.internal", 5432, ""),
                    ("wide", "0.0.0.0", 1, ""),
                ],
            )
        lines = captured_log(self)
        server = self.server()
        self.addCleanup(server.stopService)
        self.assertEqual([i.key for i in server.registry.instances()], ["echo@127.0.0.1:5001"])
        self.assertIn(f"names: {self.path} migrated from version 1 to 3: 5 instances", lines)
        skipped = [line for line in lines if "not served" in line]
        self.assertEqual(
            skipped,
            [
                "names: 4 stored instances not served: their hosts are not allowed now (first: "
                "host '169.254.169.254': 169.254.169.254 is a link-local address, never "
                "checked); they stay stored until registered again or deregistered"
            ],
        )
        await server.register("named", "db.internal", 5432, "", None, "192.0.2.7:1", "192.0.2.7")
        self.assertEqual(
            server.registry.get("named", "db.internal", 5432).addresses, ("10.0.0.5", "fd00::5")
        )

    async def test_writes_of_one_turn_share_one_transaction(self):
        server = self.server()
        self.addCleanup(server.stopService)
        transactions = []
        run = server.store.pool.runInteraction
        server.store.pool.runInteraction = lambda *a: transactions.append(a) or run(*a)
        await defer.gatherResults(
            [
                server.register("echo", "127.0.0.1", port, "", None, "test", "test")
                for port in range(1, 9)
            ]
        )
        self.assertEqual(len(transactions), 1)
        self.assertEqual(len(server.registry.lookup("echo")), 8)

    async def test_a_store_damaged_at_runtime_answers_unavailable_and_changes_nothing(self):
        server = self.server()
        self.addCleanup(server.stopService)
        await server.register("echo", "127.0.0.1", 5001, "", None, "test", "test")
        with open(self.path, "r+b") as database:
            database.write(b"\0" * 100)  # the header, under the running server
        with self.assertRaises(Unavailable) as caught:
            await server.register("echo", "127.0.0.1", 5002, "", None, "test", "test")
        self.assertIn("file is not a database", str(caught.exception))
        with self.assertRaises(Unavailable):
            await server.deregister("echo", "127.0.0.1", 5001, None, "test", "test")
        self.assertEqual([i.port for i in server.registry.instances()], [5001])

    async def test_every_field_and_every_index_survive_a_new_store(self):
        server = self.server()
        instance = Instance(
            "web",
            "127.0.0.1",
            8080,
            "the shop",
            id="web-1",
            tags=("v1", "prom"),
            meta={"version": "1.2"},
            weights=(10, 1),
            checks=[Check("service:web-1", "ttl", ttl=30.0, status="warning", output="slow")],
            pinged=False,
        )
        await server.put(instance, None, "test", "test")
        await server.register("gone", "127.0.0.1", 1, "", None, "test", "test")
        await server.deregister("gone", "127.0.0.1", 1, None, "test", "test")
        before = server.registry.by_id("web-1")
        indexes = (
            server.registry.index,
            server.registry.name_index("web"),
            server.registry.name_index("gone"),
        )
        await server.stopService()
        reopened = self.server()
        self.addCleanup(reopened.stopService)
        after = reopened.registry.by_id("web-1")
        self.assertEqual(after.record(), before.record())
        self.assertEqual(
            (after.create_index, after.modify_index), (before.create_index, before.modify_index)
        )
        self.assertEqual(
            (
                reopened.registry.index,
                reopened.registry.name_index("web"),
                reopened.registry.name_index("gone"),
            ),
            indexes,
        )
        self.assertEqual(indexes, (4, 2, 4), "1 is an empty registry's: the first change is 2")
        self.assertEqual(after.status, "warning")
        await reopened.register("more", "127.0.0.1", 2, "", None, "test", "test")
        self.assertEqual(reopened.registry.index, 5)

    async def test_a_refresh_that_changes_nothing_writes_nothing_and_keeps_the_index(self):
        server = self.server()
        self.addCleanup(server.stopService)
        await server.register("echo", "127.0.0.1", 5001, "same", None, "test", "test")
        index = server.registry.index
        transactions = []
        run = server.store.pool.runInteraction
        server.store.pool.runInteraction = lambda *a: transactions.append(a) or run(*a)
        await server.register("echo", "127.0.0.1", 5001, "same", None, "test", "test")
        self.assertEqual((transactions, server.registry.index), ([], index))

    async def test_a_change_of_status_is_written_and_a_change_of_nothing_is_not(self):
        server = self.server()
        instance = Instance(
            "web", "127.0.0.1", 80, id="w", checks=[Check("c", "ttl", ttl=5.0)], pinged=False
        )
        await server.put(instance, None, "test", "test")
        served = server.registry.by_id("w")
        self.assertEqual((served.status, server.registry.live_of("web")), ("critical", []))

        def passing(changed):
            changed.checks[0].status = "passing"

        lines = captured_log(self)
        self.assertTrue(await server.change(served, passing, "TTL passed"))
        index = server.registry.name_index("web")
        self.assertEqual(server.registry.live_of("web"), [server.registry.by_id("w")])
        self.assertFalse(await server.change(server.registry.by_id("w"), passing, "again"))
        self.assertEqual(server.registry.name_index("web"), index)
        self.assertEqual(
            [line for line in lines if "is now" in line],
            ["names: web w is now passing (was critical): TTL passed"],
        )
        await server.stopService()
        reopened = self.server()
        self.addCleanup(reopened.stopService)
        self.assertEqual(reopened.registry.by_id("w").status, "passing")

    async def test_a_check_aimed_outside_allowed_networks_is_refused(self):
        server = self.server()
        self.addCleanup(server.stopService)
        for target, kind in [("169.254.169.254:80", "tcp"), ("http://192.0.2.1/", "http")]:
            instance = Instance(
                "web", "127.0.0.1", 80, checks=[Check("c", kind, target=target)], pinged=False
            )
            with self.assertRaisesRegex(Invalid, "never checked|outside allowed_networks"):
                await server.put(instance, None, "test", "test")
        self.assertEqual(len(server.registry), 0)

    def test_check_reads_an_earlier_version_as_it_will_migrate(self):
        Path(self.path).parent.mkdir(parents=True)
        with sqlite3.connect(self.path) as database:
            database.executescript(VERSION_1)
            database.execute("INSERT INTO instances VALUES ('echo', '127.0.0.1', 1, 'd')")
        stored = read_stored(self.path)
        self.assertEqual(
            [(i.id, i.description, i.modify_index) for i in stored.instances],
            [("echo@127.0.0.1:1", "d", 1)],
        )
        with sqlite3.connect(self.path) as database:  # read only: still version 1
            self.assertEqual(database.execute("PRAGMA user_version").fetchone(), (1,))

    def test_a_file_that_is_not_a_database(self):
        Path(self.path).parent.mkdir(parents=True)
        Path(self.path).write_bytes(b"this is not sqlite" * 100)
        with self.assertRaises(StoreError) as caught:
            SqliteStore(self.path, reactor)
        self.assertEqual(
            str(caught.exception), "not a usable SQLite database: file is not a database"
        )

    def test_a_directory_that_cannot_be_made(self):
        self.directory.mkdir()
        (self.directory / "sub").write_text("a file where the directory should be")
        with self.assertRaises(StoreError) as caught:
            SqliteStore(self.path, reactor)
        self.assertTrue(str(caught.exception).startswith("cannot open: "))

    def test_both_stores_keep_the_store_contract(self):
        store = SqliteStore(self.path, reactor)
        self.addCleanup(store.close)
        for candidate in (MemoryStore(), store):
            self.assertTrue(verifyObject(IRegistryStore, candidate))


class BatchedWritesTests(SynchronousTestCase):
    """The write grouping the SQLite and etcd stores own, on its own."""

    def setUp(self):
        self.clock = Clock()
        self.transactions: list[tuple[list, defer.Deferred]] = []

    def transaction(self, operations):
        done = defer.Deferred()
        self.transactions.append((operations, done))
        return done

    def test_a_key_written_twice_in_a_turn_is_written_once_as_last_asked(self):
        writes = BatchedWrites(self.clock, self.transaction)
        first, second = writes.queue("k", "put 1"), writes.queue("k", "put 2")
        other = writes.queue("j", "delete")
        self.clock.advance(0)
        ((operations, done),) = self.transactions
        self.assertEqual(operations, ["put 2", "delete"])
        done.callback("committed")
        for written in (first, second, other):
            self.assertIsNone(self.successResultOf(written))

    def test_writes_asked_while_one_is_in_flight_go_together_at_most_max_batch(self):
        writes = BatchedWrites(self.clock, self.transaction, max_batch=2)
        writes.queue("a", 1)
        self.clock.advance(0)
        for key in "bcd":
            writes.queue(key, key)
        self.transactions[0][1].callback(None)
        self.assertEqual([operations for operations, _ in self.transactions], [[1], ["b", "c"]])
        self.transactions[1][1].callback(None)
        self.assertEqual(self.transactions[2][0], ["d"])

    def test_the_store_says_what_a_failure_and_a_commit_mean(self):
        writes = BatchedWrites(
            self.clock,
            self.transaction,
            failure=lambda failure: StoreError("said by the store"),
            written=lambda result: f"then {result}",
        )
        failed = writes.queue("k", 1)
        self.clock.advance(0)
        self.transactions[0][1].errback(ValueError("raw"))
        self.assertEqual(str(self.failureResultOf(failed, StoreError).value), "said by the store")
        committed = writes.queue("k", 2)
        self.clock.advance(0)
        self.transactions[1][1].callback("revision 7")
        self.assertEqual(self.successResultOf(committed), "then revision 7")

    def test_drained_starts_what_waits_for_its_turn_and_fires_when_done(self):
        writes = BatchedWrites(self.clock, self.transaction)
        writes.queue("k", 1)
        drained = writes.drained()
        self.assertEqual(len(self.transactions), 1)
        self.assertNoResult(drained)
        self.transactions[0][1].callback(None)
        self.successResultOf(drained)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class StoreInterfacesTests(SynchronousTestCase):
    def test_the_memory_store_is_a_metric_and_health_source(self):
        for interface in (IMetricSource, IHealthSource):
            self.assertTrue(verifyObject(interface, MemoryStore()))
