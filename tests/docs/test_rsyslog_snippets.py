"""
The README's rsyslog configs work as printed: every block marked
`<!-- rsyslog: NAME -->` is run by a real rsyslogd against a real suite,
in the direction it is for, and numbered messages must all arrive, in
order.  Only what a reader would change is replaced: ports by the test's
own loopback ports, host names by 127.0.0.1 (the test certificates name
localhost and 127.0.0.1), certificate paths by the test's CA and pairs.
rsyslogd gets a work directory of its own and, receiving, one action
writing each message raw; it runs in the foreground and is stopped by PID.
"""

import glob
import re
import socket
import subprocess
import time
from pathlib import Path

from twisted.trial.unittest import SkipTest

from tests.e2e.process import ProcessTestCase, popen, require, stop_process
from tests.e2e.test_forward_rsyslog import message, numbers, send, wait_until
from tests.e2e.test_logger_process import messages, read_records
from tests.e2e.test_rsyslog import free_port
from tests.helpers import make_pki, tls_section

ROOT = Path(__file__).resolve().parents[2]
SNIPPET = re.compile(r"^<!-- rsyslog: ([\w-]+) -->\n```rsyslog\n(.*?)\n```$", re.S | re.M)
SENDING = ("omrelp", "omrelp-tls")  # rsyslog to the suite
RECEIVING = ("imrelp", "imrelp-tls", "imtcp", "imtcp-tls")  # the suite to rsyslog
COUNT = 20
LOCAL = "tcp:0:interface=127.0.0.1"
NUMBERED = re.compile(r"numbered (\d{5})$")

# What a reader sets to their own: the key, and which file of make_pki() it gets.
CA_KEYS = ("tls.caCert", "DefaultNetstreamDriverCAFile")
CERT_KEYS = ("tls.myCert", "DefaultNetstreamDriverCertFile")
KEY_KEYS = ("tls.myPrivKey", "DefaultNetstreamDriverKeyFile")


def snippets(text: str) -> dict[str, str]:
    """The marked rsyslog blocks of TEXT, by name."""
    return dict(SNIPPET.findall(text))


def localised(snippet: str, port: int, pki: dict[str, str], role: str) -> str:
    """SNIPPET with the test's PORT, host and certificates (ROLE's: server or client)."""
    text = re.sub(r'\bport="\d+"', f'port="{port}"', snippet)
    text = re.sub(r'\btarget="[^"]*"', 'target="127.0.0.1"', text)
    text = re.sub(r"tls\.permittedPeer=\[[^]]*\]", 'tls.permittedPeer=["localhost"]', text)
    for keys, path in (
        (CA_KEYS, pki["ca"]),
        (CERT_KEYS, pki[f"{role}_crt"]),
        (KEY_KEYS, pki[f"{role}_key"]),
    ):
        for key in keys:
            text = re.sub(rf'\b{re.escape(key)}="[^"]*"', f'{key}="{path}"', text)
    return text


