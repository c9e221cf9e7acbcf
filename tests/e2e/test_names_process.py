"""End to end: `twistd … suite` with the name server, driven by `suite-client`."""

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.e2e.process import (
    TWISTD,
    ProcessTestCase,
    SuiteProcess,
    config_ports,
    free_ports,
    popen,
    replace_ports,
    require,
    run,
)
from tests.e2e.test_client_process import CLIENT, client
from tests.helpers import make_pki

LOCAL = "tcp:0:interface=127.0.0.1"


def names_config(extra=""):
    return f"""
        [names]
        listen = ["{LOCAL}"]
        store = "sqlite:state/names.sqlite"
        ping_interval = 60
        {extra}
        [echo]
        listen = ["{LOCAL}"]
    """


class NamesProcessTests(ProcessTestCase):
    def names_and_echo(self):
        suite = self.start_suite(names_config('token = "s3cret"'), listeners=2)
        return suite, f"127.0.0.1:{suite.port(f'names {LOCAL}')}", suite.port(f"echo {LOCAL}")

    def test_registrations_survive_a_restart(self):
        first = SuiteProcess(self.directory, names_config())
        first.wait_ready(2)
        names = f"127.0.0.1:{first.port(f'names {LOCAL}')}"
        echo_port = first.port(f"echo {LOCAL}")
        assert client(
            "names",
            names,
            "register",
            "echo",
            "127.0.0.1",
            echo_port,
            "--description",
            "line echo",
        ) == (0, "", "")
        assert first.stop() in (0, -15)

        second = SuiteProcess(self.directory, names_config())
        try:
            second.wait_ready(2)
            names = f"127.0.0.1:{second.port(f'names {LOCAL}')}"
            assert client("names", names, "lookup", "echo") == (
                0,
                f"127.0.0.1:{echo_port}\tline echo\n",
                "",
            )
            assert client("names", names, "services") == (0, "echo\n", "")
        finally:
            second.stop()

    def test_register_lookup_deregister_with_token(self):
        names_and_echo = self.names_and_echo()
        _, names, echo_port = names_and_echo
        assert client("names", names, "register", "echo", "127.0.0.1", echo_port) == (
            1,
            "",
            "suite-client: UNAUTHORIZED: a valid token is needed to change registrations\n",
        )
        assert client(
            "names", names, "register", "echo", "127.0.0.1", echo_port, "--token", "s3cret"
        ) == (0, "", "")
        assert client("echo", "--lookup", names, "found by name") == (
            0,
            "You said: found by name\n",
            "",
        )
        assert client(
            "names", names, "deregister", "echo", "127.0.0.1", echo_port, "--token", "s3cret"
        ) == (0, "", "")
        assert client("names", names, "lookup", "echo") == (
            1,
            "",
            "suite-client: NOT_FOUND: no live instance of echo\n",
        )
        assert client("echo", "--lookup", names, "x") == (
            1,
            "",
            "suite-client: NOT_FOUND: no live instance of echo\n",
        )

    def test_lookup_skips_an_instance_that_refuses(self):
        names_and_echo = self.names_and_echo()
        _, names, echo_port = names_and_echo
        for port in (1, echo_port):  # port 1 refuses; the client goes on to the next instance
            assert (
                client("names", names, "register", "echo", "127.0.0.1", port, "--token", "s3cret")[
                    0
                ]
                == 0
            )
        for _ in range(2):  # whichever comes first in the rotation
            assert client("echo", "--lookup", names, "hi") == (0, "You said: hi\n", "")

    def test_invalid_registration_and_bad_arguments(self):
        names_and_echo = self.names_and_echo()
        _, names, _ = names_and_echo
        assert client("names", names, "register", "Bad_Name", "h", "1", "--token", "s3cret") == (
            1,
            "",
            "suite-client: INVALID: name 'Bad_Name': 1-63 of a-z 0-9 -, not starting with -\n",
        )
        code, _, err = client("names", names, "register", "echo", "h")
        assert code == 1 and err.startswith("suite-client names: register: expected ")

    def test_corrupt_database_is_refused_at_start(self):
        (self.directory / "state").mkdir()
        (self.directory / "state" / "names.sqlite").write_bytes(b"garbage" * 200)
        suite = SuiteProcess(self.directory, names_config())
        assert suite.wait() == 1
        assert suite.output == (
            f'error: {suite.config}: [names] store = "sqlite:state/names.sqlite" '
            f"({self.directory / 'state' / 'names.sqlite'}): "
            "not a usable SQLite database: file is not a database"
        )

    def test_a_store_made_read_only_at_runtime_answers_unavailable(self):
        state = self.directory / "state"
        state.mkdir()
        with sqlite3.connect(state / "names.sqlite"):
            pass
        twistd_args = ()
        if os.getuid() == 0:  # root writes anyway: run the server as nobody, as systemd would
            nobody = 65534
            for path in (self.directory, state, state / "names.sqlite"):
                os.chown(path, nobody, nobody)
            twistd_args = (f"--uid={nobody}", f"--gid={nobody}")
        suite = self.start_suite(names_config(), listeners=2, twistd_args=twistd_args)
        names = f"127.0.0.1:{suite.port(f'names {LOCAL}')}"
        assert client("names", names, "register", "kept", "127.0.0.1", "1")[0] == 0
        os.chmod(state / "names.sqlite", 0o444)
        os.chmod(state, 0o555)
        try:
            code, out, err = client("names", names, "register", "lost", "127.0.0.1", "2")
            assert (code, out) == (1, "") and err.startswith(
                "suite-client: UNAVAILABLE: registry store unavailable: cannot write "
                f"{state / 'names.sqlite'}: "
            ), err
            code, _, err = client("names", names, "deregister", "kept", "127.0.0.1", "1")
            assert code == 1 and "UNAVAILABLE" in err
            assert client("names", names, "services") == (0, "kept\n", "")
            assert suite.wait_for(
                lambda: f"names: cannot write {state / 'names.sqlite'}" in suite.output
            )
        finally:
            os.chmod(state, 0o755)
            os.chmod(state / "names.sqlite", 0o644)
        assert suite.stop() in (0, -15)
        again = self.start_suite(names_config(), listeners=2, twistd_args=twistd_args)
        names = f"127.0.0.1:{again.port(f'names {LOCAL}')}"
        assert client("names", names, "services") == (0, "kept\n", "")

    def test_a_config_that_is_not_utf8_is_one_line_and_status_1(self):
        config = self.directory / "suite.toml"
        config.write_bytes(b'[names]\nstore = "caf\xe9"\n')
        result = run(
            [TWISTD, "--nodaemon", "--pidfile=", "suite", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.directory,
        )
        assert (result.returncode, result.stdout, result.stderr) == (
            1,
            "",
            f"error: {config}:2: not UTF-8 (byte 0xe9)\n",
        ), result

    def test_secrets_from_systemd_credentials(self):
        """
        LoadCredential= hands the service copies in $CREDENTIALS_DIRECTORY;
        the config names them.
        """
        pki = make_pki(self.directory)
        credentials = self.directory / "credentials"
        credentials.mkdir(mode=0o700)
        shutil.copy(pki["server_key"], credentials / "server.key")
        (credentials / "names-token").write_text("s3cret\n")
        os.environ["CREDENTIALS_DIRECTORY"] = str(credentials)
        try:
            suite = self.start_suite(
                f"""
                [tls]
                certificate = "{pki["server_crt"]}"
                private_key = "credential:server.key"
                [names]
                listen = ["{LOCAL}"]
                store = "memory"
                token = "credential:names-token"
                [echo]
                listen = []
                tls_listen = ["{LOCAL}"]
            """,
                listeners=2,
            )
        finally:
            del os.environ["CREDENTIALS_DIRECTORY"]
        names = f"127.0.0.1:{suite.port(f'names {LOCAL}')}"
        echo = f"127.0.0.1:{suite.port(f'echo tls_listen {LOCAL}')}"
        assert client("echo", echo, "--tls", "--ca", pki["ca"], "over tls") == (
            0,
            "You said: over tls\n",
            "",
        )
        token_file = self.directory / "token"
        token_file.write_text("s3cret\n")
        assert client(
            "names", names, "register", "echo", "127.0.0.1", "1", "--token-file", token_file
        ) == (0, "", "")
        assert client(
            "names", names, "register", "echo", "127.0.0.1", "2", env={"SUITE_TOKEN": "s3cret"}
        ) == (0, "", "")
        code, _, err = client("names", names, "register", "echo", "127.0.0.1", "3")
        assert code == 1 and "UNAUTHORIZED" in err
        assert "s3cret" not in suite.output

    def test_a_credential_without_credentials_directory_is_one_line(self):
        config = self.directory / "suite.toml"
        config.write_text('[names]\nlisten = ["tcp:0"]\ntoken = "credential:names-token"\n')
        env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
        result = run(
            [TWISTD, "--nodaemon", "--pidfile=", "suite", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.directory,
            env=env,
        )
        assert (result.returncode, result.stderr) == (
            1,
            (
                f'error: {config}: [names] token = "***": $CREDENTIALS_DIRECTORY is not set '
                "(systemd sets it for LoadCredential=)\n"
            ),
        ), result


class WatchAndFailover(ProcessTestCase):
    def test_watch_prints_each_change_until_interrupted(self):
        suite = self.start_suite(names_config(), listeners=2)
        names = f"127.0.0.1:{suite.port(f'names {LOCAL}')}"
        watcher = popen(
            [CLIENT, "names", names, "watch", "echo"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert watcher.stdout.readline() == "echo: (no live instance)\n"
            assert client("names", names, "register", "echo", "127.0.0.1", "7001")[0] == 0
            assert watcher.stdout.readline() == "echo: 127.0.0.1:7001\n"
            assert client("names", names, "register", "echo", "::1", "7002")[0] == 0
            assert watcher.stdout.readline() == "echo: 127.0.0.1:7001 [::1]:7002\n"
            assert client("names", names, "deregister", "echo", "127.0.0.1", "7001")[0] == 0
            assert watcher.stdout.readline() == "echo: [::1]:7002\n"
        finally:
            watcher.send_signal(signal.SIGINT)
            _, err = watcher.communicate(timeout=10)
        assert (watcher.returncode, err) == (130, "suite-client: interrupted\n")

    def test_lookup_fails_over_to_the_next_name_server(self):
        suite = self.start_suite(names_config(), listeners=2)
        names = f"127.0.0.1:{suite.port(f'names {LOCAL}')}"
        echo_port = suite.port(f"echo {LOCAL}")
        assert client("names", names, "register", "echo", "127.0.0.1", echo_port)[0] == 0
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            dead = f"127.0.0.1:{unused.getsockname()[1]}"  # bound, not listening: refused
            assert client("echo", "--lookup", f"{dead},{names}", "hi") == (0, "You said: hi\n", "")
            assert client("echo", "--lookup", f"{dead},{dead}", "hi") == (
                1,
                "",
                f"suite-client: {dead}: connection refused\n",
            )


def dig(port, *arguments) -> list[str]:
    require("dig")
    result = subprocess.run(
        ["dig", "@127.0.0.1", "-p", str(port), "+time=5", "+tries=1", *arguments],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result
    return result.stdout.splitlines()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AnnounceProcessTests(ProcessTestCase):
    def test_announce_lets_dig_find_echo_and_sigterm_removes_it(self):
        dns_port = free_udp_port()
        names = self.start_suite(
            f"""
            [names]
            listen = ["{LOCAL}"]
            dns_listen = ["udp:{dns_port}:interface=127.0.0.1"]
            store = "memory"
        """,
            listeners=2,
        )
        name_server = f"127.0.0.1:{names.port(f'names {LOCAL}')}"
        (self.directory / "echo").mkdir()
        echo = SuiteProcess(
            self.directory / "echo",
            f"""
            [echo]
            listen = ["{LOCAL}"]
            [announce]
            name_server = ["{name_server}"]
            interval = 1
        """,
        )
        self.addCleanup(echo.stop)
        echo.wait_ready(1)
        echo_port = echo.port(f"echo {LOCAL}")
        expected = [f"1 1 {echo_port} 7f000001.addr.suite."]
        deadline = time.monotonic() + 10
        while dig(dns_port, "_echo._tcp.suite", "SRV", "+short") != expected:
            assert time.monotonic() < deadline, "echo was not announced"
            time.sleep(0.1)
        assert echo.stop() in (0, -15)
        # Deregistered before its listener closed: gone at once, not after three failed pings.
        lines = dig(dns_port, "_echo._tcp.suite", "SRV")
        assert any("status: NXDOMAIN" in line for line in lines), lines
        assert f"deregister echo 127.0.0.1:{echo_port}" in names.output

    def test_the_shipped_config_answers_dig_out_of_the_box(self):
        """`make run`, then `dig @127.0.0.1 -p 5354 _echo._tcp.suite SRV`, its ports moved."""
        shipped = Path(__file__).resolve().parents[2] / "etc" / "suite.toml"
        pki = make_pki(self.directory)
        (self.directory / "tls").mkdir()
        shutil.copy(pki["server_crt"], self.directory / "tls" / "server.crt")
        shutil.copy(pki["server_key"], self.directory / "tls" / "server.key")
        ports = free_ports(config_ports(shipped))
        suite = SuiteProcess(self.directory, replace_ports(shipped.read_text(), ports))
        self.addCleanup(suite.stop)
        suite.wait_ready(12)
        deadline = time.monotonic() + 10
        expected = [f"1 1 {ports[5001]} 7f000001.addr.suite."]
        while dig(ports[5354], "_echo._tcp.suite", "SRV", "+short") != expected:
            assert time.monotonic() < deadline, suite.output
            time.sleep(0.1)
        assert client("echo", "--lookup", f"127.0.0.1:{ports[5300]}", "found") == (
            0,
            "You said: found\n",
            "",
        )
        metrics = f"http://127.0.0.1:{ports[9100]}"
        with urllib.request.urlopen(f"{metrics}/health", timeout=5) as response:
            assert json.load(response)["status"] == "ok"
        with urllib.request.urlopen(f"{metrics}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        assert 'suite_dns_queries_total{rcode="NOERROR",service="names",type="SRV"}' in metrics
        assert suite.stop() in (0, -15)


def amp_box(**fields) -> bytes:
    """One AMP box of FIELDS (byte-string values), as any AMP peer would send it."""
    data = b""
    for key, value in fields.items():
        data += len(key).to_bytes(2, "big") + key.encode() + len(value).to_bytes(2, "big") + value
    return data + b"\0\0"


def register_from(source: str, port: int, host: bytes, tag: int) -> dict:
    """
    Register svc at HOST:80 over a raw connection bound to SOURCE; the
    answer box (str values).
    """
    from twisted.protocols.amp import parseString

    with socket.create_connection(
        ("127.0.0.1", port), timeout=10, source_address=(source, 0)
    ) as sock:
        sock.sendall(
            amp_box(
                _command=b"Register", _ask=str(tag).encode(), name=b"svc", host=host, port=b"80"
            )
        )
        data = b""
        for _ in range(100):  # one box, in as many reads as it takes
            data += sock.recv(65536)
            if data.endswith(b"\0\0"):
                break
    [answer] = parseString(data)
    return {key.decode(): value.decode() for key, value in answer.items()}


class WhereTheRegistryMayLookProcess(ProcessTestCase):
    """
    Where the registry may look, against a running name server, the
    attacker at 127.0.0.2 and 127.0.0.3.
    """

    def test_forbidden_registrations_are_invalid_with_the_reason(self):
        suite = self.start_suite(names_config("max_instances_per_source = 2"), listeners=2)
        port = suite.port(f"names {LOCAL}")
        names = f"127.0.0.1:{port}"
        answer = register_from("127.0.0.2", port, b"169.254.169.254", 1)
        assert answer["_error_code"] == "INVALID", answer
        assert answer["_error_description"] == (
            "host '169.254.169.254': 169.254.169.254 is a link-local address, never checked"
        )
        answer = register_from("127.0.0.2", port, b"fe80::1%eth0\n\x1b[2J", 2)
        assert answer["_error_code"] == "INVALID", answer
        assert "\\n\\x1b[2J" in answer["_error_description"], answer
        for tag in (3, 4):
            answer = register_from("127.0.0.3", port, f"127.0.0.{tag}".encode(), tag)
            assert answer == {"_answer": str(tag)}, answer
        answer = register_from("127.0.0.3", port, b"127.0.0.5", 5)
        assert answer["_error_code"] == "INVALID", answer
        assert "max_instances_per_source" in answer["_error_description"], answer
        assert register_from("127.0.0.2", port, b"127.0.0.6", 6) == {"_answer": "6"}
        assert client("names", names, "register", "svc", "0.0.0.0", "80") == (
            1,
            "",
            "suite-client: INVALID: host '0.0.0.0': 0.0.0.0 is an unspecified address, "
            "never checked\n",
        )
        assert client("names", names, "register", "svc", "::1%lo", "80") == (
            1,
            "",
            "suite-client: INVALID: host '::1%lo': an IP address with a scope id (%…) is "
            "not accepted\n",
        )
        suite.wait_for(lambda: "refused" in suite.output)
        assert "\x1b" not in suite.output
        refused = [line for line in suite.lines if "refused:" in line]
        assert len(refused) == 3, refused  # the first from each source; the rest are counted

    def test_client_supplied_text_is_printed_escaped(self):
        suite = self.start_suite(names_config(), listeners=2)
        names = f"127.0.0.1:{suite.port(f'names {LOCAL}')}"
        echo_port = suite.port(f"echo {LOCAL}")
        assert client(
            "names",
            names,
            "register",
            "echo",
            "127.0.0.1",
            echo_port,
            "--description",
            "ok\nforged\x1b[2J\u202e",
        ) == (0, "", "")
        assert client("names", names, "lookup", "echo") == (
            0,
            f"127.0.0.1:{echo_port}\tok\\nforged\\x1b[2J\\u202e\n",
            "",
        )
        assert "\x1b" not in suite.output and "\u202e" not in suite.output
