"""
Name server throughput, server on core 0 and this Twisted AMP client on core 1:

- lookups/s (memory store): one connection with 100 lookups in flight
  (pipelined), and 50 connections with one lookup each in flight;
- registrations/s with the SQLite store (each answered once committed):
  10 connections with 10 Register calls each in flight, cycling over 5,000
  instances (within the default max_instances): inserts, then updates (each
  with a new description: a registration that changes nothing writes nothing);
- registrations/s with the etcd store, the same load, each answered once
  etcd acknowledged it (a real `etcd` started here on core 1, beside this
  client; skipped without it).  Lookups on etcd are `run.py`'s: they never
  touch etcd, so they are measured next to the memory store there.

BENCH_NAMES_SECONDS (default 3) per measurement.  BENCH_TREE (default this
checkout) is the source tree the server runs from, so an older commit checked
out with `git worktree` can be measured the same way.
"""

import os
import subprocess
import sys
import tempfile
import time
from itertools import count
from pathlib import Path

from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.protocols import amp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from tree import TREE, cpu_seconds, free_port, start_etcd, twistd  # noqa: E402

from suite.contracts.names import Lookup, Register  # noqa: E402

SECONDS = float(os.environ.get("BENCH_NAMES_SECONDS", "3"))


def start_server(port: int, store: str) -> subprocess.Popen:
    """suite-names from TREE on core 0, its audit thrown away."""
    return twistd(
        "suite-names",
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        "--store",
        store,
        "--ping-interval",
        "3600",
        "--lookup-audit",
        "/dev/null",
        "--max-instances-per-source",
        "10000",
    )  # one load generator registers 5,000


async def connect(reactor, endpoint, attempts=200):
    for _ in range(attempts):
        try:
            return await connectProtocol(endpoint, amp.AMP())
        except Exception:
            await task.deferLater(reactor, 0.05, lambda: None)
    raise RuntimeError("the name server did not start")


async def measure(endpoint, connections, in_flight, server_pid, call) -> tuple:
    """(calls/s, server CPU busy) of CALL(client) kept IN_FLIGHT deep on each connection."""
    clients = [await connectProtocol(endpoint, amp.AMP()) for _ in range(connections)]
    done = [0]
    busy_before = cpu_seconds(server_pid)
    started = time.monotonic()
    deadline = started + SECONDS

    async def worker(client):
        while time.monotonic() < deadline:
            await call(client)
            done[0] += 1

    await defer.gatherResults(
        [defer.ensureDeferred(worker(c)) for c in clients for _ in range(in_flight)]
    )
    elapsed = time.monotonic() - started
    busy = (cpu_seconds(server_pid) - busy_before) / elapsed
    for c in clients:
        c.transport.loseConnection()
    return done[0] / elapsed, busy


async def lookups(reactor) -> list[tuple]:
    port = free_port()
    server = start_server(port, "memory")
    try:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        setup = await connect(reactor, endpoint)
        for n in range(3):
            await setup.callRemote(Register, name="bench", host="127.0.0.1", port=port + n)
        setup.transport.loseConnection()

        def lookup(client):
            return client.callRemote(Lookup, name="bench")

        return [
            (
                "lookups, 1 connection, 100 in flight",
                *await measure(endpoint, 1, 100, server.pid, lookup),
            ),
            (
                "lookups, 50 connections, 1 in flight each",
                *await measure(endpoint, 50, 1, server.pid, lookup),
            ),
        ]
    finally:
        server.terminate()
        server.wait()


async def registrations(reactor, store: str, label: str) -> list[tuple]:
    port = free_port()
    server = start_server(port, store)
    try:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        (await connect(reactor, endpoint)).transport.loseConnection()
        ports = count(1)

        def register(client):
            n = next(ports)  # a new description each time: an update that changes nothing
            return client.callRemote(  # would write nothing
                Register, name="bench", host="127.0.0.1", port=n % 5000 + 1, description=str(n)
            )

        return [
            (
                f"registrations ({label}), 10 connections, 10 in flight each",
                *await measure(endpoint, 10, 10, server.pid, register),
            ),
        ]
    finally:
        server.terminate()
        server.wait()


async def stored_registrations(reactor) -> list[tuple]:
    with tempfile.TemporaryDirectory() as directory:
        rows = await registrations(reactor, f"sqlite:{directory}/names.sqlite", "SQLite")
        etcd = start_etcd(directory)
        if etcd is not None:
            try:
                rows += await registrations(reactor, etcd.store, "etcd")
            finally:
                etcd.stop_all()
        return rows


async def main(reactor):
    os.sched_setaffinity(0, {1})
    rows = await lookups(reactor) + await stored_registrations(reactor)
    report = "| name server | per second | server CPU busy |\n|---|---:|---:|\n" + "".join(
        f"| {name} | {rate:,.0f} | {busy:.0%} |\n" for name, rate, busy in rows
    )
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "names.md").write_text(report)
    print(f"server tree: {TREE}\n{report}")


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
