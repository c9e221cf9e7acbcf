"""
`make bench`: the suite next to its peers, in one run, as ratios.

Absolute rates drift 25-45% between runs on these machines; ratios to a
peer measured in the same run, in interleaved rounds, hold to about 10%.
So every section starts each server in turn, round after round
(BENCH_ROUNDS, default 4), and reports medians.  Servers run on core 0 and
load generators (C, in bench/*.c) on core 1, except in the two-process
scaling, where the servers take both cores.  Server CPU per request comes
from /proc/PID/stat (user + system time over every answered request), so a
saturated load generator cannot hide a difference.

Sections: TCP echo, UDP echo, idle-connection bytes, logger TCP ingest and
UDP burst delivery next to rsyslog (skipped with the reason when rsyslogd
is missing), logger TCP ingest of octet-counted frames next to LF ones (both
collectors), the collector's CPU per message next to rsyslog's over ten
connections, TLS and UDP, AMP lookups, DNS queries next to unbound (dnsperf), the cost
of counting metrics (this tree, scraped every second, next to the commit
before counting, BENCH_BASELINE), two processes sharing a port with reuse_port.
Writes bench/results/latest.md and exits 1 if a bar of the README is missed.

Environment: BENCH_SECONDS (3) per measurement, BENCH_ROUNDS (4),
BENCH_ONLY (section names, comma-separated: tcp, udp, idle, logger, framing, collector, lookups,
dns, metrics, scaling; or name them on the command line: `python run.py framing`),
BENCH_TREE (default this checkout): the suite's source tree, to compare commits.
"""

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from syslog_sender import octet_counted, syslog_message
from tree import RUN_TWISTD, TREE, cpu_seconds, free_port, start_etcd

HERE = Path(__file__).resolve().parent
BIN = HERE / "bin"
SERVERS = HERE / "servers"
PYTHON = sys.executable
SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "4"))
ONLY = set(sys.argv[1:] or filter(None, os.environ.get("BENCH_ONLY", "").split(",")))
SERVER_CORE, CLIENT_CORE = "0", "1"
WORK = Path(tempfile.mkdtemp(prefix="suite-bench-"))


def build():
    BIN.mkdir(exist_ok=True)
    for name in ("loadgen", "native_echo", "udp_loadgen", "amp_lookups", "stream_sender"):
        source, binary = HERE / f"{name}.c", BIN / name
        if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
            subprocess.run(["gcc", "-O2", "-Wall", "-o", str(binary), str(source)], check=True)


def has_uvloop() -> bool:
    return subprocess.run([PYTHON, "-c", "import uvloop"], capture_output=True).returncode == 0


def suite(*arguments: str) -> list[str]:
    return [
        PYTHON,
        "-c",
        RUN_TWISTD,
        "--nodaemon",
        "--pidfile=",
        "--logfile=/dev/null",
        *arguments,
    ]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class Server:
    """A server process from ARGV ({port} filled in), on CORES, stopped by PID."""

    def __init__(self, argv, port, cores=SERVER_CORE, ready="tcp"):
        self.port = port
        self.process = subprocess.Popen(
            ["taskset", "-c", cores, *(a.format(port=port, tree=TREE) for a in argv)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=WORK,
            env={**os.environ, "PYTHONPATH": str(TREE)},
        )
        self.pid = self.process.pid
        if ready == "tcp":
            self._wait_tcp()
        else:
            time.sleep(1.5)  # datagram servers: no connection to probe

    def _wait_tcp(self):
        """
        Until this process itself listens on the port (others may share it:
        reuse_port), then one connection made and closed: asyncio serves a
        load that arrives before any other connection three times slower.
        """
        for _ in range(400):
            if self._listening():
                socket.create_connection(("127.0.0.1", self.port), timeout=5).close()
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.process.args}")
            time.sleep(0.05)
        raise RuntimeError(f"server did not start: {self.process.args}")

    def _listening(self) -> bool:
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == self.port:
                    inodes.add(f"socket:[{fields[9]}]")
        try:
            return any(os.readlink(fd) in inodes for fd in Path(f"/proc/{self.pid}/fd").iterdir())
        except OSError:
            return False

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def load(argv, pids, core=CLIENT_CORE) -> dict:
    """Run a load generator; its figures plus the servers' CPU microseconds per request."""
    before = sum(cpu_seconds(pid) for pid in pids)
    prefix = ["taskset", "-c", core] if core else []
    out = subprocess.run(
        [*prefix, *map(str, argv)], capture_output=True, text=True, timeout=SECONDS + 60
    )
    if out.returncode:
        raise RuntimeError(out.stderr.strip() or out.stdout)
    after = sum(cpu_seconds(pid) for pid in pids)
    cell = {k: float(v) for k, v in (field.split("=") for field in out.stdout.split())}
    cell["cpu_us"] = (after - before) / max(cell["all"], 1) * 1e6
    return cell


def interleaved(servers, measure) -> dict:
    """{name: [cell per round]}: each round starts every server in turn and MEASUREs it."""
    cells = {name: [] for name, *_ in servers}
    for number in range(ROUNDS):
        for name, argv, ready in servers:
            server = Server(argv, free_port(), ready=ready)
            try:
                cell = measure(name, server)
            finally:
                server.stop()
            cells[name].append(cell)
            print(
                f"  round {number + 1}: {name:34} "
                + "  ".join(
                    f"{k}={v:,.1f}" for k, v in cell.items() if k in ("rps", "cpu_us", "lost")
                ),
                flush=True,
            )
    return cells


def median(cells, key):
    return statistics.median(cell[key] for cell in cells)


# --- TCP and UDP echo ------------------------------------------------------------------


