"""
rsyslog's omrelp sending to the suite's RELP server, over RELP and RELP
over TLS, and across a SIGKILL of the suite: numbered messages, every one
of them arrives.  The test runs its own rsyslogd in the foreground, with its
own config, work directory, input socket and pid file, and stops it by PID.
"""

import glob
import json
import re
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

from twisted.trial.unittest import SkipTest

from tests.e2e.process import ProcessTestCase, require
from tests.e2e.test_logger_process import messages, read_records
from tests.e2e.test_rsyslog import free_port
from tests.helpers import make_pki, tls_section

COUNT = 2000
NUMBER = re.compile(r"numbered (\d{5})$")
LOCAL = "tcp:0:interface=127.0.0.1"  # the plain listener a logger needs besides RELP


class RsyslogRelpTests(ProcessTestCase):
    def start_rsyslogd(self, actions: str) -> Path:
        """An rsyslogd reading a Unix socket of its own and running ACTIONS: the socket."""
        require("rsyslogd")
        if not glob.glob("/usr/lib/*/rsyslog/omrelp.so"):
            raise SkipTest("rsyslog-relp is not installed (make tools installs it as root)")
        work = self.directory / "rsyslog"
        work.mkdir()
        socket_path = work / "log.sock"
        (work / "rsyslog.conf").write_text(f"""
global(workDirectory="{work}")
module(load="imuxsock" SysSock.Use="off")
module(load="omrelp")
input(type="imuxsock" Socket="{socket_path}" CreatePath="on" RateLimit.Interval="0")
{actions}
""")
        rsyslogd = subprocess.Popen(
            ["rsyslogd", "-n", "-f", str(work / "rsyslog.conf"), "-i", str(work / "pid")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=work,
        )
        self.addCleanup(
            lambda: (
                rsyslogd.poll() is None
                and (rsyslogd.send_signal(signal.SIGTERM), rsyslogd.wait(10))
            )
        )
        deadline = time.monotonic() + 15
        while not socket_path.exists():
            assert rsyslogd.poll() is None and time.monotonic() < deadline, rsyslogd.stdout.read()
            time.sleep(0.05)
        return socket_path

    def send(self, socket_path: Path, numbers: range, pause: float = 0) -> None:
        """
        Numbered messages to rsyslogd, PAUSE seconds after every 50 (a Unix
        datagram socket blocks while its queue is full: none is dropped; for
        10 s at most, should rsyslogd stop reading).
        """
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as local:
            local.settimeout(10)
            for n in numbers:
                local.sendto(b"<134>numbered[7]: numbered %05d" % n, str(socket_path))
                if pause and n % 50 == 49:
                    time.sleep(pause)

    def wait_numbers(self, path: Path, wanted: int, timeout: float = 20) -> list[dict]:
        """The message records once WANTED of them are written, or TIMEOUT seconds."""
        deadline = time.monotonic() + timeout
        while True:
            received = messages(read_records(path))
            if len(received) >= wanted or time.monotonic() > deadline:
                return received
            time.sleep(0.1)

    def test_omrelp_over_relp_and_relp_over_tls_delivers_every_message(self):
        pki = make_pki(self.directory)
        plain, tls = free_port(), free_port()
        self.start_suite(
            tls_section(pki)
            + f"""
            [logger]
            listen = ["{LOCAL}"]
            relp_listen = ["tcp:{plain}:interface=127.0.0.1"]
            relp_tls_listen = ["tcp:{tls}:interface=127.0.0.1"]
            output = "messages.jsonl"
        """,
            listeners=3,
        )
        # omrelp (librelp's GnuTLS client) negotiates certificate suites only with a
        # certificate of its own; without one it offers anonymous suites alone.
        socket_path = self.start_rsyslogd(f"""
*.* action(type="omrelp" target="127.0.0.1" port="{plain}"
           template="RSYSLOG_SyslogProtocol23Format")
*.* action(type="omrelp" target="127.0.0.1" port="{tls}" tls="on"
           tls.caCert="{pki["ca"]}" tls.myCert="{pki["client_crt"]}"
           tls.myPrivKey="{pki["client_key"]}" tls.authMode="name"
           tls.permittedPeer=["localhost"] template="RSYSLOG_SyslogProtocol23Format")
""")
        self.send(socket_path, range(COUNT))
        received = self.wait_numbers(self.directory / "messages.jsonl", 2 * COUNT)
        by_transport: dict[str, list[int]] = {}
        for record in received:
            found = NUMBER.search(record["message"])
            assert found, record
            by_transport.setdefault(record["transport"], []).append(int(found[1]))
            assert record["syslog"]["app"] == "numbered", record
        self.assertEqual(sorted(by_transport), ["relp", "relp+tls"])
        for transport, numbers in by_transport.items():
            self.assertEqual(numbers, list(range(COUNT)), transport)

    def test_nothing_acknowledged_is_lost_when_the_suite_is_killed_mid_stream(self):
        port = free_port()
        config = f"""
            [logger]
            listen = ["{LOCAL}"]
            relp_listen = ["tcp:{port}:interface=127.0.0.1"]
            output = "messages.jsonl"
            sync = true
        """
        suite = self.start_suite(config, listeners=2)
        # An action queue keeps what omrelp could not hand over; resumed every second.
        socket_path = self.start_rsyslogd(f"""
*.* action(type="omrelp" target="127.0.0.1" port="{port}"
           template="RSYSLOG_SyslogProtocol23Format"
           queue.type="LinkedList" queue.size="100000"
           action.resumeRetryCount="-1" action.resumeInterval="1")
""")
        path = self.directory / "messages.jsonl"
        sender = threading.Thread(
            target=self.send, args=(socket_path, range(COUNT), 0.01), daemon=True
        )
        sender.start()
        self.addCleanup(sender.join, 30)
        self.wait_numbers(path, COUNT // 4, timeout=10)
        suite.process.send_signal(signal.SIGKILL)  # while omrelp sends
        suite.process.wait(10)
        written_before = len(messages(read_records(path)))
        self.start_suite(config, listeners=2)
        deadline = time.monotonic() + 20
        while True:
            records = read_records(path)  # every line parses: a torn one was cut at start
            numbers = Counter(
                int(NUMBER.search(r["message"])[1])
                for r in messages(records)  # type: ignore[index]
            )
            if len(numbers) == COUNT or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        lost = sorted(set(range(COUNT)) - set(numbers))
        duplicated = sum(numbers.values()) - len(numbers)
        print(
            json.dumps(
                {
                    "sent": COUNT,
                    "written before SIGKILL": written_before,
                    "lost": len(lost),
                    "duplicated": duplicated,
                }
            )
        )
        self.assertEqual(lost, [])
        for record in records:
            self.assertIn(record["event"], ("connected", "message", "disconnected", "error"))
            self.assertEqual(record["transport"], "relp")
