"""
`make bench`, what watching for silent sources costs the collector: the
logger's msg/s with 10,000 identities watched by logs checks, next to none.

Each configuration is one `twistd suite` process on core 0:

- "none watched": [logger] and [names] in one suite, the name server's logs
  checks hearing every read of the collector, but nothing registered;
- "10,000 watched": the same, with 10,000 instances registered before the
  load over the HTTP API (`PUT /v1/agent/service/register`, concurrently on
  kept-alive connections), each with a Logs check for app-00000..app-09999
  on host "bench" (MaxSilence 600 s: none turns silent during a run), and
  the registry read back until it holds every one, passing;
- "logger alone": [logger] without [names], a reference row: nobody hears,
  so the collector skips the fields it parses for hearers.

The load is the same in all: MESSAGES RFC 5424 messages of 100 bytes, host
"bench", the app cycling through app-00000..app-09999 so that in "10,000
watched" every message is a watched identity's and no two in a row share
one (the hearer looks each up), sent from core 1 over one TCP connection
(as bench/run.py's logger_tcp does) and over 10.  msg/s is messages written
to the output file over the time from the first byte sent to the last line
written; server CPU per message comes from /proc/PID/stat.

Each round starts the three processes afresh, gives each a tenth of a load
(not counted, so that no load meets a cold process), takes their CPU over
1 s idle (what 10,000 checks cost when nothing is sent), then sends each
load to each process in turn and back (A B C C B A, the mean of the two):
the loads compared are seconds apart, a drift within the round weighs on
all alike, and the processes not loaded are idle meanwhile.  The output
file is emptied after each load, so that no load pays for the writeback of
an earlier one's records.  Rates on these machines drift by
tens of percent within a minute, so the bar is on the median of each
round's ratio watched / none, and the hearer is also timed alone
(`Silence.heard` in a process on core 0), which gives the ratio to expect
without the noise.  Core 0's CPU used by other processes during each load
is printed and summed up in the report: other work on the machine shows
there.

BENCH_ROUNDS (5) rounds, the processes and the loads in reverse order
every other round; medians.  Writes bench/results/silence.md and exits 1
if the bar is missed: with 10,000 watched, at least BAR x none watched's
msg/s on every load, every message written.  BENCH_SILENCE_MESSAGES
(1,000,000) per load; BENCH_TREE as in tree.py.
"""

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from consul import read_http_answer
from run import PYTHON, WORK, Server, suite
from tree import TREE, cpu_seconds, free_port

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
MESSAGES = int(os.environ.get("BENCH_SILENCE_MESSAGES", "1000000"))
SERVER_CORE, CLIENT_CORE = "0", "1"
BAR = 0.95
IDENTITIES = 10_000
MESSAGE_BYTES = 100
HOSTNAME = "bench"
SERVICE = "bench"
TOKEN = "bench-token"
REGISTER_CONNECTIONS = 16
CONNECTIONS = (1, 10)

# (label, [names] in the suite, identities registered)
CONFIGURATIONS = (
    ("none watched", True, 0),
    (f"{IDENTITIES:,} watched", True, IDENTITIES),
    ("logger alone (no [names])", False, 0),
)
NONE, WATCHED, ALONE = (label for label, *_ in CONFIGURATIONS)

# One process per connection count: reads stdin, splits it at message boundaries into as many
# slices as connections, and sends each slice over its own connection at once.
SENDER = """
import socket, sys, threading
port, connections, size = map(int, sys.argv[1:4])
data = sys.stdin.buffer.read()
messages = len(data) // size
bounds = [messages * i // connections * size for i in range(connections + 1)]
sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(connections)]
def send(sock, start, end):
    sock.sendall(memoryview(data)[start:end])
    sock.close()
threads = [
    threading.Thread(target=send, args=(s, bounds[i], bounds[i + 1]))
    for i, s in enumerate(sockets)
]
for t in threads:
    t.start()
for t in threads:
    t.join()
"""


def app(number: int) -> str:
    return f"app-{number % IDENTITIES:05d}"


