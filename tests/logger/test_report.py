"""
`report_to`: a collector tells name servers in other processes who it heard,
at most once a second, over their HTTP API.  The cadence, the bound and
the overlap rules run on a Clock with a fake HTTP client; what goes over
the wire (the body, its splitting, the token, refusals, an outage, TLS) is
sent to a real twisted.web server on 127.0.0.1.
"""

import json

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import ResponseDone
from twisted.web.resource import Resource

from suite.foundation.config import ConfigError, load
from suite.foundation.jsonlines import BatchWriter
from suite.logger.report import (
    MAX_REPORT_BODY,
    HeardReporter,
    report_agent,
    report_bodies,
    report_mistakes,
)
from suite.logger.service import LoggerSettings, build
from suite.names.service import NamesSettings
from suite.names.service import build as names_build
from suite.net.http_site import QuietSite
from suite.net.tls import TLSSettings, tls_options, trust_root
from tests.helpers import captured_log, make_pki, tmp_dir

WEB = (13, "h1", "web")


def samples(reporter):
    return {(name, labels): value for name, labels, value in reporter.metric_samples()}


def entries(body: bytes) -> list[dict]:
    return json.loads(body)


# A fake HTTP client, for what runs on the Clock.


class FakeResponse:
    def __init__(self, code: int, body: bytes = b"") -> None:
        self.code = code
        self.body = body

    def deliverBody(self, protocol) -> None:
        protocol.dataReceived(self.body)
        protocol.connectionLost(Failure(ResponseDone()))


class FakeAgent:
    """Records each request; answers at once with ANSWER, or never when HOLD (answer later)."""

    def __init__(self, code: int = 200, body: bytes = b"", hold: bool = False) -> None:
        self.code, self.body, self.hold = code, body, hold
        self.requests: list[tuple[bytes, bytes, dict, bytes]] = []
        self.pending: list[Deferred] = []

    def request(self, method, uri, headers, body):
        consumer = []
        body.startProducing(type("C", (), {"write": lambda _, data: consumer.append(data)})())
        names = {name.lower(): values for name, values in headers.getAllRawHeaders()}
        self.requests.append((method, uri, names, b"".join(consumer)))
        if self.hold:
            d: Deferred = Deferred()
            self.pending.append(d)
            return d
        return succeed(FakeResponse(self.code, self.body))

    def bodies(self) -> list[list[dict]]:
        return [entries(body) for _, _, _, body in self.requests]


def on_clock(test, agent=None, max_sources=100, urls=("http://names.example:8500",), timeout=4.5):
    """A started reporter on a Clock (a timeout off the whole seconds the reports go at)."""
    clock = Clock()
    reporter = HeardReporter(urls, "s3cret", max_sources, clock, agent or FakeAgent(), timeout)
    reporter.startService()
    test.addCleanup(lambda: reporter.running and reporter.stopService())
    return clock, reporter


