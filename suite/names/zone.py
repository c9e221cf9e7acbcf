"""
The name server's DNS zone: answers to DNS queries over the live registry,
encoded once per question and change, with only the ID, the RD bit and the
question's own spelling taken from each query.

The records are twisted.names' (`RRHeader`, `Record_SRV`, `Record_A`,
`Record_AAAA`, `Record_SOA`) and are encoded by it.  What makes the answer
path cheap is that names in a record are compressed against the question
only (which sits at offset 12 of every answer), never against another
record (SRV targets are never compressed, RFC 2782): each record's bytes
are then valid wherever it stands, so a rotated answer is a slice of the
records stored twice in a row, and an answer cut for UDP ends at a record
boundary found by bisection.

The zone `DOMAIN` (authoritative: AA set, RA clear) serves the live
(passing and warning, never critical) instances of each registry name:

- `_NAME._tcp.DOMAIN` SRV: one record per live instance (priority 1, the
  instance's weight now: its passing weight, or its warning weight while
  it is warning; its port); the target of an IP literal is
  `HEX.addr.DOMAIN` with its A/AAAA record in the additional section (once
  per address), of a host name that name.
- `_NAME._TAG.DOMAIN` SRV (and Consul's `_NAME._TAG.service.DOMAIN`): as
  `_tcp`, of the instances with the tag TAG (`_tcp` filters nothing).
- `NAME.service.DOMAIN` and `TAG.NAME.service.DOMAIN` (Consul's forms):
  SRV as above, A / AAAA as `NAME.DOMAIN`, of every live instance or of
  those with the tag TAG.  Tags match whole, ignoring ASCII case as DNS
  does; a tag that is not one DNS label cannot be asked for.
- `NAME.DOMAIN` A / AAAA: the addresses of the IP-literal instances of
  that family, each once (instances on one host share one record).
- `HEX.addr.DOMAIN` A (8 hex digits) / AAAA (32): the address it spells.
- `DOMAIN` SOA; ANY answers every type a name has.
- Rotation: the records start one further on each query, as Lookup.
- A name with nothing live (a tag no live instance has included): NXDOMAIN,
  a name asked for a type it lacks: NODATA; both with the SOA in the
  authority section (TTL and minimum `cache_ttl`).  `addr.DOMAIN`,
  `_tcp.DOMAIN` and `service.DOMAIN` (unless a registry name is `service`)
  hold no records but have names below them: NODATA.  Outside the zone
  or the IN class: REFUSED.  A query that does not parse: FORMERR; an
  opcode other than QUERY: NOTIMP; EDNS other than version 0: BADVERS; a
  response (QR set) is never answered.
- Before an etcd store's copy was first read: SERVFAIL, so resolvers ask
  another name server rather than cache an empty zone.
- Over UDP at most 512 bytes, or the EDNS0 size offered but never more
  than 1232 (DNS Flag Day 2020: no IP fragments, and a forged 40-byte query
  draws at most 1232 bytes at a victim): answers that do not all fit are
  cut at a record boundary with TC set; additional records that do not fit
  are left out (RFC 2181 §9).
- A query is its header, one question and at most one OPT record; a byte
  beyond them is FORMERR, so junk appended to a query can neither pose as
  a new question nor grow the caches.
- The answers prepared per question, and the exact queries that map to
  them, are kept in `cache_bytes` at most (half each), the least recently
  used forgotten first.  An exact query asked a second time over UDP keeps
  its whole answers too, but for the ID (one per turn, for answers rotating
  over at most READY_TURNS records), so that the UDP listener answers it
  again with a lookup and a concatenation (L{suite.names.dnsfront}).  A
  quarter of the answers' half keeps, per name asked, its live instances
  and their index by tag, so that preparing an answer costs the records it
  holds: a question with a tag nobody has, or of a type the name lacks,
  costs a dictionary lookup, however many instances the name has.

Queries answered are counted by type and rcode (types outside
TYPE_NAMES as `other`, so a client cannot make the labels grow).
"""

