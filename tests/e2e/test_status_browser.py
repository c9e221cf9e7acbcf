"""
End to end: the status page in a real browser.  A twistd suite ([names]
with its HTTP API and a memory store, [logger], [metrics]) and headless
Chromium driven over the DevTools protocol (tests/browser.py): the page
loads on the [metrics] listener, a registration made during the test and a
silenced instance's turn to warning appear in place (no reload) within
2 s of the change, hostile client text stays text, the read token is asked
for and the live stream carries it, and without JavaScript a reload shows
the state.  Screenshots at 1280 and 360 px wide are kept as test artifacts
(under $SUITE_TEST_ARTIFACTS, by default build/test-artifacts/).

The delays are measured on this process's monotonic clock, from the HTTP
API's answer to the change to the DOM showing it (polled every 50 ms), and
printed (pytest -s shows them).
"""

import http.client
import json
import os
import socket
import time
from pathlib import Path
from urllib.parse import quote

from tests.browser import Browser, BrowserError
from tests.e2e.process import CHECKOUT, ProcessTestCase, SuiteProcess, require

LOCAL = "tcp:0:interface=127.0.0.1"
LISTENERS = 4  # names (AMP and HTTP), logger, metrics
LIVE_WITHIN = 2.0  # seconds: the page shows a change this soon (the stream looks every 1 s)
MAX_SILENCE = 2.0
ARTIFACTS = Path(os.environ.get("SUITE_TEST_ARTIFACTS") or CHECKOUT / "build" / "test-artifacts")
# Markup, and the comment the page's rows are spliced in at.
HOSTILE = (
    "<img src=x onerror=window.pwned=1>",
    '"><script>window.pwned=1</script>',
    "<!--rows of names-->",
)


def row(name: str) -> str:
    """A JavaScript expression: the registry row of NAME (null when there is none)."""
    return f"document.querySelector({json.dumps(f'tr[data-name={json.dumps(name)}]')})"


def status_of(name: str) -> str:
    """A JavaScript expression: the data-status of NAME's row, or null."""
    return f"({row(name)} || {{getAttribute: () => null}}).getAttribute('data-status')"


