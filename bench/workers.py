"""
`make bench`, what `workers = 2` buys on this two-core machine: the suite
with two worker processes next to one process, on the echo server and on
the collector.

- Echo: `twistd suite-echo --workers N` under bench/run.py's SCALING_LOADS
  (bench/bin/loadgen, 100 connections).  With one process (`--workers 1`:
  no supervisor, one process as always) the suite has core 0 and the
  generator core 1; with two workers the suite (parent and workers) may run
  on both cores and the generator runs where it can, as in run.py's
  scaling().  The server-bound load (256 pipelined 16-byte lines per
  write) carries the bar; the generator-bound one (one 64-byte message per
  round trip) is shown: there the generator needs about as much CPU as the
  server, so two cores cannot give twice.
- Collector: `twistd suite-logger --workers N`, MESSAGES RFC 5424 messages
  of 100 bytes (run.py's syslog_message) over 1 and over 10 connections
  (bench/stream_sender.c: a C sender, so that the load's share of the two
  cores stays small beside the collector's).  msg/s is message records written to the output
  file over the time from the first byte sent to the last record written,
  and every message must be written.  Server CPU per message is the parent's and its
  workers' together (each worker frames, parses and appends its own records
  to the one file; the parent, with no routes, does nothing per message).

The load (loadgen, the sender, and this script, which watches the
output's size as it grows) runs on core 1 beside one process and on both cores beside two
workers; its CPU per request is reported with the suite's, and "two cores
allow" is the ratio those costs leave room for, since the load takes its
share of the same two cores.  The cores' busy time that neither the suite
nor the load used (other work on the machine) is printed with each load and
summed up in the report: a disturbed run shows there.

A server counts as started once every one of its serving processes (the
process itself, or each worker) has the listening socket in its epoll set
and its main thread waits in epoll_wait: the parent binds the port and so
answers Server's probe (the connection waits in the backlog) before its
workers have even imported the suite, and a load started then would count
their start-up.  The time from the parent's listening to the workers'
serving is printed.

BENCH_ROUNDS (4) interleaved rounds, the order of one and two reversed every
other round; the ratio two / one is taken in each round (the two are
measured seconds apart, so a drift of the machine weighs on both) and the
bars are on the median of those ratios.  Writes bench/results/workers.md
and exits 1 if a bar is missed: two workers at least BAR x one process on
the server-bound echo load and on the collector over 10 connections, every
message written.  BENCH_SECONDS (3) per echo load as in run.py;
BENCH_WORKERS_MESSAGES (500,000) per collector load.
"""

import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from run import (
    BIN,
    ROUNDS,
    SCALING_LOADS,
    SECONDS,
    WORK,
    Server,
    build,
    load,
    suite,
    syslog_message,
)
from silence import Records
from tree import TREE, cpu_seconds, free_port

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
MESSAGES = int(os.environ.get("BENCH_WORKERS_MESSAGES", "500000"))
MESSAGE_BYTES = 100
SERVER_CORE, CLIENT_CORE, BOTH_CORES = "0", "1", "0,1"
WORKERS = (1, 2)
CONNECTIONS = (1, 10)
BAR = 1.8
SERVER_BOUND = next(iter(SCALING_LOADS))
EPOLL_WAIT = ("do_epoll_wait", "ep_poll")  # the kernel's name for a thread in epoll_wait


# --- what else ran ---------------------------------------------------------------------------


def busy_seconds() -> float:
    """CPU seconds every core spent busy since boot (every process, interrupts), /proc/stat."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(
        int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def load_seconds() -> float:
    """
    CPU seconds of the load: this script (it watches the output grow)
    and its children that ended (loadgen, the sender), once waited for.
    """
    return sum(
        used.ru_utime + used.ru_stime
        for used in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    )


class Others:
    """
    Cores' busy time during a load that neither the suite nor the load used,
    in cores: the other work on the machine (tests, other benchmarks), and
    interrupts no process is charged for.  Printed with each load and summed
    up in the report, so that a disturbed run shows.
    """

    def __init__(self, server: "Suite"):
        self.server = server
        self.started = time.monotonic()
        self.busy, self.load, self.cpu = busy_seconds(), load_seconds(), sum(server.cpu())

    def cores(self) -> float:
        elapsed = time.monotonic() - self.started
        ours = sum(self.server.cpu()) - self.cpu + load_seconds() - self.load
        return max(busy_seconds() - self.busy - ours, 0.0) / elapsed


# --- the processes of a suite with workers --------------------------------------------------


def children(pid: int) -> list[int]:
    """PID's child processes (its workers), from /proc/PID/task/*/children."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:  # the thread ended
            pass
    return found


