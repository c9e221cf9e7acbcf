"""
Debian's real Prometheus finds what is registered with the name server
through `http_sd_configs` (`GET /v1/suite/prometheus`) and scrapes it: the
suite's own /metrics listener, registered over the HTTP API.
"""

import json
import socket
import subprocess
import time
import urllib.request

from tests.e2e.process import ProcessTestCase, popen, require, stop_process

HTTP = "tcp:0:interface=127.0.0.1:backlog=49"
METRICS = "tcp:0:interface=127.0.0.1:backlog=48"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.load(answer)


class PrometheusDiscoveryTests(ProcessTestCase):
    def setUp(self):
        super().setUp()
        require("prometheus")
        self.suite = self.start_suite(
            f"""
            [names]
            listen = ["tcp:0:interface=127.0.0.1"]
            http_listen = ["{HTTP}"]
            store = "memory"
            lookup_audit = ""
            [metrics]
            listen = ["{METRICS}"]
            """,
            listeners=3,
        )
        self.api = f"http://127.0.0.1:{self.suite.port(f'names http_listen {HTTP}')}"
        self.metrics_port = self.suite.port(f"metrics {METRICS}")

    def put(self, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.api + path, data=data, method="PUT")
        with urllib.request.urlopen(request, timeout=10) as answer:
            self.assertEqual(answer.status, 200)

    def start_prometheus(self):
        port = free_port()
        config = self.directory / "prometheus.yml"
        config.write_text(
            f"""
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: suite
    http_sd_configs:
      - url: {self.api}/v1/suite/prometheus
        refresh_interval: 1s
    relabel_configs:
      - source_labels: [__meta_suite_service]
        target_label: service
      - source_labels: [__meta_suite_meta_team]
        target_label: team
      - source_labels: [__meta_suite_tags]
        target_label: tags
"""
        )
        process = popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={self.directory / 'prometheus'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.addCleanup(stop_process, process)
        return f"http://127.0.0.1:{port}"

    def wait_for(self, probe, what, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                found = probe()
            except OSError:
                found = None
            if found:
                return found
            time.sleep(0.5)
        self.fail(f"Prometheus did not {what} within {timeout} s")

    def test_prometheus_discovers_and_scrapes_what_is_registered(self):
        self.put(
            "/v1/agent/service/register",
            {
                "Name": "suite-metrics",
                "ID": "metrics-1",
                "Address": "127.0.0.1",
                "Port": self.metrics_port,
                "Tags": ["prom", "core"],
                "Meta": {"team": "platform"},
            },
        )
        self.put(  # critical from the start (a TTL never passed): never a target
            "/v1/agent/service/register",
            {"Name": "dead", "Address": "127.0.0.1", "Port": 9, "Check": {"TTL": "60s"}},
        )
        prometheus = self.start_prometheus()

        def scraped():
            targets = get_json(f"{prometheus}/api/v1/targets")["data"]["activeTargets"]
            return [t for t in targets if t["health"] == "up"] and targets

        targets = self.wait_for(scraped, "scrape the registered instance")
        self.assertEqual(len(targets), 1)
        (target,) = targets
        self.assertEqual(target["scrapeUrl"], f"http://127.0.0.1:{self.metrics_port}/metrics")
        self.assertEqual(
            {k: target["labels"][k] for k in ("service", "team", "tags")},
            {"service": "suite-metrics", "team": "platform", "tags": ",prom,core,"},
        )
        self.assertEqual(target["discoveredLabels"]["__meta_suite_id"], "metrics-1")
        self.assertEqual(target["discoveredLabels"]["__meta_suite_health"], "passing")

        def up_is_one():
            query = f"{prometheus}/api/v1/query?query=up%7Bservice%3D%22suite-metrics%22%7D"
            result = get_json(query)["data"]["result"]
            return result and result[0]["value"][1] == "1"

        self.wait_for(up_is_one, "store up == 1 for the instance")
        self.put("/v1/agent/service/deregister/metrics-1")

        def gone():
            targets = get_json(f"{prometheus}/api/v1/targets")["data"]["activeTargets"]
            return not targets

        self.wait_for(gone, "drop the deregistered instance")
