"""The name server's AMP commands, in memory, with their audit events."""

import json

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.protocols import amp
from twisted.trial.unittest import SynchronousTestCase

from suite.contracts.errors import Overloaded
from suite.contracts.names import (
    Deregister,
    Invalid,
    Lookup,
    NotFound,
    Register,
    Services,
    Unauthorized,
    Unavailable,
    Unwatch,
    Watch,
)
from suite.foundation.jsonlines import BatchWriter, WriteFailed
from suite.names.allowed import AllowedHosts
from suite.names.audit import LookupAudit
from suite.names.protocol import NamesFactory
from suite.names.registry import MAX_ID, Check, Instance, Registry
from suite.names.server import NameServer
from suite.names.service import NamesSettings
from suite.names.store import MemoryStore, StoreError
from tests.helpers import AMPPair, captured_events, captured_log
from tests.names import previous_contract as previous


class HeldStore(MemoryStore):
    """
    A store whose writes wait until released (each then firing with the
    index of its change, as a store's do), or fail with FAILING when it is set.
    """

    def __init__(self):
        self.held = []
        self.failing = None

    def save(self, instance):
        if self.failing:
            return defer.fail(StoreError(self.failing))
        self.held.append(defer.Deferred())
        return self.held[-1]

    delete = save

    def release(self):
        held, self.held = self.held, []
        for written in held:
            written.callback(self.next_index())


class MemoryOutput:
    """What a BatchWriter writes, kept in memory."""

    path = "memory"

    def __init__(self):
        self.data = b""

    def write(self, data):
        self.data += data

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.data.splitlines()]


RESOLVED = {
    "h": ["127.0.0.1"],
    "db.internal": ["10.0.0.5", "fd00::5", "10.0.0.5"],
    "partly.example": ["10.0.0.6", "169.254.169.254"],
    "public.example": ["93.184.215.14"],
}


class FakeResolver:
    """Host names resolved from a table (RESOLVED), as the reactor's resolver would; or held."""

    def __init__(self, table=RESOLVED):
        self.table = table
        self.asked = []
        self.held = None  # a list: resolutions wait there until released

    def __call__(self, name):
        self.asked.append(name)
        if name not in self.table:
            return defer.fail(Invalid(f"host '{name}': host name not found"))
        if self.held is not None:
            self.held.append(defer.Deferred())
            return self.held[-1].addCallback(lambda _: list(self.table[name]))
        return defer.succeed(list(self.table[name]))


def names_pair(
    token="",
    max_instances=100,
    store=None,
    audit=None,
    resolve=None,
    max_instances_per_source=1000,
    read_token="",
    **settings,
):
    store = MemoryStore() if store is None else store
    clock = Clock()
    clock.advance(1763726400.25)  # 2025-11-21T12:00:00.25Z
    lookups = audit and LookupAudit(BatchWriter(audit, clock, 0, 1, max_buffer=200), clock)
    server = NameServer(
        Registry(max_instances, AllowedHosts()),
        store,
        token,
        cache_ttl=5,
        clock=clock,
        audit=lookups,
        resolve=resolve or FakeResolver(),
        max_instances_per_source=max_instances_per_source,
        read_token=read_token,
    )
    return AMPPair(NamesFactory(NamesSettings(idle_timeout=0, **settings), Clock(), server))


