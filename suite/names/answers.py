"""
Lookup answers encoded once per change of a name's instances.

A Lookup is answered by bytes built when the name's instance set last
changed, not by AMP's generic path (argument parsing, a Deferred, a
response box serialised per call).  The bytes are what Twisted's own AMP
serialisation of the same answer gives (sorted keys: `_answer`,
`instances`, `ttl`), so a stock AMP client sees no difference.  Rotation
is kept: the instances' boxes are stored twice in a row, and the answer
starting at instance N is one slice of that.
"""

from struct import pack

from suite.names.commands import Lookup

_ARGUMENTS = dict(Lookup.response)
_INSTANCES, _TTL = _ARGUMENTS[b"instances"], _ARGUMENTS[b"ttl"]
MAX_VALUE = 0xFFFF  # an AMP value's length is two bytes


def _pair(key: bytes, value: bytes) -> bytes:
    return pack("!H", len(key)) + key + pack("!H", len(value)) + value


class EncodedAnswers:
    """The Lookup answers of REGISTRY's names, with TTL, kept current through on_change."""

    def __init__(self, registry, ttl: int):
        self.registry = registry
        self._tail = _pair(b"ttl", _TTL.toStringProto(ttl, None)) + b"\0\0"
        self._by_name: dict[bytes, tuple] = {}
        registry.on_change(self.forget)

    def forget(self, name: str) -> None:
        self._by_name.pop(name.encode(), None)

    def answer(self, name: bytes, tag: bytes) -> tuple[bytes, int] | None:
        """
        (the answer box to Lookup(NAME) asked with `_ask` TAG, how many
        instances it holds), taking the name's next turn; None when NAME is
        not a live name or its answer cannot be encoded (longer than an AMP
        value): AMP's own path then answers, with the error.
        """
        entry = self._by_name.get(name)
        if entry is None:
            entry = self._encode(name)
            if entry is None:
                return None
        text, count, head, doubled, offsets, length = entry
        start = offsets[self.registry.take_turn(text, count)] if count > 1 else 0
        answer = b"".join((
            b"\0\x07_answer", pack("!H", len(tag)), tag,
            head, doubled[start:start + length], self._tail,
        ))
        return answer, count

    def _encode(self, name: bytes):
        try:
            text = name.decode("utf-8")
            instances = self.registry.instances_of(text)
        except Exception:  # not UTF-8, not a valid name: AMP's path says INVALID
            return None
        parts = [
            _INSTANCES.toStringProto(
                [{"host": i.host, "port": i.port, "description": i.description}], None
            )
            for i in instances
        ]
        joined = b"".join(parts)
        if not parts or len(joined) > MAX_VALUE:
            return None
        offsets, position = [], 0
        for part in parts:
            offsets.append(position)
            position += len(part)
        head = pack("!H", 9) + b"instances" + pack("!H", len(joined))
        entry = (text, len(parts), head, joined * 2, offsets, len(joined))
        self._by_name[name] = entry
        return entry