import ipaddress
import re
import sys
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from io import BytesIO
from struct import pack, unpack_from
from typing import TypeVar

from twisted.names import dns
from zope.interface import implementer

from suite.foundation.interfaces import IMetricSource
from suite.names.allowed import IPAddress
from suite.names.registry import NAME, Instance, Registry
from suite.names.rotation import Packed, Rotating

UDP_SIZE = 512
MAX_UDP_SIZE = 1232  # DNS Flag Day 2020
TCP_SIZE = 65535
CACHE_BYTES = 16 * 2**20  # the [names] dns_cache_bytes default
OPT_FIXED = (
    11  # an OPT record without its options: name, type, size, rcode, version, flags, length
)

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS = 16  # an extended rcode: 1 in the OPT record, 0 in the header
QR_AA = 0x8400  # a response, authoritative
TC = 0x0200
HEX = re.compile(r"[0-9a-f]{8}|[0-9a-f]{32}")
SERVICE = "service"  # Consul's NAME.service and TAG.NAME.service
NO_TAG = "tcp"  # _NAME._tcp: every instance, whatever its tags
ANY = dns.ALL_RECORDS
SOA_TIMES = {"refresh": 3600, "retry": 600, "expire": 86400}
TYPE_NAMES = {
    dns.A: "A",
    dns.AAAA: "AAAA",
    dns.SRV: "SRV",
    dns.SOA: "SOA",
    ANY: "ANY",
    dns.NS: "NS",
    dns.PTR: "PTR",
    dns.TXT: "TXT",
    dns.MX: "MX",
    dns.CNAME: "CNAME",
}
RCODE_NAMES = {
    NOERROR: "NOERROR",
    FORMERR: "FORMERR",
    SERVFAIL: "SERVFAIL",
    NXDOMAIN: "NXDOMAIN",
    NOTIMP: "NOTIMP",
    REFUSED: "REFUSED",
    BADVERS: "BADVERS",
}


Labels = tuple[bytes, ...]  # a name's labels, lowercased
Question = tuple[Labels, int, int]  # (labels, type, class)
Key = TypeVar("Key", bound=Hashable)
Value = TypeVar("Value")


def hex_label(address: IPAddress) -> bytes:
    return address.packed.hex().encode()


def _opt(size: int, extended_rcode: int = 0) -> bytes:
    """Our OPT record: root name, type 41, our UDP size, extended rcode, version 0."""
    return b"\0" + pack("!HHBBHH", dns.OPT, size, extended_rcode, 0, 0, 0)


OUR_OPT = _opt(MAX_UDP_SIZE)


NO_RECORDS = Packed([])


class Prepared:
    """
    The answer to one question (name lowercased, type, class) but for the
    query's own ID, RD bit, spelling and size: header flags with the rcode, rotating answers
    (with the registry name whose turn rotates them), authority and
    additional records.
    """

    __slots__ = (
        "flags",
        "answers",
        "authority",
        "additional",
        "turn_name",
        "valid",
        "tally",
        "depends_on",
        "size",
    )

    def __init__(
        self,
        rcode: int = NOERROR,
        answers: Rotating | None = None,
        authority: bytes = b"",
        additional: Packed = NO_RECORDS,
        turn_name: str | None = None,
    ) -> None:
        self.flags = (0x8000 if rcode == REFUSED else QR_AA) | rcode
        self.answers = answers
        self.authority = authority
        self.additional = additional
        self.turn_name = turn_name
        self.valid = True  # False once forgotten: kept current no longer
        # The count of the answers of its type and rcode (set by the zone).
        self.tally: list[int] | None = None
        # The registry name whose changes make it stale (set by the zone).
        self.depends_on: str | None = None
        self.size = 0  # bytes it holds, as the cache counts them (set by the zone)

    def invalidate(self) -> None:
        """
        Forgotten: queries still mapped to it are parsed afresh; all but
        this small shell is let go (the exact queries' entries are charged for it).
        """
        self.valid = False
        self.answers, self.authority, self.additional = None, b"", NO_RECORDS
        self.turn_name = self.depends_on = None


