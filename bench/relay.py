"""
`make bench`, the collector as a relay: RELP ingest next to rsyslog's imrelp
in the same run, and forwarding through a disk queue.

RELP ingest: bench/relp_loadgen.c opens sessions the way librelp (omrelp)
does and sends numbered RFC 5424 messages with a window of 128 (omrelp's
default) or 1024 unacknowledged, over 1 or 10 connections, checking every
`rsp 200` in order.  The rate is messages acknowledged per second, what an
omrelp sender sees; every message must also be in the collector's file (its
JSON records; rsyslog's omfile writes the same fields through bench/run.py's
template).  The two acknowledge at different points: the suite once the
record is written (and fsynced with `sync = true`), rsyslog's imrelp once the
message is in its main queue.  The `sync` row sets the suite's `sync = true`
next to rsyslog's nearest: a Direct main queue (imrelp answers only after
the action ran) and omfile `sync="on"`, which fsyncs every message, since a
batch is then one message.

Forwarding: relp_loadgen's plain mode sends octet-counted messages over one
TCP connection to the suite, which forwards them through a queue with
`memory_bytes = 0` (every message through the disk queue) to a `tcp:`
target, bench/octet_sink.c (a C counter far faster than any collector), or a
`relp:` target, rsyslog's imrelp, with a route that stops after forwarding;
to the sink also with the records written too.  The load starts 1.5 s after
the suite is ready, once its connection to the target is past its first
second (when a new tcp: connection takes at most 16,384 messages).  The rate
runs from the first message sent to the last one arrived at the target,
every one of them checked by number; the queue directory is watched during
the run to show the queue on disk.  Rows "alone" send the same messages
straight to the target: its ceiling.  syslog-ng's disk buffer (60-80k
msg/s) is the reference; it is not installed.

Servers on core 0; load generators and forward targets on core 1; server
CPU per message from /proc/PID/stat; BENCH_RELAY_ROUNDS (5) interleaved
rounds, medians.  Writes bench/results/relay.md and relay.json and exits 1
if a bar is missed.  `python relay.py ingest` (or `forwarding`) runs one
section.  BENCH_RELAY_MESSAGES (100,000) per ingest load,
BENCH_RELAY_SYNC_MESSAGES (50,000) per sync load of the suite (a 25th for
rsyslog, which fsyncs every message), BENCH_RELAY_FORWARD_MESSAGES
(150,000) per forwarding run; BENCH_TREE as in tree.py; BENCH_RELAY_PROFILE=DIR
runs every suite process under cProfile, writing DIR/NAME.prof (read with
`python -m pstats`), to see where a missed bar's time goes.
"""

import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from run import RSYSLOG_CONF, WORK, Server, suite
from tree import TREE, cpu_seconds, free_port

HERE = Path(__file__).resolve().parent
BIN = HERE / "bin"
RESULTS = HERE / "results"
ROUNDS = int(os.environ.get("BENCH_RELAY_ROUNDS", "5"))
MESSAGES = int(os.environ.get("BENCH_RELAY_MESSAGES", "100000"))
SYNC_MESSAGES = int(os.environ.get("BENCH_RELAY_SYNC_MESSAGES", "50000"))
FORWARD_MESSAGES = int(os.environ.get("BENCH_RELAY_FORWARD_MESSAGES", "150000"))
PROFILE = os.environ.get("BENCH_RELAY_PROFILE")
SERVER_CORE, CLIENT_CORE = "0", "1"
INGEST_BAR, FORWARD_BAR = 0.8, 100_000
# A new tcp: connection of the forwarder takes at most 16,384 messages in its first second
# (until it has lasted, a target that resets it loses nothing): paid once per connection, so
# the steady rate is measured from a connection older than that.
SETTLE_WAIT = 1.5

# (connections, window) of each RELP load; the sync loads are the same with `sync` on.
INGEST_LOADS = ((1, 128), (1, 1024), (10, 128), (10, 1024))
SYNC_LOADS = ((1, 128), (10, 128))
COLLECTORS = ("rsyslog", "suite")

