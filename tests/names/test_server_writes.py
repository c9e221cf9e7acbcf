"""
The name server's writes of one instance take turns, check IDs belong to
one instance, the indexes of names without instances are bounded, and an
HTTP registration may have no port.
"""

import json
from pathlib import Path

from twisted.internet import defer, reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from suite.contracts.names import Invalid, NotFound
from suite.names.allowed import AllowedHosts
from suite.names.registry import MAX_RECORD, Check, Instance, Registry
from suite.names.server import NameServer
from suite.names.store import MemoryStore, SqliteStore, read_stored


def web(tags=("v1",), checks=None, instance_id="w", port=80):
    checks = [Check("c", "ttl", ttl=5.0)] if checks is None else checks
    return Instance(
        "web", "127.0.0.1", port, id=instance_id, tags=tags, checks=checks, pinged=False
    )


def passing(check_id):
    def mutate(instance):
        check = instance.check(check_id)
        if check is not None:
            check.status = "passing"

    return mutate


class TurnTests(TestCase):
    """Writes of one instance asked in the same turn: each starts from the one before."""

    def setUp(self):
        self.path = str(Path(self.mktemp()) / "names.sqlite")

    def server(self):
        server = NameServer(
            Registry(10, AllowedHosts()), SqliteStore(self.path, reactor), "", 5, reactor
        )
        server.startService()
        return server

    async def restarted(self, server):
        await server.stopService()
        again = self.server()
        self.addCleanup(again.stopService)
        return again

    async def test_a_check_result_does_not_undo_a_registration_asked_before_it(self):
        server = self.server()
        await server.put(web(), None, "test", "test")
        seen = server.registry.by_id("w")  # what a check result was computed from
        registered = server.put(web(tags=("v2",)), None, "test", "test")
        changed = server.change(seen, passing("c"), "TTL passed")
        await defer.gatherResults([registered, changed])
        served = server.registry.by_id("w")
        self.assertEqual((served.tags, served.status), (("v2",), "passing"))
        stored = (await self.restarted(server)).registry.by_id("w")
        self.assertEqual((stored.tags, stored.status), (("v2",), "passing"))

    async def test_two_checks_passed_in_one_turn_are_both_kept(self):
        server = self.server()
        await server.put(
            web(checks=[Check("a", "ttl", ttl=5.0), Check("b", "ttl", ttl=5.0)]),
            None,
            "test",
            "test",
        )
        seen = server.registry.by_id("w")
        results = await defer.gatherResults(
            [server.change(seen, passing("a"), "a"), server.change(seen, passing("b"), "b")]
        )
        self.assertEqual(results, [True, True])
        self.assertEqual(server.registry.by_id("w").status, "passing")
        again = await self.restarted(server)
        self.assertEqual(
            [c.status for c in again.registry.by_id("w").checks], ["passing", "passing"]
        )

    async def test_a_late_check_result_does_not_bring_back_a_deregistered_instance(self):
        server = self.server()
        await server.put(web(), None, "test", "test")
        seen = server.registry.by_id("w")
        gone = server.deregister_id("w", None, "test", "test")
        changed = server.change(seen, passing("c"), "TTL passed")
        results = await defer.gatherResults([gone, changed])
        self.assertEqual(results, [{}, False])
        self.assertIsNone(server.registry.by_id("w"))
        self.assertIsNone((await self.restarted(server)).registry.by_id("w"))

    async def test_two_deregistrations_in_one_turn_one_finds_nothing(self):
        server = self.server()
        self.addCleanup(server.stopService)
        await server.put(web(), None, "test", "test")
        first = server.deregister_id("w", None, "test", "test")
        second = server.deregister_id("w", None, "test", "test")
        self.assertEqual(await first, {})
        with self.assertRaises(NotFound):
            await second

    async def test_an_instance_registered_again_is_not_evicted_for_the_old_ones_failures(self):
        server = self.server()
        self.addCleanup(server.stopService)
        await server.register("echo", "127.0.0.1", 7, "old", None, "test", "test")
        failed = server.registry.get("echo", "127.0.0.1", 7)
        registered = server.register("echo", "127.0.0.1", 7, "new", None, "test", "test")
        evicted = server.evict(failed, "connection refused")
        await defer.gatherResults([registered, evicted])
        self.assertEqual(server.registry.get("echo", "127.0.0.1", 7).description, "new")
        self.assertEqual(server.evictions, 0)

    async def test_a_check_id_belongs_to_one_instance(self):
        server = self.server()
        self.addCleanup(server.stopService)
        await server.put(web(), None, "test", "test")
        with self.assertRaisesRegex(Invalid, "check ID 'c' belongs to the instance 'w'"):
            await server.put(web(instance_id="x", port=81), None, "test", "test")
        both = [
            server.put(web(instance_id=i, checks=[Check("d", "ttl", ttl=5.0)]), None, "t", "t")
            for i in ("y", "z")
        ]
        results = await defer.DeferredList(both, consumeErrors=True)
        self.assertEqual([ok for ok, _ in results], [True, False])
        self.assertIn("check ID 'd' belongs to the instance 'y'", str(results[1][1].value))
        self.assertEqual(server.registry.owner_of_check("d").id, "y")

    async def test_an_instance_without_a_port_registers_over_http_only(self):
        server = self.server()
        self.addCleanup(server.stopService)
        await server.put(web(port=0), None, "test", "test")
        self.assertEqual(server.registry.by_id("w").port, 0)
        with self.assertRaisesRegex(Invalid, "port 0: must be 1-65535"):
            await server.register("echo", "127.0.0.1", 0, "", None, "test", "test")


