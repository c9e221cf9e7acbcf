"""
Every console example of the README and of docs/*.md, run against a real
suite and compared with the output the document shows.

A document's examples are its ```console blocks: a line starting with `$ `
is a command (a trailing backslash continues it on the next line), the lines
after it are what that command prints. An HTML comment right before a block
directs it:

    <!-- example: config=etc/suite.toml -->      the default
    <!-- example: config=etc/examples/X.toml -->  another config
    <!-- example: skip: REASON -->               shown, never run

Each block is one test, named after its heading and its place in the
document. The blocks of a document run in its order against one suite
process per config, as a reader pasting them one after the other would: the
config is copied into a scratch directory TMP (etc/suite.toml to
TMP/etc/suite.toml, with etc/examples/, whose configs name ../tls/), every
fixed port in it moved to a free one, `suite init etc` adds the TLS pair and
the directories as `make run` does, and `twistd --nodaemon --pidfile= suite
--config etc/suite.toml` starts in TMP.
The commands of a block run in one bash in TMP, the virtual environment's
bin/ first on PATH, with the same ports moved in their text; a port a
command listens on itself (`--listen tcp:5002`) is moved too.

Output is compared after the ports are moved back and what differs from run
to run is masked: times (ctime, ISO 8601, syslog and epoch stamps),
fractional numbers (durations), PIDs, DNS message IDs, client ports from
the kernel's ephemeral range, the sending host's name, the versions, and
the scratch directory's path, which the documents show as `/home/you/suite`
(a checkout there). A command that only reads (`cat`, `curl`, `dig`,
`grep`, `suite status`, a name server lookup) is run again for up to a few
seconds until its output matches, since a reader types more slowly than a
test. An expected `^C` line sends SIGINT to the running command once the
lines above it have come, as a terminal's Ctrl-C would.

A block that uses an outside tool (nc, dig, curl, logger, openssl) is skipped
with the reason when the tool is missing; `make test` installs them as root.
Whatever a block starts it must stop: a process of a block still running
when its commands are done fails the test.
"""

import atexit
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.e2e.process import (
    config_ports,
    free_ports,
    popen,
    replace_ports,
    run,
    stop_process,
)

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DEFAULT_CONFIG = "etc/suite.toml"
EXAMPLES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "etc" / "examples").glob("*.toml"))
TOOLS = ("nc", "dig", "curl", "logger", "openssl")
READ_ONLY = re.compile(
    r"^(cat|curl|dig|grep|tail|head|suite status|suite-client names \S+ (lookup|services))\b"
)
COMMAND_TIMEOUT = 20.0
RETRY_FOR = 6.0
INTERRUPT_AFTER = 5.0
MARK = "__suite_docs_example_done__"


@dataclass
class Command:
    text: str
    expected: list[str] = field(default_factory=list)


@dataclass
class Block:
    document: str
    heading: str
    line: int
    commands: list[Command]
    config: str = DEFAULT_CONFIG
    skip: str = ""


DIRECTIVE = re.compile(r"^<!--\s*example:\s*(.*?)\s*-->$")


def parse(document: str, text: str) -> list[Block]:
    """The console blocks of TEXT, with their headings and directives."""
    blocks: list[Block] = []
    heading = document
    label = ""
    directive = ""
    fence = ""
    lines = text.split("\n")
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if fence:
            if line.strip() == fence:
                fence = ""
            continue
        if line.startswith("```console"):
            start = index
            body = []
            while index < len(lines) and lines[index].strip() != "```":
                body.append(lines[index])
                index += 1
            index += 1
            blocks.append(_block(document, f"{heading} {label}".strip(), start, body, directive))
            directive = ""
            continue
        if line.lstrip().startswith("```"):  # any other fence, in a list item too
            fence = "```"
            directive = ""
            continue
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
            label = ""
        bold = re.match(r"\*\*([^*]+)\*\*", line)
        if bold:
            label = bold[1]
        found = DIRECTIVE.match(line.strip())
        if found:
            directive = found[1]
        elif line.strip():
            directive = ""
    return blocks


