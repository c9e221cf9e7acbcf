"""
The status page at `/`: what it shows, that it shows client text as text,
that it asks for the read token, and that its live stream sends each change.
Over real sockets against a started suite; the stream's timing on a Clock.
"""

import base64
import json
import socket
import time
from urllib.parse import quote

from twisted.internet import reactor, task, threads
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.test.requesthelper import DummyRequest

from suite.app import status_view
from suite.app.status_page import KEEPALIVE, LiveStreams, PageGuard, RowCache, sparkline
from suite.app.status_view import StatusHistory
from suite.foundation.interfaces import IMetricSource
from tests.app.test_status_site import get
from tests.helpers import start_suite, tmp_dir

LOCAL = "tcp:0:interface=127.0.0.1"
MARKUP = '<script>window.pwned=1</script>"'
HOSTILE = MARKUP + "\u202e"  # a bidi override: tags refuse it, outputs and reasons keep it


def put(port, path, body=None, headers=None):
    """(status, body) of one PUT, made in a thread."""
    import http.client

    def request():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            data = None if body is None else json.dumps(body)
            connection.request("PUT", path, body=data, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    return threads.deferToThread(request)


def fetch(port, path, headers=None):
    import http.client

    def request():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("GET", path, headers=headers or {})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    return threads.deferToThread(request)


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


class PageTests(TestCase):
    def start(self, names_extra=""):
        directory = tmp_dir(self)
        ports = start_suite(
            self,
            directory,
            f"""
            [names]
            listen = ["{LOCAL}"]
            http_listen = ["{LOCAL}"]
            store = "memory"
            {names_extra}
            [logger]
            listen = ["{LOCAL}"]
            output = "{directory}/messages.jsonl"
            [metrics]
            listen = ["{LOCAL}"]
        """,
        )
        return ports[f"metrics {LOCAL}"], ports[f"names http_listen {LOCAL}"]

    async def test_the_page_shows_services_the_registry_and_recent_changes(self):
        metrics, http = self.start()
        status, _ = await put(
            http,
            "/v1/agent/service/register",
            {
                "Name": "web",
                "ID": "web-1",
                "Address": "127.0.0.1",
                "Port": 8080,
                "Tags": ["blue", "v2"],
                "Check": {"TTL": "30s", "Status": "passing"},
            },
        )
        self.assertEqual(status, 200)
        await put(http, "/v1/agent/check/warn/service:web-1?note=slow%20disk")
        await put(
            http,
            "/v1/agent/service/register",
            {"Name": "db", "ID": "db-1", "Address": "127.0.0.1", "Port": 5432},
        )
        await put(http, "/v1/agent/service/deregister/db-1")
        for port in (metrics, http):
            status, headers, body = await fetch(port, "/")
            self.assertEqual(status, 200)
            self.assertEqual(headers["Content-Type"], "text/html; charset=utf-8")
            self.assertIn("default-src 'none'", headers["Content-Security-Policy"])
            page = body.decode()
            self.assertTrue(page.startswith("<!DOCTYPE html>"))
            # Services with their listeners.
            for service in ("names", "logger", "metrics"):
                self.assertIn(f'<th scope="row">{service}</th>', page)
            self.assertIn("http_listen tcp:0:interface=127.0.0.1", page)
            # The registry: the instance, its tags, its status and its check's last output.
            row = page[page.index('data-name="web"') :]
            row = row[: row.index("</tr>")]
            self.assertIn('data-status="warning"', page)
            for text in ("web-1 at 127.0.0.1:8080", "blue · v2", "slow disk"):
                self.assertIn(text, row)
            self.assertIn('<span class="status warning">warning</span>', row)
            # Recent changes, newest first.
            changes = page[page.index("Recent changes") :]
            order = [changes.index(text) for text in ("deregistered: db", "registered: db")]
            self.assertEqual(order, sorted(order))
            self.assertIn("status: web", changes)
            self.assertIn("passing to warning", changes)
            # The collector's section.
            self.assertIn("Collector (logger)", page)

    async def test_client_text_is_shown_as_text(self):
        metrics, http = self.start()
        await put(
            http,
            "/v1/agent/service/register",
            {
                "Name": "web",
                "ID": "web-1",
                "Address": "127.0.0.1",
                "Port": 8080,
                "Tags": [MARKUP],
                "Check": {"TTL": "30s"},
            },
        )
        for path in (
            "/v1/agent/check/fail/service:web-1?note=" + quote(HOSTILE),
            "/v1/agent/service/maintenance/web-1?enable=true&reason=" + quote(HOSTILE),
        ):
            status, _ = await put(http, path)
            self.assertEqual(status, 200)
        _, _, body = await fetch(metrics, "/")
        page = body.decode()
        self.assertNotIn("<script>window", page)
        self.assertNotIn("\u202e", page)
        markup = '&lt;script&gt;window.pwned=1&lt;/script&gt;"'
        self.assertIn(markup, page)
        self.assertEqual(page.count(markup + "\\u202e"), 2, "the check's output, the reason")
        self.assertEqual(page.count("<script"), 1, "the page's own script only")

    async def test_the_page_asks_for_the_read_token(self):
        metrics, http = self.start('read_token = "reader"\ntoken = "writer"')
        for port in (metrics, http):
            for path in ("/", "/live"):
                status, headers, _ = await fetch(port, path)
                self.assertEqual(status, 401)
                self.assertIn("Basic", headers["WWW-Authenticate"])
            refused, _, _ = await fetch(port, "/", basic("me", "wrong"))
            self.assertEqual(refused, 401)
            for path, headers in (
                ("/", basic("anyone", "reader")),
                ("/", {"X-Consul-Token": "reader"}),
                ("/", {"Authorization": "Bearer writer"}),
                ("/?token=reader", {}),
            ):
                status, _, body = await fetch(port, path, headers)
                self.assertEqual((status, path, headers), (200, path, headers))
                self.assertIn(b"suite status", body)

    async def test_the_page_is_read_only(self):
        metrics, http = self.start()
        for port in (metrics, http):
            status, _, _ = await threads.deferToThread(get, port, "/", "POST", b"x")
            self.assertEqual(status, 405)

    async def test_without_a_token_set_the_page_is_open(self):
        metrics, _ = self.start('token = "writer"')
        status, _, _ = await fetch(metrics, "/")
        self.assertEqual(status, 200)

    async def test_the_unwell_are_listed_first_and_a_large_registry_is_cut(self):
        self.patch(status_view, "PAGE_INSTANCES", 2)
        metrics, http = self.start()
        for number in range(4):
            await put(
                http,
                "/v1/agent/service/register",
                {
                    "Name": f"app{number}",
                    "ID": f"app{number}",
                    "Address": "127.0.0.1",
                    "Port": 8000 + number,
                    "Check": {"TTL": "30s", "Status": "critical" if number == 3 else "passing"},
                },
            )
        _, _, body = await fetch(metrics, "/")
        page = body.decode()
        self.assertIn('data-name="app3"', page)
        self.assertEqual(page.count("data-name="), 2)
        self.assertIn("the first 2; 2 more not shown", page)

    async def test_the_live_stream_sends_a_registration_within_two_seconds(self):
        metrics, http = self.start()
        sock = socket.create_connection(("127.0.0.1", metrics), timeout=5)
        self.addCleanup(sock.close)
        sock.setblocking(False)
        sock.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        received = bytearray()

        async def until(text: bytes, within: float) -> float:
            started = time.monotonic()
            while text not in received:
                if time.monotonic() - started > within:
                    tail = bytes(received)[-300:]
                    self.fail(f"{text!r} not streamed within {within} s: {tail!r}")
                try:
                    received.extend(sock.recv(65536))
                except BlockingIOError:
                    await task.deferLater(reactor, 0.02, lambda: None)
            return time.monotonic() - started

        await until(b"event: page", 5)
        self.assertIn(b"text/event-stream", bytes(received))
        self.assertNotIn(b"newcomer", bytes(received))
        await put(
            http,
            "/v1/agent/service/register",
            {"Name": "newcomer", "Address": "127.0.0.1", "Port": 9999},
        )
        delay = await until(b'data-name="newcomer"', 2.5)
        self.assertLess(delay, 2.5)


class FakeSource:
    """A StatusSource whose digest a test sets; its view is the fixed VIEW."""

    def __init__(self, view):
        self.state = 0
        self.views = 0
        self._view = view

    def digest(self):
        return (self.state,)

    def view(self):
        self.views += 1
        return self._view


def a_view():
    return status_view.StatusView(
        at=0.0,
        status="ok",
        uptime=5.0,
        version="suite test",
        workers=1,
        workers_running=None,
        sample_seconds=2.0,
        services=(),
        registries=(),
        collectors=(),
    )


class Channel:
    """An HTTP channel's timeout, as a stream's writes reset it."""

    resets = 0

    def resetTimeout(self):
        self.resets += 1


class LiveStreamTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.source = FakeSource(a_view())
        self.live = LiveStreams(self.source, PageGuard(list), RowCache(), self.clock)

    def open(self):
        request = DummyRequest([b"live"])
        request.channel = Channel()
        self.live.render_GET(request)
        return request

    def events(self, request):
        return b"".join(request.written).count(b"event: page")

    def test_a_stream_opens_with_the_page_and_gets_each_change_once(self):
        first, second = self.open(), self.open()
        self.assertEqual(self.events(first), 1)
        self.clock.advance(1)
        self.assertEqual(self.events(first), 1, "nothing changed: nothing sent")
        self.source.state = 1
        views = self.source.views
        self.clock.advance(1)
        self.assertEqual((self.events(first), self.events(second)), (2, 2))
        self.assertEqual(self.source.views, views + 1, "one render for every stream")

    def test_a_quiet_stream_gets_a_comment_every_keepalive(self):
        request = self.open()
        self.clock.pump([1] * int(KEEPALIVE))
        self.assertIn(b": still here\n\n", b"".join(request.written))
        self.assertEqual(self.events(request), 1)
        self.assertEqual(request.channel.resets, 2, "the idle timeout counts a stream's writes")

    def test_a_closed_stream_is_forgotten_and_the_looking_stops(self):
        request = self.open()
        request.processingFailed(Exception("gone"))  # the connection was lost
        self.assertEqual(self.live.streams, set())
        self.clock.advance(1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopping_ends_every_stream(self):
        request = self.open()
        self.live.stop()
        self.assertEqual(request.finished, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class Counting:
    """A part that counts COUNT records written (as the logger's writer does)."""

    def __init__(self):
        self.count = 0

    def metric_samples(self):
        yield "records_written", (), self.count


class HistoryTests(SynchronousTestCase):
    def test_rates_and_the_series_are_per_second_between_samples(self):
        from zope.interface import alsoProvides

        part = Counting()
        alsoProvides(part, IMetricSource)

        class Root:
            def parts(self):
                return [("logger", part)]

        clock = Clock()
        history = StatusHistory(Root(), clock, every=2.0, keep=3)
        history.startService()
        self.assertIsNone(history.rate("logger", "records_written"))
        for written in (10, 30, 30, 130):
            part.count += written
            clock.advance(2)
        self.assertEqual(history.rate("logger", "records_written"), 65.0)
        self.assertEqual(history.rates("logger", "records_written"), [15.0, 65.0], "3 kept")
        history.stopService()

    def test_samples_every_few_seconds_do_not_look_at_a_whole_registry(self):
        from zope.interface import alsoProvides

        from suite.foundation.interfaces import IRegistryMetrics

        counting, registry = Counting(), Counting()
        alsoProvides(counting, IMetricSource)
        alsoProvides(registry, IRegistryMetrics)  # a logs-check runner: every instance looked at
        registry.metric_samples = lambda: self.fail("a registry's samples were read")

        class Root:
            def parts(self):
                return [("logger", counting), ("names", registry)]

        clock = Clock()
        history = StatusHistory(Root(), clock, every=2.0)
        history.startService()
        counting.count = 8
        clock.advance(2)
        self.assertEqual(history.rate("logger", "records_written"), 4.0)
        history.stopService()


class SparklineTests(SynchronousTestCase):
    def test_a_series_is_drawn_as_one_polyline_with_a_label(self):
        from suite.app.status_page import rendered

        svg = rendered(sparkline((0.0, 5.0, 10.0), 2.0)).decode()
        points = svg.split('points="')[1].split('"')[0].split()
        self.assertEqual(len(points), 3)
        self.assertIn('role="img"', svg)
        self.assertIn("peak 10.0/s", svg)

    def test_too_short_a_series_says_so(self):
        from suite.app.status_page import rendered

        self.assertIn(b"after a few seconds", rendered(sparkline((1.0,), 2.0)))


class SectionTests(SynchronousTestCase):
    """What the page says of a collector's forward targets, the eviction guard and workers."""

    def test_forward_targets_show_their_connection_and_queues(self):
        from suite.app.status_page import collector_section, rendered

        view = status_view.CollectorView(
            service="logger",
            rate=1234.5,
            series=(),
            written=10,
            write_errors=2,
            targets=(
                status_view.TargetRow("central", True, 2048, 0, 0),
                status_view.TargetRow("<backup>", False, 0, 3 * 2**20, 7),
            ),
        )
        html = rendered(collector_section(view, 2.0)).decode()
        self.assertIn("1,234/s now; 10 records written; 2 write errors.", html)
        self.assertIn('<span class="status passing">connected</span>', html)
        self.assertIn('<span class="status critical">not connected</span>', html)
        self.assertIn("&lt;backup&gt;", html)
        for text in ("2.0 KiB", "3.0 MiB", ">7<"):
            self.assertIn(text, html)

    def test_a_holding_guard_is_said_first_and_in_bold(self):
        from suite.app.status_page import registry_section, rendered

        view = status_view.RegistryView(
            service="names",
            names=1,
            instances=12,
            rows=(),
            silent=0,
            in_maintenance=0,
            by_status={"passing": 1, "warning": 0, "critical": 11},
            guard=status_view.GuardView(True, 11, 12, 0.5),
            changes=(),
            evictions=0,
        )
        html = rendered(registry_section(view)).decode()
        self.assertIn(
            "<strong>Eviction guard holding: </strong>11 of 12 checked instances failing "
            "(holds above 50%).",
            html,
        )

    def test_workers_running_are_shown_against_those_configured(self):
        from dataclasses import replace

        from suite.app.status_page import live_part, rendered

        html = rendered(live_part(replace(a_view(), workers=4, workers_running=3))).decode()
        self.assertIn("3 of 4 workers running", html)
        self.assertIn("one process", rendered(live_part(a_view())).decode())