class Rsyslogd:
    """A foreground rsyslogd of CONFIG in WORK, stopped by PID."""

    def __init__(self, work: Path, config: str):
        work.mkdir()
        self.work = work
        (work / "rsyslog.conf").write_text(f'global(workDirectory="{work}")\n{config}\n')
        # A parameter rsyslog does not know is an error it reports and runs past.
        checked = subprocess.run(
            ["rsyslogd", "-N1", "-f", str(work / "rsyslog.conf")],
            capture_output=True,
            text=True,
            timeout=10,
        )
        output = checked.stdout + checked.stderr
        assert checked.returncode == 0 and "error" not in output.lower(), output
        self.process = popen(
            ["rsyslogd", "-n", "-f", str(work / "rsyslog.conf"), "-i", str(work / "pid")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=work,
        )

    def wait_for(self, ready, what: str) -> None:
        deadline = time.monotonic() + 10
        while not ready():
            if self.process.poll() is not None:
                raise AssertionError(f"rsyslogd ended: {self.process.stdout.read().decode()}")
            assert time.monotonic() < deadline, f"rsyslogd: no {what} within 10 s"
            time.sleep(0.05)

    def stop(self) -> None:
        stop_process(self.process)
        self.process.stdout.close()


def listening(port: int):
    def ready() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return True
        except OSError:
            return False

    return ready


class RsyslogSnippetTests(ProcessTestCase):
    def setUp(self):
        super().setUp()
        self.snippets = snippets((ROOT / "README.md").read_text())
        require("rsyslogd")
        for module, package in (("omrelp", "rsyslog-relp"), ("lmnsd_gtls", "rsyslog-gnutls")):
            if not glob.glob(f"/usr/lib/*/rsyslog/{module}.so"):
                raise SkipTest(f"{package} is not installed (make test installs it as root)")
        self.pki = make_pki(self.directory)

    def rsyslogd(self, name: str, config: str) -> Rsyslogd:
        rsyslogd = Rsyslogd(self.directory / name, config)
        self.addCleanup(rsyslogd.stop)
        return rsyslogd

    def test_the_readme_marks_a_config_for_each_direction(self):
        self.assertEqual(sorted(self.snippets), sorted(SENDING + RECEIVING))

    def test_rsyslog_sends_to_the_suite_over_relp_and_relp_over_tls(self):
        plain, tls = free_port(), free_port()
        self.start_suite(
            tls_section(self.pki)
            + f"""
            [logger]
            listen = ["{LOCAL}"]
            relp_listen = ["tcp:{plain}:interface=127.0.0.1"]
            relp_tls_listen = ["tcp:{tls}:interface=127.0.0.1"]
            output = "messages.jsonl"
            flush_interval = 0.05
            """,
            listeners=3,
        )
        socket_path = self.directory / "in.sock"
        rsyslogd = self.rsyslogd(
            "sender",
            "\n".join(
                [
                    'module(load="imuxsock" SysSock.Use="off")',
                    f'input(type="imuxsock" Socket="{socket_path}" RateLimit.Interval="0")',
                    localised(self.snippets["omrelp"], plain, self.pki, "client"),
                    localised(self.snippets["omrelp-tls"], tls, self.pki, "client"),
                ]
            ),
        )
        rsyslogd.wait_for(socket_path.exists, "input socket")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as local:
            local.settimeout(10)
            for n in range(COUNT):
                local.sendto(b"<134>numbered[7]: numbered %05d" % n, str(socket_path))
        path = self.directory / "messages.jsonl"

        def received() -> list[dict]:
            return messages(read_records(path)) if path.exists() else []

        assert wait_until(lambda: len(received()) >= 2 * COUNT, 15), received()
        by_transport: dict[str, list[int]] = {}
        for record in received():
            found = NUMBERED.search(record["message"])
            assert found, record
            by_transport.setdefault(record["transport"], []).append(int(found[1]))
            self.assertEqual(record["syslog"]["app"], "numbered", record)
        self.assertEqual(
            by_transport, {"relp": list(range(COUNT)), "relp+tls": list(range(COUNT))}
        )

    def test_the_suite_forwards_to_rsyslog_over_relp_relp_tls_tcp_and_tls(self):
        ports = {name: free_port() for name in RECEIVING}
        receivers = {}
        for name in RECEIVING:
            receivers[name] = self.rsyslogd(
                name,
                localised(self.snippets[name], ports[name], self.pki, "server")
                + '\ntemplate(name="raw" type="string" string="%rawmsg%\\n")\n'
                f'*.* action(type="omfile" file="{self.directory / name / "received"}" '
                'template="raw")',
            )
        for name, rsyslogd in receivers.items():
            rsyslogd.wait_for(listening(ports[name]), f"listener on {ports[name]}")
        ca = self.pki["ca"]
        suite = self.start_suite(
            f"""
            [logger]
            listen = ["{LOCAL}"]
            output = "messages.jsonl"
            flush_interval = 0.05
            [[logger.forward]]
            name = "relp"
            target = "relp:127.0.0.1:{ports["imrelp"]}"
            [[logger.forward]]
            name = "relp_tls"
            target = "relp+tls:localhost:{ports["imrelp-tls"]}"
            ca = "{ca}"
            certificate = "{self.pki["client_crt"]}"
            private_key = "{self.pki["client_key"]}"
            [[logger.forward]]
            name = "tcp"
            target = "tcp:127.0.0.1:{ports["imtcp"]}"
            [[logger.forward]]
            name = "tls"
            target = "tls:localhost:{ports["imtcp-tls"]}"
            ca = "{ca}"
            """,
            listeners=1,
        )
        sent = [message(n) for n in range(COUNT)]
        send(suite.port(f"logger {LOCAL}"), sent)

        def received(name: str) -> list[bytes]:
            path = self.directory / name / "received"
            data = path.read_bytes() if path.exists() else b""
            return data[: data.rfind(b"\n") + 1].splitlines()

        for name in RECEIVING:
            assert wait_until(lambda n=name: len(received(n)) >= COUNT, 15), (
                name,
                received(name),
                suite.output,
            )
            self.assertEqual(numbers(received(name)), list(range(COUNT)), name)
            self.assertEqual(received(name), sent, name)
