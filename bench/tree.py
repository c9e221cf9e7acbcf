"""
What the bench scripts share: a free loopback port, a suite process
started from a chosen source tree on core 0, and a real etcd on core 1.  BENCH_TREE (default this
checkout) is that tree, so an older commit checked out with `git worktree`
is measured by the same scripts, side by side.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
TREE = Path(os.environ.get("BENCH_TREE", CHECKOUT)).resolve()
RUN_TWISTD = "import sys; from twisted.scripts.twistd import run; sys.exit(run())"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds PID (all its threads) has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def twistd(*arguments: str, **popen) -> subprocess.Popen:
    """`twistd --nodaemon --pidfile= --logfile=/dev/null ARGUMENTS` from TREE, on core 0."""
    return subprocess.Popen(
        [
            "taskset",
            "-c",
            "0",
            sys.executable,
            "-c",
            RUN_TWISTD,
            "--nodaemon",
            "--pidfile=",
            "--logfile=/dev/null",
            *arguments,
        ],
        cwd=popen.pop("cwd", TREE),
        env={**os.environ, "PYTHONPATH": str(TREE)},
        **popen,
    )


def start_etcd(directory):
    """
    One etcd member (the tests' launcher) on core 1, beside the load
    generators; None, saying why, where etcd is not installed.
    """
    sys.path.insert(0, str(CHECKOUT))
    from tests.etcd import EtcdCluster

    try:
        etcd = EtcdCluster(Path(directory))
    except Exception as e:  # trial's SkipTest: etcd is not installed
        print(f"etcd measurements skipped: {e}", flush=True)
        return None
    for process in etcd.processes.values():
        os.sched_setaffinity(process.pid, {1})
    return etcd