def _block(document: str, heading: str, line: int, body: list[str], directive: str) -> Block:
    commands: list[Command] = []
    continued = False
    for text in body:
        if continued:
            commands[-1].text += "\n" + text
            continued = text.endswith("\\")
        elif text.startswith("$ "):
            commands.append(Command(text[2:]))
            continued = text.endswith("\\")
        elif commands:
            commands[-1].expected.append(text)
        else:
            raise ValueError(f"{document}:{line}: output before the first command: {text!r}")
    block = Block(document, heading, line, commands)
    if directive.startswith("skip:"):
        block.skip = directive[len("skip:") :].strip()
    elif directive.startswith("config="):
        block.config = directive[len("config=") :].strip()
    elif directive:
        raise ValueError(f"{document}:{line}: unknown example directive {directive!r}")
    return block


# What differs from one run to the next, masked the same way in what the
# document shows and in what the commands printed.
MONTH = "(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
DAY = "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
MASKS = [
    (re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?"), "<time>"),
    (re.compile(rf"{DAY} {MONTH} [ \d]\d \d\d:\d\d:\d\d \d{{4}}"), "<time>"),
    (re.compile(rf"{MONTH} [ \d]\d \d\d:\d\d:\d\d"), "<time>"),
    (re.compile(r"\b1[5-9]\d{8}\.\d+"), "<time>"),
    (re.compile(r"\b\d+\.\d{3,}\b"), "<number>"),
    (re.compile(r"\b(pid[ =:]*)\d+", re.I), r"\1<pid>"),
    (re.compile(r"\b(id: )\d+"), r"\1<id>"),
    (re.compile(r'("hostname": )"[^"]*"'), r'\1"<host>"'),
    (re.compile(r"\bsuite \d[\w.+]* \(Twisted [^,()]+, Python [^()]+\)"), "<versions>"),
]


def _ephemeral() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


EPHEMERAL = _ephemeral()
SHOWN_DIRECTORY = "/home/you/suite"
PEER_PORT = re.compile(r"(?<=[0-9\]]:)(\d{4,5})\b")


def normalise(lines: list[str], directory: str = SHOWN_DIRECTORY) -> list[str]:
    """LINES with what differs between runs masked; DIRECTORY is where they ran."""
    result = []
    for line in lines:
        line = line.replace(directory, "<directory>").replace(SHOWN_DIRECTORY, "<directory>")
        for pattern, replacement in MASKS:
            line = pattern.sub(replacement, line)
        line = PEER_PORT.sub(
            lambda m: "<port>" if EPHEMERAL[0] <= int(m[1]) <= EPHEMERAL[1] else m[1], line
        )
        result.append(line.rstrip())
    while result and not result[-1]:
        result.pop()
    return result


def command_ports(blocks: list[Block]) -> set[int]:
    """Ports the commands listen on themselves: `--listen tcp:5002:…`."""
    found: set[int] = set()
    for block in blocks:
        for command in block.commands:
            found.update(
                int(p) for p in re.findall(r"\b(?:tcp6?|udp|ssl):(\d{2,5})", command.text)
            )
    return found


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env["LC_ALL"] = "C.UTF-8"
    env.pop("SUITE_TOKEN", None)
    return env


class Suite:
    """One suite process from a copy of CONFIG in a scratch directory, its ports moved."""

    def __init__(self, config: str, extra_ports: set[int]):
        self.directory = Path(tempfile.mkdtemp(prefix="suite-docs-")).resolve()
        source = ROOT / config
        self.mapping = free_ports(config_ports(source) | extra_ports)
        # The checkout as `make run` leaves it: etc/suite.toml, and beside it
        # the TLS pair and the directories `suite init` adds; etc/examples/
        # (whose configs name ../tls/), and the config to start.
        for relative in [DEFAULT_CONFIG, config, *EXAMPLES]:
            copy = self.directory / relative
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_text(replace_ports((ROOT / relative).read_text(), self.mapping))
        self.config = self.directory / config
        run(
            [str(BIN / "suite"), "init", "etc"],
            cwd=self.directory,
            env=environment(),
            stdout=subprocess.DEVNULL,
            check=True,
        )
        self.log = self.directory / "suite.log"
        with self.log.open("wb") as log:
            self.process = popen(
                [
                    str(BIN / "twistd"),
                    "--nodaemon",
                    "--pidfile=",
                    "suite",
                    "--config",
                    str(self.config.relative_to(self.directory)),
                ],
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environment(),
            )
        deadline = time.monotonic() + 20
        while "suite ready" not in self.output():
            if self.process.poll() is not None or time.monotonic() > deadline:
                output = self.output()
                self.stop()
                raise AssertionError(f"the suite of {config} did not start:\n{output}")
            time.sleep(0.05)
        atexit.register(self.stop)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.process)
        shutil.rmtree(self.directory, ignore_errors=True)


