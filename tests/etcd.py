"""
Real etcd for the tests: one member or a cluster on loopback, each member
with its own data directory and ports, stopped by PID.  Skips (with the
reason) where `etcd` is not installed; `make test` installs it as root.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from twisted.trial.unittest import SkipTest


def free_ports(count: int) -> list[int]:
    """COUNT distinct free ports: each held bound until all are chosen, so none comes twice."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class EtcdCluster:
    """
    MEMBERS etcd processes under DIRECTORY.  Fast raft timing (heartbeat
    50 ms, election 500 ms) keeps the tests short; etcd's shortest lease is
    then 0.75 s.  `endpoints` are the client URLs, `store` the name server's
    setting for them.
    """

    def __init__(self, directory: Path, members: int = 1):
        if shutil.which("etcd") is None:
            raise SkipTest("etcd is not installed (make test installs etcd-server as root)")
        self.directory = Path(directory)
        self.names = [f"m{number}" for number in range(members)]
        self.processes: dict[str, subprocess.Popen] = {}
        for attempt in range(3):  # a free port may be taken before etcd binds it
            ports = free_ports(2 * members)
            self.client_ports = dict(zip(self.names, ports[:members], strict=True))
            self.peer_ports = dict(zip(self.names, ports[members:], strict=True))
            self.token = f"suite-test-{os.getpid()}-{time.monotonic_ns()}"
            for name in self.names:
                self.start(name)
            try:
                for name in self.names:
                    self.wait_healthy(name)
                return
            except AssertionError:
                taken = any("address already in use" in self.log(n) for n in self.names)
                if attempt == 2 or not taken:
                    raise
                self.stop_all()
                for name in self.names:
                    shutil.rmtree(self.directory / f"etcd-{name}", ignore_errors=True)
                    (self.directory / f"etcd-{name}.log").unlink(missing_ok=True)

    @property
    def endpoints(self) -> list[str]:
        return [f"http://127.0.0.1:{self.client_ports[name]}" for name in self.names]

    @property
    def store(self) -> str:
        return "etcd:" + ",".join(self.endpoints)

    def start(self, name: str) -> None:
        """Start member NAME (again, with its data, after stop)."""
        client = f"http://127.0.0.1:{self.client_ports[name]}"
        peer = f"http://127.0.0.1:{self.peer_ports[name]}"
        cluster = ",".join(f"{n}=http://127.0.0.1:{self.peer_ports[n]}" for n in self.names)
        log = open(self.directory / f"etcd-{name}.log", "ab")
        self.processes[name] = subprocess.Popen(
            [
                "etcd",
                "--name",
                name,
                "--data-dir",
                str(self.directory / f"etcd-{name}"),
                "--listen-client-urls",
                client,
                "--advertise-client-urls",
                client,
                "--listen-peer-urls",
                peer,
                "--initial-advertise-peer-urls",
                peer,
                "--initial-cluster",
                cluster,
                "--initial-cluster-token",
                self.token,
                "--initial-cluster-state",
                "new",
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
                "--logger",
                "zap",
                "--log-level",
                "warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def wait_healthy(self, name: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.client_ports[name]}/health"
        while time.monotonic() < deadline:
            if self.processes[name].poll() is not None:
                break
            try:
                with urllib.request.urlopen(url, timeout=1) as answer:
                    if json.load(answer).get("health") == "true":
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"etcd {name} did not become healthy:\n" + self.log(name))

    def log(self, name: str) -> str:
        return (self.directory / f"etcd-{name}.log").read_text(errors="replace")[-4000:]

    def stop(self, name: str, sig=signal.SIGTERM) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)

    def call(self, path: str, body: dict) -> dict:
        """A gateway request from the test itself (blocking: call it from a test's thread only)."""
        request = urllib.request.Request(
            self.endpoints[0] + path,
            json.dumps(body).encode(),
            {"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as answer:
            return json.load(answer)
