"""
The name server's Consul-compatible HTTP API, next to its AMP lookups in the
same run: the server on core 0, this asyncio client on core 1.

- reads/s of `GET /v1/health/service/NAME` (HTTP/1.1, kept-alive
  connections, one request in flight on each) and of AMP `Lookup` (the same
  number of connections, one call in flight on each), interleaved rounds,
  medians, with the server's CPU per request from /proc;
- the wake-up delay of 1,000 blocking queries: 1,000 connections each hold
  `GET /v1/health/service/NAME?index=N&wait=60s`, one registration is made,
  and each answer's arrival is timed from the registration's answer:
  median and p99.

BENCH_CONSUL_SECONDS (default 3) per measurement, BENCH_CONSUL_ROUNDS
(default 3) interleaved rounds.  BENCH_TREE: the source tree the server
runs from (see tree.py).
"""

import asyncio
import json
import os
import statistics
import struct
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from tree import TREE, cpu_seconds, free_port, twistd  # noqa: E402

SECONDS = float(os.environ.get("BENCH_CONSUL_SECONDS", "3"))
ROUNDS = int(os.environ.get("BENCH_CONSUL_ROUNDS", "3"))
CONNECTIONS = 50
WAITERS = 1000
NAME = "bench"


def amp_box(**fields: str) -> bytes:
    """An AMP box: length-prefixed keys and values, an empty key at the end."""
    parts = []
    for key, value in fields.items():
        parts += [struct.pack("!H", len(key)), key.encode()]
        parts += [struct.pack("!H", len(value)), value.encode()]
    return b"".join(parts) + b"\0\0"


async def read_amp_box(reader: asyncio.StreamReader) -> dict[bytes, bytes]:
    box = {}
    while True:
        (size,) = struct.unpack("!H", await reader.readexactly(2))
        if not size:
            return box
        key = await reader.readexactly(size)
        (size,) = struct.unpack("!H", await reader.readexactly(2))
        box[key] = await reader.readexactly(size)


async def read_http_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return status, await reader.readexactly(length)


def http_request(method: str, path: str, body: bytes = b"") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def http_call(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(http_request(method, path, body))
    answer = await read_http_answer(reader)
    writer.close()
    return answer


async def rate(connect, call, pid: int) -> tuple[float, float]:
    """(calls/s, server CPU µs per call) of CALL kept one deep on CONNECTIONS connections."""
    streams = [await connect() for _ in range(CONNECTIONS)]
    done = 0
    busy = cpu_seconds(pid)
    started = time.monotonic()
    deadline = started + SECONDS

    async def worker(reader, writer):
        nonlocal done
        while time.monotonic() < deadline:
            await call(reader, writer)
            done += 1

    await asyncio.gather(*(worker(r, w) for r, w in streams))
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(pid) - busy
    for _, writer in streams:
        writer.close()
    return done / elapsed, cpu / done * 1e6


async def reads(http_port: int, amp_port: int, pid: int) -> list[tuple[str, float, float]]:
    health = http_request("GET", f"/v1/health/service/{NAME}")
    lookup = amp_box(_command="Lookup", _ask="1", name=NAME)

    async def http_read(reader, writer):
        writer.write(health)
        status, _ = await read_http_answer(reader)
        assert status == 200, status

    async def amp_read(reader, writer):
        writer.write(lookup)
        answer = await read_amp_box(reader)
        assert b"_answer" in answer, answer

    rows: dict[str, list[tuple[float, float]]] = {"http": [], "amp": []}
    for _ in range(ROUNDS):
        rows["http"].append(
            await rate(lambda: asyncio.open_connection("127.0.0.1", http_port), http_read, pid)
        )
        rows["amp"].append(
            await rate(lambda: asyncio.open_connection("127.0.0.1", amp_port), amp_read, pid)
        )
    result = []
    for label, key in (
        (f"GET /v1/health/service/{NAME}, {CONNECTIONS} connections", "http"),
        (f"AMP Lookup, {CONNECTIONS} connections", "amp"),
    ):
        result.append(
            (
                label,
                statistics.median(r for r, _ in rows[key]),
                statistics.median(c for _, c in rows[key]),
            )
        )
    return result


async def wake_up(http_port: int) -> tuple[float, float, int]:
    """(median, p99 of the wake-up delays in ms, answers that came) for WAITERS held reads."""
    reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
    writer.write(http_request("GET", f"/v1/health/service/{NAME}"))
    head = await reader.readuntil(b"\r\n\r\n")
    writer.close()
    index = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"x-consul-index:")
    )
    held = f"/v1/health/service/{NAME}?index={index}&wait=60s"
    streams = [await asyncio.open_connection("127.0.0.1", http_port) for _ in range(WAITERS)]
    for _, writer in streams:
        writer.write(http_request("GET", held))
    await asyncio.sleep(2)  # every request read and held
    arrivals: list[float] = []

    async def waiter(reader):
        await read_http_answer(reader)
        arrivals.append(time.monotonic())

    waiting = [asyncio.ensure_future(waiter(r)) for r, _ in streams]
    registration = json.dumps(
        {"Name": NAME, "ID": "woken", "Address": "127.0.0.1", "Port": 9}
    ).encode()
    status, _ = await http_call(http_port, "PUT", "/v1/agent/service/register", registration)
    registered = time.monotonic()
    assert status == 200, status
    await asyncio.wait(waiting, timeout=30)
    for _, writer in streams:
        writer.close()
    delays = sorted((arrival - registered) * 1000 for arrival in arrivals)
    p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
    return statistics.median(delays), p99, len(delays)


async def main() -> None:
    os.sched_setaffinity(0, {1})
    amp_port, http_port = free_port(), free_port()
    server = twistd(
        "suite-names",
        "--listen",
        f"tcp:{amp_port}:interface=127.0.0.1",
        "--http-listen",
        f"tcp:{http_port}:interface=127.0.0.1",
        "--store",
        "memory",
        "--ping-interval",
        "3600",
        "--lookup-audit",
        "",
        "--max-connections",
        "5000",
        "--max-connections-per-source",
        "5000",
    )
    try:
        for _ in range(200):
            try:
                await http_call(http_port, "GET", "/v1/agent/self")
                break
            except OSError:
                await asyncio.sleep(0.05)
        for number in range(3):
            body = {
                "Name": NAME,
                "ID": f"b{number}",
                "Address": "127.0.0.1",
                "Port": 8000 + number,
            }
            await http_call(
                http_port, "PUT", "/v1/agent/service/register", json.dumps(body).encode()
            )
        rows = await reads(http_port, amp_port, server.pid)
        median, p99, answered = await wake_up(http_port)
    finally:
        server.terminate()
        server.wait()
    http, amp = rows[0][1], rows[1][1]
    report = (
        "| name server, reads | per second | server CPU per read |\n|---|---:|---:|\n"
        + "".join(f"| {name} | {r:,.0f} | {cpu:.0f} µs |\n" for name, r, cpu in rows)
        + f"\nHTTP reads / AMP lookups: {http / amp:.2f}×\n\n"
        f"Wake-up of {WAITERS:,} blocking queries after a registration: median "
        f"{median:.1f} ms, p99 {p99:.1f} ms ({answered:,} answered)\n"
    )
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "consul.md").write_text(report)
    print(f"server tree: {TREE}\n{report}")


if __name__ == "__main__":
    asyncio.run(main())
