"""
The suite forwarding to a real rsyslogd: to imrelp (RELP), to imtcp
(octet-counted), to imtcp over TLS (gtls, the suite verifying its
certificate) and to imrelp over mutual TLS, and to another suite's
relp_listen; numbered messages in every scenario, read back from the
files rsyslog writes them to (the raw message, one a line).  Also: the
RELP target down for 30 s, the queue full under each `when_full`, and a
queue segment torn by a crash.  Each rsyslogd is the test's own (config,
work directory, pid file, loopback ports), stopped by PID.
"""

import glob
import json
import os
import re
import select
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from twisted.trial.unittest import SkipTest

from tests.e2e.process import ProcessTestCase, SuiteProcess, popen, require, stop_process
from tests.e2e.test_rsyslog import free_port
from tests.helpers import make_pki

LOCAL = "tcp:0:interface=127.0.0.1"
NUMBER = re.compile(rb"n=(\d{6})")


def message(n: int, pad: int = 0) -> bytes:
    """Message N as a sender writes it (RFC 5424), without its LF."""
    return b"<13>1 2026-12-03T10:00:00Z host app - - - n=%06d%s" % (n, b"." * pad)


class Rsyslog:
    """
    An rsyslogd of the test's own writing what each input receives, raw, to
    a file of the input's name in its work directory.  INPUTS: (name,
    `input(...)` parameters) pairs.
    """

    def __init__(self, directory: Path, inputs, pki=None):
        self.work = directory
        self.work.mkdir(exist_ok=True)
        self.inputs = inputs
        self.ports = [int(re.search(r'port="(\d+)"', line)[1]) for _, line in inputs]
        tls = ""
        if pki:
            tls = (
                f' defaultNetstreamDriverCAFile="{pki["ca"]}"'
                f' defaultNetstreamDriverCertFile="{pki["server_crt"]}"'
                f' defaultNetstreamDriverKeyFile="{pki["server_key"]}"'
            )
        modules = {m for _, line in inputs for m in re.findall(r'type="(im\w+)"', line)}
        lines = [f'global(workDirectory="{self.work}"{tls})']
        lines += [f'module(load="{m}")' for m in sorted(modules)]
        lines.append('template(name="raw" type="string" string="%rawmsg%\\n")')
        for name, parameters in inputs:
            lines.append(f'input({parameters} address="127.0.0.1" ruleset="{name}")')
            lines.append(
                f'ruleset(name="{name}") {{ action(type="omfile" file="{self.work / name}" '
                'template="raw") }'
            )
        (self.work / "rsyslog.conf").write_text("\n".join(lines) + "\n")
        self.process = None

    def start(self):
        self.process = popen(
            [
                "rsyslogd",
                "-n",
                "-f",
                str(self.work / "rsyslog.conf"),
                "-i",
                str(self.work / "pid"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self.work,
        )
        deadline = time.monotonic() + 10
        for port in self.ports:
            while True:
                assert self.process.poll() is None, self.process.stdout.read()
                try:
                    socket.create_connection(("127.0.0.1", port), 0.5).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, f"rsyslogd does not listen on {port}"
                    time.sleep(0.05)
        return self

    def stop(self):
        if self.process is not None:
            stop_process(self.process)
            self.process.stdout.close()
            self.process = None

    def received(self, name) -> list[bytes]:
        """The whole lines written so far (rsyslog writes in 4 KiB pieces)."""
        path = self.work / name
        data = path.read_bytes() if path.exists() else b""
        return data[: data.rfind(b"\n") + 1].splitlines()


def numbers(lines) -> list[int]:
    return [int(NUMBER.search(line)[1]) for line in lines]


def wait_until(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return predicate()
        time.sleep(0.05)
    return True


def send(port: int, payloads) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"".join(p + b"\n" for p in payloads))


def get(port: int, path: str) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.read().decode()
    except urllib.error.HTTPError as e:
        return e.read().decode()


def metric(port: int, name: str, target: str) -> float:
    text = get(port, "/metrics")
    found = re.search(
        rf'^suite_{name}\{{service="logger",target="{target}"\}} (\S+)$', text, re.MULTILINE
    )
    return float(found[1]) if found else 0.0


class ForwardingTestCase(ProcessTestCase):
    """Tests of a forwarding suite: suite(FORWARDS) starts one taking messages over TCP."""

    def suite(self, forwards: str, metrics=False):
        config = f"""
            [logger]
            listen = ["{LOCAL}"]
            output = "messages.jsonl"
            flush_interval = 0.05
            {forwards}
        """
        if metrics:
            config += f'\n[metrics]\nlisten = ["{LOCAL}"]\n'
        suite = self.start_suite(config, listeners=2 if metrics else 1)
        return suite, suite.port(f"logger {LOCAL}")


class ForwardToSuiteTests(ForwardingTestCase):
    def test_another_suite_takes_every_message_over_relp(self):
        (self.directory / "central").mkdir()
        central = SuiteProcess(
            self.directory / "central",
            f"""
            [logger]
            listen = ["{LOCAL}"]
            relp_listen = ["{LOCAL}"]
            output = "messages.jsonl"
            flush_interval = 0.05
            sync = true
            """,
        )
        self.addCleanup(central.stop)
        central.wait_ready(2)
        relp = central.port(f"logger relp_listen {LOCAL}")
        suite, port = self.suite(f"""
            [[logger.forward]]
            name = "central"
            target = "relp:127.0.0.1:{relp}"
        """)
        send(port, [message(n) for n in range(2000)])
        path = self.directory / "central" / "messages.jsonl"

        def relayed():
            data = path.read_bytes() if path.exists() else b""
            records = [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]
            return [r for r in records if r["event"] == "message"]

        assert wait_until(lambda: len(relayed()) >= 2000, 20)
        records = relayed()
        assert {r["transport"] for r in records} == {"relp"}
        assert [int(NUMBER.search(r["message"].encode())[1]) for r in records] == list(range(2000))


class ForwardToRsyslogTests(ForwardingTestCase):
    def setUp(self):
        super().setUp()
        require("rsyslogd")
        if not glob.glob("/usr/lib/*/rsyslog/imrelp.so"):
            raise SkipTest("rsyslog-relp is not installed (make test installs it as root)")

    def rsyslog(self, inputs, name="rsyslog", pki=None) -> Rsyslog:
        rsyslog = Rsyslog(self.directory / name, inputs, pki)
        self.addCleanup(rsyslog.stop)
        return rsyslog

    def test_relp_octet_counted_tcp_tls_and_relp_tls_receive_every_message_exactly(self):
        if not glob.glob("/usr/lib/*/rsyslog/lmnsd_gtls.so"):
            raise SkipTest("rsyslog-gnutls is not installed (make test installs it as root)")
        pki = make_pki(self.directory)
        relp, tcp, tls, relp_tls = free_port(), free_port(), free_port(), free_port()
        rsyslog = self.rsyslog(
            [
                ("relp", f'type="imrelp" port="{relp}"'),
                ("tcp", f'type="imtcp" port="{tcp}"'),
                (
                    "tls",
                    f'type="imtcp" port="{tls}" streamDriver.name="gtls" streamDriver.mode="1" '
                    'streamDriver.authMode="anon"',
                ),
                (  # mutual TLS: imrelp takes only a client certificate the CA signed
                    "relp_tls",
                    f'type="imrelp" port="{relp_tls}" tls="on" tls.caCert="{pki["ca"]}" '
                    f'tls.myCert="{pki["server_crt"]}" tls.myPrivKey="{pki["server_key"]}" '
                    'tls.authMode="certvalid"',
                ),
            ],
            pki=pki,
        ).start()
        suite, port = self.suite(f"""
            [[logger.forward]]
            name = "relp"
            target = "relp:127.0.0.1:{relp}"
            [[logger.forward]]
            name = "tcp"
            target = "tcp:127.0.0.1:{tcp}"
            [[logger.forward]]
            name = "tls"
            target = "tls:localhost:{tls}"
            ca = "{pki["ca"]}"
            [[logger.forward]]
            name = "relp_tls"
            target = "relp+tls:localhost:{relp_tls}"
            ca = "{pki["ca"]}"
            certificate = "{pki["client_crt"]}"
            private_key = "{pki["client_key"]}"
        """)
        sent = [message(n) for n in range(2000)]
        send(port, sent)
        for name in ("relp", "tcp", "tls", "relp_tls"):
            assert wait_until(lambda n=name: len(rsyslog.received(n)) >= len(sent), 20), name
            assert rsyslog.received(name) == sent, name
        assert suite.output.count("connected to") == 4, suite.output
        assert "unreachable" not in suite.output

    def test_relp_target_down_for_30_seconds_loses_nothing(self):
        relp = free_port()
        rsyslog = self.rsyslog([("relp", f'type="imrelp" port="{relp}"')]).start()
        suite, port = self.suite(
            f"""
            [[logger.forward]]
            name = "central"
            target = "relp:127.0.0.1:{relp}"
            queue_dir = "queue"
        """,
            metrics=True,
        )
        metrics = suite.port(f"metrics {LOCAL}")
        send(port, [message(n) for n in range(500)])
        assert wait_until(lambda: len(rsyslog.received("relp")) >= 500, 10)
        rsyslog.stop()
        down = time.monotonic()
        send(port, [message(n) for n in range(500, 1500)])
        assert wait_until(lambda: "unreachable" in suite.output, 5), suite.output
        health = json.loads(get(metrics, "/health"))
        assert health["status"] == "degraded", health
        (problem,) = health["services"]["logger"]["problems"]
        assert problem.startswith(f"forward target central (relp:127.0.0.1:{relp}) unreachable")
        assert metric(metrics, "forward_connected", "central") == 0
        time.sleep(max(0.0, 29.5 - (time.monotonic() - down)))
        rsyslog.start()
        expected = set(range(1500))
        assert wait_until(lambda: set(numbers(rsyslog.received("relp"))) >= expected, 40)
        got = numbers(rsyslog.received("relp"))
        duplicates = len(got) - len(set(got))
        print(f"target down {time.monotonic() - down:.1f} s: 0 lost, {duplicates} duplicates")
        assert set(got) == expected
        assert suite.output.count(" unreachable: ") == 1, suite.output
        assert suite.output.count("s unreachable; messages waiting") == 1, suite.output
        assert json.loads(get(metrics, "/health"))["status"] == "ok"
        assert metric(metrics, "forward_connected", "central") == 1
        # rsyslog writes a message before the suite reads its answer.
        assert wait_until(
            lambda: metric(metrics, "forward_sent_total", "central") == len(expected), 5
        )

    def small_queue(self, when_full):
        """A suite forwarding to a RELP port no one listens on yet, through a 64 KiB queue."""
        relp = free_port()
        suite, port = self.suite(
            f"""
            [[logger.forward]]
            name = "central"
            target = "relp:127.0.0.1:{relp}"
            memory_bytes = 0
            queue_dir = "queue"
            queue_bytes = 65536
            when_full = "{when_full}"
        """,
            metrics=True,
        )
        return relp, suite, port, suite.port(f"metrics {LOCAL}")

    def test_a_full_queue_that_drops_counts_what_it_dropped(self):
        relp, suite, port, metrics = self.small_queue("drop")
        sent = 3000
        send(port, [message(n, pad=40) for n in range(sent)])
        assert wait_until(lambda: metric(metrics, "forward_queued_total", "central") > 0, 5)
        assert wait_until(
            lambda: (
                metric(metrics, "forward_queued_total", "central")
                + metric(metrics, "forward_dropped_total", "central")
                >= sent
            ),
            5,
        )
        dropped = metric(metrics, "forward_dropped_total", "central")
        assert 0 < dropped < sent
        rsyslog = self.rsyslog([("relp", f'type="imrelp" port="{relp}"')]).start()
        kept = sent - int(dropped)
        assert wait_until(lambda: len(rsyslog.received("relp")) >= kept, 70)
        got = numbers(rsyslog.received("relp"))
        assert len(got) == len(set(got)) == kept
        assert got == sorted(got)  # the oldest kept, in order
        print(f"drop: {sent} sent, {int(dropped)} dropped and counted, {kept} delivered")

    def test_a_full_queue_that_blocks_holds_the_sender_and_drops_nothing(self):
        relp, suite, port, metrics = self.small_queue("block")
        total = 60_000
        data = b"".join(message(n, pad=60) + b"\n" for n in range(total))
        sock = socket.create_connection(("127.0.0.1", port))
        self.addCleanup(sock.close)
        sock.setblocking(False)
        sent = 0
        held = False
        deadline = time.monotonic() + 20
        while sent < len(data) and time.monotonic() < deadline:
            _, writable, _ = select.select([], [sock], [], 2.0)
            if not writable:
                held = True  # two seconds without room: the suite does not read
                break
            sent += sock.send(data[sent : sent + 65536])
        assert held, f"the sender was never held back ({sent} of {len(data)} bytes sent)"
        rsyslog = self.rsyslog([("relp", f'type="imrelp" port="{relp}"')]).start()
        sock.setblocking(True)
        sock.settimeout(60)
        sock.sendall(data[sent:])
        sock.close()
        assert wait_until(lambda: len(rsyslog.received("relp")) >= total, 70)
        got = numbers(rsyslog.received("relp"))
        assert sorted(set(got)) == list(range(total))
        assert metric(metrics, "forward_dropped_total", "central") == 0
        print(f"block: held after {sent} of {len(data)} bytes; {len(got) - total} duplicates")

    def test_a_torn_segment_is_cut_at_start_and_the_whole_messages_arrive(self):
        relp = free_port()
        forwards = f"""
            [[logger.forward]]
            name = "central"
            target = "relp:127.0.0.1:{relp}"
            memory_bytes = 0
            queue_dir = "queue"
        """
        suite, port = self.suite(forwards)
        count = 200
        send(port, [message(n) for n in range(count)])
        records = self.directory / "messages.jsonl"
        assert wait_until(
            lambda: records.exists() and len(records.read_bytes().splitlines()) >= count, 10
        )
        time.sleep(0.3)  # the queue writes its segments in the same turns
        suite.process.send_signal(signal.SIGKILL)
        suite.process.wait(10)
        segments = sorted((self.directory / "queue").glob("*.seg"))
        assert segments, os.listdir(self.directory / "queue")
        last = segments[-1]
        size = last.stat().st_size
        os.truncate(last, size - 10)  # the last message loses its end
        rsyslog = self.rsyslog([("relp", f'type="imrelp" port="{relp}"')]).start()
        suite, _ = self.suite(forwards)
        assert wait_until(lambda: len(rsyslog.received("relp")) >= count - 1, 15)
        got = numbers(rsyslog.received("relp"))
        assert got == list(range(count - 1)), got[-5:]
        assert "ended in a torn or damaged message" in suite.output, suite.output
        assert re.search(r"cut \d+ bytes back to its last whole message", suite.output)
