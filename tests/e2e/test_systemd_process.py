"""
End to end under systemd's tools: units verified and scored by
systemd-analyze, the suite run under the units' system-call filter and by
(nested) systemd-socket-activate, readiness over NOTIFY_SOCKET, journald
priorities, SIGHUP.
"""

import ctypes.util
import functools
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from tests.e2e.process import (
    LISTENING,
    TWISTD,
    ProcessTestCase,
    SuiteProcess,
    busy_port,
    require,
)
from tests.helpers import make_pki, tls_section

UNITS = Path(__file__).resolve().parents[2] / "etc" / "systemd"
DROP_INS = UNITS / "socket-activation" / "suite.service.d"
LOCAL = "tcp:0:interface=127.0.0.1"
HIGHEST_EXPOSURE = 1.5  # `systemd-analyze security`: 0 is best, 10 worst


def unit_files():
    return sorted(UNITS.glob("*.s*")) + sorted((UNITS / "socket-activation").glob("*.socket"))


def load_credentials(*units: str) -> dict[str, str]:
    """
    The credentials UNITS (a unit's text, then its drop-ins' in order) hand
    the service: LoadCredential=NAME:PATH, name -> path; an empty
    LoadCredential= drops the earlier ones, as in systemd.
    """
    loaded: dict[str, str] = {}
    for text in units:
        for value in re.findall(r"^LoadCredential=(.*)$", text, re.M):
            if not value:
                loaded.clear()
                continue
            name, path = value.split(":", 1)
            loaded[name] = path
    return loaded


# Keys whose values are secrets or files of secrets.
SECRETS = ("certificate", "private_key", "client_ca", "ca", "token", "token_file")


def secrets_named(config: dict) -> dict[str, str]:
    """Every non-empty secret of CONFIG (parsed TOML): "[section] key" -> value."""
    return {
        f"[{section}] {key}": value
        for section, table in config.items()
        if isinstance(table, dict)
        for key, value in table.items()
        if key in SECRETS and value
    }


# Loads a seccomp filter allowing only the system calls in argv[1] (others
# fail with EPERM, as SystemCallErrorNumber=EPERM says), then execs argv[2:].
UNDER_FILTER = """
import ctypes, errno, os, sys
seccomp = ctypes.CDLL("libseccomp.so.2")
seccomp.seccomp_init.restype = ctypes.c_void_p
seccomp.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
seccomp.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
seccomp.seccomp_load.argtypes = [ctypes.c_void_p]
context = seccomp.seccomp_init(0x00050000 | errno.EPERM)
for name in sys.argv[1].split():
    number = seccomp.seccomp_syscall_resolve_name(name.encode())
    if number >= 0:  # negative: not a system call of this architecture
        seccomp.seccomp_rule_add(context, 0x7FFF0000, number, 0)
if seccomp.seccomp_load(context) != 0:
    sys.exit("cannot load the seccomp filter")
os.execv(sys.argv[2], sys.argv[2:])
"""


