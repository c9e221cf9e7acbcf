"""The registry's rules: validation, round robin, eviction counting."""

from twisted.trial.unittest import SynchronousTestCase

from suite.names.commands import Invalid
from suite.names.registry import Registry, RegistryFull


class ValidationTests(SynchronousTestCase):
    def test_valid_names(self):
        for name in ["a", "echo", "my-service-2", "0", "a" * 63]:
            Registry(10).register(name, "127.0.0.1", 1)

    def test_invalid_names(self):
        for name in ["", "-lead", "Upper", "under_score", "dot.ted", "a" * 64, "é"]:
            with self.assertRaisesRegex(Invalid, "1-63 of a-z 0-9 -", msg=repr(name)):
                Registry(10).register(name, "127.0.0.1", 1)

    def test_valid_hosts(self):
        for host in ["127.0.0.1", "::1", "fe80::1", "localhost", "db-1.example.org",
                     "example.org.", "a" * 63 + ".org"]:
            Registry(10).register("svc", host, 1)

    def test_invalid_hosts(self):
        for host in ["", "-bad.org", "bad-.org", "two..dots", "sp ace", "a" * 64,
                     "x" * 250 + ".org", "300.1.2.3.4:5", "a_b"]:
            with self.assertRaisesRegex(Invalid, "not a host name or IP address", msg=repr(host)):
                Registry(10).register("svc", host, 1)

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
            (new, new_again, again is first, again.description, len(registry)),
            (True, False, True, "new", 1),
        )

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
