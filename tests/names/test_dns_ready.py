"""
The DNS listener's lean UDP path: a query asked before is answered from the
zone's ready answers inside the batch loop, exactly as the full path would
answer it, under the same rate limits, counts and invalidation.
"""

from twisted.internet.task import Clock
from twisted.names import dns
from twisted.trial.unittest import SynchronousTestCase

from suite.names.dnsfront import DNSDatagrams, dns_datagrams
from suite.names.registry import Registry
from suite.names.service import NamesSettings
from suite.names.zone import MAX_UDP_SIZE, ZoneAnswers
from tests.names.test_zone import parse, query

SOURCE = ("192.0.2.7", 40000)


class Sent:
    """A datagram port's `write`: what the protocol sent, in order."""

    def __init__(self):
        self.sent = []

    def write(self, data, address):
        self.sent.append((data, address))


def registry_with_names() -> Registry:
    registry = Registry(1000)
    registry.register("web", "127.0.0.1", 8080)
    registry.register("web", "127.0.0.1", 8081)
    registry.register("web", "::1", 8082)
    for port in range(1, 101):
        registry.register("many", f"10.0.{port}.1", port)
    return registry


def listener(zone: ZoneAnswers, clock=None, **limits) -> DNSDatagrams:
    settings = NamesSettings(**{"udp_rate": 0.0, **limits})
    protocol = dns_datagrams(settings, clock or Clock(), zone)()
    protocol.transport = Sent()
    protocol.startProtocol()
    return protocol


def ready_count(zone: ZoneAnswers) -> int:
    return sum(1 for exact in zone.exact.values() if exact.ready)


def samples(protocol: DNSDatagrams, zone: ZoneAnswers) -> dict:
    found = {(name, labels): value for name, labels, value in protocol.metric_samples()}
    found.update({(name, labels): value for name, labels, value in zone.metric_samples()})
    return found


QUESTIONS = [
    query("web.suite", dns.A),
    query("_web._tcp.suite", dns.SRV),  # rotates over three records
    query("_WeB._TcP.SuItE", dns.SRV, edns_size=1232),  # spelled its own way, EDNS
    query("web.suite", dns.AAAA, rd=False),
    query("nothing.suite", dns.A),  # NXDOMAIN, the SOA in authority
    query("example.com", dns.A),  # REFUSED
    query("_many._tcp.suite", dns.SRV),  # cut at 512 bytes: TC
    query("_many._tcp.suite", dns.SRV, edns_size=4096),  # cut at 1232: TC, past READY_TURNS
    query("_web._tcp.suite", dns.SRV, edns_size=4096),
]


class ReadyAnswerTests(SynchronousTestCase):
    def setUp(self):
        self.zone = ZoneAnswers(registry_with_names(), "suite", ttl=5)
        # The full path only: a zone that keeps nothing parses and assembles every query.
        self.full = ZoneAnswers(registry_with_names(), "suite", ttl=5, cache_bytes=0)
        self.protocol = listener(self.zone)

    def ask(self, datagrams):
        before = len(self.protocol.transport.sent)
        self.protocol.datagramsReceived(datagrams)
        return [data for data, _ in self.protocol.transport.sent[before:]]

    def test_every_answer_is_the_full_paths_byte_for_byte_with_the_querys_id(self):
        for asked in QUESTIONS:
            datagrams = [(bytes([n, 255 - n]) + asked[2:], SOURCE) for n in range(7)]
            for _ in range(2):  # the first queries fill the caches, the later are ready
                answers = self.ask(datagrams)
                expected = [self.full.answer(data) for data, _ in datagrams]
                self.assertEqual(answers, expected, parse(asked).queries)
                self.assertEqual([a[:2] for a in answers], [d[:2] for d, _ in datagrams])
        # All but the two that rotate over 100 records (past READY_TURNS: assembled per query).
        self.assertEqual(ready_count(self.zone), len(QUESTIONS) - 2)
        self.assertEqual(self.full.exact, {})

    def test_the_question_keeps_its_spelling(self):
        asked = query("_WeB._TcP.SuItE", dns.SRV, id_=1)
        for _ in range(3):
            (answer,) = self.ask([(asked, SOURCE)])
            message = parse(answer)
            self.assertEqual(message.queries[0].name.name, b"_WeB._TcP.SuItE")
            self.assertEqual(message.answers[0].name.name, b"_WeB._TcP.SuItE")
        self.assertEqual(ready_count(self.zone), 1)

    def test_srv_answers_rotate_as_on_the_full_path(self):
        asked = query("_web._tcp.suite", dns.SRV)
        firsts = []
        for _ in range(6):
            (answer,) = self.ask([(asked, SOURCE)])
            firsts.append(parse(answer).answers[0].payload.port)
        self.assertEqual(firsts, [8080, 8081, 8082, 8080, 8081, 8082])

    def test_udp_answers_stay_within_1232_bytes_with_tc(self):
        asked = query("_many._tcp.suite", dns.SRV, edns_size=4096)
        small = query("web.suite", dns.A, edns_size=4096)
        for _ in range(3):
            answers = self.ask([(asked, SOURCE), (small, SOURCE)])
            self.assertTrue(all(len(answer) <= MAX_UDP_SIZE for answer in answers))
            self.assertEqual(parse(answers[0]).trunc, 1)
        # The SRV answer rotates over 100 records: assembled per query, not kept whole.
        self.assertEqual(ready_count(self.zone), 1)

    def test_a_registry_change_is_answered_at_once(self):
        asked = query("web.suite", dns.A)
        for _ in range(3):
            self.ask([(asked, SOURCE)])
        self.assertEqual(ready_count(self.zone), 1)
        self.zone.registry.register("web", "10.0.0.9", 1)
        (answer,) = self.ask([(asked, SOURCE)])
        self.assertEqual(
            sorted(rr.payload.dottedQuad() for rr in parse(answer).answers),
            ["10.0.0.9", "127.0.0.1"],
        )
        self.zone.registry.deregister("web", "127.0.0.1", 8080)
        self.zone.registry.deregister("web", "127.0.0.1", 8081)
        self.zone.registry.deregister("web", "10.0.0.9", 1)
        (answer,) = self.ask([(asked, SOURCE)])
        self.assertEqual(parse(answer).answers, [])  # only ::1 is left: NODATA

    def test_a_response_or_another_opcode_in_the_same_bytes_is_not_taken_for_the_query(self):
        asked = query("web.suite", dns.A)
        for _ in range(3):
            self.ask([(asked, SOURCE)])
        response = asked[:2] + bytes([asked[2] | 0x80]) + asked[3:]
        notify = asked[:2] + bytes([asked[2] | 0x20]) + asked[3:]  # opcode 4
        self.assertEqual(self.ask([(response, SOURCE)]), [])
        (answer,) = self.ask([(notify, SOURCE)])
        self.assertEqual(parse(answer).rCode, dns.ENOTIMP)

    def test_queries_and_bytes_are_counted_on_both_paths(self):
        asked = query("web.suite", dns.A)
        answers = self.ask([(asked, SOURCE)] * 5)
        found = samples(self.protocol, self.zone)
        self.assertEqual(found["dns_queries", ("A", "NOERROR")], 5)
        self.assertEqual(found["requests", ("udp",)], 5)
        self.assertEqual(found["received_bytes", ("udp",)], 5 * len(asked))
        self.assertEqual(found["sent_bytes", ("udp",)], sum(map(len, answers)))
        self.assertEqual(found["datagrams", ("answered",)], 5)

    def test_a_failed_send_is_logged_and_the_batch_goes_on(self):
        asked = query("web.suite", dns.A)
        self.ask([(asked, SOURCE)] * 2)
        sent = []

        def send(data, address):
            if address == ("192.0.2.9", 40000):
                raise OSError("no route")
            sent.append(address)

        self.protocol.send = send
        self.protocol.datagramsReceived(
            [(asked, SOURCE), (asked, ("192.0.2.9", 40000)), (asked, SOURCE)]
        )
        self.assertEqual(sent, [SOURCE, SOURCE])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)


class ReadyAnswerLimitTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.zone = ZoneAnswers(registry_with_names(), "suite", ttl=5)
        self.asked = query("web.suite", dns.A)

    def test_the_rate_limit_per_source_applies(self):
        protocol = listener(self.zone, self.clock, udp_rate=5.0, udp_burst=5)
        protocol.datagramsReceived([(self.asked, SOURCE)] * 20)
        self.assertEqual(len(protocol.transport.sent), 5)
        other = ("192.0.3.1", 40000)
        protocol.datagramsReceived([(self.asked, other)] * 3)
        self.assertEqual(len(protocol.transport.sent), 8)
        self.assertEqual(samples(protocol, self.zone)["datagrams", ("rate_limited",)], 15)
        self.clock.advance(1)  # five more tokens
        protocol.datagramsReceived([(self.asked, SOURCE)] * 20)
        self.assertEqual(len(protocol.transport.sent), 13)

    def test_the_rate_limit_per_network_applies(self):
        protocol = listener(
            self.zone,
            self.clock,
            udp_rate=50.0,
            udp_burst=100,
            udp_network_rate=10.0,
            udp_network_burst=10,
        )
        protocol.datagramsReceived(
            [(self.asked, (f"192.0.2.{host}", 40000)) for host in range(1, 31)] * 2
        )
        self.assertEqual(len(protocol.transport.sent), 10)
        self.assertEqual(samples(protocol, self.zone)["datagrams", ("network_rate_limited",)], 50)

    def test_no_answer_to_a_port_below_1024_even_when_ready(self):
        protocol = listener(self.zone, self.clock)
        protocol.datagramsReceived([(self.asked, SOURCE)] * 3)
        protocol.datagramsReceived([(self.asked, ("192.0.2.8", 53))])
        self.assertEqual(len(protocol.transport.sent), 3)
        self.assertEqual(samples(protocol, self.zone)["datagrams", ("dropped_source_port",)], 1)


class ReadyAnswerSizeTests(SynchronousTestCase):
    def test_answers_too_large_to_keep_whole_are_assembled_per_query_not_rebuilt(self):
        registry = Registry(1000)
        full_registry = Registry(1000)
        for port in range(1, 9):  # eight SRV records of ~90 bytes: ~6 KB kept whole
            for each in (registry, full_registry):
                each.register("big", f"host-{port}-{'x' * 50}.{'y' * 20}.example.com", port)
        zone = ZoneAnswers(
            registry, "suite", ttl=5, cache_bytes=12 * 1024
        )  # 6 KiB of exact queries
        full = ZoneAnswers(full_registry, "suite", ttl=5, cache_bytes=0)
        protocol = listener(zone)
        asked = query("_big._tcp.suite", dns.SRV, edns_size=1232)
        built = []
        real = zone._make_ready
        self.patch(zone, "_make_ready", lambda *a: built.append(a) or real(*a))
        for number in range(10):
            datagram = bytes([0, number]) + asked[2:]
            protocol.datagramsReceived([(datagram, SOURCE)])
            self.assertEqual(protocol.transport.sent[-1][0], full.answer(datagram))
        self.assertEqual(len(built), 1)
        self.assertEqual(zone.exact[asked[2:]].ready, ())