def echo_servers(udp: bool):
    udp_flag = ["--udp"] if udp else []
    ready = "udp" if udp else "tcp"
    listen = "udp:{port}:interface=127.0.0.1" if udp else "tcp:{port}:interface=127.0.0.1"
    found = [
        ("C epoll echo", [str(BIN / "native_echo"), "{port}", *(["udp"] if udp else [])], ready),
        ("asyncio", [PYTHON, str(SERVERS / "asyncio_echo.py"), "{port}", *udp_flag], ready),
    ]
    if has_uvloop():
        found.append(
            (
                "uvloop",
                [PYTHON, str(SERVERS / "asyncio_echo.py"), "{port}", "--uvloop", *udp_flag],
                ready,
            )
        )
    found.append(
        ("bare Twisted", [PYTHON, str(SERVERS / "twisted_echo.py"), "{port}", *udp_flag], ready)
    )
    if udp:
        found += [
            (
                "suite echo, rate limiter on",
                suite(
                    "suite-echo",
                    "--listen",
                    listen,
                    "--udp-rate",
                    "1e9",
                    "--udp-burst",
                    "1000000",
                    "--udp-network-rate",
                    "1e9",
                    "--udp-network-burst",
                    "1000000",
                ),
                ready,
            ),
            (
                "suite echo, rate limiter off",
                suite("suite-echo", "--listen", listen, "--udp-rate", "0"),
                ready,
            ),
        ]
    else:
        found += [
            ("suite raw echo", suite("suite-echo", "--mode", "raw", "--listen", listen), ready),
            (
                "bare Twisted LineReceiver",
                [PYTHON, str(SERVERS / "linereceiver_echo.py"), "{port}"],
                ready,
            ),
            ("suite line echo", suite("suite-echo", "--listen", listen), ready),
        ]
    return found


def tcp_echo():
    servers = echo_servers(udp=False)
    modes = {name: "line" if "line" in name.lower() else "raw" for name, *_ in servers}

    def measure(name, server):
        return load(
            [BIN / "loadgen", "127.0.0.1", server.port, 10, 64, SECONDS, modes[name]], [server.pid]
        )

    cells = interleaved(servers, measure)
    return table(
        "TCP echo: 10 connections, 64-byte messages, closed loop", servers, cells, "bare Twisted"
    )


def udp_echo():
    def measure(name, server):
        return load([BIN / "udp_loadgen", "127.0.0.1", server.port, 32, 64, SECONDS], [server.pid])

    servers = echo_servers(udp=True)
    cells = interleaved(servers, measure)
    return table("UDP echo: 32 datagrams of 64 bytes outstanding", servers, cells, "bare Twisted")


def table(title, servers, cells, peer):
    rows = [
        f"### {title}",
        "",
        f"| server | req/s | × {peer} req/s | server CPU µs/req | × {peer} CPU |",
        "|---|---:|---:|---:|---:|",
    ]
    figures = {}
    for name, *_ in servers:
        rps, cpu = median(cells[name], "rps"), median(cells[name], "cpu_us")
        figures[name] = (rps, cpu)
    peer_rps, peer_cpu = figures[peer]
    for name, (rps, cpu) in figures.items():
        rows.append(
            f"| {name} | {rps:,.0f} | {rps / peer_rps:.2f} | {cpu:.1f} | {cpu / peer_cpu:.2f} |"
        )
    return rows, figures


# --- idle connections ----------------------------------------------------------------------

IDLE = 5000


def idle_connections():
    listen = "tcp:{port}:interface=127.0.0.1"
    limits = ["--max-connections", "20000", "--max-connections-per-source", "20000"]
    servers = [
        ("suite line echo", suite("suite-echo", "--listen", listen, *limits), "tcp"),
        (
            "suite raw echo",
            suite("suite-echo", "--mode", "raw", "--listen", listen, *limits),
            "tcp",
        ),
        ("bare Twisted", [PYTHON, str(SERVERS / "twisted_echo.py"), "{port}"], "tcp"),
        ("asyncio", [PYTHON, str(SERVERS / "asyncio_echo.py"), "{port}"], "tcp"),
    ]
    if has_uvloop():
        servers.append(
            ("uvloop", [PYTHON, str(SERVERS / "asyncio_echo.py"), "{port}", "--uvloop"], "tcp")
        )

    def measure(name, server):
        time.sleep(0.5)
        before = rss_bytes(server.pid)
        held = []
        try:
            for _ in range(IDLE):
                held.append(socket.create_connection(("127.0.0.1", server.port)))
            probe = held[-1]
            probe.sendall(b"ping\n")
            probe.settimeout(10)
            probe.recv(100)  # every connection before it has been accepted
            time.sleep(0.5)
            return {"bytes": (rss_bytes(server.pid) - before) / IDLE}
        finally:
            for sock in held:
                sock.close()

    cells = interleaved(servers, measure)
    rows = [
        "### Idle connections: memory per connection",
        "",
        f"Server RSS growth with {IDLE:,} idle connections open, divided by {IDLE:,}.",
        "",
        "| server | bytes per connection |",
        "|---|---:|",
    ]
    figures = {}
    for name, *_ in servers:
        figures[name] = median(cells[name], "bytes")
        rows.append(f"| {name} | {figures[name]:,.0f} |")
    return rows, figures


# --- logger next to rsyslog ------------------------------------------------------------

LOG_MESSAGES = int(os.environ.get("BENCH_LOGGER_MESSAGES", "500000"))
UDP_BURST = int(os.environ.get("BENCH_UDP_BURST", "200000"))


# The same fields as the suite's records, so both write the same information.
RSYSLOG_CONF = (
    "\n"
    'global(workDirectory="{work}")\n'
    'module(load="imtcp")\n'
    'module(load="imudp" threads="1")\n'
    'template(name="json" type="string" string="{{'
    '\\"received\\": \\"%timegenerated:::date-rfc3339%\\", '
    '\\"event\\": \\"message\\", '
    '\\"peer\\": \\"%fromhost-ip%\\", '
    '\\"transport\\": \\"%inputname%\\", '
    '\\"message\\": \\"%msg:::json%\\", '
    '\\"syslog\\": {{'
    '\\"format\\": \\"rfc5424\\", '
    '\\"facility\\": \\"%syslogfacility-text%\\", '
    '\\"severity\\": \\"%syslogseverity-text%\\", '
    '\\"timestamp\\": \\"%timereported:::date-rfc3339%\\", '
    '\\"hostname\\": \\"%hostname:::json%\\", '
    '\\"app\\": \\"%app-name:::json%\\", '
    '\\"procid\\": \\"%procid:::json%\\", '
    '\\"msgid\\": \\"%msgid:::json%\\", '
    '\\"structured_data\\": \\"%structured-data:::json%\\"'
    '}}}}\\n")\n'
    'input(type="imtcp" port="{port}" address="127.0.0.1")\n'
    'input(type="imudp" port="{port}" address="127.0.0.1" rcvbufSize="8m")\n'
    'action(type="omfile" file="{output}" template="json" asyncWriting="on" flushInterval="1" '
    'ioBufferSize="256k")\n'
)


