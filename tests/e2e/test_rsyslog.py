"""
rsyslog, the syslog daemon most collectors sit behind, forwarding to the
suite's collector with omfwd over TCP (octet-counted and LF framing), UDP and
TLS (gtls).  The test runs its own rsyslogd in the foreground, with its own
config, work directory, input socket and pid file, never the system's, and
stops it by PID.
"""

import glob
import signal
import socket
import subprocess
import time

from twisted.trial.unittest import SkipTest

from tests.e2e.process import ProcessTestCase, require
from tests.e2e.test_logger_process import messages, read_records
from tests.helpers import make_pki, tls_section

COUNT = 100


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RsyslogForwardingTests(ProcessTestCase):
    def test_omfwd_over_tcp_octet_counted_tcp_lf_udp_and_tls(self):
        require("rsyslogd")
        if not glob.glob("/usr/lib/*/rsyslog/lmnsd_gtls.so"):
            raise SkipTest("rsyslog-gnutls is not installed (make test installs it as root)")
        pki = make_pki(self.directory)
        octet, lf, tls, udp = free_port(), free_port(), free_port(), free_port(socket.SOCK_DGRAM)
        suite = self.start_suite(
            tls_section(pki)
            + f"""
            [logger]
            listen = ["tcp:{octet}:interface=127.0.0.1", "tcp:{lf}:interface=127.0.0.1",
                      "udp:{udp}:interface=127.0.0.1"]
            tls_listen = ["tcp:{tls}:interface=127.0.0.1"]
            output = "messages.jsonl"
            flush_interval = 0.05
        """,
            listeners=4,
        )
        work = self.directory / "rsyslog"
        work.mkdir()
        socket_path = work / "log.sock"
        (work / "rsyslog.conf").write_text(f"""
global(workDirectory="{work}" defaultNetstreamDriverCAFile="{pki["ca"]}")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{socket_path}" CreatePath="on")
*.* action(type="omfwd" target="127.0.0.1" port="{octet}" protocol="tcp"
           TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format")
*.* action(type="omfwd" target="127.0.0.1" port="{lf}" protocol="tcp")
*.* action(type="omfwd" target="127.0.0.1" port="{udp}" protocol="udp")
*.* action(type="omfwd" target="127.0.0.1" port="{tls}" protocol="tcp"
           StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/name"
           StreamDriverPermittedPeers="localhost" template="RSYSLOG_SyslogProtocol23Format"
           TCP_Framing="octet-counted")
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
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as local:
            for n in range(COUNT):  # local0.err, as `logger -p local0.err -t myapp` sends it
                local.sendto(b"<131>myapp[42]: forwarded %03d" % n, str(socket_path))
                if n % 20 == 19:
                    time.sleep(0.02)
        path = self.directory / "messages.jsonl"
        deadline = time.monotonic() + 20
        while True:
            received = messages(read_records(path)) if path.exists() else []
            if len(received) >= 4 * COUNT or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        by_transport = {}
        for record in received:
            by_transport.setdefault(record["transport"], []).append(record)
        # rsyslog's RFC 5424 template keeps the space after `myapp[42]:` in MSG; the
        # traditional (RFC 3164) format's parser drops it.
        expected = [f"forwarded {n:03d}" for n in range(COUNT)]

        def text(transport):
            return [r["message"].lstrip(" ") for r in by_transport.get(transport, [])]

        assert sorted(text("tcp")) == sorted(expected * 2)
        for transport in ("udp", "tls"):
            assert text(transport) == expected, transport
        hostname = socket.gethostname()
        for record in received:
            fields = record["syslog"]
            assert (fields["facility"], fields["severity"], fields["app"]) == (
                "local0",
                "err",
                "myapp",
            ), record
            assert fields["hostname"] in (hostname, hostname.split(".")[0]), record
            assert not record.get("truncated"), record
        assert suite.process.poll() is None
