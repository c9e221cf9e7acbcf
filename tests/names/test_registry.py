"""The registry's rules: validation, round robin, eviction counting."""

from twisted.trial.unittest import SynchronousTestCase

from suite.contracts.names import Invalid
from suite.names.allowed import MAX_ADDRESSES, AllowedHosts, NotAllowed
from suite.names.registry import Check, Instance, Registry, RegistryFull, check_target_host


class ValidationTests(SynchronousTestCase):
    def test_valid_names(self):
        for name in ["a", "echo", "my-service-2", "0", "a" * 63]:
            Registry(10).register(name, "127.0.0.1", 1)

    def test_invalid_names(self):
        for name in ["", "-lead", "Upper", "under_score", "dot.ted", "a" * 64, "é"]:
            with self.assertRaisesRegex(Invalid, "1-63 of a-z 0-9 -", msg=repr(name)):
                Registry(10).register(name, "127.0.0.1", 1)

    def test_valid_hosts(self):
        for host in [
            "127.0.0.1",
            "::1",
            "fe80::1",
            "localhost",
            "db-1.example.org",
            "example.org.",
            "a" * 63 + ".org",
        ]:
            Registry(10).register("svc", host, 1)

    def test_invalid_hosts(self):
        for host in [
            "",
            "-bad.org",
            "bad-.org",
            "two..dots",
            "sp ace",
            "a" * 64,
            "x" * 250 + ".org",
            "300.1.2.3.4:5",
            "a_b",
            "new\nline.org",
            "\x1b[2J",
            "é.org",
            "x" * 63 + "." + "y" * 63 + "." + "z" * 63 + "." + "w" * 62,
        ]:
            with self.assertRaisesRegex(
                Invalid, "not an IP address, nor a host name", msg=repr(host)
            ):
                Registry(10).register("svc", host, 1)

    def test_a_host_name_may_have_253_bytes(self):
        host = "x" * 63 + "." + "y" * 63 + "." + "z" * 63 + "." + "w" * 61
        self.assertEqual(len(host), 253)
        Registry(10).register("svc", host, 1)

    def test_scope_ids_are_not_allowed(self):
        for host in ["fe80::1%eth0", "::1%lo", "fe80::1%1", "fe80::1%\n\x1b[2J"]:
            with self.assertRaisesRegex(NotAllowed, "scope id", msg=repr(host)):
                Registry(10).register("svc", host, 1)

    def test_a_refused_host_is_shown_escaped_and_cut(self):
        with self.assertRaises(Invalid) as caught:
            Registry(10).register("svc", "\x1b]0;pwned\x07" + "x" * 300, 1)
        reason = caught.exception.args[0]
        self.assertIn("'\\x1b]0;pwned\\x07xxx", reason)
        self.assertLess(len(reason), 250)

    def test_invalid_ports(self):
        for port in [0, -1, 65536]:
            with self.assertRaisesRegex(Invalid, "must be 1-65535", msg=repr(port)):
                Registry(10).register("svc", "h", port)

    def test_long_description_is_invalid(self):
        with self.assertRaisesRegex(Invalid, "longer than 256"):
            Registry(10).register("svc", "h", 1, "d" * 257)


