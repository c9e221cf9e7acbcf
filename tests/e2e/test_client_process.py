"""
End to end: `suite-client` against `twistd … suite`, over TCP, UDP and
mutual TLS, to services and to name servers.
"""

import json
import os
import re
import socket
import sys
import time

from twisted.trial.unittest import SkipTest

from tests.e2e.process import TWISTD, ProcessTestCase, run
from tests.helpers import make_pki, tls_section

CLIENT = os.path.join(os.path.dirname(sys.executable), "suite-client")
LOCAL = "tcp:0:interface=127.0.0.1"
LOCAL_UDP = "udp:0:interface=127.0.0.1"


def client(*args, input=b"", timeout=30, env=None):
    result = run(
        [CLIENT, *map(str, args)],
        input=input,
        capture_output=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    assert b"Traceback" not in result.stderr
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def address(process, name):
    return f"127.0.0.1:{process.port(name)}"


def mtls(pki, certificate="client"):
    return [
        "--tls",
        "--ca",
        pki["ca"],
        "--cert",
        pki[certificate + "_crt"],
        "--key",
        pki[certificate + "_key"],
    ]


STAMP = r"\[\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\]"


class RunningSuiteTestCase(ProcessTestCase):
    """Every service over TCP, UDP and mutual TLS, in one suite process per test."""

    def setUp(self):
        super().setUp()
        self.pki = make_pki(self.directory)
        extra = {"logger": 'output = "messages.jsonl"\nflush_interval = 0.01\n'}
        sections = "".join(
            f"[{name}]\n"
            f'listen = ["{LOCAL}"' + ("" if name == "sleep" else f', "{LOCAL_UDP}"') + "]\n"
            f'tls_listen = ["{LOCAL}"]\n' + extra.get(name, "")
            for name in ("timestamp", "echo", "logger", "sleep")
        )
        self.suite = self.start_suite(
            tls_section(self.pki, client_ca=self.pki["ca"]) + sections, listeners=11
        )


class ServiceTests(RunningSuiteTestCase):
    def test_timestamp_tcp_udp_and_mutual_tls(self):
        process, pki = self.suite, self.pki
        code, out, _ = client("timestamp", address(process, f"timestamp {LOCAL}"), "one", "two")
        assert code == 0 and re.fullmatch(f"{STAMP} one\n{STAMP} two\n", out)
        code, out, _ = client(
            "timestamp", address(process, f"timestamp {LOCAL_UDP}"), "--udp", "u"
        )
        assert code == 0 and re.fullmatch(f"{STAMP} u\n", out)
        code, out, _ = client(
            "timestamp", address(process, f"timestamp tls_listen {LOCAL}"), *mtls(pki), "secure"
        )
        assert code == 0 and re.fullmatch(f"{STAMP} secure\n", out)

    def test_echo_from_standard_input_udp_and_mutual_tls(self):
        process, pki = self.suite, self.pki
        code, out, _ = client("echo", address(process, f"echo {LOCAL}"), input=b"a\nb\r\nlast")
        assert (code, out) == (0, "You said: a\nYou said: b\nYou said: last\n")
        code, out, _ = client("echo", address(process, f"echo {LOCAL_UDP}"), "--udp", "dgram")
        assert (code, out) == (0, "dgram\n")
        code, out, _ = client(
            "echo", address(process, f"echo tls_listen {LOCAL}"), *mtls(pki), "x"
        )
        assert (code, out) == (0, "You said: x\n")

    def test_log_tcp_udp_and_mutual_tls(self):
        process, pki, directory = self.suite, self.pki, self.directory
        header = [
            "--facility",
            "local3",
            "--severity",
            "err",
            "--app",
            "deploy",
            "--hostname",
            "web-1",
        ]
        for args in (
            [address(process, f"logger {LOCAL}"), "via tcp"],
            [address(process, f"logger {LOCAL_UDP}"), "--udp", "via udp", *header],
            [address(process, f"logger tls_listen {LOCAL}"), *mtls(pki), "via tls"],
        ):
            assert client("log", *args) == (0, "", "")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with open(directory / "messages.jsonl") as f:
                records = [json.loads(line) for line in f]
            received = {(r["transport"], r["message"]) for r in records if r["event"] == "message"}
            if len(received) == 3:
                break
            time.sleep(0.05)
        assert received == {("tcp", "via tcp"), ("udp", "via udp"), ("tls", "via tls")}
        headers = {
            r["message"]: tuple(
                r["syslog"][k] for k in ("facility", "severity", "app", "hostname")
            )
            for r in records
            if r["event"] == "message"
        }
        hostname = socket.gethostname()
        assert headers == {
            "via tcp": ("user", "notice", "suite-client", hostname),
            "via udp": ("local3", "err", "deploy", "web-1"),
            "via tls": ("user", "notice", "suite-client", hostname),
        }

    def test_versions(self):
        for command in (
            [CLIENT, "--version"],
            [TWISTD, "suite", "--version"],
            [TWISTD, "suite-names", "--version"],
        ):
            result = run(command, capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result
            assert re.fullmatch(
                r"suite \d+\.\d+\.\d+ \(Twisted \S+, Python 3\.\d+\.\d+\)\n", result.stdout
            ), result.stdout

    def test_log_header_options_are_checked(self):
        address_ = address(self.suite, f"logger {LOCAL}")
        for option, value, problem in (
            ("--facility", "local9", "argument --facility: invalid choice: 'local9'"),
            ("--severity", "loud", "argument --severity: invalid choice: 'loud'"),
            ("--app", "two words", "app must be 1-48 printable ASCII characters without spaces"),
            ("--hostname", "x" * 256, "hostname must be 1-255 printable ASCII characters"),
        ):
            code, out, err = client("log", address_, "m", option, value)
            assert (code, out) == (1, "") and problem in err and err.count("\n") == 1, err

    def test_sleep_plain_and_mutual_tls(self):
        process, pki = self.suite, self.pki
        for args in (
            [address(process, f"sleep {LOCAL}")],
            [address(process, f"sleep tls_listen {LOCAL}"), *mtls(pki)],
        ):
            code, out, _ = client("sleep", *args, "0.2")
            assert code == 0 and float(out) >= 0.2


class FailuresTests(RunningSuiteTestCase):
    """Every failure: status 1 and one line on standard error."""

    def test_error_code(self):
        process = self.suite
        target = address(process, f"sleep {LOCAL}")
        assert client("sleep", target, "-1") == (
            1,
            "",
            "suite-client: INVALID_DURATION: seconds must be from 0 to 60 "
            "(max_seconds), not -1.0\n",
        )

    def test_tls_server_not_trusted(self):
        process, pki = self.suite, self.pki
        target = address(process, f"echo tls_listen {LOCAL}")
        code, out, err = client(
            "echo",
            target,
            "--tls",
            "--ca",
            pki["stranger_crt"],
            "--cert",
            pki["client_crt"],
            "--key",
            pki["client_key"],
            "x",
        )
        assert (code, out) == (1, "")
        assert err.startswith(f"suite-client: {target}: TLS failed: ") and err.count("\n") == 1

    def test_tls_client_without_certificate_refused(self):
        process, pki = self.suite, self.pki
        target = address(process, f"echo tls_listen {LOCAL}")
        code, out, err = client("echo", target, "--tls", "--ca", pki["ca"], "x")
        assert (code, out) == (1, "")
        assert err == f"suite-client: {target}: TLS failed: tlsv13 alert certificate required\n"

    def test_server_closed_early(self):
        process = self.suite
        target = address(process, f"echo {LOCAL}")
        assert client("echo", target, "quit", "more") == (
            1,
            "Goodbye.\n",
            f"suite-client: {target}: server closed the connection after 1 of 2 replies\n",
        )


class NoServerFailuresTests(ProcessTestCase):
    """Failures that need no suite running: status 1 and one line on standard error."""

    def test_refused(self):
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]
        assert client("sleep", f"127.0.0.1:{port}", "1") == (
            1,
            "",
            f"suite-client: 127.0.0.1:{port}: connection refused\n",
        )

    def test_timed_out(self):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
            silent.bind(("127.0.0.1", 0))
            port = silent.getsockname()[1]
            result = client("echo", f"127.0.0.1:{port}", "--udp", "--timeout", "0.5", "x")
        assert result == (1, "", f"suite-client: 127.0.0.1:{port}: timed out after 0.5 s\n")

    def test_usage_and_bad_address(self):
        assert client("frobnicate") == (
            1,
            "",
            "suite-client: argument SERVICE: invalid choice: 'frobnicate' (choose from "
            "'echo', 'log', 'names', 'sleep', 'timestamp') (see --help)\n",
        )
        assert client("sleep", "nowhere", "1") == (
            1,
            "",
            "suite-client: nowhere: expected host:port, [v6]:port or an endpoint string\n",
        )
        assert client("echo", "127.0.0.1:1", "--tls", "--ca", "/missing.pem", "x") == (
            1,
            "",
            "suite-client: /missing.pem: No such file or directory\n",
        )


class StandaloneTests(ProcessTestCase):
    def test_ipv6_address_form(self):
        try:
            with socket.socket(socket.AF_INET6) as probe:
                probe.bind(("::1", 0))
        except OSError:
            raise SkipTest("no IPv6 loopback on this machine") from None
        listen = r"tcp6:0:interface=\:\:1"  # colons in an endpoint string are escaped
        toml = listen.replace("\\", "\\\\")
        suite = self.start_suite(f'[echo]\nlisten = ["{toml}"]\n', listeners=1)
        port = suite.port(f"echo {listen}")
        assert client("echo", f"[::1]:{port}", "over v6") == (0, "You said: over v6\n", "")

    def test_tls_host_name_is_verified(self):
        pki = make_pki(self.directory)
        suite = self.start_suite(
            tls_section(pki, "elsewhere")
            + f"""
            [echo]
            listen = []
            tls_listen = ["{LOCAL}"]
        """,
            listeners=1,
        )
        target = f"127.0.0.1:{suite.port(f'echo tls_listen {LOCAL}')}"
        assert client("echo", target, "--tls", "--ca", pki["ca"], "x") == (
            1,
            "",
            f"suite-client: {target}: TLS failed: certificate does not match the host name\n",
        )


def free_port() -> int:
    """A loopback TCP port nothing listens on now (for a config that must name it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class NameServerTLSTests(ProcessTestCase):
    """
    A name server reached through mutual TLS only: the suite announces to it
    over TLS, and suite-client registers, looks up and finds services
    (--lookup) with the same --tls --ca --cert --key as for the service.
    """

    def setUp(self):
        super().setUp()
        self.pki = make_pki(self.directory)
        port = free_port()
        self.names = f"127.0.0.1:{port}"
        self.suite = self.start_suite(
            tls_section(self.pki, client_ca=self.pki["ca"])
            + f"""
[names]
listen = []
tls_listen = ["tcp:{port}:interface=127.0.0.1"]
token = "s3cret-token"
store = "memory"
lookup_audit = ""
[echo]
listen = ["{LOCAL}"]
tls_listen = ["{LOCAL}"]
[announce]
name_server = ["{self.names}"]
token = "s3cret-token"
tls = true
ca = "{self.pki["ca"]}"
certificate = "{self.pki["client_crt"]}"
private_key = "{self.pki["client_key"]}"
""",
            listeners=3,
        )

    def announced(self):
        """The echo instances the name server holds, once [announce] registered both."""
        for _ in range(100):  # at most ~10 s
            code, out, _ = client("names", self.names, "lookup", "echo", *mtls(self.pki))
            if code == 0 and out.count("\n") == 2:
                return out
            time.sleep(0.1)
        raise AssertionError(f"echo was not announced: {out!r}\n{self.suite.output}")

    def test_announced_and_found_through_tls(self):
        plain = self.suite.port(f"echo {LOCAL}")
        tls = self.suite.port(f"echo tls_listen {LOCAL}")
        assert set(self.announced().splitlines()) == {
            f"127.0.0.1:{plain}\ttcp",
            f"127.0.0.1:{tls}\ttls",
        }
        for _ in range(2):  # whichever instance the rotation gives first: the TLS one is used
            assert client("echo", "--lookup", self.names, *mtls(self.pki), "secret") == (
                0,
                "You said: secret\n",
                "",
            )
        assert "s3cret-token" not in self.suite.output
        assert "in clear" not in self.suite.output

    def test_names_register_lookup_and_services_through_mutual_tls(self):
        echo = self.suite.port(f"echo tls_listen {LOCAL}")
        assert client(
            "names",
            self.names,
            "register",
            "web",
            "127.0.0.1",
            echo,
            "--description",
            "tls",
            *mtls(self.pki),
            env={"SUITE_TOKEN": "s3cret-token"},
        ) == (0, "", "")
        assert client("names", self.names, "lookup", "web", *mtls(self.pki)) == (
            0,
            f"127.0.0.1:{echo}\ttls\n",
            "",
        )
        code, out, _ = client("names", self.names, "services", *mtls(self.pki))
        assert code == 0 and "web\n" in out

    def test_a_name_server_that_fails_tls_is_one_line(self):
        names, pki = self.names, self.pki
        refusals = (
            ([], "connection closed by the server"),
            (["--tls", "--ca", pki["ca"]], "TLS failed: tlsv13 alert certificate required"),
            (
                [
                    "--tls",
                    "--ca",
                    pki["stranger_crt"],
                    "--cert",
                    pki["client_crt"],
                    "--key",
                    pki["client_key"],
                ],
                "TLS failed: certificate verify failed",
            ),
        )
        for options, problem in refusals:
            for command in (["names", names, "lookup", "echo"], ["echo", "--lookup", names, "x"]):
                assert client(*command, *options, "--timeout", "5") == (
                    1,
                    "",
                    f"suite-client: {names}: {problem}\n",
                ), (command, options)


class PlainNameServerTests(ProcessTestCase):
    def test_a_token_on_a_plain_listener_other_hosts_reach_is_a_warning_at_start(self):
        suite = self.start_suite(
            """
            [names]
            listen = ["tcp:0", "tcp:0:interface=127.0.0.1"]
            token = "s3cret-token"
            store = "memory"
            lookup_audit = ""
        """,
            listeners=2,
        )
        warnings = [line for line in suite.lines if "crosses the network in clear" in line]
        assert (
            len(warnings) == 1
            and "names: tcp:0 accepts connections from other hosts" in warnings[0]
        ), suite.output
        assert "s3cret-token" not in suite.output
