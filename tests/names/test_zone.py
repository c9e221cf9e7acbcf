"""The DNS zone's answers, in memory: every rcode, records, rotation, truncation, caching."""

import socket

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.names import dns
from twisted.trial.unittest import SynchronousTestCase

from suite.names.registry import CRITICAL, PASSING, WARNING, Check, Instance, Registry
from suite.names.zone import MAX_UDP_SIZE, ZoneAnswers


def query(name, type_=dns.A, id_=4242, edns_size=None, cls=dns.IN, rd=True) -> bytes:
    message = dns._EDNSMessage(
        id=id_,
        recDes=rd,
        queries=[dns.Query(name, type_, cls)],
        ednsVersion=None if edns_size is None else 0,
        maxSize=edns_size or 512,
    )
    return message.toStr()


def parse(data: bytes) -> dns._EDNSMessage:
    message = dns._EDNSMessage()
    message.fromStr(data)
    return message


def records(section) -> list[tuple]:
    found = []
    for rr in section:
        payload = rr.payload
        if rr.type == dns.SRV:
            value = (payload.priority, payload.weight, payload.port, payload.target.name.decode())
        elif rr.type in (dns.A, dns.AAAA):
            value = socket.inet_ntop(
                socket.AF_INET if rr.type == dns.A else socket.AF_INET6, payload.address
            )
        elif rr.type == dns.SOA:
            value = (payload.mname.name.decode(), payload.minimum, payload.serial)
        else:
            value = payload
        found.append((rr.name.name.decode(), rr.type, rr.ttl, value))
    return found