class RegistryTests(SynchronousTestCase):
    def test_registering_again_updates_the_instance(self):
        registry = Registry(10)
        first, new = registry.register("svc", "h", 1, "old")
        again, new_again = registry.register("svc", "h", 1, "new")
        self.assertEqual(
            (new, new_again, registry.get("svc", "h", 1) is again, again.description),
            (True, False, True, "new"),
        )
        self.assertEqual(len(registry), 1)
        self.assertEqual((first.id, again.id), ("svc@h:1", "svc@h:1"))

    def test_lookup_rotates_by_one_each_call(self):
        registry = Registry(10)
        for port in (1, 2, 3):
            registry.register("svc", "h", port)
        orders = [[i.port for i in registry.lookup("svc")] for _ in range(4)]
        self.assertEqual(orders, [[1, 2, 3], [2, 3, 1], [3, 1, 2], [1, 2, 3]])

    def test_deregister_and_names(self):
        registry = Registry(10)
        registry.register("b", "h", 1)
        registry.register("a", "h", 1)
        self.assertEqual(registry.names(), ["a", "b"])
        self.assertEqual(registry.deregister("b", "h", 1).name, "b")
        self.assertIsNone(registry.deregister("b", "h", 1))
        self.assertEqual(registry.names(), ["a"])
        self.assertEqual(registry.lookup("b"), [])

    def test_max_instances(self):
        registry = Registry(2)
        registry.register("a", "h", 1)
        registry.register("a", "h", 2)
        self.assertRaises(RegistryFull, registry.register, "a", "h", 3)
        registry.register("a", "h", 2, "an update still fits")

    def test_eviction_after_max_failures_in_a_row_and_reset_on_success(self):
        registry = Registry(10)
        instance, _ = registry.register("svc", "h", 1)
        self.assertFalse(registry.ping_result(instance, False, 3))
        self.assertFalse(registry.ping_result(instance, False, 3))
        self.assertFalse(registry.ping_result(instance, True, 3))
        self.assertEqual(instance.failures, 0)
        self.assertEqual(
            [registry.ping_result(instance, False, 3) for _ in range(3)], [False, False, True]
        )
        # Due for eviction; the name server removes it once the store has the change.
        self.assertTrue(registry.ping_result(instance, False, 3))

    def test_a_stale_ping_does_not_evict_a_newer_registration(self):
        registry = Registry(10)
        old, _ = registry.register("svc", "h", 1)
        registry.deregister("svc", "h", 1)
        new, _ = registry.register("svc", "h", 1)
        self.assertFalse(registry.ping_result(old, False, 1))
        self.assertEqual(registry.lookup("svc"), [new])