CACHE_SLOT = 100  # an OrderedDict's entry: its hash table slot and its link
SET_OF_ONE = sys.getsizeof({0})
# An exact query's entry beyond its bytes: the key object, the tuple, and
# the shell of a forgotten Prepared it may be the last to hold.
EXACT_OVERHEAD = 200 + CACHE_SLOT + sys.getsizeof(Prepared())


READY_TURNS = 8  # UDP answers kept whole per exact query: one per turn, for up to this many


class Exact:
    """
    How to answer one exact query (its bytes after the ID): its PREPARED
    answer, where its question ends, its UDP size and OPT record; and,
    once it has been asked twice over UDP, READY: its whole UDP answers
    but for the ID, one per turn of the rotation (a single one when the
    answer does not rotate), so that a repeated UDP query costs a
    dictionary lookup and one concatenation (L{ZoneAnswers.exact}).
    READY is None until built, empty when the answer rotates over more
    than READY_TURNS records or its answers are too large for the cache
    (those are assembled per query).  An entry
    never changes once cached: building READY caches a new one, so its
    size as the cache counted it stays true.
    """

    __slots__ = ("prepared", "question_end", "udp_size", "opt", "ready")

    def __init__(
        self,
        prepared: Prepared,
        question_end: int,
        udp_size: int,
        opt: bytes,
        ready: tuple[bytes, ...] | None = None,
    ) -> None:
        self.prepared = prepared
        self.question_end = question_end
        self.udp_size = udp_size
        self.opt = opt
        self.ready = ready


def _prepared_size(key: Question, prepared: Prepared) -> int:
    return prepared.size


def _footprint(key: Question, prepared: Prepared) -> int:
    """
    Bytes a prepared answer and its question hold, objects' own sizes
    included, with its cache slot and, as if it were alone, its registry
    name's set of questions (a name asked once per random spelling has one).
    """
    size = sys.getsizeof(prepared) + sys.getsizeof(key)
    size += CACHE_SLOT + SET_OF_ONE + sys.getsizeof(prepared.depends_on)
    size += sum(sys.getsizeof(label) for label in key[0]) + sys.getsizeof(key[0])
    size += sys.getsizeof(prepared.authority)
    for packed in (prepared.answers, prepared.additional):
        if packed is not None and packed is not NO_RECORDS:
            size += sys.getsizeof(packed.data) + sys.getsizeof(packed.offsets)
            size += sum(sys.getsizeof(offset) for offset in packed.offsets)
    return size


READY_OVERHEAD = sys.getsizeof(b"") + 8  # a ready answer's bytes object beyond its bytes


def _exact_size(key: bytes, entry: Exact) -> int:
    size = len(key) + EXACT_OVERHEAD
    if entry.ready:
        size += sys.getsizeof(entry.ready) + sum(len(r) + READY_OVERHEAD for r in entry.ready)
    return size


class NameView:
    """
    What the answers for one registry name are built from: its live
    instances in registration order, and those of each tag that can be
    asked for (one DNS label of ASCII, lowercased), each instance once per
    tag however its tags are spelled.
    """

    __slots__ = ("live", "by_tag")

    def __init__(self, live: list[Instance]) -> None:
        self.live = live
        self.by_tag: dict[str, list[Instance]] = {}
        for instance in live:
            for tag in {tag.lower() for tag in instance.tags if _askable(tag)}:
                self.by_tag.setdefault(tag, []).append(instance)

    def tagged(self, tag: str | None) -> list[Instance]:
        """The live instances with TAG (lowercased), or all of them for None."""
        return self.live if tag is None else self.by_tag.get(tag, [])


NO_VIEW = NameView([])  # of a label that is no registry name


def _askable(tag: str) -> bool:
    """Whether a question can name TAG: one DNS label, ASCII (whose case DNS ignores)."""
    return tag.isascii() and len(tag) <= 63 and "." not in tag


