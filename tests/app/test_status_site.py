"""[metrics]: /metrics and /health over HTTP on real sockets, as a scraper and a probe see them."""

import contextlib
import http.client
import io
import json
import socket
import ssl

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor, task, threads
from twisted.trial.unittest import TestCase

from suite.app import command
from suite.foundation.jsonlines import BatchWriter
from suite.names.server import NameServer
from tests.foundation.test_metrics import FullDisk
from tests.helpers import make_pki, start_suite, tls_section, tmp_dir

LOCAL = "tcp:0:interface=127.0.0.1"


def get(port, path, method="GET", body=None, context=None, timeout=5):
    """(status, headers, body) of one HTTP request, made in a thread (blocking)."""
    if context is None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    else:
        connection = http.client.HTTPSConnection(
            "127.0.0.1", port, timeout=timeout, context=context
        )
    try:
        connection.request(method, path, body=body)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def samples(text: bytes) -> dict:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }


def talk(port, data: bytes, expected: int) -> bytes:
    """Send DATA, read EXPECTED bytes back, close."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        received = b""
        while len(received) < expected:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


class MetricsOverHTTP(TestCase):
    def start(self, extra=""):
        directory = tmp_dir(self)
        ports = start_suite(
            self,
            directory,
            f"""
            [echo]
            listen = ["{LOCAL}"]
            [logger]
            listen = ["{LOCAL}"]
            output = "{directory}/messages.jsonl"
            [metrics]
            listen = ["{LOCAL}"]
            {extra}
        """,
        )
        return ports[f"echo {LOCAL}"], ports[f"metrics {LOCAL}"]

    async def test_metrics_count_what_a_client_did(self):
        echo, metrics = self.start()
        answer = await threads.deferToThread(talk, echo, b"one\ntwo\nthree\n", 47)
        self.assertEqual(answer, b"You said: one\r\nYou said: two\r\nYou said: three\r\n")
        status, headers, body = await threads.deferToThread(get, metrics, "/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(headers["Content-Type"].startswith("text/plain"))
        found = samples(body)

        def value(name, **labels):
            return found.get((name, tuple(sorted({"service": "echo", **labels}.items()))))

        self.assertEqual(value("suite_connections_total", transport="tcp"), 1)
        self.assertEqual(value("suite_requests_total", transport="tcp"), 3)
        self.assertEqual(value("suite_received_bytes_total", transport="tcp"), 14)
        self.assertEqual(value("suite_sent_bytes_total", transport="tcp"), 47)
        self.assertIn(("process_cpu_seconds_total", ()), found)  # prometheus_client's own
        self.assertFalse([name for name, labels in found if "peer" in dict(labels)])

    async def test_health_is_200_then_503_while_the_logger_cannot_write(self):
        _, metrics = self.start()
        status, headers, body = await threads.deferToThread(get, metrics, "/health")
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], "application/json")
        self.assertEqual(
            json.loads(body),
            {
                "status": "ok",
                "services": {
                    "echo": {"status": "ok"},
                    "logger": {"status": "ok"},
                    "metrics": {"status": "ok"},
                },
            },
        )
        writer = next(child for child in self.suite_root if isinstance(child, BatchWriter))
        output, writer.output = writer.output, FullDisk()
        writer.output.room = False
        writer.write_lines([b"{}\n"], 1)
        writer.flush()
        status, _, body = await threads.deferToThread(get, metrics, "/health")
        self.assertEqual(status, 503)
        report = json.loads(body)
        self.assertEqual(report["status"], "failing")
        self.assertEqual(
            report["services"]["logger"]["problems"],
            ["cannot write out.jsonl: No space left on device"],
        )
        self.assertEqual(report["services"]["echo"], {"status": "ok"})
        writer.output = output
        writer.flush()
        status, _, _ = await threads.deferToThread(get, metrics, "/health")
        self.assertEqual(status, 200)

    async def test_connections_over_the_limit_are_closed_and_counted(self):
        _, metrics = self.start("max_connections = 2\nmax_connections_per_source = 2")
        held = [socket.create_connection(("127.0.0.1", metrics)) for _ in range(2)]
        self.addCleanup(lambda: [s.close() for s in held])
        refused = socket.create_connection(("127.0.0.1", metrics), timeout=5)
        self.addCleanup(refused.close)
        self.assertEqual(await threads.deferToThread(refused.recv, 10), b"")  # closed at once
        for s in held:
            s.close()
        await task.deferLater(reactor, 0.1, lambda: None)
        status, _, body = await threads.deferToThread(get, metrics, "/metrics")
        self.assertEqual(status, 200)
        found = samples(body)
        self.assertEqual(
            found[
                (
                    "suite_connections_refused_total",
                    (("reason", "max_connections"), ("service", "metrics")),
                )
            ],
            1,
        )

    async def test_a_request_body_is_never_held(self):
        _, metrics = self.start()
        body = b"x" * (8 * 2**20)
        status, _, _ = await threads.deferToThread(get, metrics, "/health", "POST", body)
        self.assertEqual(status, 405)
        status, _, _ = await threads.deferToThread(get, metrics, "/nothing")
        self.assertEqual(status, 404)

    async def test_metrics_over_tls(self):
        directory = tmp_dir(self)
        pki = make_pki(directory)
        ports = start_suite(
            self,
            directory,
            tls_section(pki)
            + f"""
            [echo]
            listen = ["{LOCAL}"]
            [metrics]
            tls_listen = ["{LOCAL}"]
        """,
        )
        context = ssl.create_default_context(cafile=pki["ca"])
        status, _, body = await threads.deferToThread(
            get, ports[f"metrics tls_listen {LOCAL}"], "/metrics", context=context
        )
        self.assertEqual(status, 200)
        found = samples(body)
        self.assertEqual(
            found[("suite_connections_total", (("service", "metrics"), ("transport", "tls")))], 1
        )


class StatusOverHTTP(TestCase):
    """/status: each service's health and summary, what `suite status` prints."""

    async def test_status_shows_the_registry_and_suite_status_prints_it(self):
        directory = tmp_dir(self)
        ports = start_suite(
            self,
            directory,
            f"""
            [echo]
            listen = ["{LOCAL}"]
            [names]
            listen = ["{LOCAL}"]
            store = "memory"
            lookup_audit = ""
            [metrics]
            listen = ["{LOCAL}"]
            """,
        )
        server = next(part for part in self.suite_root if isinstance(part, NameServer))
        echo = ports[f"echo {LOCAL}"]
        for port in (echo, echo + 1):
            await server.register("web", "::1", port, "tcp", None, "127.0.0.1:1", "127.0.0.1")
        metrics = ports[f"metrics {LOCAL}"]
        status, headers, body = await threads.deferToThread(get, metrics, "/status")
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], "application/json")
        report = json.loads(body)
        self.assertEqual(report["status"], "ok")
        self.assertTrue(report["version"].startswith("suite "))
        names = report["services"]["names"]
        self.assertEqual((names["instances"], names["names"], names["evictions"]), (2, 1, 0))
        self.assertEqual(
            names["registry"],
            {"web": {"instances": 2, "addresses": [f"[::1]:{echo}", f"[::1]:{echo + 1}"]}},
        )
        self.assertEqual(report["services"]["echo"], {"status": "ok"})
        printed = await threads.deferToThread(status_output, f"127.0.0.1:{metrics}")
        self.assertIn("names    ok      2 instances of 1 name, 0 evictions", printed)
        self.assertIn(f"web   2          [::1]:{echo} [::1]:{echo + 1}", printed)


def status_output(url: str) -> str:
    """What `suite status URL` prints (its exit status must be 0)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = command.status(url, 5)
    assert status == 0, printed.getvalue()
    return printed.getvalue()
