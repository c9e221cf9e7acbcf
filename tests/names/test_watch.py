"""Watch, Unwatch and Changed in memory: pushes in order, bounds, and the end of a watch."""

from twisted.internet import defer, error
from twisted.internet.task import Clock
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from suite.contracts.errors import Overloaded
from suite.contracts.names import Changed, Invalid, Register, Unwatch, Watch
from suite.names.health import HealthChecker
from suite.names.protocol import NamesFactory
from suite.names.registry import Check, Instance, Registry
from suite.names.server import NameServer
from suite.names.service import NamesSettings
from suite.names.store import MemoryStore
from tests.helpers import AMPPair, elapse


class Watcher(amp.AMP):
    """
    A client that records each Changed call as (name, [(host, port,
    description)]), and in `pushed` the instances as they came.
    """

    def __init__(self):
        super().__init__()
        self.changes = []
        self.pushed = []

    @Changed.responder
    def changed(self, name, instances):
        self.changes.append((name, [(i["host"], i["port"], i["description"]) for i in instances]))
        self.pushed.append(instances)
        return {}


class DeafWatcher(amp.AMP):
    """A client that never answers what the server calls."""

    def ampBoxReceived(self, box):
        if b"_command" not in box:
            super().ampBoxReceived(box)


class WatchTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.server = NameServer(Registry(100), MemoryStore(), "", cache_ttl=5, clock=self.clock)
        self.settings = NamesSettings(
            idle_timeout=60,
            max_watches=3,
            max_change_backlog=2048,
            ping_interval=10,
            max_failures=2,
        )
        self.factory = NamesFactory(self.settings, self.clock, self.server)
        self.pair = AMPPair(self.factory, Watcher())
        self.watcher = self.pair.client

    def register(self, port, description="", pair=None):
        (pair or self.pair).answer(
            Register, name="web", host="127.0.0.1", port=port, description=description
        )

    def test_watch_answers_the_live_set_in_registration_order(self):
        for port in (3, 1, 2):
            self.register(port)
        answer = self.pair.answer(Watch, name="web")
        self.assertEqual([i["port"] for i in answer["instances"]], [3, 1, 2])
        self.assertEqual(answer["ttl"], 5)
        self.assertEqual(self.pair.answer(Watch, name="nothing-yet")["instances"], [])

    def test_register_eviction_reregister_pushed_in_order(self):
        alive = {1}

        def ping(host, port):
            return (
                defer.succeed(None)
                if port in alive
                else defer.fail(error.ConnectionRefusedError())
            )

        checker = HealthChecker(
            self.server.registry, self.settings, self.clock, ping, self.server.evict
        )
        checker.startService()
        self.addCleanup(checker.stopService)
        self.pair.answer(Watch, name="web")
        self.register(1)
        self.register(2, "second")
        elapse(self.clock, 20)  # port 2 fails twice: evicted
        self.pair.pump()
        self.register(2, "back")
        self.register(2, "back")  # no change: no push
        self.assertEqual(
            self.watcher.changes,
            [
                ("web", [("127.0.0.1", 1, "")]),
                ("web", [("127.0.0.1", 1, ""), ("127.0.0.1", 2, "second")]),
                ("web", [("127.0.0.1", 1, "")]),
                ("web", [("127.0.0.1", 1, ""), ("127.0.0.1", 2, "back")]),
            ],
        )

    def test_changes_made_on_another_connection_reach_every_watcher(self):
        other = AMPPair(self.factory, Watcher())
        for pair in (self.pair, other):
            pair.answer(Watch, name="web")
        registrar = AMPPair(self.factory)
        self.register(7, pair=registrar)
        for pair in (self.pair, other):
            pair.pump()
            self.assertEqual(pair.client.changes, [("web", [("127.0.0.1", 7, "")])])

    def test_the_last_instance_gone_is_an_empty_change(self):
        self.register(1)
        self.pair.answer(Watch, name="web")
        self.server.registry.deregister("web", "127.0.0.1", 1)
        self.pair.pump()
        self.assertEqual(self.watcher.changes, [("web", [])])

    def test_unwatch_and_disconnect_end_the_pushes(self):
        self.pair.answer(Watch, name="web")
        self.pair.answer(Unwatch, name="web")
        self.pair.answer(Unwatch, name="never-watched")
        self.register(1)
        self.assertEqual(self.watcher.changes, [])
        self.pair.answer(Watch, name="web")
        self.pair.server.connectionLost(Failure(error.ConnectionDone()))
        self.assertEqual(self.server.watches.watchers("web"), 0)

    def test_max_watches_per_connection(self):
        for name in ("a", "b", "c", "a"):
            self.pair.answer(Watch, name=name)
        with self.assertRaises(Overloaded):
            self.pair.answer(Watch, name="d")
        self.pair.answer(Unwatch, name="b")
        self.pair.answer(Watch, name="d")

    def test_an_invalid_name_is_refused(self):
        with self.assertRaises(Invalid):
            self.pair.answer(Watch, name="-bad")
        self.assertEqual(self.server.watches.watchers("-bad"), 0)

    def test_a_watcher_is_not_idle(self):
        self.pair.answer(Watch, name="web")
        elapse(self.clock, 600, step=1)
        self.assertFalse(self.pair.server_transport.disconnecting)

    def test_a_watcher_that_never_answers_is_disconnected_at_the_backlog(self):
        deaf = AMPPair(self.factory, DeafWatcher())
        deaf.answer(Watch, name="web")
        pushed = 0
        for port in range(1, 200):
            self.register(port, "x" * 40)
            deaf.pump()
            if deaf.server_transport.disconnecting:
                break
            pushed += 1
        self.assertTrue(deaf.server_transport.disconnecting)
        self.assertLess(pushed, 40)  # 2,048 bytes is a few pushes of growing sets
        self.assertEqual(self.watcher.changes, [])  # the others are not affected