def _view_size(name: str, view: NameView) -> int:
    """
    Bytes a name's view holds, its cache slot included (the instances are
    the registry's: only the references to them count).
    """
    size = CACHE_SLOT + sys.getsizeof(name) + sys.getsizeof(view) + sys.getsizeof(view.live)
    size += sys.getsizeof(view.by_tag)
    for tag, instances in view.by_tag.items():
        size += sys.getsizeof(tag) + sys.getsizeof(instances)
    return size


class SizedLRU(OrderedDict[Key, Value]):
    """
    A cache of at most MAX_BYTES, as SIZE_OF(key, value) counts them: `put`
    evicts the least recently used entries first (telling EVICTED), and a
    reader counts a hit as a use by moving its key to the end.  An entry
    larger than the whole budget is not kept.
    """

    def __init__(
        self,
        max_bytes: int,
        size_of: Callable[[Key, Value], int],
        evicted: Callable[[Key, Value], object] = lambda key, value: None,
    ) -> None:
        super().__init__()
        self.max_bytes = max_bytes
        self.bytes = 0
        self.size_of = size_of
        self.evicted = evicted

    def put(self, key: Key, value: Value) -> bool:
        """Keep VALUE under KEY, evicting as needed; False when it is too large to keep."""
        size = self.size_of(key, value)
        if size > self.max_bytes:
            return False
        self.discard(key)
        self[key] = value
        self.bytes += size
        while self.bytes > self.max_bytes:
            old_key, old_value = self.popitem(last=False)
            self.bytes -= self.size_of(old_key, old_value)
            self.evicted(old_key, old_value)
        return True

    def discard(self, key: Key) -> Value | None:
        """Remove KEY's entry, if any, and return its value."""
        value = self.pop(key, None)
        if value is not None:
            self.bytes -= self.size_of(key, value)
        return value


