"""
Name server lookups/s: one connection with 100 lookups in flight (pipelined),
and 50 connections with one lookup each in flight.  The server (memory store,
audit log to /dev/null) runs on core 0, this Twisted AMP client on core 1.
BENCH_NAMES_SECONDS (default 3) per measurement.
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.protocols import amp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from suite.names.commands import Lookup, Register  # noqa: E402

TWISTD = str(Path(sys.executable).parent / "twistd")
SECONDS = float(os.environ.get("BENCH_NAMES_SECONDS", "3"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def keep_asking(client, in_flight, deadline, counter):
    async def worker():
        while time.monotonic() < deadline:
            await client.callRemote(Lookup, name="bench")
            counter[0] += 1

    await defer.gatherResults([defer.ensureDeferred(worker()) for _ in range(in_flight)])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(reactor, endpoint, connections, in_flight, server_pid) -> tuple:
    clients = [await connectProtocol(endpoint, amp.AMP()) for _ in range(connections)]
    counter = [0]
    busy_before = cpu_seconds(server_pid)
    started = time.monotonic()
    deadline = started + SECONDS
    await defer.gatherResults([
        defer.ensureDeferred(keep_asking(c, in_flight, deadline, counter)) for c in clients
    ])
    elapsed = time.monotonic() - started
    busy = (cpu_seconds(server_pid) - busy_before) / elapsed
    for c in clients:
        c.transport.loseConnection()
    return counter[0] / elapsed, busy


async def main(reactor):
    os.sched_setaffinity(0, {1})
    port = free_port()
    server = subprocess.Popen(
        ["taskset", "-c", "0", TWISTD, "--nodaemon", "--pidfile=", "--logfile=/dev/null",
         "suite-names", "--listen", f"tcp:{port}:interface=127.0.0.1", "--store", "memory",
         "--ping-interval", "3600"])
    try:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        for _ in range(200):
            try:
                setup = await connectProtocol(endpoint, amp.AMP())
                break
            except Exception:
                await task.deferLater(reactor, 0.05, lambda: None)
        for n in range(3):
            await setup.callRemote(Register, name="bench", host="127.0.0.1", port=port + n)
        setup.transport.loseConnection()
        rows = [
            ("1 connection, 100 in flight",
             *await measure(reactor, endpoint, 1, 100, server.pid)),
            ("50 connections, 1 in flight each",
             *await measure(reactor, endpoint, 50, 1, server.pid)),
        ]
    finally:
        server.terminate()
        server.wait()
    report = "| lookups | per second | server CPU busy |\n|---|---:|---:|\n" + "".join(
        f"| {name} | {rate:,.0f} | {busy:.0%} |\n" for name, rate, busy in rows
    )
    Path(__file__).with_name("results").mkdir(exist_ok=True)
    Path(__file__).with_name("results").joinpath("names.md").write_text(report)
    print(report)


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