class NamesCommandTests(SynchronousTestCase):
    def setUp(self):
        self.events = []
        observer = lambda event: "names_event" in event and self.events.append(event)  # noqa: E731
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.pair = names_pair()

    def test_register_lookup_round_robin_with_ttl(self):
        for port in (5001, 5002):
            self.assertEqual(
                self.pair.call(
                    Register, name="echo", host="127.0.0.1", port=port, description=f"echo {port}"
                ),
                [{}],
            )
        [first] = self.pair.call(Lookup, name="echo")
        [second] = self.pair.call(Lookup, name="echo")
        self.assertEqual(first["ttl"], 5)
        self.assertEqual([i["port"] for i in first["instances"]], [5001, 5002])
        self.assertEqual([i["port"] for i in second["instances"]], [5002, 5001])
        self.assertEqual(
            first["instances"][0],
            {
                "host": "127.0.0.1",
                "port": 5001,
                "description": "echo 5001",
                "id": "echo@127.0.0.1:5001",
                "tags": None,  # none: left out of the answer
                "meta": None,
                "status": "passing",
            },
        )

    def test_description_is_optional(self):
        self.pair.call(Register, name="svc", host="h", port=1)
        [answer] = self.pair.call(Lookup, name="svc")
        self.assertEqual(answer["instances"][0]["description"], "")

    def test_errors(self):
        [failure] = self.pair.call(Lookup, name="nothing")
        failure.trap(NotFound)
        [failure] = self.pair.call(Lookup, name="Bad Name")
        failure.trap(Invalid)
        [failure] = self.pair.call(Register, name="svc", host="no host", port=1)
        failure.trap(Invalid)
        [failure] = self.pair.call(Register, name="svc", host="h", port=70000)
        failure.trap(Invalid)
        [failure] = self.pair.call(Deregister, name="svc", host="h", port=1)
        failure.trap(NotFound)

    def test_registry_full_is_invalid(self):
        pair = names_pair(max_instances=1)
        pair.call(Register, name="a", host="h", port=1)
        [failure] = pair.call(Register, name="a", host="h", port=2)
        failure.trap(Invalid)
        self.assertIn("max_instances", failure.value.args[0])

    def test_services_lists_names_with_instances(self):
        for name in ("zeta", "alpha", "zeta"):
            self.pair.call(Register, name=name, host="h", port=len(name))
        self.assertEqual(self.pair.call(Services), [{"names": ["alpha", "zeta"]}])
        self.pair.call(Deregister, name="alpha", host="h", port=5)
        self.assertEqual(self.pair.call(Services), [{"names": ["zeta"]}])

    def test_token_needed_for_changes_not_for_lookups(self):
        pair = names_pair(token="s3cret")
        for token in (None, "wrong", ""):
            [failure] = pair.call(Register, name="svc", host="h", port=1, token=token)
            failure.trap(Unauthorized)
        self.assertEqual(pair.call(Register, name="svc", host="h", port=1, token="s3cret"), [{}])
        [failure] = pair.call(Deregister, name="svc", host="h", port=1)
        failure.trap(Unauthorized)
        self.assertEqual(len(pair.call(Lookup, name="svc")[0]["instances"]), 1)
        self.assertEqual(pair.call(Deregister, name="svc", host="h", port=1, token="s3cret"), [{}])

    def test_audit_events(self):
        """Changes are log events; lookups go to the lookup audit file, one JSON line each."""
        output = MemoryOutput()
        pair = names_pair(audit=output)
        pair.call(Register, name="svc", host="h", port=1, description="d")
        pair.call(Lookup, name="svc")  # answered by the encoded answer
        pair.call(Lookup, name="gone")  # answered by AMP's path: NOT_FOUND
        pair.call(Lookup, name="Bad")  # INVALID: not audited
        pair.call(Deregister, name="svc", host="h", port=1)
        summary = [(e["names_event"], e["name"]) for e in self.events]
        self.assertEqual(summary, [("register", "svc"), ("deregister", "svc")])
        self.assertTrue(all(e["peer"] == "192.0.2.7:40000" for e in self.events))
        self.assertEqual((self.events[0]["host"], self.events[0]["port"]), ("h", 1))
        self.assertEqual(
            output.records(),
            [
                {
                    "time": "2025-11-21T12:00:00.250000Z",
                    "event": "lookup",
                    "name": "svc",
                    "answers": 1,
                    "peer": "192.0.2.7:40000",
                },
                {
                    "time": "2025-11-21T12:00:00.250000Z",
                    "event": "lookup",
                    "name": "gone",
                    "answers": 0,
                    "peer": "192.0.2.7:40000",
                },
            ],
        )
        # What the audit's records_written metric reports: a record a lookup.
        self.assertEqual(pair.server.factory.server.audit.writer.records_written, 2)

    def test_a_full_lookup_audit_drops_lines_and_answers_on(self):
        class Failing(MemoryOutput):
            def write(self, data):
                raise WriteFailed(0, OSError(28, "No space left on device"))

        output = Failing()
        pair = names_pair(audit=output)
        pair.call(Register, name="svc", host="h", port=1)
        for _ in range(10):
            self.assertEqual(len(pair.answer(Lookup, name="svc")["instances"]), 1)
        writer = pair.server.factory.server.audit.writer
        self.assertTrue(writer.full)
        self.assertGreater(writer.dropped, 0)
        self.flushLoggedErrors()


