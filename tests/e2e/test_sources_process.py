"""
End to end: a `twistd … suite` collector with rate_per_source and
allowed_sources, a noisy source (127.0.0.2) far over its rate over TCP and
UDP next to a quiet one (127.0.0.3) sending numbered messages.
"""

import datetime
import re
import socket
import time
import urllib.request

from tests.e2e.process import ProcessTestCase
from tests.e2e.test_logger_process import read_records

LOCAL = "tcp:0:interface=127.0.0.1"
LOCAL_UDP = "udp:0:interface=127.0.0.1"
NOISY, QUIET, STRANGER = "127.0.0.2", "127.0.0.3", "127.0.0.4"
RATE = 1000  # messages a second per source, and as many at once
NOISY_TCP = 4000  # 3 s of debt beyond the burst
NOISY_UDP = 300
QUIET_MESSAGES = 100


def received(record):
    return datetime.datetime.fromisoformat(record["received"]).timestamp()


def sender(host, kind=socket.SOCK_STREAM):
    sock = socket.socket(socket.AF_INET, kind)
    sock.bind((host, 0))
    return sock


class RatePerSourceTests(ProcessTestCase):
    def test_a_noisy_source_is_held_back_while_a_quiet_one_loses_nothing(self):
        suite = self.start_suite(
            f"""
            [logger]
            listen = ["{LOCAL}", "{LOCAL_UDP}"]
            output = "messages.jsonl"
            flush_interval = 0.05
            rate_per_source = {RATE}
            allowed_sources = ["{NOISY}", "{QUIET}/32"]
            [metrics]
            listen = ["{LOCAL}"]
            """,
            listeners=3,
        )
        tcp = ("127.0.0.1", suite.port(f"logger {LOCAL}"))
        udp = ("127.0.0.1", suite.port(f"logger {LOCAL_UDP}"))
        output = self.directory / "messages.jsonl"

        def messages(prefix):
            return [r for r in read_records(output) if r.get("message", "").startswith(prefix)]

        def wait(predicate, timeout):
            deadline = time.monotonic() + timeout
            while not predicate() and time.monotonic() < deadline:
                time.sleep(0.05)
            return predicate()

        quiet = sender(QUIET)
        self.addCleanup(quiet.close)
        quiet.connect(tcp)
        noisy = sender(NOISY)
        self.addCleanup(noisy.close)
        noisy.connect(tcp)
        started = time.time()
        noisy.sendall(b"".join(b"<13>noisy tcp %d\n" % n for n in range(NOISY_TCP)))
        self.assertTrue(wait(lambda: messages("noisy tcp"), 5))  # it is in debt now

        datagrams = sender(NOISY, socket.SOCK_DGRAM)
        self.addCleanup(datagrams.close)
        for n in range(NOISY_UDP):
            datagrams.sendto(b"<13>noisy udp %d" % n, udp)
            if n % 50 == 49:
                time.sleep(0.01)  # within the kernel's receive buffer
        for n in range(QUIET_MESSAGES):
            quiet.sendall(b"<13>quiet %d\n" % n)
            time.sleep(0.005)
        quiet_sent = time.time()

        with sender(STRANGER) as stranger:
            stranger.settimeout(5)
            stranger.connect(tcp)
            self.assertIn(stranger.recv(100), (b"ERROR too many connections\n", b""))

        self.assertTrue(wait(lambda: len(messages("quiet")) == QUIET_MESSAGES, 5))
        self.assertTrue(wait(lambda: len(messages("noisy tcp")) == NOISY_TCP, 10))
        quiet_got, noisy_got = messages("quiet"), messages("noisy tcp")
        self.assertEqual(
            [r["message"] for r in quiet_got], [f"quiet {n}" for n in range(QUIET_MESSAGES)]
        )
        self.assertLess(received(quiet_got[-1]) - quiet_sent, 1.0)  # not held back
        self.assertEqual(
            [r["message"] for r in noisy_got], [f"noisy tcp {n}" for n in range(NOISY_TCP)]
        )
        # Late, not lost: unlimited, all of them were written within a fraction of a second;
        # at the rate, the last read's messages are written (NOISY_TCP - RATE) / RATE s on,
        # less the time that read's own debt takes to pay.
        self.assertGreater(received(noisy_got[-1]) - started, 1.5)
        self.assertLess(received(quiet_got[-1]), received(noisy_got[-1]))

        url = f"http://127.0.0.1:{suite.port(f'metrics {LOCAL}')}/metrics"
        with urllib.request.urlopen(url, timeout=5) as answer:
            exposition = answer.read().decode()

        def metric(name, labels):
            found = re.search(rf"^suite_{name}{{{labels}}} (\S+)$", exposition, re.M)
            return float(found[1]) if found else 0.0

        udp_got = len(messages("noisy udp"))
        rate_limited = metric("datagrams_total", 'result="rate_limited",service="logger"')
        self.assertEqual(udp_got + rate_limited, NOISY_UDP, exposition)
        self.assertGreater(rate_limited, 0.9 * NOISY_UDP)
        self.assertGreaterEqual(metric("source_paused_total", 'service="logger"'), 1)
        self.assertEqual(
            metric("connections_refused_total", 'reason="source_not_allowed",service="logger"'),
            1,
        )
        self.assertIn(f"refused connection from {STRANGER}:", suite.output)
        self.assertIn(f"logger: {NOISY} is over rate_per_source", suite.output)