def children(pid: int) -> set[int]:
    """The processes whose parent is PID."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.add(int(entry.name))
    return found


def descendants(pid: int) -> set[int]:
    found = set()
    todo = [pid]
    while todo:
        for child in children(todo.pop()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def describe(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return str(pid)


class Shell:
    """One bash in the suite's scratch directory, fed one command at a time."""

    def __init__(self, directory: Path):
        self.process = popen(
            ["bash", "--norc", "--noprofile"],
            cwd=directory,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=environment(),
            start_new_session=True,
        )
        assert self.process.stdin is not None
        self.process.stdin.write(b"__status=0\n")
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))
        self.lines.put(None)

    def run(self, text: str, ready: Callable[[list[str]], bool] | None = None) -> list[str]:
        """TEXT's output; with READY, SIGINT once READY(output so far) is true."""
        before = children(self.process.pid)
        assert self.process.stdin is not None
        # `$?` carries over from one command to the next (`echo $?`), past the mark.
        self.process.stdin.write(
            f"(exit $__status); {{ {text}\n}} </dev/null 2>&1\n"
            f"__status=$?; printf '\\n{MARK}\\n'\n".encode()
        )
        self.process.stdin.flush()
        output: list[str] = []
        started = time.monotonic()
        interrupted = ready is None
        while True:
            waited = time.monotonic() - started
            # As a person would: once the lines above ^C are there, and not
            # before the command had a second to start.
            if not interrupted and (
                (waited > 1.0 and ready is not None and ready(output)) or waited > INTERRUPT_AFTER
            ):
                for pid in children(self.process.pid) - before:
                    for each in {pid} | descendants(pid):
                        try:
                            os.kill(each, signal.SIGINT)
                        except ProcessLookupError:
                            pass
                interrupted = True
            try:
                line = self.lines.get(timeout=0.05)
            except queue.Empty:
                if waited > COMMAND_TIMEOUT:
                    raise AssertionError(
                        f"no end after {COMMAND_TIMEOUT} s: {text}\n" + "\n".join(output)
                    ) from None
                continue
            if line is None:
                raise AssertionError(f"the shell ended during: {text}\n" + "\n".join(output))
            if line == MARK:
                return output
            output.append(line)

    def close(self) -> list[str]:
        """End the shell; the command lines of whatever it left running."""
        left = {}
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            left = {pid: describe(pid) for pid in descendants(self.process.pid)}
            if not left:
                break
            time.sleep(0.1)
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait()
        return sorted(left.values())