class CadenceTests(SynchronousTestCase):
    def test_what_is_heard_is_reported_once_a_second_and_nothing_when_nothing_was_heard(self):
        agent = FakeAgent()
        clock, reporter = on_clock(self, agent)
        clock.advance(0.5)
        reporter.heard([WEB], "192.0.2.1")
        clock.advance(0.375)
        self.assertEqual(agent.requests, [])  # not before the second is over
        clock.advance(0.125)
        self.assertEqual(
            agent.bodies(),
            [[{"app": "web", "hostname": "h1", "address": "192.0.2.1", "last": 0.5}]],
        )
        clock.advance(1)
        self.assertEqual(len(agent.requests), 1)  # nothing new heard: no request
        reporter.heard([(13, "h2", "db")], "192.0.2.2")
        clock.advance(1)
        self.assertEqual(agent.bodies()[1][0]["app"], "db")
        self.assertEqual(samples(reporter)[("log_reports", (reporter.targets[0].url, "sent"))], 2)

    def test_many_reads_in_one_second_give_one_request_with_each_identity_once(self):
        agent = FakeAgent()
        clock, reporter = on_clock(self, agent)
        for _ in range(4):
            clock.advance(0.125)
            reporter.heard([WEB] * 50 + [(13, None, "cron")], "192.0.2.1")
            reporter.heard([WEB], "192.0.2.9")
        clock.advance(0.5)
        (body,) = agent.bodies()
        self.assertEqual(
            sorted((e["app"], e["hostname"] or "", e["address"], e["last"]) for e in body),
            [
                ("cron", "", "192.0.2.1", 0.5),
                ("web", "h1", "192.0.2.1", 0.5),
                ("web", "h1", "192.0.2.9", 0.5),
            ],
        )

    def test_messages_without_an_app_and_messages_that_are_not_syslog_are_left_out(self):
        agent = FakeAgent()
        clock, reporter = on_clock(self, agent)
        reporter.heard([None, (13, "h1", None), (13, "h1", ""), None], "192.0.2.1")
        clock.advance(1)
        self.assertEqual(agent.requests, [])
        reporter.heard([None, WEB, (13, "h1", None)], "192.0.2.1")
        clock.advance(1)
        self.assertEqual([e["app"] for e in agent.bodies()[0]], ["web"])

    def test_the_token_and_the_json_type_go_with_every_request_to_every_target(self):
        agent = FakeAgent()
        clock, reporter = on_clock(
            self, agent, urls=("http://a.example:8500", "https://b.example/consul/")
        )
        reporter.heard([WEB], "192.0.2.1")
        clock.advance(1)
        self.assertEqual(
            [(method, uri) for method, uri, _, _ in agent.requests],
            [
                (b"PUT", b"http://a.example:8500/v1/suite/heard"),
                (b"PUT", b"https://b.example/consul/v1/suite/heard"),
            ],
        )
        for _, _, headers, _ in agent.requests:
            self.assertEqual(headers[b"x-consul-token"], [b"s3cret"])
            self.assertEqual(headers[b"content-type"], [b"application/json"])


class BoundTests(SynchronousTestCase):
    def test_beyond_max_reported_sources_new_identities_wait_and_are_counted_once(self):
        agent = FakeAgent()
        clock, reporter = on_clock(self, agent, max_sources=2)
        reporter.heard([(13, "h1", "a"), (13, "h1", "b")], "192.0.2.1")
        for _ in range(3):  # heard again and again: each left out counts once
            reporter.heard([(13, "h1", "c"), (13, "h1", "d")], "192.0.2.1")
        clock.advance(0.5)
        reporter.heard([(13, "h1", "a")], "192.0.2.1")  # already held: its time moves on
        self.assertEqual(samples(reporter)[("log_report_skipped", ())], 2)
        clock.advance(0.5)
        self.assertEqual(
            sorted((e["app"], e["last"]) for e in agent.bodies()[0]), [("a", 0.5), ("b", 0.0)]
        )
        reporter.heard([(13, "h1", "c")], "192.0.2.1")  # room again after the report
        clock.advance(1)
        self.assertEqual([e["app"] for e in agent.bodies()[1]], ["c"])
        self.assertEqual(samples(reporter)[("log_report_skipped", ())], 2)


