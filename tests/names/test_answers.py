"""Lookup answers encoded once per change: the same bytes as AMP's own, rotation kept."""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from suite.contracts.names import Lookup, Register
from suite.names.answers import EncodedAnswers
from suite.names.registry import Check, Instance, Registry
from suite.names.server import NameServer
from suite.names.store import MemoryStore
from tests.helpers import connect
from tests.names.test_protocol import names_pair
from tests.net.test_amp import box


class Boxes:
    """A box receiver for Twisted's own AMP parser: keeps the boxes."""

    def __init__(self):
        self.boxes = []

    def startReceivingBoxes(self, sender):
        pass

    def ampBoxReceived(self, box):
        self.boxes.append(box)

    def stopReceivingBoxes(self, reason):
        pass


def parse_boxes(data: bytes) -> list:
    """The AMP boxes in DATA, as Twisted's AMP parses them."""
    boxes = Boxes()
    parser = amp.BinaryBoxProtocol(boxes)
    parser.makeConnection(StringTransport())
    parser.dataReceived(data)
    return boxes.boxes


def lookup_fields(instance) -> dict:
    """INSTANCE as a Lookup answer gives it: tags and metadata only when it has some."""
    fields = {
        "host": instance.host,
        "port": instance.port,
        "description": instance.description,
        "id": instance.id,
        "status": instance.status,
    }
    if instance.tags:
        fields["tags"] = list(instance.tags)
    if instance.meta:
        fields["meta"] = [{"key": k, "value": instance.meta[k]} for k in sorted(instance.meta)]
    return fields


def amp_answer(registry, name, turn, tag, ttl=5) -> bytes:
    """What Twisted's AMP sends for Lookup(NAME) answered with the instances from TURN on."""
    instances = registry.live_of(name)
    rotated = instances[turn:] + instances[:turn]
    response = Lookup.makeResponse(
        {"instances": [lookup_fields(i) for i in rotated], "ttl": ttl}, None
    )
    response[b"_answer"] = tag
    return response.serialize()


descriptions = st.text(max_size=40)
words = st.text(min_size=1, max_size=12).filter(str.isprintable)
instances = st.lists(
    st.tuples(
        st.sampled_from(["127.0.0.1", "::1", "db.example", "10.1.2.3"]),
        st.integers(1, 65535),
        descriptions,
        st.lists(words, max_size=3),
        st.dictionaries(
            st.from_regex(r"[A-Za-z0-9_-]{1,8}", fullmatch=True), st.text(), max_size=3
        ),
        st.sampled_from(["passing", "warning", "critical"]),
        st.one_of(st.just(""), words),
    ),
    min_size=1,
    max_size=12,
    unique_by=lambda i: (i[0], i[1]),
)