# bench/run.py's JSON template: the same fields as the suite's records.
JSON_TEMPLATE = next(line for line in RSYSLOG_CONF.splitlines() if line.startswith("template("))
RSYSLOG_RELP_CONF = (
    'global(workDirectory="{work}")\n'
    'module(load="imrelp")\n'
    f"{JSON_TEMPLATE}\n"
    "{queue}"
    'input(type="imrelp" port="{port}" address="127.0.0.1")\n'
    'action(type="omfile" file="{output}" template="json" {writing})\n'
)
# rsyslog as bench/run.py runs it, and as close to a fsync before each acknowledgement as it goes.
RSYSLOG_WRITING = {
    False: ("", 'asyncWriting="on" flushInterval="1" ioBufferSize="256k"'),
    True: ('main_queue(queue.type="Direct")\n', 'sync="on" flushOnTXEnd="on" asyncWriting="off"'),
}
# A forward target writes each batch as it ends, so that its file shows when messages arrived.
RSYSLOG_TARGET_WRITING = ("", 'flushOnTXEnd="on" asyncWriting="off"')

NUMBER = re.compile(rb"message (\d{8})")


class Written:
    """
    The numbered messages (relp_loadgen's) in a file of records, from OFFSET
    on: others (a collector's connection events) are not counted, and a
    message counted twice is a duplicate.
    """

    def __init__(self, path: Path, offset: int = 0):
        self.path, self.offset = path, offset
        self.numbers: set[bytes] = set()
        self.duplicates = 0
        self.last = time.monotonic()  # when the file last grew

    @classmethod
    def after_end_of(cls, path: Path) -> "Written":
        return cls(path, path.stat().st_size if path.exists() else 0)

    def wait(self, expected: int, timeout: float, quiet: float = 2.0) -> "Written":
        """Reads on until EXPECTED distinct messages are there, or QUIET s without growth."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.numbers) < expected:
            if self._read_on():
                self.last = time.monotonic()
            elif time.monotonic() - self.last > quiet:
                break
            else:
                time.sleep(0.005)
        return self

    def _read_on(self) -> bool:
        """Counts the whole lines added since the last look; whether there were any."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read(1 << 24)
        except FileNotFoundError:
            return False
        whole = chunk[: chunk.rfind(b"\n") + 1]
        if not whole:
            return False
        self.offset += len(whole)
        for number in NUMBER.findall(whole):
            if number in self.numbers:
                self.duplicates += 1
            self.numbers.add(number)
        return True


def build():
    """The C programs, compiled when missing or older than their source (as run.py does)."""
    BIN.mkdir(exist_ok=True)
    for name in ("relp_loadgen", "octet_sink"):
        source, binary = HERE / f"{name}.c", BIN / name
        if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
            subprocess.run(["gcc", "-O2", "-Wall", "-o", str(binary), str(source)], check=True)


def figures(text: str) -> dict[str, float]:
    """The `key=value` fields the C programs print."""
    return {k: float(v) for k, v in (field.split("=") for field in text.split())}