class ZoneTests(SynchronousTestCase):
    def setUp(self):
        self.registry = Registry(1000)
        self.zone = ZoneAnswers(self.registry, "suite", ttl=5)
        self.registry.register("web", "127.0.0.1", 8001)
        self.registry.register("web", "::1", 8002)
        self.registry.register("web", "db.example.com", 8003)

    def ask(self, *arguments, size=None, **keywords) -> dns._EDNSMessage:
        return parse(self.zone.answer(query(*arguments, **keywords), size))

    def test_srv_with_targets_and_their_addresses_in_additional(self):
        answer = self.ask("_web._tcp.suite", dns.SRV)
        self.assertEqual(
            (
                answer.id,
                answer.answer,
                answer.auth,
                answer.recAv,
                answer.recDes,
                answer.rCode,
                answer.trunc,
            ),
            (4242, 1, 1, 0, 1, 0, 0),
        )
        self.assertEqual(
            records(answer.answers),
            [
                ("_web._tcp.suite", dns.SRV, 5, (1, 1, 8001, "7f000001.addr.suite")),
                (
                    "_web._tcp.suite",
                    dns.SRV,
                    5,
                    (1, 1, 8002, "00000000000000000000000000000001.addr.suite"),
                ),
                ("_web._tcp.suite", dns.SRV, 5, (1, 1, 8003, "db.example.com")),
            ],
        )
        self.assertEqual(
            records(answer.additional),
            [
                ("7f000001.addr.suite", dns.A, 5, "127.0.0.1"),
                ("00000000000000000000000000000001.addr.suite", dns.AAAA, 5, "::1"),
            ],
        )

    def test_a_and_aaaa_are_the_literals_of_that_family(self):
        self.assertEqual(
            records(self.ask("web.suite", dns.A).answers), [("web.suite", dns.A, 5, "127.0.0.1")]
        )
        self.assertEqual(
            [r[1] for r in records(self.ask("web.suite", dns.AAAA).answers)], [dns.AAAA]
        )
        self.assertEqual(
            records(self.ask("7f000001.addr.suite", dns.A).answers),
            [("7f000001.addr.suite", dns.A, 5, "127.0.0.1")],
        )
        self.assertEqual(len(self.ask("web.suite", dns.ALL_RECORDS).answers), 2)

    def test_instances_on_one_address_give_one_address_record_and_an_srv_each(self):
        """
        An RRset holds no record twice (RFC 2181): two instances of a name
        on one host (ports differ) are two SRV records, one A or AAAA.
        """
        self.registry.register("web", "127.0.0.1", 9001)
        self.registry.register("web", "::1", 9002)
        self.registry.register("web", "0:0::1", 9003)  # the same address, spelled otherwise
        for _ in range(3):  # whichever record the rotation puts first
            self.assertEqual(
                records(self.ask("web.suite", dns.A).answers),
                [("web.suite", dns.A, 5, "127.0.0.1")],
            )
            self.assertEqual(
                records(self.ask("web.suite", dns.AAAA).answers),
                [("web.suite", dns.AAAA, 5, "::1")],
            )
            self.assertEqual(
                sorted(r[3] for r in records(self.ask("web.suite", dns.ALL_RECORDS).answers)),
                ["127.0.0.1", "::1"],
            )
        srv = self.ask("_web._tcp.suite", dns.SRV)
        self.assertEqual(
            sorted(r[3][2] for r in records(srv.answers)), [8001, 8002, 8003, 9001, 9002, 9003]
        )
        self.assertEqual(sorted(r[3] for r in records(srv.additional)), ["127.0.0.1", "::1"])

    def test_servfail_until_the_registry_was_read_from_its_store(self):
        loaded = []
        self.zone = ZoneAnswers(self.registry, "suite", 5, loaded=lambda: bool(loaded))
        answer = self.ask("web.suite", dns.A)
        self.assertEqual((answer.rCode, answer.answers), (dns.ESERVER, []))
        self.assertEqual(self.zone.tallies, {("A", "SERVFAIL"): [1]})
        loaded.append(True)
        self.assertEqual(
            records(self.ask("web.suite", dns.A).answers), [("web.suite", dns.A, 5, "127.0.0.1")]
        )

    def test_nxdomain_and_nodata_carry_the_soa(self):
        for name, type_, rcode in [
            ("nothing.suite", dns.A, dns.ENAME),
            ("_nothing._tcp.suite", dns.SRV, dns.ENAME),
            ("bad_name.suite", dns.A, dns.ENAME),
            ("123.addr.suite", dns.A, dns.ENAME),
            ("a.b.c.suite", dns.A, dns.ENAME),
            ("web.suite", dns.MX, dns.OK),
            ("_web._tcp.suite", dns.A, dns.OK),
            ("7f000001.addr.suite", dns.AAAA, dns.OK),
            ("suite", dns.A, dns.OK),
        ]:
            answer = self.ask(name, type_)
            self.assertEqual((answer.rCode, answer.auth, answer.answers), (rcode, 1, []), name)
            self.assertEqual(
                records(answer.authority), [("suite", dns.SOA, 5, ("ns.suite", 5, 1))]
            )

    def test_soa_at_the_apex(self):
        self.assertEqual(
            records(self.ask("suite", dns.SOA).answers),
            [("suite", dns.SOA, 5, ("ns.suite", 5, 1))],
        )

    def test_refused_outside_the_zone_or_the_class(self):
        for name, cls in [
            ("example.com", dns.IN),
            ("suite.example", dns.IN),
            ("web.suite", dns.CH),
        ]:
            answer = self.ask(name, cls=cls)
            self.assertEqual(
                (answer.rCode, answer.auth, answer.answers, answer.authority),
                (dns.EREFUSED, 0, [], []),
            )

    def test_malformed_queries_get_formerr_and_responses_get_nothing(self):
        good = query("web.suite")
        self.assertEqual(parse(self.zone.answer(good[:20])).rCode, dns.EFORMAT)
        two = good[:4] + b"\0\2" + good[6:]
        self.assertEqual(parse(self.zone.answer(two)).rCode, dns.EFORMAT)
        bad_opt = good[:10] + b"\0\1" + good[12:] + b"\0\0\1\0\0"
        self.assertEqual(parse(self.zone.answer(bad_opt)).rCode, dns.EFORMAT)
        self.assertIsNone(self.zone.answer(b"\x12"))  # not even a header
        response = good[:2] + bytes([good[2] | 0x80]) + good[3:]
        self.assertIsNone(self.zone.answer(response))  # never answer an answer: no loops
        notify = good[:2] + bytes([good[2] | 4 << 3]) + good[3:]
        self.assertEqual(parse(self.zone.answer(notify)).rCode, dns.ENOTIMP)

    def test_edns_other_than_version_0_is_badvers(self):
        data = bytearray(query("web.suite", edns_size=1232))
        data[-5] = 1  # the OPT record's version
        answer = parse(self.zone.answer(bytes(data)))
        self.assertEqual(answer.rCode, 16)

    def test_the_question_is_echoed_as_spelled(self):
        answer = self.ask("_WeB._tcp.SuItE", dns.SRV)
        self.assertEqual(answer.queries[0].name.name, b"_WeB._tcp.SuItE")
        self.assertEqual(len(answer.answers), 3)
        self.assertEqual(answer.answers[0].name.name, b"_WeB._tcp.SuItE")

    def test_rotation_like_lookup_and_a_change_seen_at_once(self):
        ports = [records(self.ask("_web._tcp.suite", dns.SRV).answers)[0][3][2] for _ in range(4)]
        self.assertEqual(ports, [8001, 8002, 8003, 8001])
        self.registry.deregister("web", "::1", 8002)
        self.assertEqual(len(self.ask("_web._tcp.suite", dns.SRV).answers), 2)
        self.registry.deregister("web", "127.0.0.1", 8001)
        self.registry.deregister("web", "db.example.com", 8003)
        self.assertEqual(self.ask("_web._tcp.suite", dns.SRV).rCode, dns.ENAME)
        self.registry.register("web", "10.0.0.1", 1)
        self.assertEqual(records(self.ask("web.suite").answers), [("web.suite", 1, 5, "10.0.0.1")])

    def test_udp_truncates_at_a_record_boundary_and_tcp_is_whole(self):
        for port in range(1, 41):
            self.registry.register("many", f"10.0.0.{port}", port)
        udp = self.zone.answer(query("_many._tcp.suite", dns.SRV))
        self.assertLessEqual(len(udp), 512)
        answer = parse(udp)
        self.assertEqual(answer.trunc, 1)
        self.assertTrue(0 < len(answer.answers) < 40)
        self.assertEqual(answer.additional, [])
        bigger = parse(self.zone.answer(query("_many._tcp.suite", dns.SRV, edns_size=1232)))
        self.assertGreater(len(bigger.answers), len(answer.answers))
        whole = parse(self.zone.answer(query("_many._tcp.suite", dns.SRV), 65535))
        self.assertEqual((whole.trunc, len(whole.answers), len(whole.additional)), (0, 40, 40))

    def test_additional_records_that_do_not_fit_are_left_out_without_tc(self):
        for port in range(1, 13):  # 12 SRV records fit in 512 bytes, their 12 A records do not
            self.registry.register("some", f"10.0.0.{port}", port)
        answer = parse(self.zone.answer(query("_some._tcp.suite", dns.SRV)))
        self.assertEqual((answer.trunc, len(answer.answers)), (0, 12))
        self.assertLess(len(answer.additional), 12)

    def test_the_caches_are_bounded_in_bytes_least_recently_used_first(self):
        zone = ZoneAnswers(self.registry, "suite", 5, cache_bytes=256 * 1024)
        hot = query("web.suite")
        for number in range(5000):
            zone.answer(query(f"n{number}-{'x' * 50}.suite", id_=number))
            zone.answer(hot)  # kept: used all along
        for cache in (zone._prepared, zone._exact):
            self.assertLessEqual(cache.bytes, 128 * 1024)
            self.assertGreater(len(cache), 10)
        self.assertLess(len(zone._prepared), 1000)
        self.assertLess(sum(map(len, zone._by_name.values())), 1000)
        self.assertIn(hot[2:], zone._exact)
        self.assertEqual(parse(zone.answer(hot)).answers[0].payload.dottedQuad(), "127.0.0.1")
        self.assertNotIn(query("n0-" + "x" * 50 + ".suite")[2:], zone._exact)

    def test_a_forgotten_answer_is_prepared_afresh(self):
        zone = ZoneAnswers(self.registry, "suite", 5, cache_bytes=8 * 1024)
        first = query("web.suite")
        zone.answer(first)
        for number in range(100):
            zone.answer(query(f"n{number}.suite"))
        self.assertNotIn(first[2:], zone._exact)
        self.registry.register("web", "10.0.0.9", 1)
        answers = parse(zone.answer(first)).answers
        self.assertEqual(
            sorted(rr.payload.dottedQuad() for rr in answers), ["10.0.0.9", "127.0.0.1"]
        )

    def test_an_answer_larger_than_the_cache_is_answered_and_not_kept(self):
        for port in range(1, 41):
            self.registry.register("many", f"10.0.0.{port}", port)
        zone = ZoneAnswers(self.registry, "suite", 5, cache_bytes=4 * 1024)
        asked = query("_many._tcp.suite", dns.SRV)
        self.assertEqual(len(parse(zone.answer(asked, 65535)).answers), 40)
        self.assertEqual((len(zone._prepared), len(zone._exact)), (0, 0))
        self.registry.deregister("many", "10.0.0.1", 1)
        self.assertEqual(len(parse(zone.answer(asked, 65535)).answers), 39)

    def test_bytes_after_the_question_are_formerr_and_never_cached(self):
        good = query("web.suite")
        edns = query("web.suite", edns_size=1232)
        cookie = edns[:-2] + b"\0\x0c" + b"\0\x0a\0\x08" + b"c" * 8  # an OPT with a COOKIE option
        self.assertEqual(parse(self.zone.answer(cookie)).rCode, dns.OK)
        before = (len(self.zone._exact), self.zone._exact.bytes, len(self.zone._prepared))
        for junk in (
            good + b"\0",
            good + b"x" * 400,
            edns + b"\0",
            cookie + b"junk",
            edns[:-2] + b"\0\x05" + b"abc",  # an OPT cut short of its options
            cookie[:-1],
        ):
            answer = parse(self.zone.answer(junk))
            self.assertEqual((answer.rCode, answer.answers), (dns.EFORMAT, []), junk)
        self.assertEqual(
            (len(self.zone._exact), self.zone._exact.bytes, len(self.zone._prepared)), before
        )
        self.assertEqual(parse(self.zone.answer(good)).rCode, dns.OK)

    def test_udp_answers_never_exceed_1232_bytes_whatever_the_edns_size_offered(self):
        for port in range(1, 201):
            self.registry.register("many", f"10.0.{port}.1", port)
        for offered in (1232, 1400, 4096, 65535):
            asked = query("_many._tcp.suite", dns.SRV, edns_size=offered)
            data = self.zone.answer(asked)
            self.assertLessEqual(len(data), MAX_UDP_SIZE)
            self.assertGreater(len(data), 1100)
            answer = parse(data)
            self.assertEqual((answer.trunc, answer.maxSize), (1, 1232))
        self.assertEqual(len(parse(self.zone.answer(asked, 65535)).answers), 200)

    @settings(max_examples=200, deadline=None, database=None)
    @given(
        st.sampled_from(["web", "_web._tcp", "7f000001.addr", "nothing", ""]),
        st.sampled_from([dns.A, dns.AAAA, dns.SRV, dns.SOA, dns.MX, dns.ALL_RECORDS]),
        st.integers(0, 65535),
        st.booleans(),
        st.one_of(st.none(), st.integers(0, 65535)),
    )
    def test_answers_match_the_question_asked(self, name, type_, id_, rd, edns):
        full = f"{name}.suite".lstrip(".")
        answer = parse(self.zone.answer(query(full, type_, id_, edns_size=edns, rd=rd)))
        self.assertEqual(
            (
                answer.id,
                answer.recDes,
                answer.queries[0].name.name.decode(),
                answer.queries[0].type,
            ),
            (id_, rd, full, type_),
        )
        self.assertEqual(answer.ednsVersion, None if edns is None else 0)
        for rr in answer.answers:
            self.assertEqual(rr.name.name.decode(), full)


