"""
Lookup answers encoded once per change of a name's instances.

A Lookup is answered by bytes built when the name's instance set last
changed, not by AMP's generic path (argument parsing, a Deferred, a
response box serialised per call).  The bytes are what Twisted's own AMP
serialisation of the same answer gives (sorted keys: `_answer`,
`instances`, `ttl`), so a stock AMP client sees no difference.  Rotation
is kept: the instances' boxes are stored twice in a row, and the answer
starting at instance N is one slice of that (L{suite.names.rotation}).

An AMP value holds at most 65,535 bytes (about 600 instances of one name
with short descriptions and no tags): an answer holds as many instances as
fit, from its turn on, so successive lookups still see them all.
"""

from struct import pack

from suite.contracts.names import Lookup
from suite.names.registry import Instance, Registry
from suite.names.rotation import Rotating

_ARGUMENTS = dict(Lookup.response)
_INSTANCES, _TTL = _ARGUMENTS[b"instances"], _ARGUMENTS[b"ttl"]
MAX_VALUE = 0xFFFF  # an AMP value's length is two bytes

Encoded = tuple[str, Rotating, bytes]  # a name's text, its instances' boxes, the answer's head


def as_fields(instance: Instance) -> dict[str, object]:
    """
    An instance as the AmpList of Lookup, Watch and Changed holds it; empty
    tags and metadata are left out (None), which costs an instance without
    them nothing on the wire.
    """
    return {
        "host": instance.host,
        "port": instance.port,
        "description": instance.description,
        "id": instance.id,
        "tags": list(instance.tags) or None,
        "meta": [{"key": k, "value": v} for k, v in sorted(instance.meta.items())] or None,
        "status": instance.status,
    }


def _instance_box(instance: Instance) -> bytes:
    box: bytes = _INSTANCES.toStringProto([as_fields(instance)], None)
    return box


def fitting(instances: list[Instance]) -> list[Instance]:
    """The first of INSTANCES whose boxes fit in one AMP value."""
    size = 0
    for count, instance in enumerate(instances):
        size += len(_instance_box(instance))
        if size > MAX_VALUE:
            return instances[:count]
    return instances


def _pair(key: bytes, value: bytes) -> bytes:
    return pack("!H", len(key)) + key + pack("!H", len(value)) + value


class EncodedAnswers:
    """The Lookup answers of REGISTRY's names, with TTL, kept current through on_change."""

    def __init__(self, registry: Registry, ttl: int) -> None:
        self.registry = registry
        self._tail = _pair(b"ttl", _TTL.toStringProto(ttl, None)) + b"\0\0"
        self._by_name: dict[bytes, Encoded] = {}
        registry.on_change(self.forget)

    def forget(self, name: str) -> None:
        self._by_name.pop(name.encode(), None)

    def answer(self, name: bytes, tag: bytes) -> tuple[bytes, int] | None:
        """
        (the answer box to Lookup(NAME) asked with `_ask` TAG, how many
        instances it holds), taking the name's next turn; None when NAME is
        not a live name: AMP's own path then answers, with the error.
        """
        entry = self._by_name.get(name)
        if entry is None:
            entry = self._encode(name)
            if entry is None:
                return None
        text, boxes, head = entry
        turn = self.registry.take_turn(text, boxes.count) if boxes.count > 1 else 0
        instances, answered = boxes.slice(turn, MAX_VALUE)
        if (
            answered < boxes.count
        ):  # more than one AMP value holds: as many as fit, from this turn on
            head = b"\0\x09instances" + pack("!H", len(instances))
        answer = b"".join(
            (
                b"\0\x07_answer",
                pack("!H", len(tag)),
                tag,
                head,
                instances,
                self._tail,
            )
        )
        return answer, answered

    def _encode(self, name: bytes) -> Encoded | None:
        try:
            text = name.decode("utf-8")
            instances = self.registry.live_of(text)
        except Exception:  # not UTF-8, not a valid name: AMP's path says INVALID
            return None
        parts = [_instance_box(i) for i in instances]
        if not parts:
            return None
        boxes = Rotating(parts)
        head = b"\0\x09instances" + pack("!H", min(boxes.size, MAX_VALUE))
        entry = (text, boxes, head)
        self._by_name[name] = entry
        return entry