class OverlapTests(SynchronousTestCase):
    def test_a_target_still_busy_is_not_sent_another_report_and_gets_what_it_missed_next(self):
        agent = FakeAgent(hold=True)
        clock, reporter = on_clock(self, agent)
        reporter.heard([(13, "h1", "a")], "192.0.2.1")
        clock.advance(1)
        reporter.heard([(13, "h1", "b")], "192.0.2.1")
        clock.advance(1)
        reporter.heard([(13, "h1", "c")], "192.0.2.1")
        clock.advance(1)
        self.assertEqual(len(agent.requests), 1)  # the first is still in flight
        agent.pending[0].callback(FakeResponse(200))
        clock.advance(1)
        self.assertEqual(len(agent.requests), 2)
        self.assertEqual(
            sorted((e["app"], e["last"]) for e in agent.bodies()[1]), [("b", 1.0), ("c", 2.0)]
        )

    def test_a_request_without_an_answer_fails_after_the_timeout_and_its_entries_wait(self):
        log = captured_log(self)
        agent = FakeAgent(hold=True)
        clock, reporter = on_clock(self, agent)
        reporter.heard([(13, "h1", "a")], "192.0.2.1")
        clock.advance(1)
        clock.advance(4.5)
        self.assertEqual(len(agent.requests), 1)
        self.assertEqual(agent.pending[0].called, True)  # cancelled by the timeout
        url = reporter.targets[0].url
        self.assertEqual(samples(reporter)[("log_reports", (url, "failed"))], 1)
        self.assertEqual(
            [line for line in log if "report_to" in line],
            [
                f"report_to {url}: cannot report who was heard: no answer within 4.5 s; "
                "trying again every 1 s"
            ],
        )
        agent.hold = False
        clock.advance(1)
        self.assertEqual([e["app"] for e in agent.bodies()[1]], ["a"])  # sent again


class RefusalTests(SynchronousTestCase):
    def test_a_server_error_keeps_the_entries_for_the_next_report_a_bad_request_drops_them(self):
        captured_log(self)
        agent = FakeAgent(code=503, body=b"No cluster leader\n")
        clock, reporter = on_clock(self, agent)
        reporter.heard([(13, "h1", "a")], "192.0.2.1")
        clock.advance(1)
        agent.code = 400
        clock.advance(1)  # a again, refused as a bad request: dropped
        self.assertEqual([e["app"] for e in agent.bodies()[1]], ["a"])
        agent.code = 200
        clock.advance(1)
        self.assertEqual(len(agent.requests), 2)

    def test_an_outage_says_why_once_when_it_begins_and_once_when_it_ends(self):
        log = captured_log(self)
        agent = FakeAgent(code=500, body=b"boom\x1b[2J\nsecond line\n")
        clock, reporter = on_clock(self, agent)
        url = reporter.targets[0].url
        for _ in range(3):
            reporter.heard([WEB], "192.0.2.1")
            clock.advance(1)
        self.assertEqual(
            reporter.health_problems(),
            [
                (
                    "degraded",
                    f"report_to {url} failing since 1970-01-01T00:00:01Z: HTTP 500: boom\\x1b[2J",
                )
            ],
        )
        agent.code = 200
        reporter.heard([WEB], "192.0.2.1")
        clock.advance(1)
        self.assertEqual(
            [line for line in log if "report_to" in line],
            [
                f"report_to {url}: cannot report who was heard: HTTP 500: boom\\x1b[2J; trying "
                "again every 1 s",
                f"report_to {url}: reporting again after 3.0 s",
            ],
        )
        self.assertEqual(reporter.health_problems(), [])
        self.assertEqual(samples(reporter)[("log_reports", (url, "failed"))], 3)


class StopTests(SynchronousTestCase):
    def test_a_stop_sends_one_last_report(self):
        agent = FakeAgent()
        clock, reporter = on_clock(self, agent)
        reporter.heard([WEB], "192.0.2.1")
        clock.advance(0.5)
        stopped = reporter.stopService()
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(len(agent.requests), 1)
        clock.advance(5)
        self.assertEqual(len(agent.requests), 1)  # the loop is over

    def test_a_stop_waits_for_the_last_report_no_longer_than_the_timeout(self):
        captured_log(self)
        agent = FakeAgent(hold=True)
        clock, reporter = on_clock(self, agent)
        reporter.heard([WEB], "192.0.2.1")
        stopped = reporter.stopService()
        self.assertNoResult(stopped)
        clock.advance(4.5)
        self.assertIsNone(self.successResultOf(stopped))


