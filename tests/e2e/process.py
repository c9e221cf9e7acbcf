"""Start real `twistd --nodaemon --pidfile= suite --config FILE` processes."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import tomllib
from contextlib import contextmanager
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
LISTENING = re.compile(r"(\S+) listening on (.+) \((.+)\)$")
# The signals a person or a service manager stops a process with.  A test
# runner started in the background by a script (`make test &`, nohup) has
# some of them ignored, and an ignored signal stays ignored across fork and
# exec: a twistd or suite-client started from it would then shrug off the
# very SIGINT or SIGTERM a test sends it.  (SIGPIPE subprocess already
# restores.)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def default_stop_signals() -> None:
    """
    In the child, between fork and exec: the stop signals back to their
    default action, whatever the test runner inherited.  Only C-level
    signal calls, no import and no lock, which is what makes a preexec_fn
    safe in a runner that has threads.
    """
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_DFL)


def popen(args, **options) -> subprocess.Popen:
    """subprocess.Popen, the child's stop signals at their default action."""
    return subprocess.Popen(args, preexec_fn=default_stop_signals, **options)


def run(args, **options) -> subprocess.CompletedProcess:
    """subprocess.run, the child's stop signals at their default action."""
    return subprocess.run(args, preexec_fn=default_stop_signals, **options)


def replace_ports(text: str, mapping: dict[int, int]) -> str:
    if not mapping:
        return text
    pattern = re.compile(r"(?<![\d.])(" + "|".join(map(str, mapping)) + r")(?![\d.])")
    return pattern.sub(lambda m: str(mapping[int(m[1])]), text)


def config_ports(path: Path) -> set[int]:
    """The fixed ports a config's listeners and name servers name."""
    ports: set[int] = set()

    def walk(value: object, key: str = "") -> None:
        if isinstance(value, dict):
            for name, inner in value.items():
                walk(inner, name)
        elif isinstance(value, list):
            for inner in value:
                walk(inner, key)
        elif isinstance(value, str) and (key.endswith("listen") or key == "name_server"):
            ports.update(int(p) for p in re.findall(r"(?:^|:)(\d{2,5})(?=:|$)", value))

    walk(tomllib.loads(path.read_text()))
    ports.discard(0)
    return ports


def free_ports(wanted: set[int]) -> dict[int, int]:
    """A free loopback port, free for both TCP and UDP, for each port WANTED."""
    held = []
    mapping = {}
    try:
        for port in sorted(wanted):
            while True:
                tcp = socket.socket()
                tcp.bind(("127.0.0.1", 0))
                number = tcp.getsockname()[1]
                udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    udp.bind(("127.0.0.1", number))
                except OSError:
                    tcp.close()
                    udp.close()
                    continue
                held += [tcp, udp]
                mapping[port] = number
                break
    finally:
        for each in held:
            each.close()
    return mapping


def stop_process(process: subprocess.Popen, timeout: float = 10) -> int:
    """SIGTERM PROCESS (if still running) and wait; killed after TIMEOUT. Its status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


CHECKOUT = Path(__file__).resolve().parents[2]
# What a copy of the checkout to build from leaves out: environments, caches, build output.
NOT_SOURCE = shutil.ignore_patterns(
    ".venv",
    ".nox",
    ".git",
    "__pycache__",
    ".hypothesis",
    ".mypy_cache",
    ".ruff_cache",
    ".coverage*",
    "build",
    "*.egg-info",
    "bench",
    "log",
    "data",
)


def source_copy(directory: Path) -> Path:
    """
    A copy of the checkout under DIRECTORY to `pip install` from: pip builds
    a local directory in place (its build/ and egg-info), so two builds of
    the checkout itself at once (tests run in parallel) would meet there.
    """
    copy = directory / "source"
    shutil.copytree(CHECKOUT, copy, ignore=NOT_SOURCE, symlinks=True)
    return copy


def require(tool):
    """
    Skip (with the reason) when an outside tool is missing; `make test`
    installs them as root.
    """
    if shutil.which(tool) is None:
        raise SkipTest(f"{tool} is not installed (make test installs it when run as root)")


@contextmanager
def busy_port():
    """A loopback TCP port that something else listens on, while the block runs."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield busy.getsockname()[1]


def small_disk(test, path: Path, size: str) -> Path:
    """PATH, made a tmpfs of SIZE (`48m`) until TEST ends; skipped unless root may mount one."""
    if os.getuid() != 0:
        raise SkipTest("mounting a small tmpfs needs root (make test runs as root in CI)")
    path.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]
    ).returncode:
        raise SkipTest("cannot mount a tmpfs here")
    test.addCleanup(subprocess.run, ["umount", "-l", str(path)])
    return path


class SuiteProcess:
    """One twistd process and what it printed; `ports` maps 'service listener' to its address."""

    def __init__(self, directory, config: str, plugin="suite", args=(), twistd_args=(), env=None):
        self.directory = directory
        path = directory / "suite.toml"
        path.write_text(textwrap.dedent(config))
        self.config = str(path)
        self.lines: list[str] = []
        self.ports: dict[str, int] = {}
        self._changed = threading.Condition()
        self.process = popen(
            [
                TWISTD,
                "--nodaemon",
                "--pidfile=",
                *twistd_args,
                plugin,
                "--config",
                self.config,
                *args,
            ],
            cwd=directory,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                found = LISTENING.search(self.lines[-1])
                if found:
                    self.ports[f"{found[1]} {found[2]}"] = found[3]
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, predicate, timeout=15):
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.process.poll() is not None and not predicate()):
                    return predicate()
                self._changed.wait(min(remaining, 0.2))
            return True

    def wait_ready(self, count):
        """Wait for COUNT listeners and the ready line (the reactor runs, signals work)."""
        if not self.wait_for(lambda: len(self.ports) >= count and "suite ready" in self.output):
            raise AssertionError("suite did not start:\n" + self.output)
        return self.ports

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def port(self, name) -> int:
        return int(self.ports[name].rsplit(":", 1)[1])

    def wait(self, timeout=15):
        """Wait for the process to end by itself; its whole output is read then."""
        status = self.process.wait(timeout)
        self._reader.join(5)
        return status

    def stop(self, timeout=10):
        status = stop_process(self.process, timeout)
        self._reader.join(5)
        return status


class ProcessTestCase(SynchronousTestCase):
    """Tests that start twistd processes in a directory of their own, stopped by PID after."""

    def setUp(self):
        # Short (Unix socket paths have at most 107 bytes) and removed afterwards.
        self.directory = Path(tempfile.mkdtemp(prefix="suite-"))
        self.addCleanup(shutil.rmtree, self.directory, ignore_errors=True)

    def start_suite(self, config, listeners, plugin="suite", args=(), twistd_args=(), env=None):
        """Start a suite from CONFIG and wait for LISTENERS listeners (0: do not wait)."""
        suite = SuiteProcess(self.directory, config, plugin, args, twistd_args, env)
        self.addCleanup(suite.stop)
        if listeners:
            suite.wait_ready(listeners)
        return suite
