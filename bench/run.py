"""
`make bench`: requests/s and p50/p99 latency of the suite's services and of
reference servers, in one run, server pinned to core 0 and the load generator
to core 1.  Writes the table to bench/results/latest.md and checks the bar of
issue 2: the suite's layering may cost no more than 10% against the bare
Twisted equivalents.

Environment: BENCH_SECONDS (default 3) per measurement, BENCH_ROUNDS
(default 2): each cell is measured that many times, interleaved across
servers, and the best round is kept, which evens out machine noise.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from tree import free_port

HERE = Path(__file__).resolve().parent
BIN = HERE / "bin"
PYTHON = sys.executable
TWISTD = str(Path(PYTHON).parent / "twistd")
SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
ONLY = os.environ.get("BENCH_ONLY", "")
CONNECTIONS = (1, 10, 100)
SIZES = (64, 1024)
SERVER_CORE, CLIENT_CORE = "0", "1"


def build():
    BIN.mkdir(exist_ok=True)
    for name in ("loadgen", "native_echo"):
        source, binary = HERE / f"{name}.c", BIN / name
        if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
            subprocess.run(["gcc", "-O2", "-Wall", "-o", str(binary), str(source)], check=True)


def has_uvloop() -> bool:
    return subprocess.run([PYTHON, "-c", "import uvloop"], capture_output=True).returncode == 0


def servers():
    """(name, mode, argv taking the port) of every server measured."""
    suite = [TWISTD, "--nodaemon", "--pidfile=", "--logfile=/dev/null"]
    listen = "tcp:{port}:interface=127.0.0.1"
    found = [
        ("native C echo (generator ceiling)", "raw", [str(BIN / "native_echo"), "{port}"]),
        ("asyncio Protocol echo", "raw", [PYTHON, str(HERE / "servers/asyncio_echo.py"), "{port}"]),
    ]
    if has_uvloop():
        found.append(("uvloop Protocol echo", "raw",
                      [PYTHON, str(HERE / "servers/asyncio_echo.py"), "{port}", "--uvloop"]))
    found += [
        ("bare Twisted Protocol echo", "raw",
         [PYTHON, str(HERE / "servers/twisted_echo.py"), "{port}"]),
        ("suite raw echo", "raw", suite + ["suite-echo", "--mode", "raw", "--listen", listen]),
        ("bare LineReceiver echo", "line",
         [PYTHON, str(HERE / "servers/linereceiver_echo.py"), "{port}"]),
        ("suite line echo", "line", suite + ["suite-echo", "--listen", listen]),
        ("suite timestamp", "line", suite + ["suite-timestamp", "--listen", listen]),
    ]
    return found


def start(argv, port):
    process = subprocess.Popen(
        ["taskset", "-c", SERVER_CORE, *(a.format(port=port) for a in argv)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"server did not start: {argv}")


def measure(port, connections, size, mode) -> dict:
    out = subprocess.run(
        ["taskset", "-c", CLIENT_CORE, str(BIN / "loadgen"), "127.0.0.1", str(port),
         str(connections), str(size), str(SECONDS), mode],
        capture_output=True, text=True, timeout=SECONDS + 60,
    )
    if out.returncode:
        raise RuntimeError(out.stderr.strip())
    return {k: float(v) for k, v in (field.split("=") for field in out.stdout.split())}


def main():
    if not shutil.which("taskset"):
        sys.exit("bench needs taskset (util-linux)")
    build()
    listed = [s for s in servers() if ONLY in s[0] or s[0].startswith("asyncio")]
    results = {}
    for round_number in range(ROUNDS):
        for name, mode, argv in listed:
            port = free_port()
            process = start(argv, port)
            try:
                for connections in CONNECTIONS:
                    for size in SIZES:
                        cell = measure(port, connections, size, mode)
                        key = (name, connections, size)
                        if key not in results or cell["rps"] > results[key]["rps"]:
                            results[key] = cell
                        print(f"round {round_number + 1}: {name:36} c={connections:<3} "
                              f"{size:>4} B {cell['rps']:>9.0f} req/s", flush=True)
            finally:
                process.terminate()
                process.wait()
    report(listed, results)


def report(listed, results):
    baseline = "asyncio Protocol echo"
    lines = [
        f"Closed loop, {SECONDS:g} s per cell, best of {ROUNDS} rounds; server on core "
        f"{SERVER_CORE}, load generator on core {CLIENT_CORE}; ratio = req/s / asyncio echo's.",
        "",
        "| server | conns | size | req/s | p50 µs | p99 µs | × asyncio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, _, _ in listed:
        for connections in CONNECTIONS:
            for size in SIZES:
                cell = results[(name, connections, size)]
                ratio = cell["rps"] / results[(baseline, connections, size)]["rps"]
                lines.append(
                    f"| {name} | {connections} | {size} | {cell['rps']:.0f} | "
                    f"{cell['p50_us']:.0f} | {cell['p99_us']:.0f} | {ratio:.2f} |"
                )
    lines += ["", "Bar (issue 2): the suite's layering costs at most 10%:", ""]
    passed = True
    for suite_name, bare in (("suite raw echo", "bare Twisted Protocol echo"),
                             ("suite line echo", "bare LineReceiver echo")):
        if (suite_name, 1, SIZES[0]) not in results or (bare, 1, SIZES[0]) not in results:
            continue
        for connections in CONNECTIONS:
            for size in SIZES:
                ratio = (results[(suite_name, connections, size)]["rps"]
                         / results[(bare, connections, size)]["rps"])
                ok = ratio >= 0.9
                passed &= ok
                lines.append(f"- {suite_name} / {bare}, c={connections}, {size} B: "
                             f"{ratio:.2f} {'ok' if ok else 'BELOW 0.90'}")
    text = "\n".join(lines) + "\n"
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "latest.md").write_text(text)
    print("\n" + text)
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
