"""
The first hour, as a new user has it: `pip install` of the suite into a new
virtualenv outside the checkout, `suite init DIR`, then twistd started from
another directory serves every service of the config init wrote.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.process import (
    CHECKOUT,
    config_ports,
    free_ports,
    popen,
    replace_ports,
    run,
    source_copy,
    stop_process,
)

PIP_TIMEOUT = 600


def exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


class FreshInstall(SynchronousTestCase):
    def setUp(self):
        self.directory = Path(tempfile.mkdtemp(prefix="suite-install-"))
        self.addCleanup(subprocess.run, ["rm", "-rf", str(self.directory)])

    def pip_install(self) -> Path:
        """A new virtualenv with the suite pip-installed from the checkout (not editable)."""
        venv = self.directory / "venv"
        base = getattr(sys, "_base_executable", sys.executable)
        run([base, "-m", "venv", str(venv)], check=True, timeout=120)
        installed = run(
            [str(venv / "bin" / "pip"), "install", "--quiet", str(source_copy(self.directory))],
            capture_output=True,
            text=True,
            timeout=PIP_TIMEOUT,
            cwd=self.directory,
        )
        self.assertEqual(installed.returncode, 0, installed.stdout + installed.stderr)
        return venv / "bin"

    def test_pip_install_then_init_serves_every_service(self):
        bin = self.pip_install()
        target = self.directory / "x"
        made = run(
            [str(bin / "suite"), "init", str(target)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
        )
        self.assertEqual(made.returncode, 0, made.stdout + made.stderr)
        config = target / "suite.toml"
        self.assertEqual(config.read_bytes(), (CHECKOUT / "etc" / "suite.toml").read_bytes())
        ports = free_ports(config_ports(config))
        config.write_text(replace_ports(config.read_text(), ports))
        checked = run(
            [str(bin / "suite"), "check", str(config)], capture_output=True, text=True, timeout=60
        )
        self.assertEqual(checked.stdout, f"{config}: ok (timestamp, echo, logger, sleep, names)\n")

        suite = popen(
            [str(bin / "twistd"), "--nodaemon", "--pidfile=", "suite", "--config", str(config)],
            cwd="/",
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.addCleanup(stop_process, suite)
        lines = []
        for line in suite.stdout:
            lines.append(line)
            if "suite ready" in line or len(lines) > 200:
                break
        self.assertIn("suite ready: 14 listeners", "".join(lines), "".join(lines))

        stamp = exchange(ports[12345], b"hello\n")
        self.assertRegex(stamp, rb"^\[.+\] hello\r\n$")
        self.assertEqual(exchange(ports[5001], b"hi\n"), b"You said: hi\r\n")
        exchange(ports[5140], b"<13>1 - host app - - - first hour\n")
        client = [str(bin / "suite-client")]
        slept = run(
            [*client, "sleep", f"127.0.0.1:{ports[5200]}", "0.01"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        self.assertEqual(slept.returncode, 0, slept.stderr)
        found = run(
            [*client, "names", f"127.0.0.1:{ports[5300]}", "lookup", "echo"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        self.assertEqual(found.stdout, f"127.0.0.1:{ports[5001]}\ttcp\n", found.stderr)
        with urllib.request.urlopen(f"http://127.0.0.1:{ports[9100]}/health", timeout=10) as got:
            self.assertEqual(json.load(got)["status"], "ok")
        shown = run(
            [str(bin / "suite"), "status", f"127.0.0.1:{ports[9100]}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        self.assertEqual(shown.returncode, 0, shown.stderr)
        self.assertRegex(shown.stdout, r"(?m)^names +ok +\d+ instances")

        suite.terminate()
        rest, _ = suite.communicate(timeout=15)
        records = [json.loads(line) for line in (target / "log" / "messages.jsonl").open()]
        self.assertIn("first hour", [record.get("message") for record in records])
        self.assertTrue((target / "data" / "names.sqlite").exists())
        self.assertNotIn("Traceback", "".join(lines) + rest)