class BodyTests(SynchronousTestCase):
    def test_a_report_is_split_so_that_no_body_exceeds_the_limit(self):
        heard = [((f"app{n:04d}", "host.example", "192.0.2.1"), 1.5) for n in range(1000)]
        limit = 4096
        bodies = list(report_bodies(heard, limit))
        self.assertGreater(len(bodies), 10)
        for body, held in bodies:
            self.assertLessEqual(len(body), limit)
            self.assertEqual([e["app"] for e in entries(body)], [i[0] for i, _ in held])
        for body, _ in bodies[:-1]:
            self.assertGreater(len(body), limit - 100)  # filled, not split early
        self.assertEqual(sum((held for _, held in bodies), []), heard)

    def test_an_entry_too_large_for_any_body_is_left_out(self):
        heard = [(("\x01" * 9000, None, "192.0.2.1"), 1.0), (("web", None, "192.0.2.1"), 2.0)]
        ((body, held),) = report_bodies(heard)
        self.assertEqual(
            entries(body), [{"app": "web", "hostname": None, "address": "192.0.2.1", "last": 2.0}]
        )


class ConfigTests(SynchronousTestCase):
    def mistakes(self, **keys):
        return [str(e) for e in report_mistakes(LoggerSettings(**keys))]

    def test_a_token_or_a_ca_without_report_to_is_a_mistake_naming_its_key(self):
        (token,) = self.mistakes(report_token="s3cret")
        self.assertIn("report_token", token)
        self.assertIn("set report_to", token)
        self.assertNotIn("s3cret", token)
        (ca,) = self.mistakes(report_ca="/etc/ssl/ca.pem")
        self.assertIn("report_ca", ca)

    def test_report_to_takes_http_and_https_urls_in_ascii(self):
        directory = tmp_dir(self)
        for url, problem in (
            ("names.example:8500", "an http:// or https:// URL"),
            ("http://b\u00fccher.example:8500", "ASCII only"),
            ("http://names.example:99999", "a port of 1-65535"),
        ):
            path = directory / "suite.toml"
            path.write_text(f'[logger]\nreport_to = ["{url}"]\n')
            error = self.assertRaises(
                ConfigError, load, str(path), [LoggerSettings], only_listed=True
            )
            self.assertIn("report_to", str(error))
            self.assertIn(problem, str(error))

    def test_a_ca_with_only_http_urls_is_a_mistake(self):
        (ca,) = self.mistakes(report_to=("http://127.0.0.1:8500",), report_ca="/etc/ssl/ca.pem")
        self.assertIn("report_ca", ca)
        self.assertIn("no report_to URL is https://", ca)

    def test_an_unreadable_token_file_is_a_config_error_at_build(self):
        directory = tmp_dir(self)
        settings = LoggerSettings(
            output=str(directory / "out.jsonl"),
            report_to=("http://127.0.0.1:8500",),
            report_token_file=str(directory / "missing"),
        )
        (mistake,) = [str(e) for e in report_mistakes(settings)]
        self.assertIn("report_token_file", mistake)
        self.assertIn("cannot read", mistake)
        error = self.assertRaises(ConfigError, build, settings, Clock())
        self.assertIn("report_token_file", str(error))
        self.assertFalse((directory / "out.jsonl").exists())  # refused before opening anything

    def test_the_token_from_its_file_is_sent(self):
        directory = tmp_dir(self)
        (directory / "token").write_text("from-file\n")
        settings = LoggerSettings(
            output=str(directory / "out.jsonl"),
            report_to=("http://127.0.0.1:8500",),
            report_token_file=str(directory / "token"),
        )
        parts = build(settings, Clock())
        for writer in parts.services:
            if isinstance(writer, BatchWriter):
                self.addCleanup(writer.output.close)
        (reporter,) = [s for s in parts.services if isinstance(s, HeardReporter)]
        self.assertEqual(reporter.headers.getRawHeaders(b"x-consul-token"), [b"from-file"])
        self.assertEqual(parts.stream_factory.delivery.hearers, [reporter])


# Over the wire, to a real twisted.web server on 127.0.0.1.