@functools.cache
def system_call_set(entry: str) -> frozenset[str]:
    """The system calls ENTRY (a name or an @group, groups nested) stands for in systemd."""
    if not entry.startswith("@"):
        return frozenset([entry])
    listed = subprocess.run(
        ["systemd-analyze", "syscall-filter", entry],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.splitlines()[1:]
    names = [line.strip() for line in listed if line.strip() and not line.strip().startswith("#")]
    return frozenset().union(*(system_call_set(name) for name in names))


def allowed_system_calls(unit: Path) -> str:
    """
    The calls UNIT's SystemCallFilter= lines allow: its allow list (and
    @default) minus its ~ lists.
    """
    allowed, denied = set(system_call_set("@default")), set()
    for line in unit.read_text().splitlines():
        if line.startswith("SystemCallFilter="):
            value = line.split("=", 1)[1]
            into = denied if value.startswith("~") else allowed
            for entry in value.removeprefix("~").split():
                into |= system_call_set(entry)
    assert allowed > system_call_set("@default") and denied, f"{unit} has no system-call filter"
    return " ".join(sorted(allowed - denied))


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def connect_when_listening(port, timeout=15):
    """Connect once systemd-socket-activate has bound PORT (retried every 50 ms)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=timeout)
        except ConnectionRefusedError:
            assert time.monotonic() < deadline, f"nothing listens on {port}"
            time.sleep(0.05)


def read_all(sock) -> bytes:
    """Everything SOCK receives until the server closes it."""
    received = b""
    while chunk := sock.recv(1024):
        received += chunk
    return received


def stop(process) -> str:
    """SIGTERM, then everything the process wrote."""
    process.send_signal(signal.SIGTERM)
    return process.communicate(timeout=15)[0].decode()


class SystemdProcessTests(ProcessTestCase):
    def test_units_pass_systemd_analyze_verify(self):
        require("systemd-analyze")
        for unit in unit_files():
            text = unit.read_text().replace("/opt/suite/bin/twistd", TWISTD)
            (self.directory / unit.name).write_text(text)
        names = [unit.name for unit in unit_files()]
        assert "suite.service" in names and "suite.socket" in names
        assert "\nWatchdogSec=30\n" in (UNITS / "suite.service").read_text()
        # The per-core template, verified as the instances
        # `systemctl enable suite@0 suite@1` makes.
        template = (
            (UNITS / "per-core" / "suite@.service")
            .read_text()
            .replace("/opt/suite/bin/twistd", TWISTD)
        )
        for core in (0, 1):
            (self.directory / f"suite@{core}.service").write_text(template)
            names.append(f"suite@{core}.service")
        result = subprocess.run(
            ["systemd-analyze", "verify", *names],
            cwd=self.directory,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
        for name in ("suite.service", "suite@0.service"):
            result = subprocess.run(
                ["systemd-analyze", "security", "--offline=true", "--no-pager", name],
                cwd=self.directory,
                capture_output=True,
                text=True,
                timeout=60,
            )
            exposure = re.search(rf"Overall exposure level for {name}: (\d+\.\d)", result.stdout)
            assert exposure, result
            assert float(exposure[1]) <= HIGHEST_EXPOSURE, result.stdout

    def activate(self, config, host="127.0.0.1", credentials=None):
        """
        The suite under nested systemd-socket-activate, as the shipped units
        pass them: timestamp-tcp and echo-tls (stream), timestamp-udp
        (datagram), bound on HOST, with $CREDENTIALS_DIRECTORY set to
        CREDENTIALS if given (systemd-socket-activate passes on only the
        environment its -E names).  Returns the process and the three ports
        once the first line sent to timestamp-tcp has woken the process.
        """
        require("systemd-socket-activate")
        tcp, tls, udp = free_port(), free_port(), free_port(socket.SOCK_DGRAM)
        path = self.directory / "suite.toml"
        path.write_text(config)
        names = "timestamp-tcp:echo-tls:timestamp-udp"
        listen = f"[{host}]" if ":" in host else host
        outer, inner = [], []
        if credentials is not None:
            outer = ["-E", f"CREDENTIALS_DIRECTORY={credentials}"]
            inner = ["-E", "CREDENTIALS_DIRECTORY"]
        command = [
            "systemd-socket-activate",
            "-l",
            f"{listen}:{tcp}",
            "-l",
            f"{listen}:{tls}",
            "--fdname=timestamp-tcp:echo-tls",
            *outer,
            "--",
            "systemd-socket-activate",
            "-d",
            "-l",
            f"{listen}:{udp}",
            f"--fdname={names}",
            *inner,
            "--",
            TWISTD,
            "--nodaemon",
            "--pidfile=",
            "suite",
            "--config",
            str(path),
        ]
        process = subprocess.Popen(
            command, cwd=self.directory, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self.addCleanup(lambda: process.poll() is None and process.kill())
        stream = connect_when_listening(tcp)
        self.addCleanup(stream.close)
        stream.sendall(b"activated\n")  # the first connection starts the next stage
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as datagram:
            datagram.settimeout(0.5)
            deadline = time.monotonic() + 15
            while True:  # the inner stage starts on the first datagram; resend until answered
                datagram.sendto(b"over udp", ("127.0.0.1", udp))
                try:
                    reply = datagram.recv(1024)
                    break
                except TimeoutError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        return process, None, None
            assert re.fullmatch(rb"\[[^]]+\] over udp", reply)
        assert re.fullmatch(rb"\[[^]]+\] activated\r\n", stream.recv(1024))
        return process, stream, tls

    def test_socket_activated_tcp_udp_and_tls(self):
        pki = make_pki(self.directory)
        process, _, tls = self.activate(
            tls_section(pki)
            + """
[timestamp]
listen = ["systemd:domain=INET:name=timestamp-tcp", "systemd-udp:name=timestamp-udp"]
format = "epoch"
[echo]
listen = []
tls_listen = ["systemd:domain=INET:name=echo-tls"]
"""
        )
        try:
            context = ssl.create_default_context(cafile=pki["ca"])
            with socket.create_connection(("127.0.0.1", tls), timeout=15) as raw:
                with context.wrap_socket(raw, server_hostname="localhost") as sock:
                    sock.sendall(b"tls via systemd\nquit\n")
                    answer = b""
                    while chunk := sock.recv(1024):
                        answer += chunk
                    assert answer == b"You said: tls via systemd\r\nGoodbye.\r\n"
        finally:
            output = stop(process)
        assert "timestamp listening on systemd-udp:name=timestamp-udp" in output
        assert "Traceback" not in output

    def shipped_credentials(self) -> Path:
        """
        The credentials suite.service loads, as a $CREDENTIALS_DIRECTORY: a
        test pair in place of the files under /etc/suite/tls.
        """
        pki = make_pki(self.directory)
        credentials = self.directory / "credentials"
        credentials.mkdir()
        for name, path in load_credentials((UNITS / "suite.service").read_text()).items():
            if path.startswith("/etc/suite/tls/"):
                shutil.copy(pki[Path(path).name.replace(".", "_")], credentials / name)
        return credentials

    def test_shipped_socket_units_and_config_agree(self):
        """
        A bare `ListenStream=PORT` is a dual-stack IPv6 socket: the config
        says INET6.  The unit runs as a DynamicUser, which cannot read the
        root-only files in /etc/suite: every secret the config names is one
        of the unit's LoadCredential= copies.
        """
        config = (UNITS / "socket-activation" / "suite.toml").read_text()
        loaded = load_credentials(
            (UNITS / "suite.service").read_text(),
            *(path.read_text() for path in sorted(DROP_INS.glob("*.conf"))),
        )
        named = secrets_named(tomllib.loads(config))
        assert {"[tls] certificate", "[tls] private_key"} <= named.keys(), named
        for key, value in named.items():
            assert value.startswith("credential:"), f"{key} = {value!r}: not a credential"
            assert value.removeprefix("credential:") in loaded, (
                f"{key} = {value!r}: no LoadCredential= of suite.service loads it"
            )
        for unit in unit_files():
            if unit.suffix != ".socket":
                continue
            settings = dict(
                line.split("=", 1)
                for line in unit.read_text().splitlines()
                if "=" in line and not line.startswith("#")
            )
            name = settings["FileDescriptorName"]
            listen = settings.get("ListenStream") or settings["ListenDatagram"]
            assert listen.isdigit(), f"{unit.name}: {listen}"
            expected = (
                f"systemd:domain=INET6:name={name}"
                if "ListenStream" in settings
                else f"systemd-udp:name={name}"
            )
            assert f'"{expected}"' in config, f"{unit.name}: {expected} not in the config"
        # v4 clients of such a socket arrive v4-mapped; they are shown as plain IPv4.
        process, stream, _ = self.activate(
            config, host="::ffff:127.0.0.1", credentials=self.shipped_credentials()
        )
        try:
            stream.sendall(b"x" * 9000)
            assert stream.recv(1024) == b"ERROR line longer than 8192 bytes\r\n"
        finally:
            output = stop(process)
        peer = f"127.0.0.1:{stream.getsockname()[1]}"
        assert f"timestamp: closing {peer}: line longer than 8192 bytes" in output, output
        logged = [line for line in output.splitlines() if line[:4].isdigit()]  # twistd's own lines
        assert logged and not any("::ffff" in line for line in logged), output
        assert "Traceback" not in output

    def test_a_domain_that_does_not_match_the_passed_socket_is_refused(self):
        config = (UNITS / "socket-activation" / "suite.toml").read_text()
        process, stream, _ = self.activate(
            config.replace("domain=INET6", "domain=INET"),
            host="::ffff:127.0.0.1",
            credentials=self.shipped_credentials(),
        )
        output = process.communicate(timeout=15)[0].decode()
        assert process.returncode != 0 and stream is None
        assert (
            'listen = "systemd:domain=INET:name=timestamp-tcp": bad endpoint: systemd passed an '
            "INET6 socket, but the endpoint says domain=INET (write domain=INET6)"
        ) in output, output
        assert "Traceback" not in output

    def test_ready_is_notified_only_once_every_listener_answers(self):
        path = str(self.directory / "notify.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            notify.bind(path)
            notify.settimeout(20)
            os.environ["NOTIFY_SOCKET"] = path
            try:
                suite = SuiteProcess(
                    self.directory,
                    f"""
                    [timestamp]
                    listen = ["{LOCAL}", "udp:0:interface=127.0.0.1"]
                    [echo]
                    listen = ["{LOCAL}"]
                    [sleep]
                    listen = ["{LOCAL}"]
                """,
                )
            finally:
                del os.environ["NOTIFY_SOCKET"]
            try:
                assert notify.recv(100) == b"READY=1"
                # Everything is bound by now: each stream port accepts at once.
                assert suite.wait_for(lambda: len(suite.ports) == 4, timeout=1)
                for name in suite.ports:
                    if "udp" not in name:
                        socket.create_connection(
                            ("127.0.0.1", suite.port(name)), timeout=1
                        ).close()
            finally:
                suite.stop()
            assert notify.recv(100) == b"STOPPING=1"

    def test_sighup_without_a_logger_keeps_running(self):
        suite = self.start_suite(f'[echo]\nlisten = ["{LOCAL}"]\n', listeners=1)
        assert "suite ready: 1 listener\n" in suite.output + "\n"
        suite.process.send_signal(signal.SIGHUP)
        assert suite.wait_for(lambda: "SIGHUP: reopening files" in suite.output)
        with socket.create_connection(
            ("127.0.0.1", suite.port(f"echo {LOCAL}")), timeout=5
        ) as sock:
            sock.sendall(b"still here\n")
            assert sock.recv(100) == b"You said: still here\r\n"

    def journald_priorities_only_when_journal_stream_matches(self, journal):
        with busy_port() as port:
            config = self.directory / "suite.toml"
            config.write_text(f'[echo]\nlisten = ["tcp:{port}:interface=127.0.0.1"]\n')
            twistd = (
                f"{TWISTD} --nodaemon --pidfile= --logger=suite.journal.observer"
                f" suite --config {config}"
            )
            if journal:
                twistd = f'JOURNAL_STREAM="$(stat -L -c %d:%i /proc/$$/fd/1)" exec {twistd}'
            result = subprocess.run(
                ["sh", "-c", twistd], capture_output=True, text=True, timeout=60
            )
        assert result.returncode == 1
        failure = (
            f"[suite.app.lifecycle#critical] echo: cannot listen on tcp:{port}:interface=127.0.0.1"
        )
        lines = result.stdout.splitlines()
        if journal:
            assert f"<2>{failure}: Address already in use" in lines
            assert all(re.match(r"<[2-7]>", line) for line in lines)
            assert any(
                line.startswith("<6>[twisted.scripts._twistd_unix.UnixAppLogger#info]")
                for line in lines
            )
        else:
            assert any(line.endswith(f" {failure}: Address already in use") for line in lines)
            assert not any(line.startswith("<") for line in lines)

    def test_journald_priorities_when_standard_output_is_the_journal(self):
        self.journald_priorities_only_when_journal_stream_matches(journal=True)

    def test_plain_lines_when_standard_output_is_not_the_journal(self):
        self.journald_priorities_only_when_journal_stream_matches(journal=False)


class UnderTheUnitsFilter(ProcessTestCase):
    """
    The suite under the system-call filter suite.service sets, emulated with
    libseccomp (no systemd runs here): every service answers, SIGHUP reopens
    the output, SIGTERM stops it cleanly, and nothing is refused.
    """

    def setUp(self):
        super().setUp()
        require("systemd-analyze")
        if ctypes.util.find_library("seccomp") is None:
            self.skipTest("libseccomp2 is not installed")
        self.allowed = allowed_system_calls(UNITS / "suite.service")

    def under_filter(self, *command):
        return [sys.executable, "-c", UNDER_FILTER, self.allowed, *command]

    def test_the_filter_refuses_what_the_unit_takes_away(self):
        """setpriority is in @system-service but not allowed by `~@resources`."""
        lower = [sys.executable, "-c", "import os; os.setpriority(os.PRIO_PROCESS, 0, 19)"]
        assert subprocess.run(lower, timeout=60).returncode == 0
        refused = subprocess.run(
            self.under_filter(*lower), capture_output=True, text=True, timeout=60
        )
        assert refused.returncode != 0 and "Operation not permitted" in refused.stderr, refused

    def test_the_per_core_units_filter_is_the_same(self):
        template = UNITS / "per-core" / "suite@.service"
        assert allowed_system_calls(template) == self.allowed

    def test_every_service_runs_under_it(self):
        self.every_service_runs_under_it(workers=1)

    def test_every_service_runs_under_it_with_workers(self):
        """The parent spawns two workers (fork, exec, the sockets passed) under the filter."""
        self.every_service_runs_under_it(workers=2)

    def every_service_runs_under_it(self, workers):
        pki = make_pki(self.directory)
        output = self.directory / "messages.jsonl"
        unix = self.directory / "echo.sock"
        config = self.directory / "suite.toml"
        config.write_text(
            f"workers = {workers}\n"
            + tls_section(pki)
            + f"""
[timestamp]
listen = ["{LOCAL}", "udp:0:interface=127.0.0.1"]
[echo]
listen = ["unix:{unix}"]
tls_listen = ["{LOCAL}"]
[logger]
listen = ["{LOCAL}"]
output = "{output}"
[sleep]
listen = ["{LOCAL}"]
[names]
listen = ["{LOCAL}"]
dns_listen = ["udp:0:interface=127.0.0.1"]
store = "sqlite:{self.directory / "names.sqlite"}"
[metrics]
listen = ["{LOCAL}"]
"""
        )
        log = self.directory / "twistd.out"
        with open(log, "w") as stdout:
            process = subprocess.Popen(
                self.under_filter(
                    TWISTD, "--nodaemon", "--pidfile=", "suite", "--config", str(config)
                ),
                cwd=self.directory,
                stdout=stdout,
                stderr=subprocess.STDOUT,
            )
        self.addCleanup(lambda: process.poll() is None and process.kill())
        deadline = time.monotonic() + 30
        while "[suite.app.lifecycle#info] suite ready" not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        status = Path(f"/proc/{process.pid}/status").read_text()
        assert re.search(r"^Seccomp:\s+2$", status, re.M), status  # filtered: twistd itself
        listening = filter(None, map(LISTENING.search, log.read_text().splitlines()))
        ports = {
            f"{found[1]} {found[2]}": int(found[3].rsplit(":", 1)[1])
            for found in listening
            if found[3].startswith("127.0.0.1:")
        }

        context = ssl.create_default_context(cafile=pki["ca"])
        with socket.create_connection(
            ("127.0.0.1", ports[f"echo tls_listen {LOCAL}"]), timeout=15
        ) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as sock:
                sock.sendall(b"filtered\nquit\n")
                assert read_all(sock) == b"You said: filtered\r\nGoodbye.\r\n"
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(15)
            sock.connect(str(unix))
            sock.sendall(b"local\nquit\n")
            assert read_all(sock) == b"You said: local\r\nGoodbye.\r\n"
        with socket.create_connection(("127.0.0.1", ports[f"logger {LOCAL}"]), timeout=15) as sock:
            sock.sendall(b"<13>Oct 11 22:14:15 host app: under seccomp\n")
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while log.read_text().count("SIGHUP: reopening files") < workers + (workers > 1):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) in (0, -signal.SIGTERM), log.read_text()
        text = log.read_text()
        assert "Operation not permitted" not in text and "Traceback" not in text, text
        assert "under seccomp" in output.read_text(), text


class ActivatedDNS(ProcessTestCase):
    def test_the_dns_side_on_a_socket_systemd_passes(self):
        require("systemd-socket-activate")
        require("dig")
        port = free_port(socket.SOCK_DGRAM)
        path = self.directory / "suite.toml"
        path.write_text("""
[names]
listen = ["tcp:0:interface=127.0.0.1"]
dns_listen = ["systemd-udp:name=names-dns"]
store = "memory"
""")
        process = subprocess.Popen(
            [
                "systemd-socket-activate",
                "-d",
                "-l",
                f"127.0.0.1:{port}",
                "--fdname=names-dns",
                "--",
                TWISTD,
                "--nodaemon",
                "--pidfile=",
                "suite",
                "--config",
                str(path),
            ],
            cwd=self.directory,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.addCleanup(lambda: process.poll() is None and process.kill())
        # The first datagram starts the suite; dig asks again until it answers.
        result = subprocess.run(
            [
                "dig",
                "@127.0.0.1",
                "-p",
                str(port),
                "+tries=15",
                "+time=1",
                "suite",
                "SOA",
                "+short",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        output = stop(process)
        assert result.stdout == "ns.suite. hostmaster.suite. 1 3600 600 86400 5\n", (
            result,
            output,
        )
        assert "names listening on dns_listen systemd-udp:name=names-dns" in output