# rsyslog over TLS (RFC 5425): imtcp with the gnutls driver and no client
# authentication (the suite's tls_listen asks for none either); the template
# and the output as above.
RSYSLOG_TLS_CONF = (
    "\n"
    'global(workDirectory="{work}" defaultNetstreamDriverCAFile="{certificate}" '
    'defaultNetstreamDriverCertFile="{certificate}" defaultNetstreamDriverKeyFile="{key}")\n'
    'module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" '
    'streamDriver.authMode="anon")\n'
    + next(line for line in RSYSLOG_CONF.splitlines() if line.startswith("template("))
    + '\ninput(type="imtcp" port="{port}" address="127.0.0.1")\n'
    + next(line for line in RSYSLOG_CONF.splitlines() if line.startswith("action("))
    + "\n"
)


def tls_pair() -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made once per run."""
    certificate, key = WORK / "tls.crt", WORK / "tls.key"
    if not certificate.exists():
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                str(key),
                "-out",
                str(certificate),
            ],
            check=True,
            capture_output=True,
        )
    return certificate, key


def rsyslog_argv(output: Path, template: str = RSYSLOG_CONF) -> list[str]:
    work = WORK / f"rsyslog-{output.stem}"
    work.mkdir(exist_ok=True)
    conf = work / "rsyslog.conf"
    certificate, key = tls_pair() if template is RSYSLOG_TLS_CONF else ("", "")
    conf.write_text(
        template.format(work=work, port="{port}", output=output, certificate=certificate, key=key)
    )
    return ["rsyslogd", "-n", "-f", str(conf), "-i", str(work / "pid")]


def rsyslog_conf_for(argv, port):
    conf = Path(argv[3])
    conf.write_text(conf.read_text().replace("{port}", str(port)))


def rsyslog_missing() -> list[str]:
    """The note heading a table whose rsyslog rows could not be measured, if they could not."""
    if shutil.which("rsyslogd"):
        return []
    return [
        "rsyslog rows skipped: rsyslogd is not installed (`make tools` installs it as root).",
        "",
    ]


def lines_in(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def wait_quiet(path: Path, expected: int, timeout: float) -> tuple[int, float]:
    """
    Lines in PATH once EXPECTED are there or it stopped growing for 1 s, and
    when it last grew.  The file is read on from where the last look ended.
    """
    written, grew, deadline = 0, time.monotonic(), time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    with open(path, "rb") as f:
        while time.monotonic() < deadline:
            chunk = f.read(1 << 22)
            if chunk:
                written += chunk.count(b"\n")
                grew = time.monotonic()
                if written >= expected:
                    break
                continue
            if time.monotonic() - grew > 1:
                break
            time.sleep(0.005)
    return written, grew


def logger_servers(kind: str):
    found = []
    if shutil.which("rsyslogd"):
        found.append(("rsyslog (imtcp/imudp, omfile, JSON template)", "rsyslog"))
    found.append(("suite logger", "suite"))
    return found


def start_logger(kind: str, output: Path, tls: bool = False) -> Server:
    """
    KIND's collector writing OUTPUT, on TCP (or TLS) and UDP at one port;
    started again at another port if it exits (the port, free for TCP, may
    be another program's for UDP).
    """
    for _ in range(2):
        try:
            return _start_logger(kind, output, tls)
        except RuntimeError as e:
            print(f"  {e}; once more at another port", flush=True)
    return _start_logger(kind, output, tls)


def _start_logger(kind: str, output: Path, tls: bool) -> Server:
    port = free_port()
    if kind == "rsyslog":
        argv = rsyslog_argv(output, RSYSLOG_TLS_CONF if tls else RSYSLOG_CONF)
        rsyslog_conf_for(argv, port)
    else:
        stream = ["--listen", "tcp:{port}:interface=127.0.0.1"]
        if tls:
            certificate, key = tls_pair()
            stream = [
                "--tls-listen",
                "tcp:{port}:interface=127.0.0.1",
                "--certificate",
                str(certificate),
                "--private-key",
                str(key),
            ]
        argv = suite(
            "suite-logger",
            *stream,
            "--listen",
            "udp:{port}:interface=127.0.0.1",
            "--output",
            str(output),
            "--rotate-bytes",
            "0",
            "--flush-interval",
            "0.05",
        )
    return Server(argv, port)


def logger_tcp(kind: str, number: int, frame=syslog_message) -> dict:
    """
    LOG_MESSAGES framed by FRAME over one connection from the C sender
    (bench/stream_sender.c): a Python sender (reading its payload from a pipe,
    then sending) set the pace near a million messages a second, so the LF and
    octet-counted rates compared its byte counts, not the collectors' parsers.
    """
    output = WORK / f"{kind}-tcp-{frame.__name__}-{number}.jsonl"
    first = frame(0)
    messages_file = WORK / f"messages-{frame.__name__}.bin"  # every frame FIRST's size
    if not messages_file.exists():
        messages_file.write_bytes(b"".join(frame(n) for n in range(LOG_MESSAGES)))
    server = start_logger(kind, output)
    try:
        time.sleep(0.5)
        base = lines_in(output)
        before = cpu_seconds(server.pid)
        started = time.monotonic()
        sender = subprocess.Popen(
            ["taskset", "-c", CLIENT_CORE, BIN / "stream_sender", str(server.port), "1"]
            + [str(len(first)), str(messages_file)]
        )
        written, finished = wait_quiet(output, base + LOG_MESSAGES + 2, 120)
        if sender.wait(60):
            raise RuntimeError("the sender failed")
        cpu = cpu_seconds(server.pid) - before
    finally:
        server.stop()
        output.unlink(missing_ok=True)
    messages = written - base
    return {
        "rps": messages / (finished - started),
        "cpu_us": cpu / max(messages, 1) * 1e6,
        "complete": messages >= LOG_MESSAGES,
    }


def logger_udp(kind: str, number: int) -> dict:
    output = WORK / f"{kind}-udp-{number}.jsonl"
    server = start_logger(kind, output)
    try:
        time.sleep(0.5)
        base = lines_in(output)
        subprocess.run(
            [
                "taskset",
                "-c",
                CLIENT_CORE,
                PYTHON,
                "-c",
                "import socket,sys\nsys.path.insert(0, sys.argv[3])\n"
                "from syslog_sender import syslog_message\n"
                "s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                "m=[syslog_message(n) for n in range(int(sys.argv[2]))]\n"
                "a=('127.0.0.1', int(sys.argv[1]))\n"
                "for x in m: s.sendto(x, a)\n",
                str(server.port),
                str(UDP_BURST),
                str(HERE),
            ],
            check=True,
        )
        written, _ = wait_quiet(output, base + UDP_BURST, 60)
    finally:
        server.stop()
        output.unlink(missing_ok=True)
    return {"delivered": (written - base) / UDP_BURST}


def logger():
    servers = logger_servers("tcp")
    cells = {name: [] for name, _ in servers}
    for number in range(ROUNDS):
        for name, kind in servers:
            cell = {**logger_tcp(kind, number), **logger_udp(kind, number)}
            cells[name].append(cell)
            print(
                f"  round {number + 1}: {name:34} msg/s={cell['rps']:,.0f} "
                f"cpu_us={cell['cpu_us']:.2f} udp={cell['delivered']:.0%}",
                flush=True,
            )
    rows = [
        f"### Logger: {LOG_MESSAGES:,} RFC 5424 messages of 100 bytes over one TCP "
        f"connection; a burst of {UDP_BURST:,} datagrams from one sender",
        "",
    ]
    rows += rsyslog_missing()
    rows += [
        "| collector | TCP msg/s | server CPU µs/msg | UDP burst written |",
        "|---|---:|---:|---:|",
    ]
    figures = {}
    for name, _ in servers:
        figures[name] = (
            median(cells[name], "rps"),
            median(cells[name], "cpu_us"),
            median(cells[name], "delivered"),
        )
        rps, cpu, delivered = figures[name]
        rows.append(f"| {name} | {rps:,.0f} | {cpu:.2f} | {delivered:.0%} |")
    return rows, figures


# --- logger framing: octet-counted frames next to LF ones ---------------------------------

FRAMINGS = {"LF": syslog_message, "octet-counted": octet_counted}


def framing():
    """
    The same messages over TCP framed by LF and octet-counted, to each
    collector; every other round in the reverse order, so a drift within a
    round favours neither framing.
    """
    servers = logger_servers("tcp")
    cells = {(name, framed): [] for name, _ in servers for framed in FRAMINGS}
    for number in range(ROUNDS):
        for name, kind in servers:
            for framed in FRAMINGS if number % 2 == 0 else list(FRAMINGS)[::-1]:
                cell = logger_tcp(kind, number, FRAMINGS[framed])
                cells[name, framed].append(cell)
                print(
                    f"  round {number + 1}: {name[:30]:30} {framed:13} msg/s={cell['rps']:,.0f} "
                    f"cpu_us={cell['cpu_us']:.2f}",
                    flush=True,
                )
    rows = [
        f"### Logger framing: {LOG_MESSAGES:,} RFC 5424 messages of 100 bytes over one TCP "
        "connection, LF-terminated and octet-counted (RFC 6587)",
        "",
    ]
    rows += rsyslog_missing()
    rows += [
        "| collector | LF msg/s | octet-counted msg/s | octet × LF | "
        "server CPU µs/msg LF / octet |",
        "|---|---:|---:|---:|---:|",
    ]
    figures = {}
    for name, _ in servers:
        lf, octet = (median(cells[name, framed], "rps") for framed in FRAMINGS)
        lf_cpu, octet_cpu = (median(cells[name, framed], "cpu_us") for framed in FRAMINGS)
        figures[name] = (lf, octet, lf_cpu, octet_cpu)
        rows.append(
            f"| {name} | {lf:,.0f} | {octet:,.0f} | {octet / lf:.2f} | "
            f"{lf_cpu:.2f} / {octet_cpu:.2f} |"
        )
    if len(figures) == 2:
        (theirs_lf, theirs_octet, *_), (ours_lf, ours_octet, *_) = figures.values()
        rows += [
            "",
            f"Suite × rsyslog: LF {ours_lf / theirs_lf:.2f}, octet-counted "
            f"{ours_octet / theirs_octet:.2f}.",
        ]
    return rows, figures


# --- the collector's CPU per message next to rsyslog: ten connections, TLS, UDP ----------------

COLLECTOR_LOADS = {
    "LF, 10 connections": ("lf", 10),
    "TLS (octet-counted), 1 connection": ("tls", 1),
    "TLS (octet-counted), 10 connections": ("tls", 10),
    "UDP, one message a datagram": ("udp", 1),
}
RSYSLOG = "rsyslog (imtcp/imudp, omfile, JSON template)"


def logger_load(kind: str, number: int, mode: str, connections: int) -> dict:
    """LOG_MESSAGES sent by bench/syslog_sender.py in MODE over CONNECTIONS to KIND's collector."""
    output = WORK / f"{kind}-{mode}-{connections}-{number}.jsonl"
    server = start_logger(kind, output, tls=mode == "tls")
    try:
        time.sleep(0.5)
        base = lines_in(output)
        sender = subprocess.Popen(
            [
                "taskset",
                "-c",
                CLIENT_CORE,
                PYTHON,
                str(HERE / "syslog_sender.py"),
                str(server.port),
                str(LOG_MESSAGES),
                str(connections),
                mode,
            ],
            stdout=subprocess.PIPE,
        )
        sender.stdout.readline()  # "ready": the frames are built
        before, started = cpu_seconds(server.pid), time.monotonic()
        written, finished = wait_quiet(output, base + LOG_MESSAGES, 120)
        sender.wait()
        cpu = cpu_seconds(server.pid) - before
    finally:
        server.stop()
        output.unlink(missing_ok=True)
    messages = written - base
    return {
        "rps": messages / max(finished - started, 1e-9),
        "cpu_us": cpu / max(messages, 1) * 1e6,
        "written": messages / LOG_MESSAGES,
    }


def collector():
    """
    The collector's server CPU per message next to rsyslog's on the inputs
    the logger and framing sections leave out: ten connections, TLS (what
    rsyslog forwards over TLS: octet-counted frames) and UDP.  Messages
    written, counted in the output file; for UDP the CPU is per message
    written (a datagram the kernel drops costs the server nothing).  Each
    round takes the loads in turn, the two collectors in alternating order.
    """
    servers = logger_servers("tcp")
    cells = {(name, load): [] for name, _ in servers for load in COLLECTOR_LOADS}
    for number in range(ROUNDS):
        for load, (mode, connections) in COLLECTOR_LOADS.items():
            for name, kind in servers if number % 2 == 0 else servers[::-1]:
                cell = logger_load(kind, number, mode, connections)
                cells[name, load].append(cell)
                print(
                    f"  round {number + 1}: {name[:30]:30} {load[:36]:36} "
                    f"msg/s={cell['rps']:,.0f} cpu_us={cell['cpu_us']:.2f} "
                    f"written={cell['written']:.0%}",
                    flush=True,
                )
    rows = [
        f"### Collector CPU per message: {LOG_MESSAGES:,} RFC 5424 messages of 100 bytes, "
        "over ten TCP connections, over TLS and over UDP",
        "",
    ]
    rows += rsyslog_missing()
    rows += [
        "| load | collector | msg/s | server CPU µs/msg | written |",
        "|---|---|---:|---:|---:|",
    ]
    figures = {}
    for load in COLLECTOR_LOADS:
        for name, _ in servers:
            found = cells[name, load]
            figures[name, load] = (median(found, "cpu_us"), median(found, "rps"))
            rows.append(
                f"| {load} | {name} | {median(found, 'rps'):,.0f} | "
                f"{median(found, 'cpu_us'):.2f} | {median(found, 'written'):.0%} |"
            )
    if len(servers) == 2:
        ratios = (
            f"{load} {figures['suite logger', load][0] / figures[RSYSLOG, load][0]:.2f}"
            for load in COLLECTOR_LOADS
        )
        rows += ["", f"Suite × rsyslog, server CPU per message: {'; '.join(ratios)}."]
    return rows, figures


# --- AMP lookups --------------------------------------------------------------------------


def lookups():
    """
    Lookups of the bare responder, the memory store, and (where etcd is
    installed) one of two replicas on the etcd store: lookups are answered
    from the local copy, so the last two should be equal.
    """
    listen = "tcp:{port}:interface=127.0.0.1"
    audited = ("--listen", listen, "--lookup-audit", str(WORK / "lookups.jsonl"))
    servers = [
        (
            "minimal Twisted AMP responder, fixed answer",
            [PYTHON, str(SERVERS / "twisted_amp.py"), "{port}", "{tree}"],
            "tcp",
        ),
        (
            "suite names (memory store, lookups audited)",
            suite("suite-names", "--store", "memory", *audited),
            "tcp",
        ),
    ]
    etcd = start_etcd(WORK)
    follower = None
    if etcd is not None:
        # No health checks in the way: the instances looked up do not exist.
        on_etcd = ("--store", etcd.store, "--ping-interval", "3600")
        servers.append(
            (
                "suite names (etcd store, one of two replicas)",
                suite("suite-names", *on_etcd, *audited),
                "tcp",
            )
        )
        follower = Server(
            suite("suite-names", *on_etcd, "--listen", listen, "--lookup-audit", ""), free_port()
        )
    client = [str(Path(PYTHON).parent / "suite-client")]

    def measure(name, server):
        if name.startswith("suite"):
            for port in (8080, 8081):
                subprocess.run(
                    [
                        *client,
                        "names",
                        f"127.0.0.1:{server.port}",
                        "register",
                        "web",
                        "127.0.0.1",
                        str(port),
                    ],
                    check=True,
                    capture_output=True,
                    env={**os.environ, "PYTHONPATH": str(TREE)},
                )
        cell = load(
            [BIN / "amp_lookups", "127.0.0.1", server.port, 1, 100, "web", SECONDS], [server.pid]
        )
        if cell["errors"]:
            raise RuntimeError(f"{cell['errors']:.0f} lookups failed")
        return cell

    try:
        cells = interleaved(servers, measure)
    finally:
        if etcd is not None:
            follower.stop()
            etcd.stop_all()
    for path in WORK.glob("lookups.jsonl*"):
        path.unlink()
    return table(
        "AMP Lookup: one connection, 100 lookups in flight (bench/amp_lookups.c)",
        servers,
        cells,
        servers[0][0],
    )


# --- DNS: the name server's DNS side next to unbound ----------------------------------------

DNS_INSTANCES = (8080, 8081)  # the name web at 127.0.0.1 on these ports, in both servers
DNS_QUESTIONS = {"SRV": "_web._tcp.suite SRV", "A": "web.suite A"}


def write_unbound_config() -> None:
    """unbound serving the same records from local-data: its own config, port, no daemon."""
    records = [
        f'local-data: "_web._tcp.suite. 5 IN SRV 1 1 {port} 7f000001.addr.suite."'
        for port in DNS_INSTANCES
    ]
    records += [
        'local-data: "web.suite. 5 IN A 127.0.0.1"',
        'local-data: "7f000001.addr.suite. 5 IN A 127.0.0.1"',
    ]
    config = WORK / "unbound.conf"
    config.write_text(
        "\n".join(
            [
                "server:",
                "  interface: 127.0.0.1@{port}",
                "  do-daemonize: no",
                '  chroot: ""',
                '  username: ""',
                f'  directory: "{WORK}"',
                '  pidfile: ""',
                "  use-syslog: no",
                '  logfile: ""',
                "  verbosity: 0",
                "  num-threads: 1",
                "  do-ip6: no",
                "  access-control: 127.0.0.0/8 allow",
                "  minimal-responses: no",
                '  local-zone: "suite." static',
                *(f"  {r}" for r in records),
                "remote-control:",
                "  control-enable: no",
                "",
            ]
        )
    )


class UnboundServer(Server):
    """unbound's config names its port, so it is written per start."""

    def __init__(self, port):
        template = (WORK / "unbound.conf").read_text()
        config = WORK / f"unbound-{port}.conf"
        config.write_text(template.replace("{port}", str(port)))
        super().__init__(["unbound", "-d", "-c", str(config)], port, ready="udp")


def dnsperf(port: int, question: str, pids) -> dict:
    """dnsperf for SECONDS with 100 queries in flight; queries/s and server CPU per query."""
    questions = WORK / "questions.txt"
    questions.write_text(question + "\n")
    before = sum(cpu_seconds(pid) for pid in pids)
    out = subprocess.run(
        [
            "taskset",
            "-c",
            CLIENT_CORE,
            "dnsperf",
            "-s",
            "127.0.0.1",
            "-p",
            str(port),
            "-d",
            str(questions),
            "-l",
            str(SECONDS),
            "-q",
            "100",
        ],
        capture_output=True,
        text=True,
        timeout=SECONDS + 60,
    )
    after = sum(cpu_seconds(pid) for pid in pids)
    found = {}
    for line in out.stdout.splitlines():
        label, _, value = line.strip().partition(":")
        found[label] = value.split()[0] if value.split() else ""
    completed = float(found["Queries completed"])
    return {
        "rps": float(found["Queries per second"]),
        "all": completed,
        "lost": float(found["Queries lost"]),
        "cpu_us": (after - before) / max(completed, 1) * 1e6,
    }


def dns():
    if not shutil.which("dnsperf") or not shutil.which("unbound"):
        return (
            [
                "### DNS",
                "",
                "Skipped: dnsperf and unbound are needed (Debian packages; "
                "`make bench` installs them as root).",
            ],
            {},
        )
    write_unbound_config()
    client = [str(Path(PYTHON).parent / "suite-client")]
    servers = ["unbound (local-data)", "suite names (DNS side, rate limiter off)"]
    cells = {(server, kind): [] for server in servers for kind in DNS_QUESTIONS}
    for number in range(ROUNDS):
        for server_name in servers:
            port = free_port()
            if server_name.startswith("unbound"):
                server = UnboundServer(port)
            else:
                server = Server(
                    suite(
                        "suite-names",
                        "--store",
                        "memory",
                        "--lookup-audit",
                        "",
                        "--listen",
                        "tcp:{port}:interface=127.0.0.1",
                        "--dns-listen",
                        "udp:{port}:interface=127.0.0.1",
                        "--udp-rate",
                        "0",
                    ),
                    port,
                )
                for instance in DNS_INSTANCES:
                    subprocess.run(
                        [
                            *client,
                            "names",
                            f"127.0.0.1:{port}",
                            "register",
                            "web",
                            "127.0.0.1",
                            str(instance),
                        ],
                        check=True,
                        capture_output=True,
                        env={**os.environ, "PYTHONPATH": str(TREE)},
                    )
            try:
                for kind, question in DNS_QUESTIONS.items():
                    cell = dnsperf(port, question, [server.pid])
                    cells[server_name, kind].append(cell)
                    print(
                        f"  round {number + 1}: {server_name:42} {kind:3} "
                        f"qps={cell['rps']:,.0f} cpu_us={cell['cpu_us']:.1f} "
                        f"lost={cell['lost']:.0f}",
                        flush=True,
                    )
            finally:
                server.stop()
    rows = [
        "### DNS: dnsperf, one question over and over, 100 queries in flight",
        "",
        "| question | unbound q/s | suite q/s | × unbound | unbound CPU µs/q | suite CPU µs/q |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    figures = {}
    for kind in DNS_QUESTIONS:
        theirs, ours = (cells[server, kind] for server in servers)
        ratio = median(ours, "rps") / median(theirs, "rps")
        figures[kind] = (median(ours, "rps"), ratio)
        rows.append(
            f"| {DNS_QUESTIONS[kind]} | {median(theirs, 'rps'):,.0f} | "
            f"{median(ours, 'rps'):,.0f} | {ratio:.2f} | "
            f"{median(theirs, 'cpu_us'):.1f} | {median(ours, 'cpu_us'):.1f} |"
        )
    return rows, figures


# --- two processes sharing a port ---------------------------------------------------------

SCALING_LOADS = {
    # Server-bound: 256 lines of 16 bytes per write, so the generator needs little of the
    # two cores it shares with the two servers here.
    "line echo, 100 connections × 256 pipelined 16-byte lines": ("line", 16, 256),
    # Generator-bound on two cores: one request per round trip costs the generator (mostly
    # the kernel's loopback TCP) about 7 µs, two thirds of what it costs the server.
    "raw echo, 100 connections × 1 message of 64 bytes": ("raw", 64, 1),
}


def scaling():
    cells = {(load_name, n): [] for load_name in SCALING_LOADS for n in (1, 2)}
    for number in range(ROUNDS):
        for load_name, (mode, size, depth) in SCALING_LOADS.items():
            for processes in (1, 2):
                port = free_port()
                argv = suite(
                    "suite-echo",
                    "--mode",
                    mode,
                    "--reuse-port",
                    "--listen",
                    "tcp:{port}:interface=127.0.0.1",
                    "--max-connections-per-source",
                    "1000",
                )
                servers = [Server(argv, port, cores=str(core)) for core in range(processes)]
                try:
                    # One server has core 0 to itself and the generator core 1; two servers
                    # take both cores and the generator runs where it can.
                    cell = load(
                        [BIN / "loadgen", "127.0.0.1", port, 100, size, SECONDS, mode, depth],
                        [s.pid for s in servers],
                        core=CLIENT_CORE if processes == 1 else None,
                    )
                finally:
                    for server in servers:
                        server.stop()
                cells[load_name, processes].append(cell)
                print(
                    f"  round {number + 1}: {load_name[:40]:40} x{processes} "
                    f"rps={cell['rps']:,.0f}",
                    flush=True,
                )
    rows = [
        "### Every core: suite echo processes sharing one port with reuse_port",
        "",
        "Server N on core N. With one server the generator has core 1 to itself; with two "
        "it shares the cores with them.",
        "",
        "| load | one process req/s | two processes req/s | × one |",
        "|---|---:|---:|---:|",
    ]
    figures = {}
    for load_name in SCALING_LOADS:
        one = median(cells[load_name, 1], "rps")
        two = median(cells[load_name, 2], "rps")
        figures[load_name] = two / one
        rows.append(f"| {load_name} | {one:,.0f} | {two:,.0f} | {two / one:.2f} |")
    return rows, figures


# --- the cost of counting: metrics on and scraped, next to the tree before metrics ---------

BASELINE_SUBJECT = "^Metrics counted where events happen"  # the commit that added counting
# A few per cent is the figure sought, so twice the usual rounds.
METRICS_ROUNDS = int(os.environ.get("BENCH_METRICS_ROUNDS", str(2 * ROUNDS)))


def baseline_tree() -> Path | None:
    """
    A worktree of BENCH_BASELINE, default the commit before counting was added,
    in WORK; None (the section is skipped) when git or the history is missing.
    """
    commit = os.environ.get("BENCH_BASELINE")
    if not commit:
        found = subprocess.run(
            ["git", "-C", str(TREE), "log", "--format=%H", "-1", f"--grep={BASELINE_SUBJECT}"],
            capture_output=True,
            text=True,
        )
        if found.returncode or not found.stdout.strip():
            return None
        commit = found.stdout.strip() + "^"
    tree = WORK / "baseline"
    made = subprocess.run(
        ["git", "-C", str(TREE), "worktree", "add", "--detach", str(tree), commit],
        capture_output=True,
        text=True,
    )
    return tree if made.returncode == 0 else None


class Scraper:
    """GET /metrics every second from a thread, as Prometheus would (every 15 s by default)."""

    def __init__(self, port):
        import threading

        self.port, self.scrapes, self.bytes = port, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        import urllib.request

        while not self._stop.wait(1.0):
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
                self.bytes += len(r.read())
                self.scrapes += 1

    def stop(self):
        self._stop.set()
        self._thread.join(10)


def metrics_cost():
    baseline = baseline_tree()
    if baseline is None:
        return (
            [
                "### The cost of counting",
                "",
                "Skipped: the commit before metrics could not be "
                "checked out (set BENCH_BASELINE to a commit).",
            ],
            {},
        )
    metrics_port = free_port()
    scraped = WORK / "metrics.toml"
    scraped.write_text(f'[metrics]\nlisten = ["tcp:{metrics_port}:interface=127.0.0.1"]\n')
    unscraped = WORK / "no-metrics.toml"
    unscraped.write_text("")
    before = ["env", f"PYTHONPATH={baseline}"]  # the same command, from the tree before counting
    tcp = "tcp:{port}:interface=127.0.0.1"
    udp = "udp:{port}:interface=127.0.0.1"
    client = [str(Path(PYTHON).parent / "suite-client")]
    loads = {
        "TCP line echo (10 connections, 64-byte lines)": (
            suite("suite-echo", "--config", "{config}", "--listen", tcp),
            "tcp",
            lambda port: [BIN / "loadgen", "127.0.0.1", port, 10, 64, SECONDS, "line"],
        ),
        "UDP echo (32 datagrams outstanding)": (
            # No rate limit: the tree before metrics has no per-network bucket to lift.
            suite("suite-echo", "--config", "{config}", "--listen", udp, "--udp-rate", "0"),
            "udp",
            lambda port: [BIN / "udp_loadgen", "127.0.0.1", port, 32, 64, SECONDS],
        ),
        "AMP Lookup (100 in flight, audited)": (
            suite(
                "suite-names",
                "--config",
                "{config}",
                "--store",
                "memory",
                "--listen",
                tcp,
                "--lookup-audit",
                str(WORK / "lookups.jsonl"),
            ),
            "tcp",
            lambda port: [BIN / "amp_lookups", "127.0.0.1", port, 1, 100, "web", SECONDS],
        ),
    }
    kinds = ("before metrics", "counting, no [metrics]", "counting, scraped every second")
    cells = {(name, kind): [] for name in loads for kind in kinds}
    for number in range(METRICS_ROUNDS):
        for name, (argv, ready, generator) in loads.items():
            # Every other round in reverse order, so a drift within a round favours no one.
            for kind in kinds if number % 2 == 0 else kinds[::-1]:
                config = scraped if kind == kinds[2] else unscraped
                argv_now = [a.replace("{config}", str(config)) for a in argv]
                server = Server(
                    argv_now if kind != kinds[0] else [*before, *argv_now],
                    free_port(),
                    ready=ready,
                )
                scraper = None
                try:
                    if "Lookup" in name:
                        for port in (8080, 8081):
                            subprocess.run(
                                [
                                    *client,
                                    "names",
                                    f"127.0.0.1:{server.port}",
                                    "register",
                                    "web",
                                    "127.0.0.1",
                                    str(port),
                                ],
                                check=True,
                                capture_output=True,
                            )
                    if kind == kinds[2]:
                        scraper = Scraper(metrics_port)
                    cell = load(generator(server.port), [server.pid])
                finally:
                    if scraper is not None:
                        scraper.stop()
                    server.stop()
                    # No load pays for the writeback of an earlier one's audit lines.
                    (WORK / "lookups.jsonl").unlink(missing_ok=True)
                if scraper is not None and not scraper.scrapes:
                    raise RuntimeError("no scrape of /metrics succeeded")
                cells[name, kind].append(cell)
                print(
                    f"  round {number + 1}: {name[:30]:30} {kind:32} rps={cell['rps']:,.0f} "
                    f"cpu_us={cell['cpu_us']:.2f}",
                    flush=True,
                )
    subprocess.run(
        ["git", "-C", str(TREE), "worktree", "remove", "--force", str(baseline)],
        capture_output=True,
    )
    rows = [
        "### The cost of counting: the suite before metrics and now, /metrics scraped every "
        f"second ({METRICS_ROUNDS} rounds, every other one in reverse order)",
        "",
        "| load | before req/s | counting req/s | × before (median of rounds) | scraped req/s "
        "| × before (median of rounds) | "
        "CPU µs/req before / counting / scraped |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    figures = {}
    for name in loads:
        old, counting, scraped_cells = (cells[name, kind] for kind in kinds)
        # The median of each round's ratio: the three of a round run seconds apart, while
        # rates drift by a quarter from round to round on these machines.
        ratio = statistics.median(c["rps"] / o["rps"] for o, c in zip(old, counting, strict=True))
        ratio_scraped = statistics.median(
            c["rps"] / o["rps"] for o, c in zip(old, scraped_cells, strict=True)
        )
        figures[name] = ratio
        rows.append(
            f"| {name} | {median(old, 'rps'):,.0f} | {median(counting, 'rps'):,.0f} | "
            f"{ratio:.2f} | {median(scraped_cells, 'rps'):,.0f} | {ratio_scraped:.2f} | "
            f"{median(old, 'cpu_us'):.2f} / {median(counting, 'cpu_us'):.2f} / "
            f"{median(scraped_cells, 'cpu_us'):.2f} |"
        )
    return rows, figures


# --- bars and report ---------------------------------------------------------------------------


def bars(results) -> list[tuple[str, bool]]:
    checks = []
    if "tcp" in results:
        f = results["tcp"]
        ratio = f["suite raw echo"][1] / f["bare Twisted"][1]
        checks.append(
            (
                f"TCP echo: suite raw CPU per request {ratio:.2f}× bare Twisted's (bar ≤ 0.67)",
                ratio <= 0.67,
            )
        )
        ratio = f["suite raw echo"][1] / f["asyncio"][1]
        checks.append(
            (
                f"TCP echo: suite raw CPU per request {ratio:.2f}× asyncio's (bar ≤ 1.0)",
                ratio <= 1.0,
            )
        )
    if "udp" in results:
        f = results["udp"]
        ratio = f["suite echo, rate limiter on"][0] / f["bare Twisted"][0]
        checks.append(
            (
                f"UDP echo: suite with the rate limiter on {ratio:.2f}× bare Twisted's "
                "datagrams/s (bar ≥ 1.0)",
                ratio >= 1.0,
            )
        )
        if "uvloop" in f:
            ratio = f["suite echo, rate limiter on"][1] / f["uvloop"][1]
            checks.append(
                (
                    f"UDP echo: suite with the rate limiter on {ratio:.2f}× uvloop's CPU per "
                    "datagram (bar ≤ 1.0)",
                    ratio <= 1.0,
                )
            )
    if "idle" in results:
        worst = max(v for k, v in results["idle"].items() if k.startswith("suite"))
        checks.append(
            (f"Idle connections: suite {worst:,.0f} bytes each (bar ≤ 1.3 KB)", worst <= 1300)
        )
    if "logger" in results and len(results["logger"]) == 2:
        rsyslog, ours = results["logger"].values()
        tcp, udp = ours[0] / rsyslog[0], ours[2] / rsyslog[2]
        checks.append((f"Logger TCP: {tcp:.2f}× rsyslog's msg/s (bar ≥ 0.6)", tcp >= 0.6))
        checks.append((f"Logger UDP burst: {udp:.2f}× rsyslog's delivery (bar ≥ 0.5)", udp >= 0.5))
        cpu = ours[1] / rsyslog[1]
        checks.append(
            (f"Logger TCP: {cpu:.2f}× rsyslog's CPU per message (bar ≤ 1.0)", cpu <= 1.0)
        )
    if "framing" in results:
        lf, octet, _, octet_cpu = results["framing"]["suite logger"]
        checks.append(
            (
                f"Logger framing: suite octet-counted {octet / lf:.2f}× its LF msg/s (bar ≥ 0.9)",
                octet / lf >= 0.9,
            )
        )
        theirs = results["framing"].get("rsyslog (imtcp/imudp, omfile, JSON template)")
        if theirs is not None:
            cpu = octet_cpu / theirs[3]
            checks.append(
                (
                    f"Logger octet-counted: {cpu:.2f}× rsyslog's CPU per message (bar ≤ 1.0)",
                    cpu <= 1.0,
                )
            )
    if "collector" in results:
        found = results["collector"]
        for load in COLLECTOR_LOADS:
            if (RSYSLOG, load) in found:
                cpu = found["suite logger", load][0] / found[RSYSLOG, load][0]
                checks.append(
                    (
                        f"Collector, {load}: {cpu:.2f}× rsyslog's CPU per message (bar ≤ 1.0)",
                        cpu <= 1.0,
                    )
                )
    if "lookups" in results:
        found = results["lookups"]
        rps = found["suite names (memory store, lookups audited)"][0]
        checks.append((f"Lookups: {rps:,.0f}/s on one connection (bar ≥ 50,000)", rps >= 50000))
        on_etcd = found.get("suite names (etcd store, one of two replicas)")
        if on_etcd is not None:
            ratio = on_etcd[0] / rps
            checks.append(
                (
                    f"Lookups on an etcd replica: {ratio:.2f}× the memory store's "
                    "(bar ≥ 0.9: equal, within the noise)",
                    ratio >= 0.9,
                )
            )
    for kind, (qps, ratio) in results.get("dns", {}).items():
        checks.append(
            (f"DNS {kind}: {qps:,.0f} queries/s, {ratio:.2f}× unbound's (bar ≥ 1.0)", ratio >= 1.0)
        )
    for name, ratio in results.get("metrics", {}).items():
        checks.append(
            (
                f"Counting, {name}: {ratio:.2f}× the throughput before metrics (bar ≥ 0.95)",
                ratio >= 0.95,
            )
        )
    if "scaling" in results:
        ratio = results["scaling"][next(iter(SCALING_LOADS))]
        checks.append(
            (
                f"Two processes with reuse_port: {ratio:.2f}× one on the server-bound "
                "echo load (bar ≥ 1.7)",
                ratio >= 1.7,
            )
        )
    return checks


SECTIONS = {
    "tcp": tcp_echo,
    "udp": udp_echo,
    "idle": idle_connections,
    "logger": logger,
    "framing": framing,
    "collector": collector,
    "lookups": lookups,
    "dns": dns,
    "metrics": metrics_cost,
    "scaling": scaling,
}


def report(text, results) -> bool:
    """Write bench/results/latest.md from what is measured so far; whether every bar holds."""
    checks = bars(results)
    header = [
        f"Measured {time.strftime('%Y-%m-%d')}: {ROUNDS} interleaved rounds, {SECONDS:g} s "
        f"each, medians; servers on core {SERVER_CORE}, load generators on core {CLIENT_CORE}.",
        "",
    ]
    footer = ["### Bars", ""] + [f"- {'ok' if ok else 'MISSED'}: {what}" for what, ok in checks]
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "latest.md").write_text("\n".join(header + text + footer) + "\n")
    return all(ok for _, ok in checks)


def main():
    if not shutil.which("taskset"):
        sys.exit("bench needs taskset (util-linux)")
    if ONLY - SECTIONS.keys():
        sys.exit(
            f"no such section: {', '.join(sorted(ONLY - SECTIONS.keys()))} "
            f"(sections: {', '.join(SECTIONS)})"
        )
    build()
    text, results = [], {}
    for name, section in SECTIONS.items():
        if ONLY and name not in ONLY:
            continue
        print(f"== {name}", flush=True)
        rows, figures = section()
        results[name] = figures
        text += rows + [""]
        passed = report(text, results)  # kept after every section, should a later one fail
    print("\n" + (HERE / "results" / "latest.md").read_text())
    shutil.rmtree(WORK, ignore_errors=True)
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
