"""
What the bench scripts share: a free loopback port, and a suite process
started from a chosen source tree on core 0.  BENCH_TREE (default this
checkout) is that tree, so an older commit checked out with `git worktree`
is measured by the same scripts, side by side.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

TREE = Path(os.environ.get("BENCH_TREE", Path(__file__).resolve().parent.parent)).resolve()
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
        ["taskset", "-c", "0", sys.executable, "-c", RUN_TWISTD, "--nodaemon", "--pidfile=",
         "--logfile=/dev/null", *arguments],
        cwd=popen.pop("cwd", TREE), env={**os.environ, "PYTHONPATH": str(TREE)}, **popen,
    )