def message(number: int) -> bytes:
    """Message NUMBER: 100 bytes with its LF, from APP(NUMBER) on HOSTNAME."""
    head = b"<13>1 2026-11-20T21:39:31.334991Z %s %s - - - message %08d " % (
        HOSTNAME.encode(),
        app(number).encode(),
        number,
    )
    return head + b"x" * (MESSAGE_BYTES - 1 - len(head)) + b"\n"


def payload(count: int) -> bytes:
    return b"".join(message(n) for n in range(count))


# --- the suite under test --------------------------------------------------------------------


def config(name: str, port: int, http_port: int | None, output: Path) -> Path:
    """A `twistd suite --config` file: [logger] on PORT, and [names] when HTTP_PORT is given."""
    text = (
        "[logger]\n"
        f'listen = ["tcp:{port}:interface=127.0.0.1"]\n'
        f'output = "{output}"\n'
        "rotate_bytes = 0\n"
        "flush_interval = 0.05\n"
    )
    if http_port is not None:
        text += (
            "\n[names]\n"
            f'listen = ["tcp:{free_port()}:interface=127.0.0.1"]\n'
            f'http_listen = ["tcp:{http_port}:interface=127.0.0.1"]\n'
            f'token = "{TOKEN}"\n'
            'store = "memory"\n'
            'lookup_audit = ""\n'
            f"max_instances = {2 * IDENTITIES}\n"
            f"max_instances_per_source = {2 * IDENTITIES}\n"
        )
    path = WORK / f"{name}.toml"
    path.write_text(text)
    return path


def core_busy_seconds(core: str) -> float:
    """CPU seconds core CORE spent busy since boot (every process), from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, line.split()[1:9])
            return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    raise RuntimeError(f"no cpu{core} in /proc/stat")


# --- registering over the HTTP API -----------------------------------------------------------


def http_request(method: str, path: str, body: bytes = b"") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Consul-Token: {TOKEN}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def registration(number: int) -> bytes:
    return json.dumps(
        {
            "Name": SERVICE,
            "ID": app(number),
            "Address": "127.0.0.1",
            "Port": 20000 + number,
            "Check": {
                "Logs": {"App": app(number), "Hostname": HOSTNAME},
                "MaxSilence": "600s",
            },
        }
    ).encode()


async def register_all(http_port: int, count: int) -> float:
    """COUNT instances registered on kept-alive connections; the seconds it took."""
    started = time.monotonic()
    numbers = iter(range(count))

    async def worker():
        reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
        for number in numbers:
            writer.write(http_request("PUT", "/v1/agent/service/register", registration(number)))
            status, body = await read_http_answer(reader)
            if status != 200:
                raise RuntimeError(f"register {app(number)}: {status} {body[:200]!r}")
        writer.close()

    await asyncio.gather(*(worker() for _ in range(REGISTER_CONNECTIONS)))
    return time.monotonic() - started


async def registered(http_port: int) -> tuple[int, int]:
    """(instances of SERVICE, how many with a passing logs check) as the registry answers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
    writer.write(http_request("GET", f"/v1/health/service/{SERVICE}"))
    status, body = await read_http_answer(reader)
    writer.close()
    if status != 200:
        raise RuntimeError(f"GET /v1/health/service/{SERVICE}: {status}")
    entries = json.loads(body)
    passing = sum(
        1
        for entry in entries
        if any(c["Type"] == "logs" and c["Status"] == "passing" for c in entry["Checks"])
    )
    return len(entries), passing


async def http_ready(http_port: int) -> None:
    for _ in range(200):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.write(http_request("GET", "/v1/agent/self"))
        await read_http_answer(reader)
        writer.close()
        return
    raise RuntimeError("the name server's HTTP API did not answer")


async def watch_identities(http_port: int, count: int) -> float:
    """COUNT instances registered and read back, all passing; the registration's seconds."""
    await http_ready(http_port)
    seconds = await register_all(http_port, count)
    for _ in range(100):
        held, passing = await registered(http_port)
        if held == passing == count:
            return seconds
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the registry holds {held:,} ({passing:,} passing), not {count:,}")


# --- the load --------------------------------------------------------------------------------


