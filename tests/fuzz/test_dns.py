"""
Any bytes, and valid queries with bytes flipped, into the DNS zone: an
answer that parses, or none.
"""

import struct

from hypothesis import given
from hypothesis import strategies as st
from twisted.names import dns
from twisted.trial.unittest import SynchronousTestCase

from suite.names.registry import WARNING, Check, Instance, Registry
from suite.names.zone import ZoneAnswers
from tests.fuzz import fuzzed
from tests.names.test_zone import parse, query

QUERIES = st.builds(
    query,
    st.sampled_from(
        [
            "web.suite",
            "_web._tcp.suite",
            "_web._blue.suite",
            "_web._tcp.service.suite",
            "web.service.suite",
            "blue.web.service.suite",
            "green.web.service.suite",
            "service.suite",
            "7f000001.addr.suite",
            "suite",
            "x.org",
            "WEB.SUITE",
            "a" * 63 + ".suite",
        ]
    ),
    st.sampled_from([dns.A, dns.AAAA, dns.SRV, dns.SOA, dns.ALL_RECORDS, 0, 65535]),
    edns_size=st.one_of(st.none(), st.integers(0, 65535)),
)


def flipped(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    data = bytearray(data)
    for position, value in flips:
        data[position % len(data)] = value
    return bytes(data)


class ZoneFuzz(SynchronousTestCase):
    def setUp(self):
        registry = Registry(100)
        for port in range(1, 30):
            registry.register("web", f"10.0.0.{port}", port)
        registry.register("web", "::1", 1)
        registry.register("web", "db.example.com", 2)
        for number, tags in enumerate([("blue",), ("BLUE", "green"), ("a.b", "é")]):
            checks = [Check("c", "ttl", status=WARNING)] if number else []
            instance = Instance("web", f"10.1.0.{number + 1}", 3, tags=tags, checks=checks)
            registry.put(instance, registry.index + 1)
        self.zone = ZoneAnswers(registry, "suite", 5)

    def check(self, data, size=None):
        answer = self.zone.answer(data, size)
        if answer is not None:
            parsed = parse(answer)
            self.assertEqual(parsed.id, struct.unpack("!H", data[:2])[0])
            self.assertEqual(parsed.answer, 1)
            self.assertLessEqual(len(answer), size or 1232)

    @fuzzed
    @given(st.binary(max_size=600), st.sampled_from([None, 65535]))
    def test_any_bytes(self, data, size):
        self.check(data, size)

    @fuzzed
    @given(
        QUERIES,
        st.lists(st.tuples(st.integers(0, 600), st.integers(0, 255)), max_size=4),
        st.sampled_from([None, 65535]),
    )
    def test_valid_queries_with_bytes_changed(self, data, flips, size):
        self.check(flipped(data, flips), size)

    @fuzzed
    @given(QUERIES, st.binary(min_size=1, max_size=600), st.sampled_from([None, 65535]))
    def test_bytes_after_a_query_are_formerr_and_never_cached(self, data, junk, size):
        self.zone.answer(data, size)
        cached = (len(self.zone._exact), self.zone._exact.bytes)
        answer = parse(self.zone.answer(data + junk, size))
        self.assertEqual((answer.rCode, answer.answers), (dns.EFORMAT, []))
        self.assertEqual((len(self.zone._exact), self.zone._exact.bytes), cached)

    @fuzzed
    @given(
        # 62: with the "_" two of the forms put before it, a label of at most 63 bytes (what
        # a DNS label can hold; a longer one is a malformed query, answered FORMERR)
        st.binary(min_size=1, max_size=62),
        st.sampled_from(["{}.web.service.suite", "_web._{}.suite", "_{}._tcp.suite"]),
        st.sampled_from([dns.SRV, dns.A, dns.ALL_RECORDS]),
    )
    def test_any_label_as_a_tag_or_a_name(self, label, form, type_):
        """Whatever a label holds: NXDOMAIN, or records of the tag's instances only."""
        name = form.encode().replace(b"{}", label.replace(b".", b"-"))
        data = query(name, type_)
        answer = parse(self.zone.answer(data, 65535))
        self.assertIn(answer.rCode, (dns.OK, dns.ENAME))
        asked = label.replace(b".", b"-").lower()
        if answer.answers:
            expected = {
                "{}.web.service.suite": (b"blue", b"green"),
                "_web._{}.suite": (b"blue", b"green", b"tcp"),
                "_{}._tcp.suite": (b"web",),
            }[form]
            self.assertIn(asked, expected)