class ConsulFormsTests(SynchronousTestCase):
    """
    Consul's forms (NAME.service, TAG.NAME.service, _NAME._TAG), tags,
    weights and statuses: what DNS serves of the registry model.
    """

    def setUp(self):
        self.registry = Registry(1000)
        self.zone = ZoneAnswers(self.registry, "suite", ttl=5)
        self.put("web-1", "127.0.0.1", 8001, tags=("Primary", "v1"), weights=(10, 1))
        self.put("web-2", "::1", 8002, tags=("v1",), weights=(20, 1))
        self.put("web-3", "db.example.com", 8003, tags=("primary", "PRIMARY", "eu.west"))

    def put(self, id_, host, port, name="web", **fields) -> Instance:
        instance = Instance(name, host, port, id=id_, **fields)
        self.registry.put(instance, self.registry.index + 1)
        return instance

    def change(self, id_, **changes) -> None:
        """What the name server does for a status or tag change: a changed copy, put."""
        self.registry.put(self.registry.by_id(id_).copy(**changes), self.registry.index + 1)

    def ask(self, name, type_=dns.SRV, size=65535) -> dns._EDNSMessage:
        return parse(self.zone.answer(query(name, type_), size))

    def srv(self, name) -> list[tuple]:
        """(port, weight, target) of each SRV answer, sorted: rotation left out."""
        answer = self.ask(name)
        self.assertEqual(answer.rCode, dns.OK, name)
        return sorted((r[3][2], r[3][1], r[3][3]) for r in records(answer.answers))

    def test_name_service_answers_srv_with_additional_addresses_a_and_aaaa(self):
        answer = self.ask("web.service.suite")
        self.assertEqual(
            sorted(records(answer.answers)),
            [
                ("web.service.suite", dns.SRV, 5, (1, 1, 8003, "db.example.com")),
                ("web.service.suite", dns.SRV, 5, (1, 10, 8001, "7f000001.addr.suite")),
                (
                    "web.service.suite",
                    dns.SRV,
                    5,
                    (1, 20, 8002, "00000000000000000000000000000001.addr.suite"),
                ),
            ],
        )
        self.assertEqual(
            records(answer.additional),
            [
                ("7f000001.addr.suite", dns.A, 5, "127.0.0.1"),
                ("00000000000000000000000000000001.addr.suite", dns.AAAA, 5, "::1"),
            ],
        )
        self.assertEqual(
            records(self.ask("web.service.suite", dns.A).answers),
            [("web.service.suite", dns.A, 5, "127.0.0.1")],
        )
        self.assertEqual(
            records(self.ask("web.service.suite", dns.AAAA).answers),
            [("web.service.suite", dns.AAAA, 5, "::1")],
        )
        every = self.ask("web.service.suite", dns.ALL_RECORDS)
        self.assertEqual(
            sorted(rr.type for rr in every.answers), sorted([dns.A, dns.AAAA] + [dns.SRV] * 3)
        )
        self.assertEqual(len(every.additional), 2)

    def test_tag_name_service_answers_the_instances_with_the_tag_whatever_its_case(self):
        for asked in ("primary.web.service.suite", "PRIMARY.Web.Service.SUITE"):
            self.assertEqual(
                self.srv(asked),
                [(8001, 10, "7f000001.addr.suite"), (8003, 1, "db.example.com")],
            )
        self.assertEqual(
            records(self.ask("primary.web.service.suite", dns.A).answers),
            [("primary.web.service.suite", dns.A, 5, "127.0.0.1")],
        )
        nodata = self.ask("primary.web.service.suite", dns.AAAA)  # web-3 has a host name
        self.assertEqual((nodata.rCode, nodata.answers), (dns.OK, []))
        self.assertEqual(
            records(self.ask("v1.web.service.suite", dns.AAAA).answers),
            [("v1.web.service.suite", dns.AAAA, 5, "::1")],
        )
        self.assertEqual([port for port, *_ in self.srv("v1.web.service.suite")], [8001, 8002])

    def test_underscore_tag_form_answers_srv_and_tcp_filters_nothing(self):
        self.assertEqual([port for port, *_ in self.srv("_web._v1.suite")], [8001, 8002])
        self.assertEqual([port for port, *_ in self.srv("_web._primary.suite")], [8001, 8003])
        self.assertEqual([port for port, *_ in self.srv("_web._v1.service.suite")], [8001, 8002])
        self.assertEqual([port for port, *_ in self.srv("_web._tcp.suite")], [8001, 8002, 8003])
        self.assertEqual(
            [port for port, *_ in self.srv("_web._tcp.service.suite")], [8001, 8002, 8003]
        )
        nodata = self.ask("_web._v1.suite", dns.A)
        self.assertEqual((nodata.rCode, nodata.answers), (dns.OK, []))
        self.assertEqual(
            [rr.type for rr in self.ask("_web._v1.suite", dns.ALL_RECORDS).answers],
            [dns.SRV, dns.SRV],
        )

    def test_a_tag_that_nothing_live_has_is_nxdomain_with_the_soa(self):
        for asked in (
            "v2.web.service.suite",
            "_web._v2.suite",
            "_web._v2.service.suite",
            "eu.west.web.service.suite",  # a tag with a dot is no label: cannot be asked
            "west.web.service.suite",
            "web.service.service.suite",
            "nothing.service.suite",
            "v1.nothing.service.suite",
        ):
            answer = self.ask(asked)
            self.assertEqual((answer.rCode, answer.answers), (dns.ENAME, []), asked)
            self.assertEqual(
                records(answer.authority), [("suite", dns.SOA, 5, ("ns.suite", 5, 1))], asked
            )

    def test_service_is_an_empty_non_terminal_unless_a_name_is_service(self):
        """`web.service.suite` exists, so `service.suite` is NODATA (RFC 8020), not NXDOMAIN."""
        answer = self.ask("service.suite", dns.A)
        self.assertEqual((answer.rCode, answer.answers), (dns.OK, []))
        self.put("service-1", "10.0.0.7", 7, name="service")
        self.assertEqual(
            records(self.ask("service.suite", dns.A).answers),
            [("service.suite", dns.A, 5, "10.0.0.7")],
        )

    def test_weights_follow_the_status_and_critical_instances_are_left_out(self):
        self.assertEqual(self.srv("_web._v1.suite")[0][:2], (8001, 10))
        self.change("web-1", weights=(10, 3), checks=[Check("c", "ttl", ttl=60, status=WARNING)])
        self.assertEqual(self.srv("_web._v1.suite")[0][:2], (8001, 3))
        self.assertEqual(self.srv("web.service.suite")[0][:2], (8001, 3))
        self.change("web-1", checks=[Check("c", "ttl", ttl=60, status=CRITICAL)])
        self.assertEqual([port for port, *_ in self.srv("_web._v1.suite")], [8002])
        no_ipv4 = self.ask("web.service.suite", dns.A)  # the only IPv4 instance is critical
        self.assertEqual((no_ipv4.rCode, no_ipv4.answers), (dns.OK, []))
        self.change("web-1", checks=[Check("c", "ttl", ttl=60, status=PASSING)])
        self.assertEqual(self.srv("_web._v1.suite")[0][:2], (8001, 10))
        self.change("web-2", maintenance="upgrading")
        self.change("web-1", maintenance="upgrading")
        self.assertEqual(self.ask("_web._v1.suite").rCode, dns.ENAME)
        only_web_3 = self.ask("web.suite", dns.A)  # live, with a host name: no A record
        self.assertEqual((only_web_3.rCode, only_web_3.answers), (dns.OK, []))

    def test_a_warning_weight_of_zero_is_served(self):
        self.change("web-2", weights=(5, 0), checks=[Check("c", "http", status=WARNING)])
        self.assertIn(
            (8002, 0, "00000000000000000000000000000001.addr.suite"), self.srv("_web._v1.suite")
        )

    def test_a_change_of_tags_is_seen_by_every_question_asked_before(self):
        asked = ["primary.web.service.suite", "_web._primary.suite", "v2.web.service.suite"]
        before = [self.ask(name).rCode for name in asked]
        self.assertEqual(before, [dns.OK, dns.OK, dns.ENAME])
        self.change("web-1", tags=("v2",))
        self.change("web-3", tags=())
        after = [self.ask(name).rCode for name in asked]
        self.assertEqual(after, [dns.ENAME, dns.ENAME, dns.OK])
        self.assertEqual([port for port, *_ in self.srv("v2.web.service.suite")], [8001])
        self.change("web-3", tags=("PRIMARY",))  # the same query again: its exact entry is stale
        self.assertEqual([port for port, *_ in self.srv("primary.web.service.suite")], [8003])

    def test_rotation_of_a_tag_form_like_lookup(self):
        ports = [records(self.ask("_web._v1.suite").answers)[0][3][2] for _ in range(3)]
        self.assertEqual(ports, [8001, 8002, 8001])

    def test_a_name_is_read_from_the_registry_once_per_change_whatever_is_asked(self):
        """
        Questions with tags nobody has, or of types the name lacks, cost a
        dictionary lookup: the registry's instances are read once per change.
        """
        reads = []
        live_of = self.registry.live_of
        self.registry.live_of = lambda name: reads.append(name) or live_of(name)
        for number in range(50):
            self.assertEqual(self.ask(f"t{number}.web.service.suite").rCode, dns.ENAME)
            self.assertEqual(self.ask("_web._tcp.suite", 1000 + number).rCode, dns.OK)
        self.assertEqual(reads, ["web"])
        self.change("web-2", tags=("v2",))
        self.assertEqual([port for port, *_ in self.srv("v2.web.service.suite")], [8002])
        self.assertEqual(reads, ["web", "web"])

    def test_a_name_whose_instances_are_all_critical_is_read_once_too(self):
        for id_ in ("web-1", "web-2", "web-3"):
            self.change(id_, maintenance="down")
        reads = []
        live_of = self.registry.live_of
        self.registry.live_of = lambda name: reads.append(name) or live_of(name)
        for number in range(20):
            self.assertEqual(self.ask(f"t{number}.web.service.suite").rCode, dns.ENAME)
        self.assertEqual(reads, ["web"])
        self.change("web-2", maintenance=None)
        self.assertEqual([port for port, *_ in self.srv("v1.web.service.suite")], [8002])

    def test_questions_with_many_tags_stay_within_the_cache_bytes(self):
        for number in range(100):
            self.put(f"many-{number}", f"10.0.{number}.1", 1, name="many", tags=(f"t{number}",))
        zone = ZoneAnswers(self.registry, "suite", 5, cache_bytes=256 * 1024)
        for number in range(5000):  # each tag asked for, then 4,900 nobody has
            asked = query(f"t{number}.many.service.suite", dns.SRV, id_=number % 65536)
            answer = parse(zone.answer(asked))
            self.assertEqual(answer.rCode, dns.OK if number < 100 else dns.ENAME)
        self.assertEqual(
            (zone._views.max_bytes, zone._prepared.max_bytes, zone._exact.max_bytes),
            (32 * 1024, 96 * 1024, 128 * 1024),
        )
        for cache in (zone._views, zone._prepared, zone._exact):
            self.assertLessEqual(cache.bytes, cache.max_bytes)
            self.assertGreater(len(cache), 0)
        self.assertIn("many", zone._views)
        self.assertLess(len(zone._prepared), 1000)
        self.assertLess(sum(map(len, zone._by_name.values())), 1000)

    def test_a_view_larger_than_its_share_is_not_kept_and_answers_stay_current(self):
        for number in range(300):
            host = f"10.1.{number // 200}.{number % 200 + 1}"
            self.put(f"big-{number}", host, 1, name="big", tags=("t",))
        zone = ZoneAnswers(self.registry, "suite", 5, cache_bytes=16 * 1024)
        self.assertEqual(len(parse(zone.answer(query("t.big.service.suite"), 65535)).answers), 300)
        self.assertNotIn("big", zone._views)
        self.registry.remove("big-0", self.registry.index + 1)
        self.assertEqual(len(parse(zone.answer(query("t.big.service.suite"), 65535)).answers), 299)
