"""
End to end, a twistd process played as a reflector: datagrams with forged
sources (raw sockets, root only) to echo, timestamp and the name server's
DNS, the process's own /metrics telling what it answered and dropped.
"""

import os
import socket
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SkipTest

from tests.e2e.process import ProcessTestCase
from tests.names.test_zone import query
from tests.net.test_datagrams import forged

LOCAL = "tcp:0:interface=127.0.0.1"
UDP = "udp:0:interface=127.0.0.1"


class Reflector(ProcessTestCase):
    def setUp(self):
        if os.geteuid() != 0:
            raise SkipTest("forging a datagram's source needs a raw socket: run as root")
        super().setUp()
        self.raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.addCleanup(self.raw.close)

    def start(self, sections: str, listeners: int):
        """SECTIONS with LISTENERS listeners, and [metrics]."""
        self.suite = self.start_suite(
            f"""
            {sections}
            [metrics]
            listen = ["{LOCAL}"]
        """,
            listeners + 1,
        )

    def send(self, source, source_port, port, payload):
        self.raw.sendto(forged(source, source_port, port, payload), ("127.0.0.1", 0))

    def datagrams(self) -> dict:
        """{(service, result): count} of suite_datagrams_total; UDP requests as "received"."""
        url = f"http://127.0.0.1:{self.suite.port(f'metrics {LOCAL}')}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        found = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "suite_datagrams_total":
                    found[sample.labels["service"], sample.labels["result"]] = sample.value
                elif sample.name == "suite_requests_total" and sample.labels["transport"] == "udp":
                    found[sample.labels["service"], "received"] = sample.value
        return found

    def until_received(self, service, count, seconds=10.0) -> dict:
        """The counts once SERVICE has received COUNT datagrams (waiting at most SECONDS)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            counts = self.datagrams()
            if counts.get((service, "received"), 0) >= count:
                return counts
            time.sleep(0.05)
        raise AssertionError(f"{service} did not receive {count} datagrams: {counts}")

    def test_forged_sources_on_service_ports_get_nothing_and_are_counted(self):
        self.start(
            f"""
            [echo]
            listen = ["{UDP}"]
            [timestamp]
            listen = ["{UDP}"]
            [names]
            listen = ["{LOCAL}"]
            dns_listen = ["{UDP}"]
            store = "memory"
            lookup_audit = ""
        """,
            4,
        )
        payloads = {"echo": b"ping", "timestamp": b"ping", "names dns_listen": query("web.suite")}
        for listener, payload in payloads.items():
            port = self.suite.port(f"{listener} {UDP}")
            for victim_port in (53, 0, 123, 1023, 1024):
                self.send("127.0.0.2", victim_port, port, payload)
        for service in ("echo", "timestamp", "names"):
            counts = self.until_received(service, 5)
            self.assertEqual(
                (counts[service, "dropped_source_port"], counts[service, "answered"]),
                (4, 1),
                service,
            )
        self.assertEqual(
            self.suite.output.count("below 1024, a service's port"), 3, self.suite.output
        )
        self.assertNotIn("Traceback", self.suite.output)

    def test_a_24_of_victims_gets_one_networks_budget_with_the_defaults(self):
        self.start(
            f"""
            [echo]
            listen = ["{UDP}"]
        """,
            1,
        )
        port = self.suite.port(f"echo {UDP}")
        started = time.monotonic()
        for _ in range(20):  # 20 each from 200 victims: under each one's own burst of 100
            for host in range(1, 201):
                self.send(f"127.0.0.{host}", 4000, port, b"x")
        counts = self.until_received("echo", 4000)
        elapsed = time.monotonic() - started
        # Before: all 4,000 answered.  Now the /24's burst of 1,000, and 500 a second after.
        self.assertGreaterEqual(counts["echo", "answered"], 1000)
        self.assertLessEqual(counts["echo", "answered"], 1000 + 500 * elapsed + 1)
        self.assertEqual(counts["echo", "answered"] + counts["echo", "network_rate_limited"], 4000)
