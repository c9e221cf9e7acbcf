"""
The name server's registry: instances in memory, validated, rotated on
lookup, evicted after consecutive failed health checks.  Pure: no I/O, no
reactor; the name server applies changes here once the store has them.
Every way in (a registration, a stored row, an etcd event) passes the same
checks, the host's included (L{suite.names.allowed}), and each instance
remembers the source that registered it, so `max_instances_per_source`
counts what is registered, whichever name server took it.
"""

import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from suite.contracts.names import Invalid
from suite.names.allowed import AllowedHosts, IPAddress, ip_literal, shown

NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
MAX_HOST = 253  # bytes of a host name (RFC 1123)
MAX_DESCRIPTION = 256


def check_name(name: str) -> None:
    if not NAME.fullmatch(name):
        raise Invalid(f"name '{shown(name)}': 1-63 of a-z 0-9 -, not starting with -")


def check_instance(name: str, host: str, port: int, description: str) -> IPAddress | None:
    """
    The syntax of an instance: NAME, an IP literal (no scope id) or RFC 1123
    host name, PORT.  Returns HOST as an IP address, None for a host name.
    """
    check_name(name)
    literal = ip_literal(host)
    if literal is None:
        labels = host.removesuffix(".").split(".")
        if len(host.encode()) > MAX_HOST or not all(
            HOST_LABEL.fullmatch(label) for label in labels
        ):
            raise Invalid(
                f"host '{shown(host)}': not an IP address, nor a host name of at most "
                f"{MAX_HOST} bytes (labels of 1-63 letters, digits, hyphens)"
            )
    if not 1 <= port <= 65535:
        raise Invalid(f"port {port}: must be 1-65535")
    if len(description) > MAX_DESCRIPTION:
        raise Invalid(f"description longer than {MAX_DESCRIPTION} characters")
    return literal


@dataclass
class Instance:
    """
    A registered instance.  `addresses`: what its health checks connect to
    (an IP literal's own, or a host name's as resolved at registration);
    `source`: the address of the peer that registered it.
    """

    name: str
    host: str
    port: int
    description: str = ""
    failures: int = 0
    addresses: tuple[str, ...] = ()
    source: str = ""

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.name, self.host, self.port)


class RegistryFull(Exception):
    pass


class Registry:
    """
    Instances by name, each name's instances in registration order.  Whoever
    keeps something derived from a name's instances (encoded answers)
    registers with on_change and hears of every change to that name.
    HOSTS (an L{AllowedHosts}) says where instances may be; without it
    (tests of answers and zones) any host of the right syntax is taken.
    """

    def __init__(self, max_instances: int, hosts: AllowedHosts | None = None):
        self.max_instances = max_instances
        self.hosts = hosts
        self._by_name: dict[str, OrderedDict[tuple[str, int], Instance]] = {}
        self._rotation: dict[str, int] = {}
        self._count = 0
        self._per_source: dict[str, int] = {}
        self._listeners: list[Callable[[str], object]] = []

    def on_change(self, listener: Callable[[str], object]) -> None:
        """LISTENER(name) is called after every change to the instances of a name."""
        self._listeners.append(listener)

    def _changed(self, name: str) -> None:
        for listener in self._listeners:
            listener(name)

    def __len__(self) -> int:
        return self._count

    def addresses(self, host: str, resolved: Sequence[str] = ()) -> tuple[str, ...]:
        """
        What the checks of HOST connect to (see L{AllowedHosts.addresses});
        NotAllowed if nothing.
        """
        if self.hosts is not None:
            return self.hosts.addresses(host, resolved)
        literal = ip_literal(host)
        return tuple(resolved) if literal is None else (str(literal),)

    def from_source(self, source: str) -> int:
        """How many instances SOURCE registered."""
        return self._per_source.get(source, 0)

    def register(
        self,
        name: str,
        host: str,
        port: int,
        description: str = "",
        resolved: Sequence[str] = (),
        source: str = "",
    ) -> tuple[Instance, bool]:
        """
        Add or update (name, host, port), RESOLVED being a host name's
        addresses; returns the instance and whether it is new.  An update
        keeps the source that first registered the instance.
        """
        check_instance(name, host, port, description)
        return self.add(name, host, port, description, self.addresses(host, resolved), source)

    def add(
        self,
        name: str,
        host: str,
        port: int,
        description: str,
        addresses: tuple[str, ...],
        source: str = "",
    ) -> tuple[Instance, bool]:
        """
        As L{register}, of an instance its caller already checked: NAME,
        HOST, PORT and DESCRIPTION by L{check_instance}, ADDRESSES being what
        L{addresses} made of HOST (the name server checks before it writes).
        """
        instances = self._by_name.get(name)
        existing = instances.get((host, port)) if instances else None
        if existing is not None:
            existing.addresses = addresses
            if existing.description != description:
                existing.description = description
                self._changed(name)
            return existing, False
        if self._count >= self.max_instances:
            raise RegistryFull(f"registry full ({self.max_instances} instances, max_instances)")
        instance = Instance(name, host, port, description, addresses=addresses, source=source)
        self._by_name.setdefault(name, OrderedDict())[(host, port)] = instance
        self._count += 1
        self._per_source[source] = self._per_source.get(source, 0) + 1
        self._changed(name)
        return instance, True

    def get(self, name: str, host: str, port: int) -> Instance | None:
        instances = self._by_name.get(name)
        return None if instances is None else instances.get((host, port))

    def holds(self, name: str, host: str, port: int) -> bool:
        return self.get(name, host, port) is not None

    def holds_exactly(self, instance: Instance) -> bool:
        """Whether INSTANCE itself (not a later registration of the same key) is registered."""
        return self.get(instance.name, instance.host, instance.port) is instance

    def deregister(self, name: str, host: str, port: int) -> Instance | None:
        instances = self._by_name.get(name)
        if not instances or (host, port) not in instances:
            return None
        instance = instances.pop((host, port))
        self._count -= 1
        remaining = self._per_source[instance.source] - 1
        if remaining:
            self._per_source[instance.source] = remaining
        else:
            del self._per_source[instance.source]
        if not instances:
            del self._by_name[name]
            self._rotation.pop(name, None)
        self._changed(name)
        return instance

    def lookup(self, name: str) -> list[Instance]:
        """The instances of NAME, starting one further on each call (round robin)."""
        instances = self.instances_of(name)
        if not instances:
            return []
        turn = self.take_turn(name, len(instances))
        return instances[turn:] + instances[:turn]

    def instances_of(self, name: str) -> list[Instance]:
        """The instances of NAME in registration order, without taking a turn."""
        check_name(name)
        instances = self._by_name.get(name)
        return [] if instances is None else list(instances.values())

    def take_turn(self, name: str, count: int) -> int:
        """Where the next answer for NAME (COUNT instances) starts: one further each call."""
        turn = self._rotation.get(name, 0) % count
        self._rotation[name] = turn + 1
        return turn

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def instances(self) -> list[Instance]:
        return [i for instances in self._by_name.values() for i in instances.values()]

    def ping_result(self, instance: Instance, alive: bool, max_failures: int) -> bool:
        """
        Count a health check; True when the instance, still registered, has
        now failed MAX_FAILURES (or more) in a row and is due for eviction.
        """
        if alive:
            instance.failures = 0
            return False
        instance.failures += 1
        return instance.failures >= max_failures and self.holds_exactly(instance)