class DurableTests(SynchronousTestCase):
    def test_register_is_answered_only_once_the_store_has_it(self):
        store = HeldStore()
        pair = names_pair(store=store)
        answers = pair.call(Register, name="svc", host="h", port=1)
        self.assertEqual(answers, [])
        pair.call(Lookup, name="svc")[0].trap(NotFound)  # not in the registry before the store
        store.release()
        pair.pump()
        self.assertEqual(answers, [{}])
        self.assertEqual(len(pair.answer(Lookup, name="svc")["instances"]), 1)

    def test_a_failed_write_is_unavailable_logged_and_changes_nothing(self):
        lines = captured_log(self)
        store = HeldStore()
        pair = names_pair(store=store)
        pair.call(Register, name="svc", host="h", port=1)
        store.release()
        pair.pump()
        store.failing = "cannot write names.sqlite: attempt to write a readonly database"
        for command, port, changes in (
            (Register, 2, {}),
            (Deregister, 1, {}),
            (Register, 1, {"description": "changed"}),  # unchanged, it would write nothing
        ):
            [failure] = pair.call(command, name="svc", host="h", port=port, **changes)
            failure.trap(Unavailable)
        self.assertEqual([i["port"] for i in pair.answer(Lookup, name="svc")["instances"]], [1])
        self.assertIn(
            "names: cannot write names.sqlite: attempt to write a readonly database", lines
        )

    def test_capacity_counts_registrations_waiting_for_the_store(self):
        store = HeldStore()
        pair = names_pair(store=store, max_instances=2)
        answers = [pair.call(Register, name="svc", host="h", port=p) for p in (1, 2, 3)]
        answers[2][0].trap(Invalid)
        store.release()
        pair.pump()
        self.assertEqual(answers[:2], [[{}], [{}]])

    def test_failed_tokens_are_logged_first_time_per_source(self):
        lines = captured_log(self)
        pair = names_pair(token="s3cret")
        for _ in range(3):
            pair.call(Register, name="svc", host="h", port=1, token="guess")
        refused = [line for line in lines if "missing or wrong token" in line]
        self.assertEqual(
            refused, ["names: Register from 192.0.2.7:40000 refused: missing or wrong token"]
        )