def sockets_on(port: int, state: str) -> set[str]:
    """The inodes (as /proc/PID/fd links read) of TCP sockets on local PORT in STATE."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == state and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    return inodes


def listening_inodes(port: int) -> set[str]:
    return sockets_on(port, "0A")


def established_inodes(port: int) -> set[str]:
    return sockets_on(port, "01")


def socket_fds(pid: int) -> set[str]:
    """What PID's descriptors link to (sockets among them)."""
    links = set()
    try:
        for entry in Path(f"/proc/{pid}/fd").iterdir():
            try:
                links.add(os.readlink(entry))
            except OSError:
                pass
    except OSError:
        pass
    return links


def serving(pid: int, inodes: set[str]) -> bool:
    """Whether PID has a listening socket of INODES in its epoll set and waits in epoll_wait."""
    try:
        links = {}
        for entry in Path(f"/proc/{pid}/fd").iterdir():
            try:
                links[entry.name] = os.readlink(entry)
            except OSError:
                pass
        watched = set()
        for fd, link in links.items():
            if link == "anon_inode:[eventpoll]":
                for line in Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines():
                    if line.startswith("tfd:"):
                        watched.add(line.split()[1])
        waiting = Path(f"/proc/{pid}/wchan").read_text() in EPOLL_WAIT
    except OSError:  # the process ended
        return False
    return waiting and any(links.get(fd) in inodes for fd in watched)


class Suite:
    """`twistd PLUGIN --workers N ARGUMENTS` on CORES, waited for until every worker serves."""

    def __init__(self, plugin: str, workers: int, cores: str, *arguments: str):
        self.workers = workers
        port = free_port()
        started = time.monotonic()
        self.server = Server(suite(plugin, "--workers", str(workers), *arguments), port, cores)
        self.port, self.pid = port, self.server.pid
        listening = time.monotonic()
        self.pids = self._wait_serving()
        self.workers_after = time.monotonic() - listening
        self.started_in = time.monotonic() - started

    def _wait_serving(self) -> list[int]:
        inodes = listening_inodes(self.port)
        for _ in range(400):
            workers = children(self.pid) if self.workers > 1 else []
            serve = workers if self.workers > 1 else [self.pid]
            if len(serve) == self.workers and all(serving(pid, inodes) for pid in serve):
                return [self.pid, *workers]
            time.sleep(0.05)
        raise RuntimeError(f"{self.workers} worker(s) did not start serving port {self.port}")

    def split(self, connections: int, timeout: float = 0.5) -> tuple[int, ...]:
        """
        How many of CONNECTIONS each worker serves, most first, once all are
        accepted (or what it was at TIMEOUT): a worker with more than its
        share of a load whose connections each bring as much ends last.
        """
        deadline, found = time.monotonic() + timeout, tuple[int, ...]()
        while time.monotonic() < deadline:
            inodes = established_inodes(self.port)
            found = tuple(
                sorted(
                    (len(socket_fds(pid) & inodes) for pid in self.pids[-self.workers :]),
                    reverse=True,
                )
            )
            if sum(found) >= connections:
                break
            time.sleep(0.005)
        return found

    def cpu(self) -> tuple[float, float]:
        """(the parent's, its workers') CPU seconds, read while they run."""
        return cpu_seconds(self.pid), sum(cpu_seconds(pid) for pid in self.pids[1:])

    def check_workers(self) -> None:
        """A worker restarted during a load would hide its CPU and its start-up in the figures."""
        if self.workers > 1 and sorted(children(self.pid)) != sorted(self.pids[1:]):
            raise RuntimeError(f"a worker of {self.pid} was restarted during the load")

    def stop(self) -> None:
        self.server.stop()


def place_load(workers: int) -> None:
    """
    This script and the load it starts on core 1 beside one process, on
    both cores beside two workers (as the suite): the script reads the
    collector's output while it writes, and loadgen inherits its cores.
    """
    os.sched_setaffinity(0, {int(CLIENT_CORE)} if workers == 1 else {0, 1})


def label(workers: int) -> str:
    return "one process" if workers == 1 else f"{workers} workers"


def in_order(number: int) -> tuple[int, ...]:
    return WORKERS if number % 2 == 0 else WORKERS[::-1]


# --- echo --------------------------------------------------------------------------------------