@implementer(IMetricSource)
class ZoneAnswers:
    """
    Answers for the zone DOMAIN over REGISTRY, with every TTL `ttl`; kept
    current through the registry's on_change.  `answer(query, size)` is
    all the front ends call.  LOADED() says whether the registry holds its
    store's contents yet (an etcd copy not read yet does not).  What it
    keeps ready fits in CACHE_BYTES.
    """

    def __init__(
        self,
        registry: Registry,
        domain: str,
        ttl: int,
        loaded: Callable[[], bool] = lambda: True,
        cache_bytes: int = CACHE_BYTES,
    ) -> None:
        self.registry = registry
        self.loaded = loaded
        self.domain_labels = tuple(domain.lower().rstrip(".").encode().split(b"."))
        self.ttl = ttl
        answers_bytes = cache_bytes // 2
        # registry name -> its live instances, by tag
        self._views: SizedLRU[str, NameView] = SizedLRU(answers_bytes // 4, _view_size)
        self._prepared: SizedLRU[Question, Prepared] = SizedLRU(
            answers_bytes - answers_bytes // 4, _prepared_size, self._evicted
        )
        # registry name -> its questions prepared
        self._by_name: dict[str | None, set[Question]] = {}
        # a query's bytes after the ID -> how to answer it
        self._exact: SizedLRU[bytes, Exact] = SizedLRU(cache_bytes - answers_bytes, _exact_size)
        self.tallies: dict[tuple[str, str], list[int]] = {}  # (type, rcode) -> [answers]
        registry.on_change(self.forget)

    def tally(self, qtype: int | None, rcode: int) -> list[int]:
        """The counting cell of answers with RCODE to questions of QTYPE (None: unparsed)."""
        key = ("none" if qtype is None else TYPE_NAMES.get(qtype, "other"), RCODE_NAMES[rcode])
        tally = self.tallies.get(key)
        if tally is None:
            tally = self.tallies[key] = [0]
        return tally

    def metric_samples(self) -> Iterator[tuple[str, tuple, object]]:
        for labels, tally in list(self.tallies.items()):
            yield "dns_queries", labels, tally[0]

    def forget(self, name: str) -> None:
        """NAME's instances changed (a status or a tag included): what was built on them goes."""
        self._views.discard(name)
        for key in self._by_name.pop(name, ()):
            prepared = self._prepared.discard(key)
            if prepared is not None:  # always: a question prepared is kept until forgotten
                prepared.invalidate()

    def _evicted(self, key: Question, prepared: Prepared) -> None:
        questions = self._by_name[prepared.depends_on]
        questions.discard(key)
        if not questions:
            del self._by_name[prepared.depends_on]
        prepared.invalidate()

    # The answer path.

    def answer(self, query: bytes, size: int | None = None) -> bytes | None:
        """
        The response to QUERY (a whole DNS message), at most SIZE bytes
        (None: a UDP query's own limit); None when nothing must be sent.
        """
        key = query[2:]
        exact = self._exact.get(key)
        if exact is None or not exact.prepared.valid:
            return self._parse_and_answer(query, size)
        self._exact.move_to_end(key)
        if size is None:  # over UDP: asked again, its whole answers are worth keeping
            if exact.ready is None:
                exact = self._make_ready(query, key, exact)
            if exact.ready:
                return query[:2] + self.ready_answer(exact)
        return self._assemble(
            query, exact.prepared, exact.question_end, size or exact.udp_size, exact.opt
        )

    @property
    def exact(self) -> "SizedLRU[bytes, Exact]":
        """
        The exact queries (bytes after the ID) and how to answer them: a
        UDP front end may answer one whose entry is `ready` (and its
        prepared answer still valid) with its ID and L{ready_answer}, as
        `answer` would, without calling it; it must count the use
        (`move_to_end`) as `answer` does.
        """
        return self._exact

    def ready_answer(self, exact: Exact) -> bytes:
        """
        EXACT's whole UDP answer but for the ID (its READY must be
        non-empty), at the name's next turn, counted.
        """
        ready: tuple[bytes, ...] = exact.ready  # type: ignore[assignment]
        prepared = exact.prepared
        tally = prepared.tally
        if tally is not None:  # always: the zone counts each answer it prepares
            tally[0] += 1
        if len(ready) == 1:
            return ready[0]
        return ready[self.registry.take_turn(prepared.turn_name, len(ready))]  # type: ignore[arg-type]

    def _make_ready(self, query: bytes, key: bytes, exact: Exact) -> Exact:
        """
        EXACT with its READY built (one UDP answer per turn, or none past
        READY_TURNS), cached in its place when it fits.
        """
        prepared = exact.prepared
        turns = 1
        if prepared.answers is not None and prepared.turn_name is not None:
            turns = max(prepared.answers.count, 1)
        ready: tuple[bytes, ...] = ()
        if turns <= READY_TURNS:
            ready = tuple(
                self._body(
                    b"", query, prepared, exact.question_end, exact.udp_size, exact.opt, turn
                )
                for turn in range(turns)
            )
        built = Exact(prepared, exact.question_end, exact.udp_size, exact.opt, ready)
        if not self._exact.put(key, built):  # too large to keep whole: assembled per query
            self._exact.put(
                key, Exact(prepared, exact.question_end, exact.udp_size, exact.opt, ())
            )
        return built

    def _assemble(
        self, query: bytes, prepared: Prepared, question_end: int, size: int, opt: bytes
    ) -> bytes:
        tally = prepared.tally
        if tally is not None:  # always: the zone counts each answer it prepares
            tally[0] += 1
        turn = 0
        answers = prepared.answers
        if answers is not None and answers.count > 1 and prepared.turn_name is not None:
            turn = self.registry.take_turn(prepared.turn_name, answers.count)  # a name's records
        return self._body(query[:2], query, prepared, question_end, size, opt, turn)

    def _body(
        self,
        head: bytes,
        query: bytes,
        prepared: Prepared,
        question_end: int,
        size: int,
        opt: bytes,
        turn: int,
    ) -> bytes:
        """
        The answer to QUERY from PREPARED, its records from TURN on, in
        SIZE bytes, starting with HEAD (the query's ID, or nothing).
        """
        room = size - question_end - len(opt)
        answers, answered = b"", 0
        flags = prepared.flags | (query[2] & 1) << 8
        if prepared.answers is not None and prepared.answers.count:
            answers, answered = prepared.answers.slice(turn, room)
            if answered < prepared.answers.count:
                flags |= TC
        room -= len(answers) + len(prepared.authority)
        authority = prepared.authority if room >= 0 else b""
        additional = prepared.additional
        extra = additional.count
        if extra and (flags & TC or additional.offsets[-1] > room):
            extra = 0 if flags & TC else additional.fitting(room)
        return b"".join(
            (
                head,
                pack(
                    "!HHHHH", flags, 1, answered, 1 if authority else 0, extra + (1 if opt else 0)
                ),
                query[12:question_end],
                answers,
                authority,
                additional.data[: additional.offsets[extra]],
                opt,
            )
        )

    def _parse_and_answer(self, query: bytes, size: int | None) -> bytes | None:
        if len(query) < 12 or query[2] & 0x80:  # no header to answer, or a response
            return None
        if (query[2] >> 3) & 0xF != 0:
            return self._error(query, NOTIMP)
        questions, answers, authority, additional = unpack_from("!HHHH", query, 4)
        if questions != 1 or answers or authority or additional > 1:
            return self._error(query, FORMERR)
        labels: list[bytes] = []
        position = 12
        while True:
            if position >= len(query):
                return self._error(query, FORMERR)
            length = query[position]
            if length == 0:
                position += 1
                break
            if length > 63 or position + 1 + length > len(query) or position - 12 > 255:
                return self._error(query, FORMERR)
            labels.append(query[position + 1 : position + 1 + length].lower())
            position += 1 + length
        question_end = position + 4
        if question_end > len(query):
            return self._error(query, FORMERR)
        qtype, qclass = unpack_from("!HH", query, position)
        opt, udp_size = b"", UDP_SIZE
        if additional:
            rest = query[question_end:]
            if (
                len(rest) < OPT_FIXED
                or rest[0] != 0
                or unpack_from("!H", rest, 1)[0] != dns.OPT
                or len(rest) != OPT_FIXED + unpack_from("!H", rest, 9)[0]
            ):
                return self._error(query, FORMERR)
            offered, _, version = unpack_from("!HBB", rest, 3)
            if version != 0:
                self.tally(qtype, BADVERS)[0] += 1
                return self._error(
                    query, NOERROR, question_end, _opt(MAX_UDP_SIZE, BADVERS >> 4), counted=True
                )
            opt, udp_size = OUR_OPT, min(max(offered, UDP_SIZE), MAX_UDP_SIZE)
        elif question_end != len(query):
            return self._error(query, FORMERR)
        if not self.loaded():
            self.tally(qtype, SERVFAIL)[0] += 1
            return self._error(query, SERVFAIL, question_end, opt, counted=True)
        key = (tuple(labels), qtype, qclass)
        prepared = self._prepared.get(key)
        if prepared is None:
            prepared = self._prepare(*key)
        else:
            self._prepared.move_to_end(key)
        if prepared.valid:
            self._exact.put(query[2:], Exact(prepared, question_end, udp_size, opt))
        return self._assemble(query, prepared, question_end, size or udp_size, opt)

    def _error(
        self,
        query: bytes,
        rcode: int,
        question_end: int = 12,
        opt: bytes = b"",
        counted: bool = False,
    ) -> bytes:
        """A header-only answer with RCODE (the question echoed when it parsed)."""
        if not counted:
            self.tally(None, rcode)[0] += 1
        flags = 0x8000 | (query[2] & 0x79) << 8 | rcode  # QR, the query's opcode and RD
        return b"".join(
            (
                query[:2],
                pack("!HHHHH", flags, 1 if question_end > 12 else 0, 0, 0, 1 if opt else 0),
                query[12:question_end],
                opt,
            )
        )

    # Preparing an answer, once per question and change.

    def _prepare(self, labels: Labels, qtype: int, qclass: int) -> Prepared:
        prepared, depends_on = self._build(labels, qtype, qclass)
        prepared.depends_on = depends_on
        prepared.tally = self.tally(qtype, prepared.flags & 0xF)
        key = (labels, qtype, qclass)
        prepared.size = _footprint(key, prepared)
        if self._prepared.put(key, prepared):
            self._by_name.setdefault(prepared.depends_on, set()).add(key)
        else:  # larger than the cache: answers this query only, kept current by nothing
            prepared.valid = False
        return prepared

    def _build(self, labels: Labels, qtype: int, qclass: int) -> tuple[Prepared, str | None]:
        """The answer to the question, and the registry name it depends on (or None)."""
        zone = len(self.domain_labels)
        if qclass not in (dns.IN, ANY) or labels[len(labels) - zone :] != self.domain_labels:
            return Prepared(REFUSED), None
        try:
            relative = tuple(label.decode("ascii") for label in labels[: len(labels) - zone])
        except UnicodeDecodeError:
            return self._negative(NXDOMAIN, labels), None
        encoder = _Encoder(labels, self.ttl)
        if relative == ():
            if qtype in (dns.SOA, ANY):
                return Prepared(answers=Rotating([self._soa(encoder)])), None
            return self._negative(NOERROR, labels), None
        if relative in (("addr",), ("_tcp",)):
            return self._negative(NOERROR, labels), None
        if len(relative) == 2 and relative[1] == "addr" and HEX.fullmatch(relative[0]):
            address = ipaddress.ip_address(bytes.fromhex(relative[0]))
            wanted = dns.A if address.version == 4 else dns.AAAA
            if qtype not in (wanted, ANY):
                return self._negative(NOERROR, labels), None
            return Prepared(answers=Rotating([encoder.address(labels, address)])), None
        form = _form(relative)
        if form is None:
            return self._negative(NXDOMAIN, labels), None
        name, tag, types = form
        instances = self._view(name).tagged(tag)
        if not instances:
            if relative == (SERVICE,):  # no name `service`: the parent of NAME.service
                return self._negative(NOERROR, labels), name
            return self._negative(NXDOMAIN, labels), name
        families: tuple[int, ...] = ()
        if dns.A in types:
            families = {dns.A: (4,), dns.AAAA: (6,), ANY: (4, 6)}.get(qtype, ())
        records = self._addresses(encoder, labels, instances, families)
        if dns.SRV in types and qtype in (dns.SRV, ANY):
            return self._srv(encoder, name, instances, records), name
        if not records:
            return self._negative(NOERROR, labels), name
        return Prepared(answers=Rotating(records), turn_name=name), name

    def _view(self, name: str) -> NameView:
        """
        NAME's live instances by tag, kept until NAME changes (a name with
        none too: its instances may all be critical, and are not read again).
        """
        if not NAME.fullmatch(name):
            return NO_VIEW
        view = self._views.get(name)
        if view is not None:
            self._views.move_to_end(name)
            return view
        view = NameView(self.registry.live_of(name))
        self._views.put(name, view)  # unless larger than its share: built again when asked
        return view

    def _addresses(
        self,
        encoder: "_Encoder",
        labels: Labels,
        instances: list[Instance],
        families: tuple[int, ...],
    ) -> list[bytes]:
        """
        The A / AAAA records (FAMILIES) of the IP-literal INSTANCES, each
        address once: instances on one host differ by port only, which an A
        or AAAA record does not carry, and an RRset holds no record twice
        (RFC 2181).
        """
        addresses: dict[IPAddress, None] = {}
        if families:
            for instance in instances:
                literal = _ip(instance.host)
                if literal is not None and literal.version in families:
                    addresses[literal] = None
        return [encoder.address(labels, address) for address in addresses]

    def _srv(
        self,
        encoder: "_Encoder",
        name: str,
        instances: list[Instance],
        also: list[bytes] | None = None,
    ) -> Prepared:
        """
        One SRV record per instance (its weight now), the addresses of their
        `addr` targets as additional records; ALSO: more answers (ANY's).
        """
        records: list[bytes] = []
        additional: list[bytes] = []
        seen: set[IPAddress] = set()
        for instance in instances:
            address = _ip(instance.host)
            if address is None:
                target = instance.host.rstrip(".").lower().encode()
            else:
                target = b".".join((hex_label(address), b"addr", *self.domain_labels))
                if address not in seen:
                    seen.add(address)
                    additional.append(encoder.address(tuple(target.split(b".")), address))
            records.append(
                encoder.record(
                    encoder.question,
                    dns.Record_SRV(1, instance.weight, instance.port, target, self.ttl),
                )
            )
        records.extend(also or ())
        return Prepared(answers=Rotating(records), additional=Packed(additional), turn_name=name)

    def _soa(self, encoder: "_Encoder") -> bytes:
        apex = b".".join(self.domain_labels)
        return encoder.record(
            apex,
            dns.Record_SOA(
                mname=b"ns." + apex,
                rname=b"hostmaster." + apex,
                serial=1,
                minimum=self.ttl,
                ttl=self.ttl,
                **SOA_TIMES,
            ),
        )

    def _negative(self, rcode: int, labels: Labels) -> Prepared:
        return Prepared(rcode, authority=self._soa(_Encoder(labels, self.ttl)))


SRV_ONLY = (dns.SRV,)
ADDRESSES_ONLY = (dns.A, dns.AAAA)
EVERY_TYPE = (dns.SRV, dns.A, dns.AAAA)


def _form(relative: tuple[str, ...]) -> tuple[str, str | None, tuple[int, ...]] | None:
    """
    The registry name a question's labels below the zone (RELATIVE) ask
    for, the tag they filter by (None: none) and the types that name has;
    None when they ask for no name.
    """
    if len(relative) in (2, 3) and relative[0][:1] == relative[1][:1] == "_":
        if len(relative) == 2 or relative[2] == SERVICE:  # _NAME._TAG[.service]
            tag = relative[1][1:]
            return relative[0][1:], None if tag == NO_TAG else tag, SRV_ONLY
        return None
    if len(relative) == 2 and relative[1] == SERVICE:  # NAME.service
        return relative[0], None, EVERY_TYPE
    if len(relative) == 3 and relative[2] == SERVICE:  # TAG.NAME.service
        return relative[1], relative[0], EVERY_TYPE
    if len(relative) == 1:  # NAME
        return relative[0], None, ADDRESSES_ONLY
    return None


def _ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


class _Encoder:
    """
    Encodes records of an answer to the question LABELS with names
    compressed against the question only (offset 12 onwards), so that every
    record's bytes stand anywhere in the answer.
    """

    def __init__(self, labels: Labels, ttl: int) -> None:
        self.question = b".".join(labels)
        self.ttl = ttl
        self.suffixes: dict[bytes, int] = {}
        offset = 12
        for index in range(len(labels)):
            self.suffixes[b".".join(labels[index:])] = offset
            offset += 1 + len(labels[index])

    def record(self, owner: bytes, payload: dns.IEncodableRecord) -> bytes:
        out = BytesIO()
        # A copy: names Twisted adds while encoding point into OUT, not into the answer.
        header = dns.RRHeader(owner, payload.TYPE, dns.IN, self.ttl, payload, auth=True)
        header.encode(out, dict(self.suffixes))
        return out.getvalue()

    def address(self, labels: Labels, address: IPAddress) -> bytes:
        owner = b".".join(labels)
        if address.version == 4:
            return self.record(owner, dns.Record_A(str(address), self.ttl))
        return self.record(owner, dns.Record_AAAA(str(address), self.ttl))
