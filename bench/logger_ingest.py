"""
Logger ingest rate: messages/s from 1 and from 10 TCP senders (LF framing,
100-byte RFC 5424 messages) until every record is in the JSON file.  The
collector runs on core 0, the senders on core 1.  Environment:
BENCH_LOGGER_MESSAGES (default 500000) messages per run; BENCH_TREE (default this
checkout) is the source tree the collector runs from, to compare commits.
"""

import os
import socket
import subprocess
import tempfile
import time
from multiprocessing import Process
from pathlib import Path

from tree import free_port, twistd

TOTAL = int(os.environ.get("BENCH_LOGGER_MESSAGES", "500000"))


def message(n: int) -> bytes:
    head = b"<13>1 2026-11-20T21:39:31.334991Z bench app - - - message %08d " % n
    return head + b"x" * (99 - len(head)) + b"\n"


def send(port: int, first: int, count: int):
    os.sched_setaffinity(0, {1})
    payload = b"".join(message(n) for n in range(first, first + count))
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(payload)


def count_until(path: Path, marker: bytes, expected: int, timeout: float, offset=0) -> int:
    """Read the file from OFFSET as it grows until MARKER appeared EXPECTED times; lines read."""
    seen = lines = 0
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    with open(path, "rb") as f:
        f.seek(offset)
        rest = b""
        while seen < expected:
            chunk = f.read(1 << 20)
            if not chunk:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{seen} of {expected} senders finished")
                time.sleep(0.01)
                continue
            data = rest + chunk
            cut = data.rfind(b"\n") + 1
            complete, rest = data[:cut], data[cut:]
            lines += complete.count(b"\n")
            seen += complete.count(marker)
    return lines


def start_collector(listen: str, output: Path, *options: str) -> subprocess.Popen:
    """suite-logger from TREE on core 0, listening on LISTEN, writing OUTPUT (never rotated)."""
    return twistd("suite-logger", "--listen", listen, "--output", str(output),
                  "--rotate-bytes", "0", *options)


def run(senders: int) -> dict:
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        output = Path(directory) / "messages.jsonl"
        server = start_collector(f"tcp:{port}:interface=127.0.0.1", output)
        try:
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            count_until(output, b'"disconnected"', 1, 10)  # the probe connection
            offset = output.stat().st_size
            each = TOTAL // senders
            workers = [Process(target=send, args=(port, i * each, each)) for i in range(senders)]
            started = time.monotonic()
            for worker in workers:
                worker.start()
            lines = count_until(output, b'"disconnected"', senders, 300, offset)
            elapsed = time.monotonic() - started
            for worker in workers:
                worker.join()
        finally:
            server.terminate()
            server.wait()
    messages = each * senders
    assert lines >= messages, (lines, messages)
    return {"senders": senders, "messages": messages, "seconds": elapsed,
            "rate": messages / elapsed}


def udp_burst(count: int) -> int:
    """Messages written of COUNT datagrams sent by one sender as fast as it can."""
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        output = Path(directory) / "messages.jsonl"
        server = start_collector(f"udp:{port}:interface=127.0.0.1", output,
                                 "--flush-interval", "0.05")
        try:
            time.sleep(2)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                for n in range(count):
                    sock.sendto(message(n), ("127.0.0.1", port))
            written, quiet_since = -1, time.monotonic()
            while time.monotonic() - quiet_since < 1:  # until the file stops growing for 1 s
                now = output.read_bytes().count(b"\n") if output.exists() else 0
                if now != written:
                    written, quiet_since = now, time.monotonic()
                time.sleep(0.1)
        finally:
            server.terminate()
            server.wait()
    return written


def main():
    rows = [run(senders) for senders in (1, 10)]
    text = ["| TCP senders | messages | seconds | messages/s |", "|---:|---:|---:|---:|"]
    text += [f"| {r['senders']} | {r['messages']} | {r['seconds']:.2f} | {r['rate']:,.0f} |"
             for r in rows]
    burst = int(os.environ.get("BENCH_UDP_BURST", "100000"))
    written = udp_burst(burst)
    text += ["", f"UDP burst from one sender: {written:,} of {burst:,} written "
                 f"({written / burst:.0%})"]
    report = "\n".join(text) + "\n"
    Path(__file__).with_name("results").mkdir(exist_ok=True)
    Path(__file__).with_name("results").joinpath("logger.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