def echo_round(number: int, cells: dict) -> None:
    for load_name, (mode, size, depth) in SCALING_LOADS.items():
        for workers in in_order(number):
            one = workers == 1
            server = Suite(
                "suite-echo",
                workers,
                SERVER_CORE if one else BOTH_CORES,
                "--mode",
                mode,
                "--listen",
                "tcp:{port}:interface=127.0.0.1",
                "--max-connections-per-source",
                "1000",
            )
            try:
                place_load(workers)
                others, generator = Others(server), load_seconds()
                split: list[tuple[int, ...]] = []
                # loadgen's 100 connections, shared out as the load runs (at its middle).
                looker = threading.Timer(
                    SECONDS / 2, lambda found, at: found.append(at.split(100)), (split, server)
                )
                looker.start()
                cell = load(
                    [BIN / "loadgen", "127.0.0.1", server.port, 100, size, SECONDS, mode, depth],
                    server.pids,
                    core=CLIENT_CORE if one else None,
                )
                looker.join()
                cell["others"] = others.cores()
                cell["split"] = split[0] if split else ()
                cell["load_cpu_us"] = (load_seconds() - generator) / max(cell["all"], 1) * 1e6
                server.check_workers()
            finally:
                server.stop()
            cell["workers_after"] = server.workers_after
            cells[load_name, workers].append(cell)
            print(
                f"  round {number + 1}: echo {load_name[:40]:40} {label(workers):11} "
                f"req/s={cell['rps']:,.0f} cpu_us={cell['cpu_us']:.2f} "
                f"loadgen_cpu_us={cell['load_cpu_us']:.2f} others={cell['others']:.2f} cores "
                f"(served {server.workers_after:.2f} s after the parent listened) "
                f"connections per process={'/'.join(map(str, cell['split']))}",
                flush=True,
            )


# --- the collector ----------------------------------------------------------------------------


def start_collector(number: int, workers: int) -> tuple[Suite, Path]:
    output = WORK / f"workers-{number}-{workers}.jsonl"
    server = Suite(
        "suite-logger",
        workers,
        SERVER_CORE if workers == 1 else BOTH_CORES,
        "--listen",
        "tcp:{port}:interface=127.0.0.1",
        "--output",
        str(output),
        "--rotate-bytes",
        "0",
        "--flush-interval",
        "0.05",
    )
    return server, output


def quiet_after(path: Path, offset: int, quiet: float = 1.0, timeout: float = 120) -> float:
    """
    When PATH last grew past OFFSET, once it has not grown for QUIET
    seconds: the load's end, learnt from the file's size alone (reading the
    records as they are written cost this script more than the sender).
    """
    size, grew = offset, time.monotonic()
    deadline = grew + timeout
    while time.monotonic() < deadline:
        now = path.stat().st_size if path.exists() else 0
        if now != size:
            size, grew = now, time.monotonic()
        elif time.monotonic() - grew > quiet and size > offset:
            break
        time.sleep(0.002)
    return grew


def send(server: Suite, output: Path, data: bytes, connections: int) -> dict:
    """DATA over CONNECTIONS; msg/s written, the parent's and the workers' CPU per message."""
    count = len(data) // MESSAGE_BYTES
    records = Records(output)
    messages = WORK / f"workers-messages-{len(data)}.bin"  # written once, before any load
    if not messages.exists():
        messages.write_bytes(data)
    place_load(server.workers)
    others, load_before = Others(server), load_seconds()
    parent_before, workers_before = server.cpu()
    started = time.monotonic()
    sender = subprocess.Popen(
        [BIN / "stream_sender", str(server.port), str(connections), str(MESSAGE_BYTES), messages]
    )
    split = server.split(connections)
    finished = quiet_after(output, records.offset)
    if sender.wait(60):
        raise RuntimeError("the sender failed")
    parent_after, workers_after = server.cpu()
    other_cores, load_cpu = others.cores(), load_seconds() - load_before
    records.wait(count)  # counted once the CPU is read: a count reads every record
    server.check_workers()
    os.truncate(output, 0)  # no later load pays for this one's writeback (silence.py)
    written = max(records.count, 1)
    return {
        "rps": records.count / (finished - started),
        "cpu_us": (parent_after - parent_before + workers_after - workers_before) / written * 1e6,
        "parent_cpu_us": (parent_after - parent_before) / written * 1e6,
        "load_cpu_us": load_cpu / written * 1e6,
        "written": records.count,
        "messages": count,
        "others": other_cores,
        "split": split,
    }