class TombstoneTests(SynchronousTestCase):
    """The indexes of names without instances: bounded, and never going back."""

    def test_beyond_the_bound_the_oldest_give_way_to_a_floor(self):
        registry = Registry(100, max_tombstones=10)
        for number in range(11):
            name = f"n{number}"
            registry.put(Instance(name, "127.0.0.1", 1), registry.index + 1)
            registry.remove(f"{name}@127.0.0.1:1", registry.index + 1)
        self.assertEqual(registry.tombstones(), 9)  # reaped to nine tenths of the bound
        self.assertEqual(registry.floor, 5)  # n1's index, the newest of those forgotten
        indexes = [registry.name_index(f"n{number}") for number in range(11)]
        self.assertEqual(indexes, [5, 5] + [2 * number + 3 for number in range(2, 11)])
        self.assertEqual(registry.name_index("never-seen"), 5)

    def test_a_name_with_instances_is_never_forgotten(self):
        registry = Registry(100)
        registry.put(Instance("web", "127.0.0.1", 1), 5)
        registry.forget_name("web")
        self.assertEqual((registry.name_index("web"), registry.floor), (5, 1))


class StoredTombstoneTests(TestCase):
    async def test_the_sqlite_store_keeps_the_bound_and_the_floor_across_a_restart(self):
        path = str(Path(self.mktemp()) / "names.sqlite")
        store = SqliteStore(path, reactor, max_tombstones=10)
        written = []
        for number in range(30):
            instance = Instance(f"n{number}", "127.0.0.1", 1)
            written += [store.save(instance), store.delete(instance)]
        await defer.gatherResults(written)
        await store.close()
        stored = read_stored(path)
        self.assertEqual(len(stored.name_indexes), 9)
        self.assertEqual(stored.floor, max(stored.name_indexes.values()) - 2 * 9)
        self.assertEqual(min(stored.name_indexes.values()), stored.floor + 2)
        registry = Registry(100, max_tombstones=10)
        reopened = SqliteStore(path, reactor, max_tombstones=10)
        NameServer(registry, reopened, "", 5, reactor)
        self.addCleanup(reopened.close)
        self.assertEqual(registry.name_index("n0"), stored.floor)
        self.assertEqual(reopened.next_index(), max(stored.name_indexes.values()) + 1)


class RecordSizeTests(SynchronousTestCase):
    def test_room_is_kept_for_every_check_output(self):
        checks = [Check(str(n), "ttl", notes="\x01" * 4096) for n in range(16)]
        with self.assertRaisesRegex(Invalid, "with room for each check's output"):
            web(checks=checks).validate()
        fitting = [Check(str(n), "ttl", notes="x" * 4096) for n in range(8)]
        instance = web(checks=fitting)
        instance.validate()
        for check in instance.checks:  # the longest outputs a check can have
            check.output = "\x01" * 4096
        self.assertLessEqual(len(json.dumps(instance.record())), MAX_RECORD)

    def test_the_memory_store_needs_nothing_more(self):
        self.assertEqual(MemoryStore().load().floor, 1)