HOSTILE_HOSTS = [
    ("169.254.169.254", "link-local"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("255.255.255.255", "broadcast"),
    ("fe80::1", "link-local"),
    ("::ffff:169.254.169.254", "link-local"),
    ("fe80::1%eth0", "scope id"),
    ("::1%lo", "scope id"),
    ("8.8.8.8", "outside allowed_networks"),
    ("public.example", "outside allowed_networks"),
    ("partly.example", "169.254.169.254 is a link-local"),
    ("unknown.example", "host name not found"),
    ("evil\n.example", "not an IP address, nor a host name"),
    ("\x1b[2J.example", "not an IP address, nor a host name"),
    ("a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 60 + ".e", "at most 253 bytes"),
]


class WhereTheRegistryMayLook(SynchronousTestCase):
    """The hosts a registration may name, and how many one source may register."""

    def test_hostile_hosts_are_invalid_naming_the_reason(self):
        self.assertEqual(len(HOSTILE_HOSTS[-1][0].encode()), 254)
        pair = names_pair()
        for host, reason in HOSTILE_HOSTS:
            [failure] = pair.call(Register, name="svc", host=host, port=80)
            failure.trap(Invalid)
            self.assertIn(reason, failure.value.args[0], host)
            self.assertNotIn("\n", failure.value.args[0])
            self.assertNotIn("\x1b", failure.value.args[0])
        self.assertEqual(pair.server.factory.server.registry.instances(), [])

    def test_allowed_hosts_are_registered_with_the_addresses_checks_connect_to(self):
        pair = names_pair()
        for host in (
            "127.0.0.1",
            "10.1.2.3",
            "::1",
            "fd12::1",
            "::ffff:192.168.1.1",
            "db.internal",
            "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61,
        ):
            resolve = pair.server.factory.server.resolve
            resolve.table.setdefault(host, ["192.168.7.7"])
            self.assertEqual(pair.call(Register, name="svc", host=host, port=80), [{}], host)
        registry = pair.server.factory.server.registry
        self.assertEqual(registry.get("svc", "db.internal", 80).addresses, ("10.0.0.5", "fd00::5"))
        self.assertEqual(registry.get("svc", "::ffff:192.168.1.1", 80).addresses, ("192.168.1.1",))

    def test_ip_literals_are_not_resolved(self):
        resolve = FakeResolver()
        pair = names_pair(resolve=resolve)
        pair.call(Register, name="svc", host="127.0.0.1", port=80)
        pair.call(Register, name="svc", host="169.254.169.254", port=80)
        self.assertEqual(resolve.asked, [])

    def test_an_operators_list_never_covers_the_forbidden_addresses(self):
        pair = names_pair()
        pair.server.factory.server.registry.hosts = AllowedHosts(["0.0.0.0/0", "::/0"])
        self.assertEqual(pair.call(Register, name="svc", host="93.184.215.14", port=80), [{}])
        for host in ("169.254.169.254", "0.0.0.0", "224.0.0.1", "255.255.255.255", "fe80::1"):
            [failure] = pair.call(Register, name="svc", host=host, port=80)
            failure.trap(Invalid)

    def test_a_narrower_list_refuses_what_the_default_takes(self):
        pair = names_pair()
        pair.server.factory.server.registry.hosts = AllowedHosts(["10.0.0.0/8"])
        pair.call(Register, name="svc", host="127.0.0.1", port=80)[0].trap(Invalid)
        self.assertEqual(pair.call(Register, name="svc", host="10.9.9.9", port=80), [{}])

    def test_register_waits_for_the_resolution(self):
        resolve = FakeResolver()
        resolve.held = []
        pair = names_pair(resolve=resolve)
        answers = pair.call(Register, name="svc", host="db.internal", port=80)
        self.assertEqual(answers, [])
        resolve.held.pop().callback(None)
        pair.pump()
        self.assertEqual(answers, [{}])

    def test_a_name_resolved_after_the_server_stopped_is_not_written(self):
        resolve = FakeResolver()
        resolve.held = []
        pair = names_pair(resolve=resolve)
        answers = pair.call(Register, name="svc", host="db.internal", port=80)
        server = pair.server.factory.server
        server.stopService()
        resolve.held.pop().callback(None)
        pair.pump()
        answers[0].trap(Unavailable)
        self.assertEqual(server.registry.instances(), [])

    def test_resolutions_in_flight_are_bounded(self):
        from suite.names.server import MAX_RESOLVING

        resolve = FakeResolver()
        resolve.held = []
        pair = names_pair(resolve=resolve, max_pending=MAX_RESOLVING + 10)
        answers = [
            pair.call(Register, name="svc", host="db.internal", port=port)
            for port in range(1, MAX_RESOLVING + 2)
        ]
        self.assertEqual(len(resolve.held), MAX_RESOLVING)
        answers[-1][0].trap(Overloaded)
        held, resolve.held = resolve.held, None
        for resolution in held:
            resolution.callback(None)
        pair.pump()
        self.assertEqual(answers[:-1], [[{}]] * MAX_RESOLVING)
        self.assertEqual(pair.call(Register, name="svc", host="db.internal", port=999), [{}])

    def test_max_instances_per_source(self):
        pair = names_pair(max_instances_per_source=3)
        for port in (1, 2, 3):
            self.assertEqual(pair.call(Register, name="svc", host="h", port=port), [{}])
        [failure] = pair.call(Register, name="svc", host="h", port=4)
        failure.trap(Invalid)
        self.assertIn("192.0.2.7 has registered 3 instances", failure.value.args[0])
        self.assertIn("max_instances_per_source", failure.value.args[0])
        self.assertEqual(pair.call(Register, name="svc", host="h", port=3, description="d"), [{}])
        other = AMPPair(pair.server.factory, peer=IPv4Address("TCP", "192.0.2.8", 40000))
        self.assertEqual(other.call(Register, name="svc", host="h", port=4), [{}])
        pair.call(Deregister, name="svc", host="h", port=1)
        self.assertEqual(pair.call(Register, name="svc", host="h", port=5), [{}])

    def test_registrations_waiting_for_the_store_count_against_their_source(self):
        store = HeldStore()
        pair = names_pair(store=store, max_instances_per_source=2)
        answers = [pair.call(Register, name="svc", host="h", port=p) for p in (1, 2, 3)]
        answers[2][0].trap(Invalid)
        store.release()
        pair.pump()
        self.assertEqual(answers[:2], [[{}], [{}]])


class FloodControlledAudit(SynchronousTestCase):
    """Registrations, deregistrations and refusals: first per source, then summaries; escaped."""

    def test_audit_lines_are_flood_controlled_per_source(self):
        lines = captured_log(self)
        pair = names_pair()
        for port in range(1, 51):
            pair.call(Register, name="svc", host="h", port=port)
            pair.call(Register, name="svc", host="169.254.169.254", port=port)
        other = AMPPair(pair.server.factory, peer=IPv4Address("TCP", "192.0.2.8", 40000))
        other.call(Register, name="svc", host="h", port=99)
        registered = [line for line in lines if line.startswith("names: register")]
        refused = [line for line in lines if "refused" in line]
        self.assertEqual(
            registered,
            [
                "names: register svc h:1 (new) from 192.0.2.7:40000",
                "names: register svc h:99 (new) from 192.0.2.8:40000",
            ],
        )
        self.assertEqual(
            refused,
            [
                "names: Register from 192.0.2.7:40000 refused: host "
                "'169.254.169.254': 169.254.169.254 is a link-local address, "
                "never checked"
            ],
        )
        pair.server.factory.server.warnings.flush()
        self.assertIn("names: 49 more registrations in the last 10 s", lines)
        self.assertIn("names: 49 more refused registrations in the last 10 s", lines)

    def test_an_ipv6_instance_is_written_in_brackets(self):
        """`[::1]:7`, as the client writes it, never the ambiguous `::1:7`."""
        lines = captured_log(self)
        pair = names_pair()
        self.assertEqual(pair.call(Register, name="svc", host="::1", port=7), [{}])
        [failure] = pair.call(Deregister, name="svc", host="::1", port=8)
        failure.trap(NotFound)
        self.assertEqual(failure.value.args[0], "no instance svc at [::1]:8")
        self.assertEqual(pair.call(Deregister, name="svc", host="::1", port=7), [{}])
        server = pair.server.factory.server
        pair.call(Register, name="svc", host="::1", port=9)  # its line waits: flood control
        server.evict(server.registry.get("svc", "::1", 9), "connection refused")
        server.warnings.flush()
        audit = [
            line
            for line in lines
            if line.startswith(("names: register", "names: de", "names: ev"))
        ]
        self.assertEqual(
            audit,
            [
                "names: register svc [::1]:7 (new) from 192.0.2.7:40000",
                "names: deregister svc [::1]:7 from 192.0.2.7:40000",
                "names: evict svc [::1]:9 after 0 failed pings: connection refused",
            ],
        )

    def test_a_description_is_escaped_in_the_audit_event(self):
        events = captured_events(self)
        pair = names_pair()
        pair.call(
            Register, name="svc", host="h", port=1, description="ok\nforged line\x1b[2J\u202e"
        )
        [event] = [e for e in events if e.get("names_event") == "register"]
        self.assertEqual(event["description"], "ok\\nforged line\\x1b[2J\\u202e")


def lookups_on_amps_path(server) -> list[str]:
    """The names SERVER's Lookup responder looks up: the encoded answers go around it."""
    asked = []
    lookup = server.lookup

    def spied(name, audit_fields):
        asked.append(name)
        return lookup(name, audit_fields)

    server.lookup = spied
    return asked


def served(server, name, host, port, status, **fields) -> Instance:
    """Put an instance of STATUS (one TTL check in that state) in SERVER's registry."""
    instance = Instance(
        name, host, port, checks=[Check(f"{port}", "ttl", status=status)], **fields
    )
    server.registry.put(instance, server.registry.index + 1)
    return instance


class RegistryModelTests(SynchronousTestCase):
    """IDs, tags, metadata and status, over AMP."""

    def setUp(self):
        self.pair = names_pair()
        self.server = self.pair.server.factory.server

    def test_id_tags_and_meta_registered_are_looked_up_and_watched(self):
        self.pair.answer(
            Register,
            name="api",
            host="127.0.0.1",
            port=8080,
            description="the API",
            id="api-1",
            tags=["v2", "blue"],
            meta=[{"key": "version", "value": "2.1"}, {"key": "az", "value": "b"}],
        )
        stored = self.server.registry.by_id("api-1")
        self.assertEqual(
            (stored.tags, stored.meta), (("v2", "blue"), {"version": "2.1", "az": "b"})
        )
        expected = {
            "host": "127.0.0.1",
            "port": 8080,
            "description": "the API",
            "id": "api-1",
            "tags": ["v2", "blue"],
            "meta": [{"key": "az", "value": "b"}, {"key": "version", "value": "2.1"}],
            "status": "passing",
        }
        self.assertEqual(self.pair.answer(Lookup, name="api")["instances"], [expected])
        self.assertEqual(self.pair.answer(Watch, name="api")["instances"], [expected])

    def test_a_metadata_key_given_twice_keeps_the_last_value(self):
        meta = [{"key": "k", "value": "first"}, {"key": "k", "value": "last"}]
        self.pair.answer(Register, name="api", host="h", port=1, meta=meta)
        self.assertEqual(self.server.registry.get("api", "h", 1).meta, {"k": "last"})

    def test_tags_meta_and_ids_the_registry_refuses_are_invalid(self):
        for fields, reason in (
            ({"tags": [""]}, "tag ''"),
            ({"tags": ["a\nb"]}, "tag 'a\\nb'"),
            ({"meta": [{"key": "consul-x", "value": "v"}]}, "metadata key 'consul-x'"),
            ({"meta": [{"key": "k", "value": "v" * 513}]}, "metadata 'k'"),
            ({"id": "x" * (MAX_ID + 1)}, "ID"),
        ):
            [failure] = self.pair.call(Register, name="api", host="h", port=1, **fields)
            failure.trap(Invalid)
            self.assertIn(reason, failure.value.args[0])
        self.assertEqual(self.server.registry.instances(), [])

    def test_an_id_registered_again_is_replaced(self):
        self.pair.answer(Register, name="api", host="h", port=1, id="api-1", tags=["old"])
        self.pair.answer(Register, name="api", host="h", port=2, id="api-1", tags=["new"])
        [instance] = self.pair.answer(Lookup, name="api")["instances"]
        self.assertEqual((instance["port"], instance["tags"]), (2, ["new"]))

    def test_warning_instances_are_served_with_their_status_critical_ones_are_not(self):
        served(self.server, "web", "127.0.0.1", 1, "warning")
        served(self.server, "web", "127.0.0.1", 2, "critical")
        served(self.server, "web", "127.0.0.1", 3, "passing")
        expected = [("127.0.0.1", 1, "warning"), ("127.0.0.1", 3, "passing")]
        asked = lookups_on_amps_path(self.server)
        answer = self.pair.answer(Lookup, name="web")
        self.assertEqual(
            [(i["host"], i["port"], i["status"]) for i in answer["instances"]], expected
        )
        self.assertEqual(asked, [])  # the encoded answer
        watched = self.pair.answer(Watch, name="web")["instances"]
        self.assertEqual([(i["host"], i["port"], i["status"]) for i in watched], expected)
        self.assertEqual(self.pair.answer(Services), {"names": ["web"]})
        self.server.registry.remove("web@127.0.0.1:1", self.server.registry.index + 1)
        self.server.registry.remove("web@127.0.0.1:3", self.server.registry.index + 1)
        self.pair.call(Lookup, name="web")[0].trap(NotFound)
        self.assertEqual(self.pair.answer(Services), {"names": []})  # critical only

    def test_deregister_by_id(self):
        self.pair.answer(Register, name="api", host="h", port=1, id="api-1")
        self.pair.answer(Register, name="api", host="h", port=1, id="api-2")  # same address
        self.assertEqual(self.pair.answer(Deregister, id="api-2"), {})
        [instance] = self.pair.answer(Lookup, name="api")["instances"]
        self.assertEqual(instance["id"], "api-1")
        [failure] = self.pair.call(Deregister, id="api-2")
        failure.trap(NotFound)
        self.assertEqual(failure.value.args[0], "no instance with ID api-2")

    def test_deregister_takes_an_id_or_an_address_not_both_nor_part(self):
        self.pair.answer(Register, name="api", host="h", port=1)
        for arguments in (
            {},
            {"name": "api"},
            {"name": "api", "host": "h"},
            {"host": "h", "port": 1},
            {"id": "api@h:1", "name": "api", "host": "h", "port": 1},
            {"id": "api@h:1", "port": 1},
        ):
            [failure] = self.pair.call(Deregister, **arguments)
            failure.trap(Invalid)
            self.assertEqual(
                failure.value.args[0], "Deregister takes either name, host and port, or id"
            )
        self.assertEqual(len(self.server.registry), 1)

    def test_deregister_by_id_needs_the_token(self):
        pair = names_pair(token="s3cret")
        pair.answer(Register, name="api", host="h", port=1, token="s3cret")
        pair.call(Deregister, id="api@h:1")[0].trap(Unauthorized)
        pair.call(Deregister, id="api@h:1", token="wrong")[0].trap(Unauthorized)
        self.assertEqual(pair.answer(Deregister, id="api@h:1", token="s3cret"), {})


class ReadTokenTests(SynchronousTestCase):
    """With a read token, Lookup, Watch and Services need it (or the token); Unwatch does not."""

    def setUp(self):
        self.lines = captured_log(self)
        self.pair = names_pair(token="writer", read_token="reader")
        self.pair.answer(Register, name="svc", host="h", port=1, token="writer")
        self.server = self.pair.server.factory.server

    def test_reads_need_the_read_token_or_the_token(self):
        for command, arguments in (
            (Lookup, {"name": "svc"}),
            (Watch, {"name": "svc"}),
            (Services, {}),
        ):
            for token in (None, "", "wrong", "reade", "readerx"):
                [failure] = self.pair.call(command, token=token, **arguments)
                failure.trap(Unauthorized)
                self.assertEqual(
                    failure.value.args[0], "a valid token is needed to read the registry"
                )
            for token in ("reader", "writer"):
                self.pair.answer(command, token=token, **arguments)
        self.assertEqual(self.pair.answer(Unwatch, name="svc"), {})
        self.assertEqual(
            [line for line in self.lines if "refused" in line],
            ["names: Lookup from 192.0.2.7:40000 refused: missing or wrong read token"],
        )

    def test_the_encoded_answer_is_given_only_to_a_box_with_the_read_token(self):
        asked = lookups_on_amps_path(self.server)
        reader = self.pair.answer(Lookup, name="svc", token="reader")
        self.assertEqual(asked, [])
        writer = self.pair.answer(Lookup, name="svc", token="writer")  # checked by AMP's path
        self.assertEqual(asked, ["svc"])
        self.assertEqual(reader["instances"], writer["instances"])
        for token in (None, "wrong"):
            self.pair.call(Lookup, name="svc", token=token)[0].trap(Unauthorized)
        self.assertEqual(asked, ["svc"])  # refused before any lookup

    def test_a_watch_refused_pushes_nothing(self):
        watcher = AMPPair(self.pair.server.factory, PreviousWatcher())
        [failure] = watcher.call(previous.Watch, name="svc")
        failure.trap(amp.UnknownRemoteError)  # a code the previous contract did not know
        self.assertIn("a valid token is needed to read the registry", str(failure.value))
        self.pair.answer(Register, name="svc", host="h", port=2, token="writer")
        watcher.pump()
        self.assertEqual(watcher.client.changes, [])
        self.assertEqual(self.server.watches.watchers("svc"), 0)

    def test_without_a_read_token_reads_are_open_and_a_token_sent_is_ignored(self):
        pair = names_pair(token="writer")
        pair.answer(Register, name="svc", host="h", port=1, token="writer")
        asked = lookups_on_amps_path(pair.server.factory.server)
        for token in (None, "anything", "writer"):
            self.assertEqual(len(pair.answer(Lookup, name="svc", token=token)["instances"]), 1)
            self.assertEqual(pair.answer(Services, token=token), {"names": ["svc"]})
        self.assertEqual(asked, [])  # every lookup the encoded answer


class PreviousWatcher(amp.AMP):
    """A client of the previous contract that records each Changed call it answers."""

    def __init__(self):
        super().__init__()
        self.changes = []

    @previous.Changed.responder
    def changed(self, name, instances):
        self.changes.append((name, instances))
        return {}


class PreviousClientTests(SynchronousTestCase):
    """A client of the previous contract reads the answers as it always did."""

    def setUp(self):
        self.pair = names_pair()
        self.server = self.pair.server.factory.server
        self.old = AMPPair(self.pair.server.factory, PreviousWatcher())

    def test_register_lookup_watch_and_changed(self):
        self.assertEqual(self.old.answer(previous.Watch, name="web"), {"instances": [], "ttl": 5})
        self.old.answer(previous.Register, name="web", host="127.0.0.1", port=1, description="d")
        self.pair.answer(
            Register,
            name="web",
            host="127.0.0.1",
            port=2,
            id="web-2",
            tags=["v2"],
            meta=[{"key": "k", "value": "v"}],
        )
        served(self.server, "web", "127.0.0.1", 3, "warning")
        old_fields = [
            {"host": "127.0.0.1", "port": 1, "description": "d"},
            {"host": "127.0.0.1", "port": 2, "description": ""},
            {"host": "127.0.0.1", "port": 3, "description": ""},
        ]
        asked = lookups_on_amps_path(self.server)
        self.assertEqual(
            self.old.answer(previous.Lookup, name="web"), {"instances": old_fields, "ttl": 5}
        )
        self.assertEqual(asked, [])  # the encoded answer
        self.old.pump()
        self.assertEqual(
            self.old.client.changes,
            [("web", old_fields[:1]), ("web", old_fields[:2]), ("web", old_fields)],
        )
        self.assertEqual(self.old.answer(previous.Services), {"names": ["web"]})
        self.assertEqual(
            self.old.answer(previous.Deregister, name="web", host="127.0.0.1", port=2), {}
        )
        self.assertIsNone(self.server.registry.by_id("web-2"))

    def test_a_lookup_answered_by_amps_path_too(self):
        self.old.answer(previous.Register, name="web", host="127.0.0.1", port=1)
        asked = lookups_on_amps_path(self.server)
        self.server.answers.answer = lambda name, tag: None  # as for a name only AMP answers
        self.assertEqual(
            self.old.answer(previous.Lookup, name="web")["instances"],
            [{"host": "127.0.0.1", "port": 1, "description": ""}],
        )
        self.assertEqual(asked, ["web"])