class ModelChangeTests(SynchronousTestCase):
    """Changed carries IDs, tags, metadata and status; what no watcher can see is not pushed."""

    def setUp(self):
        self.server = NameServer(Registry(100), MemoryStore(), "", cache_ttl=5, clock=Clock())
        factory = NamesFactory(NamesSettings(idle_timeout=0), Clock(), self.server)
        self.pair = AMPPair(factory, Watcher())

    def check_becomes(self, status, output):
        """The one check of web-1 is now STATUS with OUTPUT, through the name server."""

        def mutate(instance):
            instance.checks[0].status, instance.checks[0].output = status, output

        changed = self.server.change(self.server.registry.by_id("web-1"), mutate, "test")
        self.assertTrue(self.successResultOf(changed))
        self.pair.pump()

    def test_status_changes_are_pushed_output_changes_are_not(self):
        instance = Instance(
            "web",
            "127.0.0.1",
            1,
            id="web-1",
            tags=("v1",),
            meta={"k": "v"},
            checks=[Check("c1", "ttl", status="passing")],
        )
        self.server.registry.put(instance, 2)
        self.pair.answer(Watch, name="web")
        self.check_becomes("passing", "still fine")  # nothing a watcher sees
        self.check_becomes("warning", "slow")
        self.check_becomes("warning", "slower")  # nothing a watcher sees
        self.check_becomes("critical", "down")
        self.check_becomes("passing", "")
        fields = {
            "host": "127.0.0.1",
            "port": 1,
            "description": "",
            "id": "web-1",
            "tags": ["v1"],
            "meta": [{"key": "k", "value": "v"}],
        }
        self.assertEqual(
            self.pair.client.pushed,
            [[{**fields, "status": "warning"}], [], [{**fields, "status": "passing"}]],
        )

    def test_what_changed_while_nobody_watched_reaches_a_later_watcher(self):
        def register(port):
            self.server.registry.put(
                Instance("web", "127.0.0.1", port), self.server.registry.index + 1
            )
            self.pair.pump()

        register(1)
        self.pair.answer(Watch, name="web")
        register(2)
        self.pair.answer(Unwatch, name="web")
        self.server.registry.remove("web@127.0.0.1:2", self.server.registry.index + 1)
        self.assertEqual(len(self.pair.answer(Watch, name="web")["instances"]), 1)
        register(2)  # the set pushed last before the Unwatch: pushed again, it is news here
        both = [("127.0.0.1", 1, ""), ("127.0.0.1", 2, "")]
        self.assertEqual(self.pair.client.changes, [("web", both), ("web", both)])