def collector_round(number: int, data: bytes, cells: dict) -> None:
    """
    Both collectors started and warmed with a tenth of a load, then each
    load to each in turn and back (A B B A, the mean of the two): the loads
    compared are seconds apart, and the collector not loaded is idle.
    """
    started: list[tuple[Suite, Path]] = []
    try:
        for workers in in_order(number):
            started.append(start_collector(number, workers))
        warm = data[: len(data) // 10 // MESSAGE_BYTES * MESSAGE_BYTES]
        for server, output in started:
            send(server, output, warm, 10)
        for connections in CONNECTIONS if number % 2 == 0 else CONNECTIONS[::-1]:
            loads: dict[int, list[dict]] = {server.workers: [] for server, _ in started}
            for server, output in started + started[::-1]:
                cell = send(server, output, data, connections)
                loads[server.workers].append(cell)
                print(
                    f"  round {number + 1}: collector {label(server.workers):11} "
                    f"{connections:2} connection(s): msg/s={cell['rps']:,.0f} "
                    f"cpu_us={cell['cpu_us']:.2f} (parent {cell['parent_cpu_us']:.2f}) "
                    f"load_cpu_us={cell['load_cpu_us']:.2f} "
                    f"written={cell['written']:,}/{cell['messages']:,} "
                    f"others={cell['others']:.2f} cores "
                    f"connections per process={'/'.join(map(str, cell['split']))}",
                    flush=True,
                )
            for workers, pair in loads.items():
                cells[connections, workers].append(
                    {
                        "rps": statistics.mean(c["rps"] for c in pair),
                        "cpu_us": statistics.mean(c["cpu_us"] for c in pair),
                        "parent_cpu_us": statistics.mean(c["parent_cpu_us"] for c in pair),
                        "others": statistics.mean(c["others"] for c in pair),
                        "load_cpu_us": statistics.mean(c["load_cpu_us"] for c in pair),
                        "splits": [c["split"] for c in pair],
                        "complete": all(c["written"] == c["messages"] for c in pair),
                        "written": [c["written"] for c in pair],
                    }
                )
    finally:
        for server, output in started:
            server.stop()
            output.unlink(missing_ok=True)


# --- report -----------------------------------------------------------------------------------


def ratios(cells: dict, key: object) -> list[float]:
    """Two workers' rate over one process's, round by round."""
    return [two["rps"] / one["rps"] for one, two in zip(cells[key, 1], cells[key, 2], strict=True)]


def median(cells: list[dict], field: str) -> float:
    return float(statistics.median(cell[field] for cell in cells))


def report(echo: dict, collector: dict, seconds: float) -> tuple[str, bool]:
    each = ", ".join
    rows = [
        f"Measured {time.strftime('%Y-%m-%d')} in {seconds:.0f} s: {ROUNDS} interleaved rounds, "
        f"medians; {os.cpu_count()} cores; server tree {TREE}.  One process: the suite on core "
        f"{SERVER_CORE}, the load on core {CLIENT_CORE}.  Two workers: the suite (parent and "
        "workers) on both cores, the load where it can run.  × one is the median of the "
        "rounds' ratios (each round's in brackets).",
        "",
        f"### Echo: `suite-echo --workers N`, loadgen, {SECONDS:g} s per load",
        "",
        "| load | one process req/s | 2 workers req/s | × one | server CPU µs/req one / 2 | "
        "loadgen CPU µs/req one / 2 | two cores allow | connections per worker |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    checks = []
    for load_name in SCALING_LOADS:
        one, two = echo[load_name, 1], echo[load_name, 2]
        found = ratios(echo, load_name)
        ratio = statistics.median(found)
        # Two cores' worth of microseconds over what a request costs the suite and loadgen
        # with two workers: the most two workers could answer, as a multiple of one process.
        allow = 2e6 / (median(two, "cpu_us") + median(two, "load_cpu_us")) / median(one, "rps")
        rows.append(
            f"| {load_name} | {median(one, 'rps'):,.0f} | {median(two, 'rps'):,.0f} | "
            f"{ratio:.2f} ({each(f'{r:.2f}' for r in found)}) | "
            f"{median(one, 'cpu_us'):.2f} / {median(two, 'cpu_us'):.2f} | "
            f"{median(one, 'load_cpu_us'):.2f} / {median(two, 'load_cpu_us'):.2f} | "
            f"{allow:.2f}× | {each('/'.join(map(str, cell['split'])) for cell in two)} |"
        )
        if load_name == SERVER_BOUND:
            checks.append(
                (
                    f"Echo, server-bound: 2 workers {ratio:.2f}× one process (bar ≥ {BAR})",
                    ratio >= BAR,
                )
            )
    after = [cell["workers_after"] for load_name in SCALING_LOADS for cell in echo[load_name, 2]]
    rows += [
        "",
        "Two cores allow: 2 cores over the suite's and loadgen's CPU per request with two "
        "workers, over one process's req/s; loadgen shares the two cores with the workers.  "
        "Connections per worker: how the two workers shared loadgen's 100 connections, "
        "in the middle of each load.",
        "",
        f"Two workers served {statistics.median(after):.2f} s (median; at most "
        f"{max(after):.2f} s) after the parent listened: a load is started only once every "
        "worker serves.",
        "",
        f"### Collector: `suite-logger --workers N`, {MESSAGES:,} RFC 5424 messages of "
        f"{MESSAGE_BYTES} bytes per load",
        "",
        "| connections | one process msg/s | 2 workers msg/s | × one | server CPU µs/msg one / 2 "
        "(2: the parent's) | load CPU µs/msg one / 2 | two cores allow | connections per worker "
        "| all written |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for connections in CONNECTIONS:
        one, two = collector[connections, 1], collector[connections, 2]
        found = ratios(collector, connections)
        ratio = statistics.median(found)
        complete = all(cell["complete"] for cell in one + two)
        # Two cores over what a message costs the suite and the load, and one core (the
        # parent's: it writes every record) over what it costs the parent; the lesser.
        parent = median(two, "parent_cpu_us")
        allow = min(
            2e6 / (median(two, "cpu_us") + median(two, "load_cpu_us")), 1e6 / max(parent, 1e-3)
        ) / median(one, "rps")
        splits = each("/".join(map(str, split)) for cell in two for split in cell["splits"])
        rows.append(
            f"| {connections} | {median(one, 'rps'):,.0f} | {median(two, 'rps'):,.0f} | "
            f"{ratio:.2f} ({each(f'{r:.2f}' for r in found)}) | {median(one, 'cpu_us'):.2f} / "
            f"{median(two, 'cpu_us'):.2f} ({parent:.2f}) | "
            f"{median(one, 'load_cpu_us'):.2f} / {median(two, 'load_cpu_us'):.2f} | "
            f"{allow:.2f}× | {splits} | "
            f"{'yes' if complete else 'NO'} |"
        )
        if not complete:
            short = [w for cell in one + two for w in cell["written"] if w != MESSAGES]
            rows.append(f"|  | written {each(f'{w:,}' for w in short)} of {MESSAGES:,} |")
        if connections == 10:
            checks.append(
                (
                    f"Collector, 10 connections: 2 workers {ratio:.2f}× one process's msg/s "
                    f"(bar ≥ {BAR}), {'every' if complete else 'NOT every'} message written",
                    ratio >= BAR and complete,
                )
            )
        elif not complete:
            checks.append(
                (f"Collector, {connections} connection: NOT every message written", False)
            )
    others = [cell["others"] for cells in (*echo.values(), *collector.values()) for cell in cells]
    rows += [
        "",
        "Load CPU: the sender's and this script's (it watches the output grow).  Two cores "
        "allow the lesser of two cores over the suite's and the load's CPU per message and one "
        "core over the parent's (it writes every record), over one process's msg/s.  "
        "Connections per worker: how the two workers shared each load's connections (each "
        "brings as many messages), as the load began; the worker with more ends last.",
        "",
        "Other work during the loads (the cores' busy time that neither the suite nor the load "
        f"used, interrupts included): median {statistics.median(others):.2f} cores, at most "
        f"{max(others):.2f}.",
    ]
    rows += ["", "### Bars", ""]
    rows += [f"- {'ok' if ok else 'MISSED'}: {what}" for what, ok in checks]
    return "\n".join(rows) + "\n", all(ok for _, ok in checks)


def main() -> None:
    if not shutil.which("taskset"):
        sys.exit("bench needs taskset (util-linux)")
    build()
    started = time.monotonic()
    data = b"".join(syslog_message(n) for n in range(MESSAGES))
    echo: dict = {(load_name, n): [] for load_name in SCALING_LOADS for n in WORKERS}
    collector: dict = {(c, n): [] for c in CONNECTIONS for n in WORKERS}
    try:
        for number in range(ROUNDS):
            echo_round(number, echo)
            collector_round(number, data, collector)
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    text, ok = report(echo, collector, time.monotonic() - started)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "workers.md").write_text(text)
    print("\n" + text)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
