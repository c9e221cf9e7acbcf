"""
The suite under the attacks of its fault tests, at full size, for figures:

- slowloris: 1,000 idle connections from 127.0.0.2 to the echo server, then
  20 probes from 127.0.0.3: how long each takes to be answered (or refused);
- a never-ending AMP box (distinct keys, 64 KiB values) to the sleep server,
  up to 256 MiB: bytes accepted and the server's RSS growth;
- newline floods: 100 clients (127.0.1.x) sending 64 KiB reads of bare
  newlines and never reading: the server's RSS growth and a probe's latency;
- 400,000 Register calls pipelined on one connection to the name server
  (SQLite store, 5,000 distinct instances): answers by kind, RSS growth.

Server on core 0, attackers on core 1.  BENCH_TREE (default this checkout) is
the source tree the server runs from, so an older commit checked out with
`git worktree` is measured the same way.
"""

import os
import socket
import statistics
import struct
import tempfile
import threading
import time
from pathlib import Path

from tree import TREE, free_port, twistd

HERE = Path(__file__).resolve().parent
LOCAL = "tcp:{port}:interface=127.0.0.1"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Server:
    """One service from TREE on core 0; stopped on exit."""

    def __init__(self, section: str, extra: str = ""):
        self.port = free_port()
        self.directory = tempfile.TemporaryDirectory()
        config = Path(self.directory.name) / "suite.toml"
        config.write_text(f'[{section}]\nlisten = ["{LOCAL.format(port=self.port)}"]\n{extra}')
        self.process = twistd("suite", "--config", str(config), cwd=self.directory.name)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        time.sleep(0.3)  # let the refused/probe connection settle

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.process.terminate()
        self.process.wait()
        self.directory.cleanup()


def connect_from(source, port, timeout=5):
    return socket.create_connection(
        ("127.0.0.1", port), timeout=timeout, source_address=(source, 0)
    )


def probe(port, source="127.0.0.3") -> float | None:
    """Seconds until `probe` is answered, or None when refused or not answered within 5 s."""
    started = time.monotonic()
    try:
        with connect_from(source, port) as sock:
            sock.sendall(b"probe\n")
            answer = sock.recv(1024)
    except OSError:
        return None
    return time.monotonic() - started if b"probe" in answer else None


def slowloris() -> str:
    with Server("echo") as server:
        held = []
        for _ in range(1000):
            try:
                held.append(connect_from("127.0.0.2", server.port))
            except OSError:
                break
        time.sleep(0.5)
        results = [probe(server.port) for _ in range(20)]
        for sock in held:
            sock.close()
    answered = [r for r in results if r is not None]
    median = f"{statistics.median(answered) * 1000:.2f} ms" if answered else "-"
    return (
        "| slowloris: 20 probes during 1,000 idle connections from one source "
        f"| {len(answered)}/20 answered, median {median} |"
    )


def never_ending_box() -> str:
    with Server("sleep") as server:
        before = rss_mib(server.process.pid)
        sent = 0
        value = b"v" * 65535
        try:
            with connect_from("127.0.0.2", server.port, timeout=10) as sock:
                for n in range(4096):  # 256 MiB
                    key = b"k%d" % n
                    sock.sendall(
                        struct.pack("!H", len(key)) + key + struct.pack("!H", 65535) + value
                    )
                    sent += 65535
        except OSError:
            pass
        time.sleep(0.5)
        grown = rss_mib(server.process.pid) - before
    return (
        "| never-ending AMP box to sleep "
        f"| {sent / 2**20:.1f} MiB accepted, RSS +{grown:.1f} MiB |"
    )


def newline_flood() -> str:
    with Server("timestamp") as server:
        before = rss_mib(server.process.pid)
        flood = b"\n" * 65536
        floods = []
        for n in range(100):
            sock = connect_from(f"127.0.1.{n + 1}", server.port)
            sock.setblocking(False)
            floods.append(sock)
        deadline = time.monotonic() + 20
        for _ in range(5):
            for sock in floods:
                while time.monotonic() < deadline:
                    try:
                        sock.send(flood)
                    except BlockingIOError:
                        break
                    except OSError:
                        break
        probes = []
        for wait in (1, 2, 7):  # probes 1 s, 3 s and 10 s after the flood was sent
            time.sleep(wait)
            latency = probe(server.port)
            probes.append("none" if latency is None else f"{latency * 1000:.1f} ms")
        grown = rss_mib(server.process.pid) - before
        for sock in floods:
            sock.close()
    return (
        f"| newline floods from 100 clients that never read | RSS +{grown:.1f} MiB; a probe "
        f"1 s / 3 s / 10 s after: {' / '.join(probes)} |"
    )


def amp_box(*pairs: tuple[bytes, bytes]) -> bytes:
    return (
        b"".join(struct.pack("!H", len(k)) + k + struct.pack("!H", len(v)) + v for k, v in pairs)
        + b"\x00\x00"
    )


def register_flood(calls=400_000) -> str:
    # The per-source limit is raised: this measures the pipeline, not that limit.
    with Server(
        "names",
        'store = "sqlite:names.sqlite"\nping_interval = 3600\nmax_instances_per_source = 10000\n',
    ) as server:
        before = rss_mib(server.process.pid)
        boxes = [
            amp_box(
                (b"_command", b"Register"),
                (b"_ask", b"%x" % n),
                (b"name", b"flood"),
                (b"host", b"127.0.0.1"),
                (b"port", b"%d" % (n % 5000 + 1)),
            )
            for n in range(calls)
        ]
        received = bytearray()
        peak = [before]
        with connect_from("127.0.0.2", server.port, timeout=30) as sock:
            sender = threading.Thread(target=lambda: sock.sendall(b"".join(boxes)))
            sender.start()
            sock.settimeout(3)
            try:
                while chunk := sock.recv(1 << 20):
                    received += chunk
                    peak[0] = max(peak[0], rss_mib(server.process.pid))
            except (TimeoutError, OSError):
                pass
            sender.join(30)
    answered = received.count(b"\x00\x07_answer")
    overloaded = received.count(b"OVERLOADED")
    return (
        f"| {calls:,} Register calls pipelined on one connection | {answered:,} answered OK, "
        f"{overloaded:,} OVERLOADED, RSS peak +{peak[0] - before:.1f} MiB |"
    )


def main():
    os.sched_setaffinity(0, {1})
    rows = [slowloris(), never_ending_box(), newline_flood(), register_flood()]
    report = "| attack | result |\n|---|---|\n" + "\n".join(rows) + "\n"
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "attacks.md").write_text(report)
    print(f"server tree: {TREE}\n{report}")


if __name__ == "__main__":
    main()
