"""End to end: `twistd … suite` as an operator runs it, driven by real clients."""

import os
import re
import signal
import socket
import ssl
import subprocess
import time

from twisted.trial.unittest import SkipTest

from tests.e2e.process import TWISTD, ProcessTestCase, busy_port, require, run, source_copy
from tests.helpers import make_pki, tls_section

LOCAL = "tcp:0:interface=127.0.0.1"
LOCAL_UDP = "udp:0:interface=127.0.0.1"
STAMP = rb"\[\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\]"


def talk(port, data, shutdown=True, timeout=5) -> bytes:
    """Send DATA over TCP, optionally half-close, read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if shutdown:
            sock.shutdown(socket.SHUT_WR)
        return read_all(sock)


def read_all(sock) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def udp(port, payload, timeout=5) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(payload, ("127.0.0.1", port))
        return sock.recvfrom(65536)[0]


PLAIN = f"""
    [timestamp]
    listen = ["{LOCAL}", "{LOCAL_UDP}"]
    [echo]
    listen = ["{LOCAL}", "{LOCAL_UDP}"]
"""


class PlainTests(ProcessTestCase):
    def test_tcp_and_udp(self):
        suite = self.start_suite(PLAIN, listeners=4)
        ts = talk(suite.port(f"timestamp {LOCAL}"), b"hello\r\nworld\n")
        assert re.fullmatch(STAMP + rb" hello\r\n" + STAMP + rb" world\r\n", ts)
        echo = talk(suite.port(f"echo {LOCAL}"), b"hi\nquit\nignored\n")
        assert echo == b"You said: hi\r\nGoodbye.\r\n"
        assert re.fullmatch(
            STAMP + rb" ping", udp(suite.port(f"timestamp {LOCAL_UDP}"), b"ping\n")
        )
        assert udp(suite.port(f"echo {LOCAL_UDP}"), b"\x00\xffraw\n") == b"\x00\xffraw\n"

    def test_nc_half_close_gets_the_last_line_answered(self):
        require("nc")
        suite = self.start_suite(PLAIN, listeners=4)
        out = subprocess.run(
            ["nc", "-N", "127.0.0.1", str(suite.port(f"echo {LOCAL}"))],
            input=b"no newline at the end",
            capture_output=True,
            timeout=10,
        ).stdout
        assert out == b"You said: no newline at the end\r\n"

    def stops_cleanly_within_5_seconds(self, signal_number):
        suite = self.start_suite(PLAIN, listeners=4)
        started = time.monotonic()
        suite.process.send_signal(signal_number)
        status = suite.wait(timeout=10)
        assert time.monotonic() - started < 5
        # twistd re-raises the signal after a clean shutdown: systemd counts that as clean.
        assert status in (0, -signal_number)
        assert "Server Shut Down." in suite.output
        assert "Traceback" not in suite.output

    def test_sigterm_exits_cleanly_within_5_seconds(self):
        self.stops_cleanly_within_5_seconds(signal.SIGTERM)

    def test_sigint_exits_cleanly_within_5_seconds(self):
        self.stops_cleanly_within_5_seconds(signal.SIGINT)


class RefusalsTests(ProcessTestCase):
    def test_port_in_use_names_service_and_endpoint(self):
        with busy_port() as port:
            suite = self.start_suite(f'[echo]\nlisten = ["tcp:{port}:interface=127.0.0.1"]\n', 0)
            assert suite.wait() == 1
        assert (
            f"echo: cannot listen on tcp:{port}:interface=127.0.0.1: Address already in use"
            in (suite.output)
        )
        assert "Traceback" not in suite.output

    def test_bad_config_is_one_line_and_status_1(self):
        config = self.directory / "suite.toml"
        config.write_text('[echo]\nmode = "loud"\n')
        result = run(
            [TWISTD, "--nodaemon", "--pidfile=", "suite", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=self.directory,
        )
        assert result.returncode == 1
        assert result.stdout == ""
        assert (
            result.stderr == f'error: {config}: [echo] mode = "loud": must be one of line, raw\n'
        )

    def test_plugins_listed_without_traceback(self):
        result = run([TWISTD, "--help"], capture_output=True, text=True, timeout=60)
        listed = re.findall(r"^\s+(suite[\w-]*)\s", result.stdout, re.M)
        assert sorted(listed) == [
            "suite",
            "suite-echo",
            "suite-logger",
            "suite-names",
            "suite-sleep",
            "suite-timestamp",
        ]
        assert "Traceback" not in result.stdout + result.stderr


def tls_config(pki, mutual, min_version="1.2"):
    client_ca = pki["ca"] if mutual else ""
    return (
        tls_section(pki, client_ca=client_ca, min_version=min_version)
        + f"""
        [echo]
        listen = []
        tls_listen = ["{LOCAL}"]
        [timestamp]
        listen = []
        tls_listen = ["{LOCAL}"]
    """
    )


def tls_client(pki, certificate=None, maximum=None):
    context = ssl.create_default_context(cafile=pki["ca"])
    if certificate:
        context.load_cert_chain(pki[certificate + "_crt"], pki[certificate + "_key"])
    if maximum:
        context.maximum_version = maximum
    return context


def tls_talk(context, port, data, source="127.0.0.1") -> bytes:
    """DATA over TLS from the loopback address SOURCE; what came back before the close."""
    with socket.create_connection(
        ("127.0.0.1", port), timeout=5, source_address=(source, 0)
    ) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(data)
            chunks = []
            try:
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
            except ssl.SSLEOFError:
                pass
            return b"".join(chunks)


class TLSTests(ProcessTestCase):
    def test_tls_listeners_answer(self):
        pki = make_pki(self.directory)
        suite = self.start_suite(tls_config(pki, mutual=False), listeners=2)
        context = tls_client(pki)
        assert tls_talk(context, suite.port(f"echo tls_listen {LOCAL}"), b"sec\nquit\n") == (
            b"You said: sec\r\nGoodbye.\r\n"
        )
        port = suite.port(f"timestamp tls_listen {LOCAL}")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as sock:
                sock.sendall(b"over tls\n")
                assert re.fullmatch(STAMP + rb" over tls\r\n", sock.recv(1024))

    def test_openssl_s_client(self):
        require("openssl")
        pki = make_pki(self.directory)
        suite = self.start_suite(tls_config(pki, mutual=True), listeners=2)
        port = suite.port(f"echo tls_listen {LOCAL}")
        command = [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-quiet",
            "-CAfile",
            pki["ca"],
            "-verify_return_error",
            "-verify_hostname",
            "localhost",
        ]
        good = subprocess.run(
            command + ["-cert", pki["client_crt"], "-key", pki["client_key"]],
            input=b"from openssl\nquit\n",
            capture_output=True,
            timeout=20,
        )
        assert good.stdout == b"You said: from openssl\r\nGoodbye.\r\n"
        refused = subprocess.run(
            command, input=b"no certificate\nquit\n", capture_output=True, timeout=20
        )
        assert b"You said" not in refused.stdout

    def test_mutual_tls_needs_a_certificate_signed_by_client_ca(self):
        pki = make_pki(self.directory)
        suite = self.start_suite(tls_config(pki, mutual=True), listeners=2)
        port = suite.port(f"echo tls_listen {LOCAL}")
        assert tls_talk(tls_client(pki, "client"), port, b"me\nquit\n") == (
            b"You said: me\r\nGoodbye.\r\n"
        )
        for certificate, source in ((None, "127.0.0.2"), ("stranger", "127.0.0.3")):
            with self.assertRaises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
                answer = tls_talk(tls_client(pki, certificate), port, b"me\nquit\n", source)
                assert b"You said" not in answer
                raise ConnectionResetError("closed without an answer")
        # Each failed handshake is logged with the peer and OpenSSL's reason.
        for source, reason in (
            ("127.0.0.2", "peer did not return a certificate"),
            ("127.0.0.3", "certificate verify failed"),
        ):
            assert suite.wait_for(
                lambda source=source, reason=reason: re.search(
                    rf"echo: TLS handshake with {source}:\d+ failed: .*{reason}", suite.output
                )
            ), suite.output
        with socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.4", 0)) as raw:
            raw.sendall(b"GET / HTTP/1.0\r\n\r\n")  # plaintext on a TLS port
            assert read_all(raw) in (b"", b"\x15\x03\x01\x00\x02\x02\x32")
        assert suite.wait_for(
            lambda: re.search(
                r"echo: TLS handshake with 127\.0\.0\.4:\d+ failed: "
                r".*(http request|wrong version)",
                suite.output,
            )
        ), suite.output

    def test_min_version_1_3_refuses_tls_1_2(self):
        pki = make_pki(self.directory)
        suite = self.start_suite(tls_config(pki, mutual=False, min_version="1.3"), listeners=2)
        port = suite.port(f"echo tls_listen {LOCAL}")
        with self.assertRaises(ssl.SSLError):
            tls_talk(tls_client(pki, maximum=ssl.TLSVersion.TLSv1_2), port, b"old\n")
        assert tls_talk(tls_client(pki), port, b"new\nquit\n") == b"You said: new\r\nGoodbye.\r\n"
        assert suite.wait_for(
            lambda: re.search(
                r"echo: TLS handshake with 127\.0\.0\.1:\d+ failed: .*unsupported protocol",
                suite.output,
            )
        ), suite.output


def rss_kib(pid) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


class MemoryTests(ProcessTestCase):
    def test_raw_echo_memory_stays_bounded_against_a_client_that_never_reads(self):
        if not os.path.exists("/proc/self/status"):
            raise SkipTest("needs /proc")
        suite = self.start_suite(f'[echo]\nlisten = ["{LOCAL}"]\nmode = "raw"\n', listeners=1)
        before = rss_kib(suite.process.pid)
        chunk = b"x" * 2**20
        sent = 0
        with socket.create_connection(("127.0.0.1", suite.port(f"echo {LOCAL}"))) as sock:
            sock.settimeout(0.5)
            deadline = time.monotonic() + 5
            while sent < 300 * 2**20 and time.monotonic() < deadline:
                try:
                    sent += sock.send(chunk)
                except TimeoutError:
                    pass
            grown = rss_kib(suite.process.pid) - before
        assert sent < 64 * 2**20, f"the server kept reading: {sent} bytes accepted"
        assert grown < 32 * 1024, f"server memory grew by {grown} KiB"


class PackagingTests(ProcessTestCase):
    def test_plain_install_ships_the_plugin_module_and_no_twisted_init(self):
        """`pip install .` (not editable) puts the plugin file under twisted/plugins/."""
        root = str(source_copy(self.directory))
        target = self.directory / "site"
        subprocess.run(
            [
                os.path.join(os.path.dirname(TWISTD), "pip"),
                "install",
                "--quiet",
                "--no-deps",
                "--target",
                str(target),
                root,
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
        assert (target / "twisted" / "plugins" / "suite_plugins.py").is_file()
        assert (target / "suite" / "timestamp" / "service.py").is_file()
        assert not (target / "twisted" / "__init__.py").exists()
        assert not (target / "twisted" / "plugins" / "__init__.py").exists()
