"""
`make bench`, what the status page costs the suite: `twistd suite` with a
name server (memory store) and [metrics] on core 0, INSTANCES instances
registered over the Consul HTTP API (two tags and a TTL check each; one in
ten warning, one in twenty critical with a check output), then the page
(`GET /`) fetched from core 1: once right after the registrations (every
row flattened: the worst case), then REQUESTS times per round, one request
at a time (the rows unchanged since the last page are kept flattened).  The
server's CPU per page is read from /proc/PID/stat around the fetches (the
HTTP request and response included); the bar is BAR_MS milliseconds for the
first page at 1,000 instances.  The live stream renders the same `<main>`, once per
change for every watcher, so it costs at most what a page does.

For scale, the same server's CPU for `GET /v1/health/state/any` (Consul's
JSON of every check, what a dashboard would poll instead) is measured in
the same run.  Writes bench/results/status_page.md; exits 1 if the bar is
missed.
"""

import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tree import cpu_seconds, free_port, twistd

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
INSTANCES = int(os.environ.get("BENCH_PAGE_INSTANCES", "1000"))
REQUESTS = int(os.environ.get("BENCH_PAGE_REQUESTS", "30"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "4"))
BAR_MS = 200.0


def request(port: int, method: str, path: str, body: object = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=None if body is None else json.dumps(body))
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wait_for(port: int, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            request(port, "GET", "/v1/status/leader")
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def register(port: int, count: int) -> None:
    for number in range(count):
        status = "critical" if number % 20 == 0 else "warning" if number % 10 == 0 else "passing"
        code, body = request(
            port,
            "PUT",
            "/v1/agent/service/register",
            {
                "Name": f"app-{number % 50:02d}",
                "ID": f"app-{number:04d}",
                "Address": "127.0.0.1",
                "Port": 10000 + number,
                "Tags": [f"zone-{number % 3}", "v2"],
                "Check": {"TTL": "3600s", "Status": status},
            },
        )
        if code != 200:
            raise RuntimeError(f"registration {number}: {code} {body[:200]!r}")
        if status != "passing":
            note = "disk 97% full on /var" if status == "critical" else "slow answers"
            request(
                port,
                "PUT",
                f"/v1/agent/check/{status[:4]}/service:app-{number:04d}?note="
                + note.replace(" ", "%20"),
            )


def cost(pid: int, port: int, path: str, count: int) -> tuple[float, int]:
    """Server CPU milliseconds per GET of PATH, and the response's size."""
    size = 0
    before = cpu_seconds(pid)
    for _ in range(count):
        code, body = request(port, "GET", path)
        if code != 200:
            raise RuntimeError(f"GET {path}: {code}")
        size = len(body)
    return (cpu_seconds(pid) - before) / count * 1000, size


def main() -> None:
    os.sched_setaffinity(0, {1})
    directory = Path(tempfile.mkdtemp(prefix="bench-page-"))
    http_port, metrics_port = free_port(), free_port()
    config = directory / "suite.toml"
    config.write_text(
        f"""
[names]
listen = []
http_listen = ["tcp:{http_port}:interface=127.0.0.1"]
store = "memory"
max_instances_per_source = {INSTANCES + 10}
[metrics]
listen = ["tcp:{metrics_port}:interface=127.0.0.1"]
"""
    )
    server = twistd("suite", "--config", str(config))
    try:
        wait_for(http_port)
        started = time.monotonic()
        register(http_port, INSTANCES)
        print(
            f"  {INSTANCES} instances registered in {time.monotonic() - started:.1f} s", flush=True
        )
        first_ms, _ = cost(server.pid, metrics_port, "/", 1)
        print(f"  the first page: {first_ms:.1f} ms", flush=True)
        pages, checks = [], []
        for number in range(ROUNDS):
            page_ms, page_bytes = cost(server.pid, metrics_port, "/", REQUESTS)
            json_ms, json_bytes = cost(server.pid, http_port, "/v1/health/state/any", REQUESTS)
            pages.append(page_ms)
            checks.append(json_ms)
            print(
                f"  round {number + 1}: page {page_ms:.1f} ms ({page_bytes:,} bytes), "
                f"/v1/health/state/any {json_ms:.1f} ms ({json_bytes:,} bytes)",
                flush=True,
            )
    finally:
        server.terminate()
        server.wait(30)
    page = statistics.median(pages)
    checks_ms = statistics.median(checks)
    ok = first_ms <= BAR_MS
    text = "\n".join(
        [
            f"## Status page, {INSTANCES:,} instances",
            "",
            f"Measured {time.strftime('%Y-%m-%d')}: `twistd suite` ([names] memory store, "
            f"[metrics]) on core 0, {REQUESTS} sequential GETs per round from core 1, "
            f"{ROUNDS} rounds, medians of the server's CPU per request from /proc.",
            "",
            "| request | server CPU ms | × Consul JSON of every check |",
            "|---|---:|---:|",
            f"| `GET /`, the first (every row flattened) | {first_ms:.1f} "
            f"| {first_ms / checks_ms:.2f} |",
            f"| `GET /`, again ({', '.join(f'{p:.1f}' for p in pages)}) | {page:.1f} "
            f"| {page / checks_ms:.2f} |",
            f"| `GET /v1/health/state/any` | {checks_ms:.1f} | 1.00 |",
            "",
            f"- {'ok' if ok else 'MISSED'}: the first page at {INSTANCES:,} instances costs "
            f"{first_ms:.1f} ms of server CPU (bar ≤ {BAR_MS:.0f} ms)",
            "",
        ]
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "status_page.md").write_text(text)
    print(text)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
