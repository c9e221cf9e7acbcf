"""
End to end: `twistd … suite` serving the name server's HTTP API, driven by
py-consul (the `consul` package) as a Python service would drive Consul,
and by raw HTTP for the tokens' refusals.
"""

import os
import socket
import threading
import time
import urllib.error
import urllib.request
from unittest import mock

import consul

from tests.e2e.process import ProcessTestCase

LOCAL = "tcp:0:interface=127.0.0.1"
TOKEN, READ_TOKEN = "s3cret", "r3ad"


def closed_port() -> int:
    """A loopback port nothing listens on: checks against it stay critical."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ConsulClientTests(ProcessTestCase):
    def setUp(self):
        super().setUp()
        environment = mock.patch.dict(os.environ)
        environment.start()
        self.addCleanup(environment.stop)
        for name in ("CONSUL_HTTP_TOKEN", "CONSUL_HTTP_ADDR", "CONSUL_HTTP_SSL"):
            os.environ.pop(name, None)  # py-consul lets them override its arguments
        suite = self.start_suite(
            f"""
            [names]
            listen = ["{LOCAL}"]
            http_listen = ["{LOCAL}"]
            store = "sqlite:state/names.sqlite"
            lookup_audit = ""
            token = "{TOKEN}"
            read_token = "{READ_TOKEN}"
            ping_interval = 60
            """,
            listeners=2,
        )
        self.port = suite.port(f"names http_listen {LOCAL}")
        self.amp_port = suite.port(f"names {LOCAL}")
        self.writer = consul.Consul(host="127.0.0.1", port=self.port, token=TOKEN)
        self.reader = consul.Consul(host="127.0.0.1", port=self.port, token=READ_TOKEN)
        self.addCleanup(self.writer.http.close)
        self.addCleanup(self.reader.http.close)

    def register_three(self):
        dead = closed_port()
        agent = self.writer.agent.service
        assert agent.register(
            "echo",
            service_id="echo-1",
            address="127.0.0.1",
            port=dead,
            tags=["line"],
            check=consul.Check.tcp("127.0.0.1", dead, "10s"),
        )
        assert agent.register(
            "web",
            service_id="web-1",
            address="127.0.0.1",
            port=dead,
            tags=["v1", "prom"],
            meta={"version": "1.2"},
            weights={"Passing": 10, "Warning": 1},
            check=consul.Check.http(f"http://127.0.0.1:{dead}/health", "10s", timeout="1s"),
        )
        assert agent.register(
            "beat",
            service_id="beat-1",
            address="127.0.0.1",
            port=4000,
            check=consul.Check.ttl("300s"),
        )

    def checks_of(self, name, **options):
        _, entries = self.reader.health.service(name, **options)
        return {check["CheckID"]: check for entry in entries for check in entry["Checks"]}

    def test_register_read_pass_maintain_deregister(self):
        self.register_three()
        self.assertEqual(
            self.reader.catalog.services()[1],
            {"beat": [], "echo": ["line"], "web": ["prom", "v1"]},
        )
        echo = self.checks_of("echo")["service:echo-1"]
        web = self.checks_of("web")["service:web-1"]
        beat = self.checks_of("beat")["service:beat-1"]
        self.assertEqual((echo["Type"], echo["Status"]), ("tcp", "critical"))
        self.assertEqual((web["Type"], web["Status"]), ("http", "critical"))
        self.assertEqual((beat["Type"], beat["Status"]), ("ttl", "critical"))
        (entry,) = self.reader.health.service("web")[1]
        self.assertEqual(entry["Service"]["Meta"], {"version": "1.2"})
        self.assertEqual(entry["Service"]["Weights"], {"Passing": 10, "Warning": 1})
        self.assertEqual(self.reader.health.service("beat", passing=True)[1], [])

        check = self.writer.agent.check
        self.assertTrue(check.ttl_pass("service:beat-1", "all good"))
        beat = self.checks_of("beat", passing=True)["service:beat-1"]
        self.assertEqual((beat["Status"], beat["Output"]), ("passing", "all good"))
        self.assertTrue(check.ttl_warn("service:beat-1", "slow"))
        self.assertEqual(self.checks_of("beat")["service:beat-1"]["Status"], "warning")
        self.assertEqual(self.reader.health.service("beat", passing=True)[1], [])
        self.assertTrue(check.ttl_fail("service:beat-1", "down"))
        self.assertEqual(self.checks_of("beat")["service:beat-1"]["Status"], "critical")
        check.ttl_pass("service:beat-1")

        service = self.writer.agent.service
        self.assertTrue(service.maintenance("beat-1", True, "deploying"))
        maintenance = self.checks_of("beat")["_service_maintenance:beat-1"]
        self.assertEqual(
            (maintenance["Status"], maintenance["Name"], maintenance["Notes"]),
            ("critical", "Service Maintenance Mode", "deploying"),
        )
        self.assertEqual(self.reader.health.service("beat", passing=True)[1], [])
        self.assertTrue(service.maintenance("beat-1", False))
        self.assertEqual(list(self.checks_of("beat", passing=True)), ["service:beat-1"])

        self.assertTrue(service.deregister("beat-1"))
        self.assertEqual(self.reader.health.service("beat")[1], [])
        self.assertNotIn("beat", self.reader.catalog.services()[1])

    def test_a_blocking_read_woken_by_a_registration(self):
        index, entries = self.reader.health.service("late")
        self.assertEqual(entries, [])
        answered = {}

        def block():
            answered["result"] = self.reader.health.service("late", index=index, wait="30s")

        reader = threading.Thread(target=block)
        reader.start()
        time.sleep(0.2)  # let it reach the server first (if not, it is answered at once: same)
        self.writer.agent.service.register("late", address="127.0.0.1", port=4001)
        reader.join(25)
        self.assertFalse(reader.is_alive(), "a registration wakes the read")
        new_index, entries = answered["result"]
        self.assertGreater(int(new_index), int(index))
        self.assertEqual([e["Service"]["ID"] for e in entries], ["late"])

    def test_declared_checks_run_and_turn_passing_then_critical(self):
        """TCP and HTTP checks against live targets (this suite's AMP port and its HTTP API)."""
        agent = self.writer.agent.service
        assert agent.register(
            "amp",
            service_id="amp-1",
            address="127.0.0.1",
            port=self.amp_port,
            check=consul.Check.tcp("127.0.0.1", self.amp_port, "1s", timeout="1s"),
        )
        self_url = f"http://127.0.0.1:{self.port}/v1/agent/self?token={READ_TOKEN}"
        assert agent.register(
            "api",
            service_id="api-1",
            address="127.0.0.1",
            port=self.port,
            check=consul.Check.http(self_url, "1s", timeout="1s"),
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            _, passing = self.reader.health.state("passing")
            if {c["CheckID"] for c in passing} >= {"service:amp-1", "service:api-1"}:
                break
            time.sleep(0.2)
        checks = {c["CheckID"]: c for c in self.reader.health.state("passing")[1]}
        self.assertEqual(checks["service:amp-1"]["Type"], "tcp")
        self.assertIn("HTTP GET", checks["service:api-1"]["Output"])
        self.assertIn("200 OK", checks["service:api-1"]["Output"])
        index, entries = self.reader.health.service("api", passing=True)
        self.assertEqual([e["Service"]["ID"] for e in entries], ["api-1"])
        bad_url = f"http://127.0.0.1:{self.port}/v1/agent/self"  # no read token: 403
        assert agent.register(
            "api",
            service_id="api-1",
            address="127.0.0.1",
            port=self.port,
            check=consul.Check.http(bad_url, "1s", timeout="1s"),
        )
        _, entries = self.reader.health.service("api", index=index, wait="15s", passing=True)
        deadline = time.monotonic() + 15
        while entries and time.monotonic() < deadline:
            _, entries = self.reader.health.service("api", passing=True)
            time.sleep(0.2)
        self.assertEqual(entries, [])
        (check,) = self.checks_of("api").values()
        self.assertEqual(check["Status"], "critical")
        self.assertIn("403", check["Output"])

    def test_a_blocking_read_ends_with_its_wait_when_nothing_changes(self):
        index, _ = self.reader.health.service("quiet")
        started = time.monotonic()
        again, entries = self.reader.health.service("quiet", index=index, wait="1s")
        self.assertGreaterEqual(time.monotonic() - started, 1.0, "held, not answered at once")
        self.assertEqual((again, entries), (index, []))

    def test_tokens_with_raw_http(self):
        base = f"http://127.0.0.1:{self.port}"

        def call(path, method="GET", token=None, body=None):
            request = urllib.request.Request(base + path, data=body, method=method)
            if token is not None:
                request.add_header("X-Consul-Token", token)
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return response.status, response.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()

        register = "/v1/agent/service/register"
        body = b'{"Name": "web", "Address": "127.0.0.1", "Port": 1}'
        self.assertEqual(call(register, "PUT", body=body), (403, "Permission denied"))
        self.assertEqual(call(register, "PUT", "guess", body), (403, "ACL not found"))
        self.assertEqual(call(register, "PUT", READ_TOKEN, body), (403, "Permission denied"))
        self.assertEqual(call(register, "PUT", TOKEN, body), (200, ""))
        self.assertEqual(call("/v1/catalog/services"), (403, "Permission denied"))
        self.assertEqual(call("/v1/catalog/services", token="guess"), (403, "ACL not found"))
        self.assertEqual(call("/v1/catalog/services", token=READ_TOKEN), (200, '{"web":[]}'))
        with self.assertRaises(consul.ConsulException):
            consul.Consul(host="127.0.0.1", port=self.port).catalog.services()
