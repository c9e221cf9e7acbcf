import pytest

from suite.commands import Invalid
from suite.names.registry import Registry, RegistryFull


@pytest.mark.parametrize("name", ["a", "echo", "my-service-2", "0", "a" * 63])
def test_valid_names(name):
    Registry(10).register(name, "127.0.0.1", 1)


@pytest.mark.parametrize("name", ["", "-lead", "Upper", "under_score", "dot.ted", "a" * 64, "é"])
def test_invalid_names(name):
    with pytest.raises(Invalid, match="1-63 of a-z 0-9 -"):
        Registry(10).register(name, "127.0.0.1", 1)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "fe80::1", "localhost", "db-1.example.org",
                                  "example.org.", "a" * 63 + ".org"])
def test_valid_hosts(host):
    Registry(10).register("svc", host, 1)


@pytest.mark.parametrize("host", ["", "-bad.org", "bad-.org", "two..dots", "sp ace", "a" * 64,
                                  "x" * 250 + ".org", "300.1.2.3.4:5", "a_b"])
def test_invalid_hosts(host):
    with pytest.raises(Invalid, match="not a host name or IP address"):
        Registry(10).register("svc", host, 1)


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_invalid_ports(port):
    with pytest.raises(Invalid, match="must be 1-65535"):
        Registry(10).register("svc", "h", port)


def test_long_description_is_invalid():
    with pytest.raises(Invalid, match="longer than 256"):
        Registry(10).register("svc", "h", 1, "d" * 257)


def test_registering_again_updates_the_instance():
    registry = Registry(10)
    first, new = registry.register("svc", "h", 1, "old")
    again, new_again = registry.register("svc", "h", 1, "new")
    assert (new, new_again, again is first, again.description, len(registry)) == (
        True, False, True, "new", 1
    )


def test_lookup_rotates_by_one_each_call():
    registry = Registry(10)
    for port in (1, 2, 3):
        registry.register("svc", "h", port)
    orders = [[i.port for i in registry.lookup("svc")] for _ in range(4)]
    assert orders == [[1, 2, 3], [2, 3, 1], [3, 1, 2], [1, 2, 3]]


def test_deregister_and_names():
    registry = Registry(10)
    registry.register("b", "h", 1)
    registry.register("a", "h", 1)
    assert registry.names() == ["a", "b"]
    assert registry.deregister("b", "h", 1).name == "b"
    assert registry.deregister("b", "h", 1) is None
    assert registry.names() == ["a"]
    assert registry.lookup("b") == []


def test_max_instances():
    registry = Registry(2)
    registry.register("a", "h", 1)
    registry.register("a", "h", 2)
    with pytest.raises(RegistryFull):
        registry.register("a", "h", 3)
    registry.register("a", "h", 2, "an update still fits")


def test_eviction_after_max_failures_in_a_row_and_reset_on_success():
    registry = Registry(10)
    instance, _ = registry.register("svc", "h", 1)
    assert not registry.ping_result(instance, False, 3)
    assert not registry.ping_result(instance, False, 3)
    assert not registry.ping_result(instance, True, 3)
    assert instance.failures == 0
    assert [registry.ping_result(instance, False, 3) for _ in range(3)] == [False, False, True]
    assert registry.lookup("svc") == []


def test_a_stale_ping_does_not_evict_a_newer_registration():
    registry = Registry(10)
    old, _ = registry.register("svc", "h", 1)
    registry.deregister("svc", "h", 1)
    new, _ = registry.register("svc", "h", 1)
    assert not registry.ping_result(old, False, 1)
    assert registry.lookup("svc") == [new]