class Records:
    """Message records (not connection events) appended to the output file, read on as it grows."""

    MARK = b'"event": "message"'

    def __init__(self, path: Path):
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0
        self.count = 0

    def wait(self, expected: int, timeout: float = 120, quiet: float = 2.0) -> float:
        """Until EXPECTED more were written, or QUIET s without growth; when it last grew."""
        grew, deadline = time.monotonic(), time.monotonic() + timeout
        while time.monotonic() < deadline and self.count < expected:
            if self._read_on():
                grew = time.monotonic()
            elif time.monotonic() - grew > quiet:
                break
            else:
                time.sleep(0.005)
        return grew

    def _read_on(self) -> bool:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read(1 << 24)
        except FileNotFoundError:
            return False
        whole = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(whole)
        self.count += whole.count(self.MARK)
        return bool(whole)


def send(server: Server, output: Path, data: bytes, connections: int) -> dict:
    """DATA sent over CONNECTIONS from the client core; msg/s written, server CPU per message."""
    count = len(data) // MESSAGE_BYTES
    records = Records(output)
    cpu_before, core_before = cpu_seconds(server.pid), core_busy_seconds(SERVER_CORE)
    sender = subprocess.Popen(
        [
            "taskset",
            "-c",
            CLIENT_CORE,
            PYTHON,
            "-c",
            SENDER,
            str(server.port),
            str(connections),
            str(MESSAGE_BYTES),
        ],
        stdin=subprocess.PIPE,
    )
    started = time.monotonic()
    assert sender.stdin is not None
    sender.stdin.write(data)
    sender.stdin.close()
    finished = records.wait(count)
    if sender.wait(60):
        raise RuntimeError("the sender failed")
    cpu = cpu_seconds(server.pid) - cpu_before
    others = core_busy_seconds(SERVER_CORE) - core_before - cpu
    # The logger appends (O_APPEND): emptied, the file's pages are dropped before they are
    # written back, so that no later load pays for an earlier one's writeback.
    os.truncate(output, 0)
    elapsed = finished - started
    return {
        "rps": records.count / elapsed,
        "cpu_us": cpu / max(records.count, 1) * 1e6,
        "written": records.count,
        "messages": count,
        "others_core0": max(others, 0.0) / elapsed,
    }


class Configuration:
    """One configuration's `twistd suite` process for a round: started, its identities watched."""

    def __init__(self, number: int, label: str, with_names: bool, identities: int):
        self.label = label
        name = f"silence-{number}-{identities}-{int(with_names)}"
        self.output, port = WORK / f"{name}.jsonl", free_port()
        http_port = free_port() if with_names else None
        conf = config(name, port, http_port, self.output)
        self.server = Server(suite("suite", "--config", str(conf)), port)
        self.cells: dict = {}
        if identities:
            assert http_port is not None
            self.cells["register_s"] = asyncio.run(watch_identities(http_port, identities))

    def stop(self):
        self.server.stop()
        self.output.unlink(missing_ok=True)


def merged(cells: list[dict]) -> dict:
    """One process's loads of a round as one: their mean rates, all their messages."""
    return {
        "rps": statistics.mean(c["rps"] for c in cells),
        "cpu_us": statistics.mean(c["cpu_us"] for c in cells),
        "written": sum(c["written"] for c in cells),
        "messages": sum(c["messages"] for c in cells),
        "others_core0": statistics.mean(c["others_core0"] for c in cells),
    }