class DocumentExamples(SynchronousTestCase):
    """The console examples of one document; subclasses are made below, one per document."""

    document = ""
    blocks: list[Block] = []
    suites: dict[str, Suite] = {}

    def run_block(self, index: int) -> None:
        block = self.blocks[index]
        if index == max(i for i, b in enumerate(self.blocks) if b.config == block.config):
            self.addCleanup(self.stop_suite, block.config)
        where = f"{block.document}:{block.line} ({block.heading})"
        if block.skip:
            raise SkipTest(f"{where}: {block.skip}")
        for tool in TOOLS:
            if any(re.search(rf"(?<![\w.=-]){tool}\b(?![.-])", c.text) for c in block.commands):
                if shutil.which(tool) is None:
                    raise SkipTest(
                        f"{where}: {tool} is not installed "
                        "(make test installs it when run as root)"
                    )
        suite = self.suite_for(block)
        mapping = suite.mapping
        back = {new: old for old, new in mapping.items()}
        shell = Shell(suite.directory)
        try:
            for command in block.commands:
                self.run_command(shell, block, command, mapping, back, suite)
        finally:
            left = shell.close()
        if left:
            self.fail(f"the example left processes running: {left}")

    def run_command(
        self,
        shell: Shell,
        block: Block,
        command: Command,
        mapping: dict[int, int],
        back: dict[int, int],
        suite: Suite,
    ) -> None:
        text = replace_ports(command.text, mapping)
        expected = command.expected
        directory = str(suite.directory)

        def shown(output: list[str]) -> list[str]:
            return normalise([replace_ports(line, back) for line in output], directory)

        ready: Callable[[list[str]], bool] | None = None
        if "^C" in expected:
            at = expected.index("^C")
            before = normalise(expected[:at])
            expected = expected[:at] + expected[at + 1 :]

            def interruptible(output: list[str]) -> bool:
                return shown(output) == before

            ready = interruptible

        deadline = time.monotonic() + RETRY_FOR
        while True:
            output = shell.run(text, ready)
            actual = [replace_ports(line, back) for line in output]
            if shown(output) == normalise(expected):
                return
            if not READ_ONLY.match(command.text) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.fail(
            f"{block.document}:{block.line}: $ {command.text}\n"
            f"--- expected\n" + "\n".join(expected) + "\n--- got\n" + "\n".join(actual) + "\n"
            "--- compared as\n"
            + "\n".join(normalise(expected))
            + "\n--- and\n"
            + "\n".join(shown(output))
            + "\n--- the suite's log\n"
            + suite.output()[-1500:]
        )

    @classmethod
    def suite_for(cls, block: Block) -> Suite:
        if block.config not in cls.suites:
            cls.suites[block.config] = Suite(block.config, command_ports(cls.blocks))
        return cls.suites[block.config]

    @classmethod
    def stop_suite(cls, config: str) -> None:
        suite = cls.suites.pop(config, None)
        if suite is not None:
            suite.stop()


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:60] or "example"


def _test(index: int, block: Block) -> Callable[[DocumentExamples], None]:
    def test(self: DocumentExamples) -> None:
        self.run_block(index)

    test.__doc__ = f"{block.document}:{block.line} ({block.heading})"
    return test


def _examples(document: str) -> type[DocumentExamples] | None:
    """A test case with one test per console block of DOCUMENT, in its order; None if none."""
    blocks = parse(document, (ROOT / document).read_text())
    if not blocks:
        return None
    name = "".join(part.title() for part in re.split(r"[^A-Za-z0-9]+", document[:-3]))
    methods: dict[str, object] = {
        "document": document,
        "blocks": blocks,
        "suites": {},
        "__doc__": f"The console examples of {document}, in its order.",
    }
    for index, block in enumerate(blocks):
        methods[f"test_{index:03d}_{_slug(block.heading)}"] = _test(index, block)
    return type(f"{name}Examples", (DocumentExamples,), methods)


DOCUMENTS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]

for _document in DOCUMENTS:
    _case = _examples(_document)
    if _case is not None:
        globals()[_case.__name__] = _case