class HeardResource(Resource):
    """`PUT /v1/suite/heard` as a name server takes it: recorded, answered with CODE."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.code = 200
        self.answer = b""
        self.requests: list[tuple[bytes, bytes, bytes | None, bytes]] = []

    def render_PUT(self, request):
        self.requests.append(
            (
                request.path,
                request.getHeader(b"x-consul-token"),
                request.getHeader(b"content-type"),
                request.content.read(),
            )
        )
        request.setResponseCode(self.code)
        return self.answer


class WireTestCase(TestCase):
    """A name server's HTTP API on 127.0.0.1 port 0, and a reporter on a Clock talking to it."""

    def setUp(self):
        self.resource = HeardResource()
        site = QuietSite(self.resource)
        site.max_body = 64 * 1024
        self.connections = WrappingFactory(site)
        self.listen()
        self.clock = Clock()

    def listen(self, port=0, context=None):
        if context is None:
            self.port = reactor.listenTCP(port, self.connections, interface="127.0.0.1")
        else:
            self.port = reactor.listenSSL(port, self.connections, context, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        return self.port.getHost().port

    def reporter(self, scheme="http", trust=None, token="s3cret", max_sources=20000):
        url = f"{scheme}://127.0.0.1:{self.port.getHost().port}"
        agent, pool = report_agent(reactor, trust)
        reporter = HeardReporter([url], token, max_sources, self.clock, agent)
        reporter.close_after_stop(pool)
        reporter.startService()
        self.addCleanup(self.closed)
        self.addCleanup(lambda: reporter.running and reporter.stopService())
        return reporter

    async def closed(self):
        """The server's side of every connection closed too (bounded: 2 s)."""
        for _ in range(200):
            if not self.connections.protocols:
                return
            await task.deferLater(reactor, 0.01)
        self.fail("connections still open")

    async def tick(self, reporter):
        """One second on the clock, and the reports it started done."""
        self.clock.advance(1)
        for target in reporter.targets:
            if target.sending is not None:
                await target.sending


class WireTests(WireTestCase):
    async def test_one_put_with_the_token_and_each_identity_once(self):
        reporter = self.reporter()
        self.clock.advance(0.25)
        reporter.heard([WEB] * 50, "127.0.0.1")
        self.clock.advance(0.5)
        reporter.heard([WEB] * 50 + [(14, None, "db")], "127.0.0.1")
        await self.tick(reporter)
        ((path, token, kind, body),) = self.resource.requests
        self.assertEqual((path, token, kind), (b"/v1/suite/heard", b"s3cret", b"application/json"))
        self.assertEqual(
            sorted(entries(body), key=lambda e: e["app"]),
            [
                {"app": "db", "hostname": None, "address": "127.0.0.1", "last": 0.75},
                {"app": "web", "hostname": "h1", "address": "127.0.0.1", "last": 0.75},
            ],
        )

    async def test_a_large_report_goes_in_bodies_of_at_most_48_kib(self):
        reporter = self.reporter()
        heard = [(13, f"host-{n:05d}.example.org", f"application-{n:05d}") for n in range(3000)]
        reporter.heard(heard, "127.0.0.1")
        await self.tick(reporter)
        sizes = [len(body) for _, _, _, body in self.resource.requests]
        self.assertGreater(len(sizes), 2)
        self.assertLessEqual(max(sizes), MAX_REPORT_BODY)
        got = sorted(e["app"] for _, _, _, body in self.resource.requests for e in entries(body))
        self.assertEqual(got, sorted(app for _, _, app in heard))

    async def test_a_refused_token_is_logged_once_and_clearly(self):
        log = captured_log(self)
        self.resource.code = 403
        self.resource.answer = b"ACL not found\n"
        reporter = self.reporter(token="wrong")
        for _ in range(3):
            reporter.heard([WEB], "127.0.0.1")
            await self.tick(reporter)
        url = reporter.targets[0].url
        self.assertEqual(
            [line for line in log if "report_to" in line],
            [
                f"report_to {url}: the name server refused report_token (HTTP 403: ACL not "
                "found): no report is taken until report_token is its write token"
            ],
        )
        self.assertEqual(samples(reporter)[("log_reports", (url, "failed"))], 3)

    async def test_a_target_down_then_up_is_logged_once_each_and_hears_what_it_missed(self):
        log = captured_log(self)
        reporter = self.reporter()
        number = self.port.getHost().port
        await self.port.stopListening()
        reporter.heard([(13, "h1", "early")], "127.0.0.1")
        await self.tick(reporter)
        await self.tick(reporter)
        self.listen(number)
        reporter.heard([(13, "h1", "late")], "127.0.0.1")
        await self.tick(reporter)
        url = reporter.targets[0].url
        self.assertEqual(
            [line for line in log if "report_to" in line],
            [
                f"report_to {url}: cannot report who was heard: connection refused; trying "
                "again every 1 s",
                f"report_to {url}: reporting again after 2.0 s",
            ],
        )
        ((_, _, _, body),) = self.resource.requests
        self.assertEqual(
            sorted((e["app"], e["last"]) for e in entries(body)), [("early", 0.0), ("late", 2.0)]
        )


class TLSTests(WireTestCase):
    def setUp(self):
        super().setUp()
        self.pki = make_pki(tmp_dir(self))
        tls = TLSSettings(certificate=self.pki["server_crt"], private_key=self.pki["server_key"])
        context = tls_options(tls)
        self.port.stopListening()
        self.listen(context=context)

    async def test_https_verified_against_report_ca(self):
        settings = LoggerSettings(report_to=("https://127.0.0.1:1",), report_ca=self.pki["ca"])
        reporter = self.reporter("https", trust_root(settings, "report_ca"))
        reporter.heard([WEB], "127.0.0.1")
        await self.tick(reporter)
        self.assertEqual(len(self.resource.requests), 1)

    async def test_a_server_another_ca_signed_is_refused(self):
        log = captured_log(self)
        other = make_pki(tmp_dir(self))
        settings = LoggerSettings(report_to=("https://127.0.0.1:1",), report_ca=other["ca"])
        reporter = self.reporter("https", trust_root(settings, "report_ca"))
        reporter.heard([WEB], "127.0.0.1")
        await self.tick(reporter)
        self.assertEqual(self.resource.requests, [])
        (line,) = [line for line in log if "report_to" in line]
        self.assertIn("TLS failed", line)
        self.assertIn("certificate verify failed", line)


class NameServerTests(WireTestCase):
    """The reporter against the name server's own HTTP API: what it sends is what it takes."""

    def setUp(self):
        super().setUp()
        self.port.stopListening()
        parts = names_build(NamesSettings(store="memory", token="s3cret"), reactor)
        self.silence = parts.log_watcher
        api = parts.other_listeners["http_listen"].stream_factory
        self.connections = WrappingFactory(api)
        self.listen()

    async def test_a_report_makes_the_watched_identity_heard(self):
        watched = self.silence.watch(("web-1", "service:web-1"), "web", "h1")
        unwatched = self.silence.watch(("db-1", "service:db-1"), "db", "127.0.0.2")
        reporter = self.reporter()
        self.clock.advance(0.5)
        reporter.heard([WEB, (13, None, "cron")], "127.0.0.1")
        await self.tick(reporter)
        url = reporter.targets[0].url
        self.assertEqual(samples(reporter)[("log_reports", (url, "sent"))], 1)
        self.assertEqual(watched.last, 0.5)
        self.assertIsNone(unwatched.last)

    async def test_a_wrong_token_is_refused_and_nothing_is_heard(self):
        log = captured_log(self)
        watched = self.silence.watch(("web-1", "service:web-1"), "web", "h1")
        reporter = self.reporter(token="wrong")
        reporter.heard([WEB], "127.0.0.1")
        await self.tick(reporter)
        self.assertIsNone(watched.last)
        (line,) = [line for line in log if "report_to" in line]
        self.assertIn("refused report_token (HTTP 403", line)