class EncodedAnswerTests(SynchronousTestCase):
    @settings(max_examples=100, deadline=None)
    @given(instances, st.binary(min_size=1, max_size=12))
    def test_byte_for_byte_what_amp_sends_in_every_rotation(self, registered, tag):
        registry = Registry(100)
        for number, (host, port, description, tags, meta, status, given_id) in enumerate(
            registered
        ):
            instance = Instance(
                "svc",
                host,
                port,
                description,
                id=given_id and f"{given_id}-{number}",
                tags=tuple(tags),
                meta=meta,
                checks=[Check("ttl", "ttl", status=status)],
            )
            instance.validate()
            registry.put(instance, registry.index + 1)
        served = len([i for i in registered if i[5] != "critical"])
        answers = EncodedAnswers(registry, 5)
        if not served:
            self.assertIsNone(answers.answer(b"svc", tag))  # AMP's path: NOT_FOUND
            return
        for turn in range(served * 2 + 1):
            answer, count = answers.answer(b"svc", tag)
            self.assertEqual(count, served)
            self.assertEqual(answer, amp_answer(registry, "svc", turn % count, tag))

    def test_every_change_of_the_instance_set_is_answered(self):
        registry = Registry(100)
        answers = EncodedAnswers(registry, 7)
        self.assertIsNone(answers.answer(b"svc", b"1"))
        registry.register("svc", "127.0.0.1", 1)
        self.assertEqual(answers.answer(b"svc", b"1")[1], 1)
        registry.register("svc", "127.0.0.1", 2)
        self.assertEqual(answers.answer(b"svc", b"1")[1], 2)
        registry.register("svc", "127.0.0.1", 2, "now described")
        self.assertIn(b"now described", answers.answer(b"svc", b"1")[0])
        registry.deregister("svc", "127.0.0.1", 1)
        registry.deregister("svc", "127.0.0.1", 2)
        self.assertIsNone(answers.answer(b"svc", b"1"))

    def test_names_that_only_amp_can_answer(self):
        registry = Registry(10000)
        answers = EncodedAnswers(registry, 5)
        registry.register("svc", "127.0.0.1", 1)
        for name in (b"Bad Name", b"\xff", b"missing"):
            self.assertIsNone(answers.answer(name, b"1"))

    def test_more_instances_than_one_amp_value_holds_are_answered_as_many_as_fit(self):
        registry = Registry(10000)
        answers = EncodedAnswers(registry, 5)
        for port in range(1, 2501):  # about 260 KB of instances: more than one AMP value holds
            registry.register("big", "127.0.0.1", port, "x" * 20)
        firsts = []
        for _ in range(3):
            answer, count = answers.answer(b"big", b"1")
            [box] = parse_boxes(answer)
            instances = Lookup.parseResponse(box, None)["instances"]
            self.assertEqual(len(instances), count)
            self.assertLessEqual(len(box[b"instances"]), 65535)
            self.assertGreater(count, 600)  # each box about 105 bytes, its ID and status in
            firsts.append(instances[0]["port"])
        self.assertEqual(firsts, [1, 2, 3])
        server = NameServer(registry, MemoryStore(), "", 5, Clock())
        self.assertEqual(len(server.lookup("big", "")["instances"]), count)

    def test_a_stock_amp_client_sees_the_same_rotation_as_before(self):
        pair = names_pair()
        for port in (1, 2, 3):
            pair.call(Register, name="svc", host="127.0.0.1", port=port)
        firsts = [pair.answer(Lookup, name="svc")["instances"][0]["port"] for _ in range(7)]
        self.assertEqual(firsts, [1, 2, 3, 1, 2, 3, 1])


class PipelinedLookupTests(SynchronousTestCase):
    def test_a_read_of_lookups_is_answered_in_one_write_in_order(self):
        pair = names_pair()
        server = pair.server
        server.factory.server.registry.register("svc", "127.0.0.1", 1)
        writes = []
        server.transport.write = writes.append
        asks = b"".join(
            box((b"_ask", str(n).encode()), (b"_command", b"Lookup"), (b"name", b"svc"))
            for n in range(100)
        )
        server.dataReceived(asks)
        self.assertEqual(len(writes), 1)
        registry = server.factory.server.registry
        self.assertEqual(
            writes[0],
            b"".join(amp_answer(registry, "svc", 0, str(n).encode()) for n in range(100)),
        )

    def test_other_commands_between_lookups_keep_their_order(self):
        pair = names_pair()
        pair.server.factory.server.registry.register("svc", "127.0.0.1", 1)
        writes = []
        pair.server.transport.write = writes.append
        lookup = box((b"_ask", b"1"), (b"_command", b"Lookup"), (b"name", b"svc"))
        services = box((b"_ask", b"2"), (b"_command", b"Services"))
        pair.server.dataReceived(lookup + services + lookup.replace(b"\x011", b"\x013"))
        tags = [w.split(b"_answer\x00\x01")[1][:1] for w in writes]
        self.assertEqual(tags, [b"1", b"2", b"3"])


class LookupsCutAnywhere(SynchronousTestCase):
    def test_boxes_split_at_every_byte_answer_the_same(self):
        registry_pair = names_pair()
        registry_pair.server.factory.server.registry.register("svc", "127.0.0.1", 1)
        factory = registry_pair.server.factory
        asks = b"".join(
            box((b"_ask", str(n).encode()), (b"_command", b"Lookup"), (b"name", b"svc"))
            for n in range(3)
        )
        for cut in range(len(asks) + 1):
            protocol, transport = connect(factory)
            protocol.dataReceived(asks[:cut])
            protocol.dataReceived(asks[cut:])
            self.assertEqual(transport.value().count(b"_answer"), 3, cut)
            protocol.connectionLost(Failure(ConnectionDone()))