def measure(number: int, data: bytes) -> dict:
    """
    Round NUMBER: every configuration's process started (and registered),
    each warmed with a tenth of a load, their CPU over 1 s idle, then each
    load to each process in turn and back (A B C C B A: a drift during the
    round weighs on all alike), so that the loads compared are seconds apart
    (the idle processes use no CPU meanwhile).
    """
    started: list[Configuration] = []
    try:
        for label, with_names, identities in CONFIGURATIONS:
            started.append(Configuration(number, label, with_names, identities))
        warm = data[: len(data) // 10 // MESSAGE_BYTES * MESSAGE_BYTES]
        for each in started:
            send(each.server, each.output, warm, 10)
        before = [cpu_seconds(each.server.pid) for each in started]
        time.sleep(1)
        for each, busy in zip(started, before, strict=True):
            each.cells["idle_cpu"] = cpu_seconds(each.server.pid) - busy
        order = started if number % 2 == 0 else started[::-1]
        for connections in CONNECTIONS if number % 2 == 0 else CONNECTIONS[::-1]:
            loads: dict[str, list[dict]] = {each.label: [] for each in started}
            for each in order + order[::-1]:
                cell = send(each.server, each.output, data, connections)
                loads[each.label].append(cell)
                print(
                    f"  round {number + 1}: {each.label:26} {connections:2} connection(s): "
                    f"msg/s={cell['rps']:,.0f} cpu_us={cell['cpu_us']:.2f} "
                    f"written={cell['written']:,}/{cell['messages']:,} "
                    f"others on core {SERVER_CORE}={cell['others_core0']:.0%}",
                    flush=True,
                )
            for each in started:
                each.cells[connections] = merged(loads[each.label])
    finally:
        for each in started:
            each.stop()
    return {each.label: each.cells for each in started}


# The hearer alone, in a process on the server core: Silence.heard given reads of 640 messages
# (a 64 KiB read of them) from sources cycling through the identities, each lookup a hit when
# they are watched.  Each read is parsed as the collector parses it (its routing fields, and
# the identity hashes when the compiled parser and table are built), 256 KiB of memory is
# written between two reads as records are (the table leaves the cache as in the collector),
# and only the call is timed.  Nanoseconds per message, the best of 15 repeats of 200 reads.
HEARD_ALONE = """
import sys, time
from twisted.internet import task
from suite.logger.delivery import Needs, Preparation
from suite.logger.records import RecordSink
from suite.names.silence import Silence
identities, per_read, reads = int(sys.argv[1]), 640, 200
sink = bytearray(4 << 20)
def one_read(r, hashes):
    head = b"<13>1 2026-11-20T21:39:31.334991Z bench app-%05d - - - m"
    frames = [(head % ((r * per_read + i) % identities), False) for i in range(per_read)]
    needs = Needs(fields=not hashes, hashes=hashes)  # as the delivery asks for this hearer
    preparation = Preparation(RecordSink(None, task.Clock()), needs)
    return preparation.lines(frames, "127.0.0.1:514", "tcp")[1:]
for watched in (0, identities):
    silence = Silence(task.Clock())
    for n in range(watched):
        silence.watch((f"app-{n:05d}", "service:x"), f"app-{n:05d}", "bench")
    best = float("inf")
    for _ in range(15):
        total = 0.0
        for r in range(reads):
            routing, hashes = one_read(r, silence.wants_hashes)
            sink[(r % 16) << 18:((r % 16) + 1) << 18] = b"x" * (1 << 18)
            started = time.perf_counter()
            silence.heard(routing, "127.0.0.1", hashes)
            total += time.perf_counter() - started
        best = min(best, total / (reads * per_read))
    print(watched, best * 1e9)
"""


def heard_alone() -> dict[int, float]:
    """{identities watched: ns per message} of Silence.heard on the server core, from TREE."""
    out = subprocess.run(
        ["taskset", "-c", SERVER_CORE, PYTHON, "-c", HEARD_ALONE, str(IDENTITIES)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(TREE)},
        check=True,
        timeout=300,
    )
    return {int(w): float(ns) for w, ns in (line.split() for line in out.stdout.splitlines())}


# --- report ----------------------------------------------------------------------------------


def run_rounds() -> dict:
    data = payload(MESSAGES)
    runs: dict = {label: [] for label, *_ in CONFIGURATIONS}
    for number in range(ROUNDS):
        for label, cells in measure(number, data).items():
            runs[label].append(cells)
    return runs


def tree_version() -> str:
    git = ["git", "-C", str(TREE)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if commit.returncode:
        return "not a git checkout"
    changed = subprocess.run(
        [*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
    ).stdout.strip()
    return f"commit {commit.stdout.strip()}{', with uncommitted changes' if changed else ''}"


def report(runs: dict, alone: dict[int, float], seconds: float) -> tuple[str, bool]:
    rows = [
        f"Measured {time.strftime('%Y-%m-%d')} in {seconds:.0f} s: {ROUNDS} interleaved rounds, "
        f"medians; `twistd suite` on core {SERVER_CORE}, the sender on core {CLIENT_CORE}; "
        f"server tree {TREE} ({tree_version()}).",
        "",
        f"### The collector with {IDENTITIES:,} identities watched by logs checks, next to none: "
        f"{MESSAGES:,} RFC 5424 messages of {MESSAGE_BYTES} bytes per load, app cycling through "
        f"app-00000..app-{IDENTITIES - 1:05d} on host {HOSTNAME}",
        "",
        "| configuration | connections | msg/s | × none watched (median of rounds) | "
        "× logger alone | server CPU µs/msg | all written |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    checks = []
    for connections in CONNECTIONS:
        for label, *_ in CONFIGURATIONS:
            cells = [run[connections] for run in runs[label]]
            ratios = [
                run[connections]["rps"] / none[connections]["rps"]
                for run, none in zip(runs[label], runs[NONE], strict=True)
            ]
            ratio = statistics.median(ratios)
            to_alone = statistics.median(
                run[connections]["rps"] / reference[connections]["rps"]
                for run, reference in zip(runs[label], runs[ALONE], strict=True)
            )
            complete = all(c["written"] == c["messages"] for c in cells)
            rows.append(
                f"| {label} | {connections} | {statistics.median(c['rps'] for c in cells):,.0f} | "
                f"{ratio:.3f} ({', '.join(f'{r:.2f}' for r in ratios)}) | {to_alone:.3f} | "
                f"{statistics.median(c['cpu_us'] for c in cells):.2f} | "
                f"{'yes' if complete else 'NO'} |"
            )
            if label == WATCHED:
                plural = "s" if connections > 1 else ""
                checks.append(
                    (
                        f"{connections} connection{plural}: {IDENTITIES:,} watched at "
                        f"{ratio:.3f}× none watched's msg/s (bar ≥ {BAR})",
                        ratio >= BAR and complete,
                    )
                )
    idle = {label: statistics.median(run["idle_cpu"] for run in runs[label]) for label in runs}
    register = statistics.median(run["register_s"] for run in runs[WATCHED])
    others = [run[c]["others_core0"] for label in runs for run in runs[label] for c in CONNECTIONS]
    none_cpu = statistics.median(run[1]["cpu_us"] for run in runs[NONE])
    expected = 1 / (1 + alone[IDENTITIES] / 1000 / none_cpu)
    rows += [
        "",
        "The hearer alone (`Silence.heard` in a process on core "
        f"{SERVER_CORE}, reads of 640 messages cycling through the identities): "
        f"{alone[IDENTITIES]:.0f} ns per message with {IDENTITIES:,} watched, "
        f"{alone[0]:.1f} ns with none; next to none watched's {none_cpu:.2f} µs per message "
        f"(1 connection), that is an expected {expected:.3f}× "
        "once the noise is gone.",
        "",
        f"Registering {IDENTITIES:,} instances with a Logs check over HTTP "
        f"({REGISTER_CONNECTIONS} kept-alive connections): median "
        f"{register:.1f} s ({IDENTITIES / register:,.0f}/s).",
        "",
        "Server CPU while idle (1 s before the loads, median): "
        + ", ".join(f"{label} {idle[label] * 100:.1f}%" for label in idle)
        + ".",
        "",
        f"Other processes on core {SERVER_CORE} during the loads: median "
        f"{statistics.median(others):.0%}, at most {max(others):.0%} of the core.",
        "",
        "### Bar",
        "",
    ]
    rows += [f"- {'ok' if ok else 'MISSED'}: {what}" for what, ok in checks]
    return "\n".join(rows) + "\n", all(ok for _, ok in checks)


def main():
    if not shutil.which("taskset"):
        sys.exit("bench needs taskset (util-linux)")
    os.sched_setaffinity(0, {int(CLIENT_CORE)})
    started = time.monotonic()
    try:
        alone = heard_alone()
        runs = run_rounds()
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    text, ok = report(runs, alone, time.monotonic() - started)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "silence.md").write_text(text)
    print("\n" + text)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