def request(
    port: int, method: str, path: str, body: object = None, headers: dict | None = None
) -> tuple[int, bytes]:
    """(status, body) of one request to 127.0.0.1:PORT."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        data = None if body is None else json.dumps(body)
        connection.request(method, path, body=data, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


class StatusPageBrowserTests(ProcessTestCase):
    def setUp(self):
        super().setUp()
        require("chromium")

    def start(self, names_extra: str = "") -> SuiteProcess:
        suite = self.start_suite(
            f"""
            [names]
            listen = ["{LOCAL}"]
            http_listen = ["{LOCAL}"]
            store = "memory"
            lookup_audit = ""
            {names_extra}
            [logger]
            listen = ["{LOCAL}"]
            output = "{self.directory}/messages.jsonl"
            [metrics]
            listen = ["{LOCAL}"]
            """,
            LISTENERS,
        )
        self.metrics = suite.port(f"metrics {LOCAL}")
        self.api = suite.port(f"names http_listen {LOCAL}")
        self.write_headers: dict[str, str] = {}
        return suite

    def browser(self, width: int = 1280, height: int = 900) -> Browser:
        browser = Browser(width, height)
        self.addCleanup(browser.close)
        return browser

    def register(self, registration: dict) -> float:
        """Register REGISTRATION over the Consul HTTP API; the monotonic time it answered."""
        status, body = request(
            self.api, "PUT", "/v1/agent/service/register", registration, self.write_headers
        )
        answered = time.monotonic()
        self.assertEqual(status, 200, body)
        return answered

    def put(self, path: str) -> None:
        status, body = request(self.api, "PUT", path, headers=self.write_headers)
        self.assertEqual(status, 200, body)

    def load(self, browser: Browser, path: str = "/") -> None:
        browser.navigate(f"http://127.0.0.1:{self.metrics}{path}")
        # The script's stream has sent the page once when it opens: the page is live.
        browser.wait_for("document.documentElement.hasAttribute('data-updated')", 5)

    def test_a_registration_appears_in_place(self):
        """Steps 1 and 2: the page on the [metrics] listener; a registration shown live."""
        self.start()
        self.register({"Name": "web", "ID": "web-1", "Address": "127.0.0.1", "Port": 8080})
        browser = self.browser()
        self.load(browser)
        services = browser.evaluate(
            "Array.from(document.querySelectorAll('#services ~ div th[scope=row]'),"
            " th => th.textContent)"
        )
        self.assertEqual(sorted(services), ["logger", "metrics", "names"])
        self.assertIn("Registry (names)", browser.evaluate("document.body.textContent"))
        self.assertEqual(browser.evaluate(status_of("web")), "passing")
        self.assertIsNone(browser.evaluate(row("newcomer")))
        browser.evaluate("window.marker = 1")

        answered = self.register(
            {
                "Name": "newcomer",
                "ID": "newcomer-1",
                "Address": "127.0.0.1",
                "Port": 9000,
                "Tags": ["blue", "v2"],
            }
        )
        browser.wait_for(row("newcomer"), 10)
        delay = time.monotonic() - answered
        print(f"\nbrowser: a registration appeared {delay:.3f} s after the API answered")
        self.assertEqual(browser.evaluate("window.marker"), 1, "the page was reloaded")
        self.assertLess(delay, LIVE_WITHIN)
        self.assertIn("blue · v2", browser.evaluate(f"{row('newcomer')}.textContent"))

    def test_a_silenced_instance_turns_warning_in_place(self):
        """Step 3: a Logs check that hears nothing turns warning on the open page."""
        self.start()
        browser = self.browser()
        self.load(browser)
        browser.evaluate("window.marker = 1")
        answered = self.register(
            {
                "Name": "quiet",
                "ID": "quiet-1",
                "Address": "127.0.0.1",
                "Port": 9001,
                "Check": {"Logs": {"App": "quiet-app"}, "MaxSilence": f"{MAX_SILENCE:g}s"},
            }
        )
        browser.wait_for(row("quiet"), 10)
        self.assertEqual(browser.evaluate(status_of("quiet")), "passing")
        browser.wait_for(f"{status_of('quiet')} === 'warning'", MAX_SILENCE + 10)
        delay = time.monotonic() - answered
        print(
            f"\nbrowser: a silent instance showed warning {delay:.3f} s after it registered "
            f"(MaxSilence {MAX_SILENCE:g} s: {delay - MAX_SILENCE:.3f} s after it was due)"
        )
        self.assertEqual(browser.evaluate("window.marker"), 1, "the page was reloaded")
        self.assertGreaterEqual(delay, MAX_SILENCE)
        # Flagged within a second of its MaxSilence (test_silent_sources.py), shown within 2 s.
        self.assertLess(delay, MAX_SILENCE + 1 + LIVE_WITHIN)
        self.assertIn("silent: no logs heard", browser.evaluate(f"{row('quiet')}.textContent"))

    def test_screenshots_and_a_narrow_screen(self):
        """Step 4: screenshots kept as artifacts; at 360 px the page does not scroll sideways."""
        suite = self.start()
        collector = socket.create_connection(("127.0.0.1", suite.port(f"logger {LOCAL}")), 5)
        self.addCleanup(collector.close)

        def log(count: int) -> None:
            collector.sendall(b"<14>1 - 127.0.0.1 shop - - - an order placed\n" * count)

        log(400)
        self.register(
            {
                "Name": "shop",
                "ID": "shop-1",
                "Address": "127.0.0.1",
                "Port": 8443,
                "Tags": ["primary", "v3.2"],
                "Check": {"Logs": {"App": "shop"}, "MaxSilence": "60s"},
            }
        )
        self.register(
            {
                "Name": "billing",
                "ID": "billing-1",
                "Address": "127.0.0.1",
                "Port": 8081,
                "Check": {"TTL": "30s", "Status": "passing"},
            }
        )
        self.put("/v1/agent/check/warn/service:billing-1?note=" + quote("queue 80% full"))
        self.register(
            {
                "Name": "search",
                "ID": "search-2",
                "Address": "127.0.0.1",
                "Port": 9200,
                "Check": {"TTL": "30s", "Status": "passing"},
            }
        )
        self.put("/v1/agent/check/fail/service:search-2?note=" + quote("connection refused"))
        self.register({"Name": "cache", "ID": "cache-1", "Address": "127.0.0.1", "Port": 6379})
        self.put("/v1/agent/service/maintenance/cache-1?enable=true&reason=" + quote("upgrade"))
        browser = self.browser()
        self.load(browser)
        # The sparkline: a few samples of the collector's counters (one every 2 s), a varying rate.
        points = "(document.querySelector('svg.spark polyline') || {points: []}).points.length"
        started = time.monotonic()
        for burst in range(100):
            log(50 * (1 + burst % 7))
            if browser.evaluate(points) >= 5 or time.monotonic() - started > 12:
                break
            time.sleep(0.1)
        self.assertGreaterEqual(browser.evaluate(points), 5)
        # The top of the page, down to the collector's sparkline (the README shows it).
        bottom = browser.evaluate(
            "Math.ceil(document.querySelector('main').getBoundingClientRect().bottom)"
        )
        wide = browser.screenshot(ARTIFACTS / "status-page-1280.png", 1280, min(bottom + 8, 1100))
        self.assertTrue(wide.startswith(b"\x89PNG"))

        browser.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": 360, "height": 800, "deviceScaleFactor": 1, "mobile": True},
        )
        self.assertEqual(browser.evaluate("window.innerWidth"), 360)
        self.assertLessEqual(browser.evaluate("document.documentElement.scrollWidth"), 360)
        height = min(browser.evaluate("document.documentElement.scrollHeight"), 4000)
        narrow = browser.screenshot(ARTIFACTS / "status-page-360.png", 360, height)
        self.assertTrue(narrow.startswith(b"\x89PNG"))
        print(f"\nbrowser: screenshots in {ARTIFACTS}")

    def test_hostile_text_is_shown_as_text(self):
        """Step 5: markup in tags, a check's output and a maintenance reason, streamed live."""
        self.start()
        browser = self.browser()
        self.load(browser)
        self.register(
            {
                "Name": "hostile",
                "ID": "hostile-1",
                "Address": "127.0.0.1",
                "Port": 9002,
                "Tags": list(HOSTILE),
                "Check": {"TTL": "30s"},
            }
        )
        self.put("/v1/agent/check/fail/service:hostile-1?note=" + quote(HOSTILE[0]))
        self.put("/v1/agent/service/maintenance/hostile-1?enable=true&reason=" + quote(HOSTILE[1]))
        text = browser.wait_for(
            f"{row('hostile')} && {row('hostile')}.textContent.includes('maintenance: ')"
            f" && {row('hostile')}.textContent",
            10,
        )[0]
        self.assertEqual(browser.evaluate("typeof window.pwned"), "undefined")
        for markup in HOSTILE:
            self.assertIn(markup, text)
        self.assertEqual(text.count(HOSTILE[0]), 2, "the tag and the check's output")
        self.assertEqual(text.count(HOSTILE[1]), 2, "the tag and the maintenance reason")
        self.assertEqual(text.count(HOSTILE[2]), 1, "the tag")
        self.assertEqual(
            browser.evaluate(f"{row('hostile')}.querySelectorAll('img, script').length"), 0
        )
        # The page as served (not only as streamed) keeps it text too.
        browser.reload()
        self.assertEqual(browser.evaluate("typeof window.pwned"), "undefined")
        self.assertEqual(browser.evaluate("document.querySelectorAll('img').length"), 0)
        self.assertEqual(browser.evaluate("document.querySelectorAll('script').length"), 1)
        self.assertEqual(browser.evaluate(f"{row('hostile')}.textContent"), text)

    def test_the_read_token(self):
        """Step 6: the page asks for the read token; given as ?token= it stays live."""
        self.start('read_token = "reader"\ntoken = "writer"')
        self.write_headers = {"X-Consul-Token": "writer"}
        for port in (self.metrics, self.api):
            status, _ = request(port, "GET", "/")
            self.assertEqual(status, 401)
        browser = self.browser()
        # A Basic challenge: a headless browser has no one to ask, and gives up
        # (net::ERR_INVALID_AUTH_CREDENTIALS), or shows the 401's text.
        try:
            browser.navigate(f"http://127.0.0.1:{self.metrics}/")
        except BrowserError as refused:
            self.assertIn("AUTH", str(refused))
        else:
            shown = browser.evaluate("document.body.textContent")
            self.assertIn("read token", shown)
            self.assertNotIn("Registry", shown)
        self.load(browser, "/?token=reader")
        browser.evaluate("window.marker = 1")
        answered = self.register({"Name": "guarded", "Address": "127.0.0.1", "Port": 9003})
        browser.wait_for(row("guarded"), 10)
        delay = time.monotonic() - answered
        print(f"\nbrowser: with the read token, a registration appeared after {delay:.3f} s")
        self.assertEqual(browser.evaluate("window.marker"), 1, "the page was reloaded")
        self.assertLess(delay, LIVE_WITHIN)

    def test_without_javascript_a_reload_shows_the_registry(self):
        """Step 7: scripts off, the page is whole as served, and a reload shows what changed."""
        self.start()
        self.register({"Name": "before", "Address": "127.0.0.1", "Port": 9004})
        browser = self.browser()
        browser.call("Emulation.setScriptExecutionDisabled", {"value": True})
        browser.navigate(f"http://127.0.0.1:{self.metrics}/")
        self.assertEqual(browser.evaluate(status_of("before")), "passing")
        self.register({"Name": "after", "Address": "127.0.0.1", "Port": 9005})
        browser.reload()
        self.assertEqual(browser.evaluate(status_of("after")), "passing")
        self.assertEqual(browser.evaluate(status_of("before")), "passing")
        # The page's script never ran: with it, the stream's first event marks the page at once.
        with self.assertRaises(BrowserError):
            browser.wait_for("document.documentElement.hasAttribute('data-updated')", 1)
