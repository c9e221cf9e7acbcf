"""
Watch: who watches which name, and the Changed push each of them gets
when the name's live instances change (register, deregister, eviction, a
change of description, tags, metadata or status).  The instances are
encoded once per change, whatever the number of watchers; each watcher's
connection sends them in the order the changes happened.  A change the
watchers cannot see (a check's output, a critical instance's checks) is
not pushed: what they were sent last is kept while anyone watches.
"""

from typing import Protocol

from suite.contracts.names import Changed
from suite.names.answers import as_fields, fitting
from suite.names.registry import Instance, Registry

_INSTANCES = dict(Changed.arguments)[b"instances"]


class Watcher(Protocol):
    """Who watches a name: the names protocol of a connection."""

    def push_change(self, name: bytes, instances: bytes) -> None:
        """Tell the watcher NAME's live instances are now INSTANCES (encoded)."""


def encode_instances(instances: list[Instance]) -> bytes:
    """
    INSTANCES as the `instances` value of Lookup, Watch and Changed (as many
    as one value holds).
    """
    encoded: bytes = _INSTANCES.toStringProto([as_fields(i) for i in fitting(instances)], None)
    return encoded


class Watches:
    """
    The watchers of REGISTRY's names.  A watcher is anything with
    push_change(name: bytes, instances: bytes): the names protocol.
    """

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._by_name: dict[str, dict[Watcher, None]] = {}  # name -> watchers, in arrival order
        # name -> the instances its watchers were sent last, in their Watch answer or a
        # push: what every one of them has seen (a name without watchers forgets its own).
        self._pushed: dict[str, bytes] = {}
        registry.on_change(self._changed)

    def watch(self, name: str, watcher: Watcher) -> None:
        """WATCHER is sent NAME's changes from now on, its Watch answer the instances now."""
        self._by_name.setdefault(name, {})[watcher] = None
        if name not in self._pushed:
            self._pushed[name] = encode_instances(self.registry.live_of(name))

    def unwatch(self, name: str, watcher: Watcher) -> None:
        watchers = self._by_name.get(name)
        if watchers is not None:
            watchers.pop(watcher, None)
            if not watchers:
                del self._by_name[name]
                self._pushed.pop(name, None)

    def count(self) -> int:
        """(name, watcher) pairs, for the metrics (read from another thread: a copy is walked)."""
        return sum(map(len, list(self._by_name.values())))

    def watchers(self, name: str) -> int:
        return len(self._by_name.get(name, ()))

    def _changed(self, name: str) -> None:
        watchers = self._by_name.get(name)
        if not watchers:
            return
        instances = encode_instances(self.registry.live_of(name))
        if self._pushed.get(name) == instances:
            return
        self._pushed[name] = instances
        encoded_name = name.encode()
        for watcher in list(watchers):
            watcher.push_change(encoded_name, instances)