def send(mode: str, port: int, connections: int, window: int, messages: int) -> dict:
    """relp_loadgen on the client core; its figures (started, finished: time.monotonic())."""
    out = subprocess.run(
        [
            "taskset",
            "-c",
            CLIENT_CORE,
            str(BIN / "relp_loadgen"),
            mode,
            "127.0.0.1",
            str(port),
            str(connections),
            str(window),
            str(messages),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if out.returncode:
        raise RuntimeError(f"relp_loadgen: {out.stderr.strip() or out.stdout}")
    return figures(out.stdout)


# --- RELP ingest next to rsyslog's imrelp -------------------------------------------------------


def start_rsyslog(name: str, port: int, output: Path, writing, cores=SERVER_CORE) -> Server:
    work = WORK / f"rsyslog-{name}"
    work.mkdir(exist_ok=True)
    queue, action = writing
    conf = work / "rsyslog.conf"
    conf.write_text(
        RSYSLOG_RELP_CONF.format(work=work, port=port, output=output, queue=queue, writing=action)
    )
    return Server(["rsyslogd", "-n", "-f", str(conf), "-i", str(work / "pid")], port, cores=cores)


def suite_config(name: str, body: str) -> Path:
    """A config file for `suite-logger --config`: BODY under [logger], records never rotated."""
    conf = WORK / f"{name}.toml"
    conf.write_text(f"[logger]\nrotate_bytes = 0\nflush_interval = 0.05\n{body}")
    return conf


# twistd ends a run stopped by a signal by raising that signal again, unhandled, so the
# profile is written when the reactor has shut down rather than when twistd returns.
PROFILED_TWISTD = """
import cProfile
from twisted.internet import reactor
from twisted.scripts.twistd import run
profile = cProfile.Profile()
def written():
    profile.disable()
    profile.dump_stats({where!r})
reactor.addSystemEventTrigger("after", "shutdown", written)
profile.enable()
run()
"""


def start_logger(name: str, conf: Path, port: int) -> Server:
    """`suite-logger --config CONF` listening on PORT; under cProfile with BENCH_RELAY_PROFILE."""
    argv = suite("suite-logger", "--config", str(conf))
    if PROFILE:
        Path(PROFILE).mkdir(parents=True, exist_ok=True)
        where = str(Path(PROFILE).resolve() / f"{name}.prof")
        argv[2] = PROFILED_TWISTD.format(where=where)
    return Server(argv, port)


def start_suite_relp(name: str, port: int, output: Path, sync: bool) -> Server:
    conf = suite_config(
        name,
        f'listen = ["tcp:{free_port()}:interface=127.0.0.1"]\n'
        f'relp_listen = ["tcp:{port}:interface=127.0.0.1"]\n'
        f'output = "{output}"\n'
        f"sync = {'true' if sync else 'false'}\n",
    )
    return start_logger(name, conf, port)


def ingest_once(server: Server, output: Path, connections: int, window: int, n: int) -> dict:
    """One RELP load: acknowledged msg/s, then every record waited for; CPU per message."""
    written = Written.after_end_of(output)
    before = cpu_seconds(server.pid)
    sent = send("relp", server.port, connections, window, n)
    written.wait(n, 60)
    cpu = cpu_seconds(server.pid) - before
    return {
        "rps": sent["rps"],
        "cpu_us": cpu / n * 1e6,
        "messages": n,
        "written": len(written.numbers),
        "duplicates": written.duplicates,
    }


def relp_unserved() -> str | None:
    """Why the suite has no RELP rows: None once this tree's suite-logger serves relp_listen."""
    relp, plain = free_port(), free_port()
    conf = suite_config(
        "probe-relp",
        f'listen = ["tcp:{plain}:interface=127.0.0.1"]\n'
        f'relp_listen = ["tcp:{relp}:interface=127.0.0.1"]\n'
        f'output = "{WORK / "probe-relp.jsonl"}"\n',
    )
    try:
        server = start_logger("probe-relp", conf, plain)
    except RuntimeError:
        return "this tree's suite-logger does not start with relp_listen"
    try:
        for _ in range(40):
            try:
                socket.create_connection(("127.0.0.1", relp), timeout=1).close()
                return None
            except OSError:
                time.sleep(0.05)
        return "this tree's suite-logger does not listen on relp_listen yet"
    finally:
        server.stop()


def collectors(reason: str | None) -> list[str]:
    """The RELP collectors this machine has, the suite unless REASON says why not."""
    found = ["rsyslog"] if shutil.which("rsyslogd") else []
    return found + ([] if reason else ["suite"])


def start_collector(name: str, sync: bool, output: Path) -> Server:
    port = free_port()
    if name == "rsyslog":
        return start_rsyslog(output.stem, port, output, RSYSLOG_WRITING[sync])
    return start_suite_relp(output.stem, port, output, sync)


def load_size(collector: str, sync: bool) -> int:
    """Messages per load: with sync, rsyslog fsyncs each one, so it gets a 25th."""
    if not sync:
        return MESSAGES
    return SYNC_MESSAGES // 25 if collector == "rsyslog" else SYNC_MESSAGES


def ingest() -> tuple[list[str], dict]:
    """
    Every load against each collector, the collectors and the loads in
    reverse order every other round; each collector started for a round
    first takes a tenth of a load from 10 connections, not counted, so that
    no load is the one that meets a cold process.
    """
    plans = [(False, INGEST_LOADS), (True, SYNC_LOADS)]
    reason = relp_unserved()
    cells: dict = {}
    for number in range(ROUNDS):
        for sync, loads in plans:
            names = collectors(reason)
            for name in names if number % 2 == 0 else names[::-1]:
                output = WORK / f"{name}-relp-{'sync' if sync else 'nosync'}-{number}.jsonl"
                server = start_collector(name, sync, output)
                n = load_size(name, sync)
                try:
                    ingest_once(server, output, 10, 128, n // 10)
                    for connections, window in loads if number % 2 == 0 else loads[::-1]:
                        cell = ingest_once(server, output, connections, window, n)
                        cells.setdefault((sync, connections, window, name), []).append(cell)
                        print(
                            f"  round {number + 1}: {name:7} sync={'on ' if sync else 'off'} "
                            f"{connections:2} x window {window:4}: msg/s={cell['rps']:,.0f} "
                            f"cpu_us={cell['cpu_us']:.2f} written={cell['written']:,}/{n:,}",
                            flush=True,
                        )
                finally:
                    server.stop()
                    output.unlink(missing_ok=True)
    return ingest_table(plans, cells, reason)


def medians(runs: list[dict]) -> dict | None:
    """The median msg/s and server CPU per message of a collector's RUNS; None if it has none."""
    if not runs:
        return None
    return {
        "msg_per_s": statistics.median(c["rps"] for c in runs),
        "cpu_us_per_msg": statistics.median(c["cpu_us"] for c in runs),
    }


def shown(value: float | None, form: str) -> str:
    return "–" if value is None else format(value, form)


def ingest_table(plans, cells, reason: str | None) -> tuple[list[str], dict]:
    rows = [
        f"### RELP ingest: {MESSAGES:,} numbered messages of 100 bytes per load "
        f"({SYNC_MESSAGES:,} to the suite, {SYNC_MESSAGES // 25:,} to rsyslog with sync), "
        "acknowledged",
        "",
    ]
    if reason:
        rows += [f"Suite rows skipped: {reason}.", ""]
    if not shutil.which("rsyslogd"):
        rows += ["rsyslog rows skipped: rsyslogd is not installed (`make tools`).", ""]
    rows += [
        "| load | rsyslog imrelp msg/s | suite msg/s | suite × rsyslog | "
        "CPU µs/msg rsyslog / suite | all written, once |",
        "|---|---:|---:|---:|---:|---|",
    ]
    found = {}
    for sync, loads in plans:
        for connections, window in loads:
            runs = {name: cells.get((sync, connections, window, name), []) for name in COLLECTORS}
            theirs, ours = medians(runs["rsyslog"]), medians(runs["suite"])
            ratio = ours["msg_per_s"] / theirs["msg_per_s"] if theirs and ours else None
            complete = all(
                c["written"] == c["messages"] and not c["duplicates"]
                for name in COLLECTORS
                for c in runs[name]
            )
            plural = "s" if connections > 1 else ""
            label = f"{'sync, ' if sync else ''}{connections} connection{plural}, window {window}"
            rows.append(
                f"| {label} | {shown(theirs and theirs['msg_per_s'], ',.0f')} | "
                f"{shown(ours and ours['msg_per_s'], ',.0f')} | {shown(ratio, '.2f')} | "
                f"{shown(theirs and theirs['cpu_us_per_msg'], '.2f')} / "
                f"{shown(ours and ours['cpu_us_per_msg'], '.2f')} | "
                f"{'yes' if complete else 'NO'} |"
            )
            found[label] = {
                "sync": sync,
                "connections": connections,
                "window": window,
                "rsyslog": theirs,
                "suite": ours,
                "suite_x_rsyslog": ratio,
                "all_written": complete,
                "rounds": runs,
            }
    return rows, found


# --- forwarding through a disk queue ----------------------------------------------------------


class QueueWatch(threading.Thread):
    """The queue directory's peak bytes and files while a run goes on: the queue is on disk."""

    def __init__(self, directory: Path):
        super().__init__(daemon=True)
        self.directory = directory
        self.peak_bytes = self.peak_files = 0
        self.done = threading.Event()

    def run(self):
        while not self.done.wait(0.01):
            try:
                sizes = [entry.stat().st_size for entry in os.scandir(self.directory)]
            except OSError:
                continue
            self.peak_bytes = max(self.peak_bytes, sum(sizes))
            self.peak_files = max(self.peak_files, sum(1 for size in sizes if size))

    def stop(self):
        self.done.set()
        self.join()


class Sink:
    """bench/octet_sink on the client core: a `tcp:` target counting numbered messages."""

    def __init__(self, expected: int, idle: float = 20):
        self.process = subprocess.Popen(
            ["taskset", "-c", CLIENT_CORE, str(BIN / "octet_sink"), "0", str(expected), str(idle)],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.port = int(self.process.stdout.readline().split("=")[1])

    def arrived(self) -> dict:
        """Once every message came (or none for IDLE s): distinct, duplicates, last."""
        out, _ = self.process.communicate(timeout=300)
        found = figures(out)
        return {
            "distinct": int(found["distinct"]),
            "duplicates": int(found["duplicates"]),
            "last": found["last"],
        }

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class RsyslogTarget:
    """rsyslog's imrelp on the client core, writing each batch as it ends: a `relp:` target."""

    def __init__(self, name: str, expected: int):
        self.expected = expected
        self.output = WORK / f"{name}-target.jsonl"
        self.server = start_rsyslog(
            name, free_port(), self.output, RSYSLOG_TARGET_WRITING, cores=CLIENT_CORE
        )
        self.port = self.server.port

    def arrived(self) -> dict:
        written = Written(self.output).wait(self.expected, 120)
        return {
            "distinct": len(written.numbers),
            "duplicates": written.duplicates,
            "last": written.last,
        }

    def stop(self):
        self.server.stop()
        self.output.unlink(missing_ok=True)


def start_forwarder(name: str, target: str, output: Path, queue: Path, stop: bool) -> Server:
    port = free_port()
    route = '\n[[logger.route]]\nforward = ["target"]\nstop = true\n' if stop else ""
    conf = suite_config(
        name,
        f'listen = ["tcp:{port}:interface=127.0.0.1"]\n'
        f'output = "{output}"\n'
        "\n[[logger.forward]]\n"
        'name = "target"\n'
        f'target = "{target}"\n'
        "memory_bytes = 0\n"
        f'queue_dir = "{queue}"\n' + route,
    )
    return start_logger(name, conf, port)


def forward_unserved() -> str | None:
    """Why the suite has no forwarding rows: None once one message goes through it to a sink."""
    queue, sink = WORK / "probe-queue", Sink(1, idle=5)
    try:
        target = f"tcp:127.0.0.1:{sink.port}"
        server = start_forwarder("probe-forward", target, WORK / "probe.jsonl", queue, True)
    except RuntimeError:
        sink.stop()
        return "this tree's suite-logger does not start with [[logger.forward]] and a route"
    try:
        send("tcp", server.port, 1, 1, 1)
        if not sink.arrived()["distinct"]:
            return "this tree's suite-logger does not forward yet"
    finally:
        server.stop()
        sink.stop()
        shutil.rmtree(queue, ignore_errors=True)
    return None


# (label, target kind, through the suite, route stops after forwarding)
FORWARD_PATHS = (
    ("C sink alone (relp_loadgen straight to it)", "tcp", False, False),
    ("suite → tcp: C sink, route stops after forwarding", "tcp", True, True),
    ("suite → tcp: C sink, records written too", "tcp", True, False),
    ("rsyslog imrelp alone (relp_loadgen, 1 connection, window 128)", "relp", False, False),
    ("suite → relp: rsyslog imrelp, route stops after forwarding", "relp", True, True),
)


def forward_once(number: int, target_kind: str, through_suite: bool, stop: bool) -> dict:
    n = FORWARD_MESSAGES
    name = f"fwd-{target_kind}-{int(through_suite)}{int(stop)}-{number}"
    target = Sink(n) if target_kind == "tcp" else RsyslogTarget(name, n)
    forwarder = watch = None
    output, queue = WORK / f"{name}.jsonl", WORK / f"{name}-queue"
    try:
        if through_suite:
            forwarder = start_forwarder(
                name, f"{target_kind}:127.0.0.1:{target.port}", output, queue, stop
            )
            time.sleep(SETTLE_WAIT)
            watch = QueueWatch(queue)
            watch.start()
            before = cpu_seconds(forwarder.pid)
            sent = send("tcp", forwarder.port, 1, 1, n)
        else:
            sent = send(target_kind, target.port, 1, 128, n)
        arrived = target.arrived()
        cell = {
            "rps": arrived["distinct"] / max(arrived["last"] - sent["started"], 1e-9),
            "arrived": arrived["distinct"],
            "duplicates": arrived["duplicates"],
        }
        if forwarder is not None and watch is not None:
            if not stop:
                cell["written"] = len(Written(output).wait(n, 30).numbers)
            cell["cpu_us"] = (cpu_seconds(forwarder.pid) - before) / n * 1e6
            watch.stop()
            cell["queue_peak_bytes"], cell["queue_peak_files"] = watch.peak_bytes, watch.peak_files
    finally:
        if watch is not None:
            watch.stop()
        if forwarder is not None:
            forwarder.stop()
        target.stop()
        output.unlink(missing_ok=True)
        shutil.rmtree(queue, ignore_errors=True)
    return cell


def forwarding() -> tuple[list[str], dict]:
    reason = forward_unserved()
    paths = [
        p
        for p in FORWARD_PATHS
        if (p[1] == "tcp" or shutil.which("rsyslogd")) and not (p[2] and reason)
    ]
    cells: dict = {label: [] for label, *_ in paths}
    for number in range(ROUNDS):
        for label, kind, through_suite, stop in paths if number % 2 == 0 else paths[::-1]:
            cell = forward_once(number, kind, through_suite, stop)
            cells[label].append(cell)
            print(
                f"  round {number + 1}: {label[:58]:58} msg/s={cell['rps']:,.0f} "
                f"arrived={cell['arrived']:,}/{FORWARD_MESSAGES:,}"
                + (
                    f" cpu_us={cell['cpu_us']:.2f} queue peak="
                    f"{cell['queue_peak_bytes'] / 2**20:.1f} MiB"
                    if "cpu_us" in cell
                    else ""
                ),
                flush=True,
            )
    rows = [
        f"### Forwarding through a disk queue (memory_bytes = 0): {FORWARD_MESSAGES:,} numbered "
        "messages of 100 bytes over one TCP connection, octet-counted",
        "",
    ]
    if reason:
        rows += [f"Suite rows skipped: {reason}.", ""]
    rows += [
        "| path | delivered msg/s | all arrived, once | suite CPU µs/msg | queue on disk, peak |",
        "|---|---:|---|---:|---:|",
    ]
    found = {}
    for label, *_ in paths:
        runs = cells[label]
        rps = statistics.median(c["rps"] for c in runs)
        whole = all(
            c["arrived"] == FORWARD_MESSAGES
            and not c["duplicates"]
            and c.get("written", FORWARD_MESSAGES) == FORWARD_MESSAGES
            for c in runs
        )
        cpu = statistics.median(c["cpu_us"] for c in runs) if "cpu_us" in runs[0] else None
        peak = max(c.get("queue_peak_bytes", 0) for c in runs)
        rows.append(
            f"| {label} | {rps:,.0f} | {'yes' if whole else 'NO'} | "
            f"{f'{cpu:.2f}' if cpu is not None else '–'} | "
            f"{f'{peak / 2**20:.1f} MiB' if cpu is not None else '–'} |"
        )
        found[label] = {
            "msg_per_s": rps,
            "all_arrived_once": whole,
            "suite_cpu_us_per_msg": cpu,
            "queue_peak_bytes": peak if cpu is not None else None,
            "rounds": runs,
        }
    return rows, found


# --- bars and report ----------------------------------------------------------------------------


def bars(results) -> list[tuple[str, bool]]:
    checks = []
    for label, row in results.get("ingest", {}).items():
        ratio = row["suite_x_rsyslog"]
        if ratio is not None and not row["sync"]:
            checks.append(
                (
                    f"RELP ingest, {label}: {ratio:.2f}× rsyslog imrelp's msg/s "
                    f"(bar ≥ {INGEST_BAR})",
                    ratio >= INGEST_BAR and row["all_written"],
                )
            )
    for label, row in results.get("forwarding", {}).items():
        if label.startswith("suite → tcp:"):
            rps = row["msg_per_s"]
            checks.append(
                (
                    f"Forwarding spilling to disk, {label[8:]}: {rps:,.0f} msg/s delivered "
                    f"(bar ≥ {FORWARD_BAR:,}; syslog-ng's disk buffer: 60-80k)",
                    rps >= FORWARD_BAR and row["all_arrived_once"] and row["queue_peak_bytes"] > 0,
                )
            )
    return checks


def tree_version() -> str:
    """The measured tree's commit and whether it has uncommitted changes (for a checkout)."""
    git = ["git", "-C", str(TREE)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if commit.returncode:
        return "not a git checkout"
    changed = subprocess.run(
        [*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
    ).stdout.strip()
    return f"commit {commit.stdout.strip()}{', with uncommitted changes' if changed else ''}"


SECTIONS = {"ingest": ingest, "forwarding": forwarding}
ONLY = set(sys.argv[1:])


def main():
    if not shutil.which("taskset"):
        sys.exit("bench needs taskset (util-linux)")
    if ONLY - SECTIONS.keys():
        sys.exit(f"sections: {', '.join(SECTIONS)} (name some to run only those)")
    os.sched_setaffinity(0, {int(CLIENT_CORE)})
    build()
    started = time.monotonic()
    text, results = [], {}
    try:
        for name, section in SECTIONS.items():
            if ONLY and name not in ONLY:
                continue
            print(f"== {name}", flush=True)
            begun = time.monotonic()
            rows, results[name] = section()
            print(f"   ({time.monotonic() - begun:.0f} s)", flush=True)
            text += rows + [""]
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    checks = bars(results)
    header = [
        f"Measured {time.strftime('%Y-%m-%d')} in {time.monotonic() - started:.0f} s: "
        f"{ROUNDS} interleaved rounds, medians; servers on core {SERVER_CORE}, load generators "
        f"and forward targets on core {CLIENT_CORE}; server tree {TREE} ({tree_version()}).",
        "",
    ]
    footer = ["### Bars", ""] + [f"- {'ok' if ok else 'MISSED'}: {what}" for what, ok in checks]
    report = "\n".join(header + text + footer) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "relay.md").write_text(report)
    (RESULTS / "relay.json").write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d"),
                "tree": f"{TREE} ({tree_version()})",
                "rounds": ROUNDS,
                **results,
            },
            indent=1,
        )
        + "\n"
    )
    print("\n" + report)
    sys.exit(0 if all(ok for _, ok in checks) else 1)


if __name__ == "__main__":
    main()