class AllowedHostsTests(SynchronousTestCase):
    """Where instances may be whichever way they come in: registration, store, etcd."""

    def registry(self, networks=None):
        return Registry(10, AllowedHosts() if networks is None else AllowedHosts(networks))

    def test_default_networks(self):
        registry = self.registry()
        for host in [
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.254",
            "192.168.1.1",
            "127.0.0.1",
            "127.0.0.2",
            "::1",
            "fc00::1",
            "fdff::1",
            "::ffff:10.0.0.1",
        ]:
            registry.register("svc", host, 1)
        for host in ["172.32.0.1", "8.8.8.8", "2001:db8::1", "::2", "100.64.0.1"]:
            with self.assertRaisesRegex(NotAllowed, "outside allowed_networks", msg=host):
                registry.register("svc", host, 1)

    def test_never_allowed_whatever_the_list(self):
        registry = self.registry(["0.0.0.0/0", "::/0"])
        registry.register("svc", "93.184.215.14", 1)
        for host, why in [
            ("169.254.169.254", "link-local"),
            ("fe80::1", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("::", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("ff02::1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("::ffff:169.254.169.254", "link-local"),
        ]:
            with self.assertRaisesRegex(NotAllowed, f"is an? {why} address", msg=host):
                registry.register("svc", host, 1)

    def test_every_resolved_address_must_be_allowed(self):
        registry = self.registry()
        instance, _ = registry.register("svc", "db.internal", 1, "", ("10.0.0.5", "fd00::5"))
        self.assertEqual(instance.addresses, ("10.0.0.5", "fd00::5"))
        with self.assertRaisesRegex(NotAllowed, "169.254.169.254 is a link-local"):
            registry.register("svc", "mixed.example", 1, "", ("10.0.0.6", "169.254.169.254"))
        with self.assertRaisesRegex(NotAllowed, "outside allowed_networks"):
            registry.register("svc", "mixed.example", 1, "", ("93.184.215.14", "10.0.0.6"))

    def test_a_host_name_without_addresses_is_not_served(self):
        with self.assertRaisesRegex(NotAllowed, "never resolved"):
            self.registry().register("svc", "db.internal", 1)

    def test_checks_try_a_bounded_number_of_addresses(self):
        resolved = [f"10.0.0.{n}" for n in range(1, 20)]
        instance, _ = self.registry().register("svc", "many.internal", 1, "", resolved)
        self.assertEqual(instance.addresses, tuple(resolved[:MAX_ADDRESSES]))

    def test_instances_are_counted_by_source(self):
        registry = self.registry()
        registry.register("svc", "10.0.0.1", 1, source="192.0.2.7")
        registry.register("svc", "10.0.0.1", 2, source="192.0.2.7")
        registry.register("svc", "10.0.0.1", 2, "update", source="192.0.2.8")
        self.assertEqual(
            (registry.from_source("192.0.2.7"), registry.from_source("192.0.2.8")), (2, 0)
        )
        registry.deregister("svc", "10.0.0.1", 1)
        registry.deregister("svc", "10.0.0.1", 2)
        self.assertEqual(registry.from_source("192.0.2.7"), 0)


class ModelTests(SynchronousTestCase):
    """Consul's model: IDs, tags, metadata, weights, checks, status, indexes."""

    def instance(self, **fields):
        fields = {"name": "web", "host": "127.0.0.1", "port": 80, "pinged": False, **fields}
        return Instance(**fields)

    def test_an_instance_without_an_id_is_name_at_host_port(self):
        self.assertEqual(Instance("web", "::1", 80).id, "web@[::1]:80")

    def test_status_is_the_worst_check_and_maintenance_is_critical(self):
        instance = self.instance(
            checks=[Check("a", "ttl", status="passing"), Check("b", "ttl", status="warning")]
        )
        self.assertEqual((instance.status, instance.weight), ("warning", 1))
        instance.weights = (10, 3)
        self.assertEqual(instance.weight, 3)
        instance.checks[1].status = "passing"
        self.assertEqual((instance.status, instance.weight), ("passing", 10))
        instance.maintenance = "upgrading"
        self.assertEqual(instance.status, "critical")
        self.assertEqual(self.instance().status, "passing")

    def test_critical_instances_are_kept_but_not_served(self):
        registry = Registry(10)
        registry.put(self.instance(id="a"), 2)
        registry.put(self.instance(id="b", port=81, checks=[Check("c", "ttl")]), 3)
        self.assertEqual([i.id for i in registry.instances_of("web")], ["a", "b"])
        self.assertEqual([i.id for i in registry.live_of("web")], ["a"])
        self.assertEqual([i.id for i in registry.lookup("web")], ["a"])
        registry.put(self.instance(id="a", checks=[Check("d", "ttl")]), 4)
        self.assertEqual((registry.names(), registry.live_names()), (["web"], []))
        self.assertEqual(registry.owner_of_check("d").id, "a")

    def test_indexes_rise_with_every_change_and_never_fall(self):
        registry = Registry(10)
        self.assertEqual((registry.index, registry.name_index("web")), (1, 1))
        registry.put(self.instance(id="a"), 5)
        registry.put(self.instance(id="b", name="db"), 6)
        self.assertEqual((registry.name_index("web"), registry.index), (5, 6))
        registry.put(self.instance(id="a"), 7)  # the same record: nothing changes
        self.assertEqual(registry.name_index("web"), 5)
        registry.put(self.instance(id="a", tags=("v2",)), 8)
        self.assertEqual(
            (registry.by_id("a").create_index, registry.by_id("a").modify_index), (5, 8)
        )
        registry.remove("a", 9)
        self.assertEqual((registry.name_index("web"), registry.index), (9, 9))
        heard = []
        registry.on_change(heard.append)
        registry.raise_index("web", 4)
        self.assertEqual((registry.name_index("web"), heard), (9, []))
        registry.raise_index("web", 10)
        self.assertEqual((registry.name_index("web"), heard), (10, ["web"]))

    def test_a_replacement_keeps_its_place_in_registration_order(self):
        registry = Registry(10)
        for instance_id in "abc":
            registry.put(self.instance(id=instance_id), registry.index + 1)
        registry.put(self.instance(id="a", tags=("v2",)), registry.index + 1)
        self.assertEqual([i.id for i in registry.instances_of("web")], ["a", "b", "c"])

    def test_an_id_registered_under_another_name_moves_and_both_names_change(self):
        registry = Registry(10)
        heard = []
        registry.on_change(heard.append)
        registry.put(self.instance(id="a"), 2)
        registry.put(Instance("db", "127.0.0.1", 80, id="a"), 3)
        self.assertEqual((registry.names(), heard), (["db"], ["web", "web", "db"]))
        self.assertEqual((registry.name_index("web"), registry.name_index("db")), (3, 3))

    def test_every_field_is_checked(self):
        bad = [
            ({"id": "x" * 513}, "ID"),
            ({"id": "new\nline"}, "ID"),
            ({"tags": ("",)}, "tag"),
            ({"tags": tuple(map(str, range(65)))}, "at most 64"),
            ({"meta": {"bad key": "v"}}, "metadata key"),
            ({"meta": {"consul-x": "v"}}, "metadata key"),
            ({"meta": {"k": "v" * 513}}, "at most 512"),
            ({"weights": (0, 1)}, "weights"),
            (
                {
                    "checks": [
                        Check(str(n), "ttl", name="é" * 4096, notes="é" * 4096, output="é" * 4096)
                        for n in range(16)
                    ]
                },
                "larger than 512 KiB",
            ),
            ({"weights": (1, 65536)}, "weights"),
            ({"checks": [Check("c", "ttl"), Check("c", "ttl")]}, "same ID"),
            ({"checks": [Check("c", "gossip")]}, "check kind"),
            ({"checks": [Check("c", "ttl", status="unknown")]}, "check status"),
            ({"checks": [Check("c", "tcp", target="127.0.0.1")]}, "not HOST:PORT"),
            ({"checks": [Check("c", "tcp", target="[::1]:0")]}, "not HOST:PORT"),
            ({"checks": [Check("c", "http", target="ftp://h/")]}, "not an http"),
            ({"checks": [Check("c", "http", target="http://h:99999/")]}, "not an http"),
            ({"checks": [Check("c", "http", target="http://h/", method="BREW")]}, "method"),
            (
                {"checks": [Check("c", "http", target="http://h/", header={"X": ["a\r\nB: c"]})]},
                "printable",
            ),
        ]
        for fields, reason in bad:
            with self.assertRaisesRegex(Invalid, reason, msg=reason):
                self.instance(**fields).validate()

    def test_the_host_a_check_connects_to(self):
        for check, host in [
            (Check("c", "tcp", target="10.0.0.1:80"), "10.0.0.1"),
            (Check("c", "tcp", target="[::1]:80"), "::1"),
            (Check("c", "http", target="https://db.internal:8443/health"), "db.internal"),
            (Check("c", "ttl"), None),
        ]:
            self.assertEqual(check_target_host(check), host)

    def test_a_record_round_trips_and_a_wrong_type_is_invalid(self):
        instance = self.instance(
            id="a",
            tags=("v1",),
            meta={"k": "v"},
            weights=(5, 2),
            checks=[Check("c", "http", target="http://127.0.0.1/", header={"X": ["1"]})],
            maintenance="why",
        )
        self.assertEqual(Instance.from_record(instance.record()).record(), instance.record())
        for key, value in [("port", "80"), ("tags", "v1"), ("meta", {"k": 1}), ("pinged", 1)]:
            with self.assertRaises(Invalid, msg=key):
                Instance.from_record({**instance.record(), key: value})
        with self.assertRaisesRegex(Invalid, "without name"):
            Instance.from_record({"host": "h", "port": 1})

    def test_ttl_heartbeats_are_forgotten_with_their_instance(self):
        registry = Registry(10)
        registry.put(self.instance(id="a", checks=[Check("c", "ttl")]), 2)
        registry.heartbeat("c", 12.5)
        self.assertEqual(registry.last_heartbeat("c"), 12.5)
        registry.remove("a", 3)
        self.assertIsNone(registry.last_heartbeat("c"))
