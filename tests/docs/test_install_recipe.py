"""
The README's recipe that installs the suite as a system service, run as
written up to its first `systemctl` line, in a scratch root instead of
/etc/suite, /opt/suite and /etc/systemd/system.  What it installed is then
used the way systemd would: the installed unit's LoadCredential= files
copied into a $CREDENTIALS_DIRECTORY, `suite check` on the installed config,
and the installed config started by the unit's ExecStart=, where the suite
must register its own services with its own name server.
"""

import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from tests.e2e.process import LISTENING, ProcessTestCase, popen, require, run
from tests.e2e.test_systemd_process import free_port, load_credentials, secrets_named

CHECKOUT = Path(__file__).resolve().parents[2]
MARKER = "<!-- recipe: install -->"
# Where the recipe writes on a real host; the test writes under its scratch root.
REDIRECTED = re.compile(r"/etc/systemd/system|/etc/suite|/opt/suite")
# Where the installed config must put what the service writes: the unit's
# LogsDirectory=suite and StateDirectory=suite (the service cannot write /etc/suite).
WRITABLE = re.compile(r"/var/log/suite|/var/lib/suite")
BIN = Path(sys.executable).parent
# A listener of the installed config: "tcp:PORT", "udp:PORT", with or without an interface.
LISTENER = re.compile(r'"(tcp6?|udp):(\d+)(?::interface=[^"]*)?"')


def recipe_block() -> str:
    """The shell block that follows the marker in the README."""
    text = (CHECKOUT / "README.md").read_text()
    assert text.count(MARKER) == 1, f"README.md needs exactly one {MARKER!r} before the recipe"
    block = re.match(r"\s*```sh\n(.*?)\n```", text.split(MARKER, 1)[1], re.S)
    assert block, f"no ```sh block right after {MARKER!r}"
    return block[1]


def runnable(block: str, root: Path) -> str:
    """
    BLOCK without `sudo`, up to its first `systemctl` line, writing under
    ROOT; the line that installs the suite into /opt/suite with pip instead
    links /opt/suite/bin to the tests' own environment (installing is tested
    elsewhere).
    """
    lines, installs = [], 0
    for line in block.replace("sudo ", "").splitlines():
        if line.startswith("systemctl"):
            break
        if "pip install" in line:
            assert line.startswith("python3 -m venv /opt/suite "), line
            line = f"mkdir -p /opt/suite && ln -s {shlex.quote(str(BIN))} /opt/suite/bin"
            installs += 1
        lines.append(line)
    else:
        raise AssertionError("the recipe has no systemctl line")
    assert installs == 1, "the recipe installs the suite with pip once"
    script = REDIRECTED.sub(lambda found: f"{root}{found[0]}", "\n".join(lines)) + "\n"
    # The unit's LoadCredential= lines name the real /etc/suite: the check
    # reads a copy of the installed unit whose files are the scratch root's.
    unit = f"{root}/etc/systemd/system/suite.service"
    scratch_unit = f"{root}/suite.service.scratch"
    check = f"{root}/opt/suite/bin/suite check --unit {unit} "
    assert check in script, "the recipe checks the installed config"
    return script.replace(
        check,
        f"sed 's|=\\([a-z.-]*\\):/etc/suite/|=\\1:{root}/etc/suite/|' {unit} > {scratch_unit} "
        f"&& {root}/opt/suite/bin/suite check --unit {scratch_unit} ",
    )


def kill_if_running(process: subprocess.Popen) -> None:
    """Kill PROCESS if a failed assertion left it running."""
    if process.poll() is None:
        process.kill()
        process.wait()


def files_under(directory: Path) -> set[str]:
    return {str(path.relative_to(directory)) for path in directory.rglob("*")}


class InstallRecipe(ProcessTestCase):
    def setUp(self):
        super().setUp()
        require("openssl")
        self.root = self.directory / "root"
        (self.root / "etc" / "systemd" / "system").mkdir(parents=True)
        result = run(
            ["bash", "-euo", "pipefail", "-c", runnable(recipe_block(), self.root)],
            cwd=CHECKOUT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result
        # The recipe's own `suite check --unit`, before systemctl: the config is good.
        checked = f"{self.root}/etc/suite/suite.toml: ok (timestamp, echo, logger, sleep, names)"
        assert checked in result.stdout.splitlines(), result.stdout
        self.unit = self.root / "etc" / "systemd" / "system" / "suite.service"
        self.config = self.root / "etc" / "suite" / "suite.toml"
        shipped = (CHECKOUT / "etc" / "systemd" / "suite.service").read_text()
        assert self.unit.read_text() == shipped
        self.settings = tomllib.loads(self.config.read_text())
        # LoadCredential=, played: private copies of the root-only files.
        self.credentials = self.directory / "credentials"
        self.credentials.mkdir()
        self.loaded = load_credentials(self.unit.read_text())
        for name, source in self.loaded.items():
            shutil.copy(self.in_root(source), self.credentials / name)
        self.environment = {**os.environ, "CREDENTIALS_DIRECTORY": str(self.credentials)}

    def in_root(self, text: str) -> str:
        """TEXT with the host's paths of the recipe and of the service moved into the root."""
        for paths in (REDIRECTED, WRITABLE):
            text = paths.sub(lambda found: f"{self.root}{found[0]}", text)
        return text

    def test_secrets_stay_root_only_and_reach_the_suite_as_credentials(self):
        for name in ("tls/server.key", "names.token"):
            mode = (self.root / "etc" / "suite" / name).stat().st_mode
            assert stat.S_IMODE(mode) & 0o077 == 0, f"{name}: {stat.filemode(mode)}"
        # The name server wants the token for writes; the suite's own registrations carry it.
        assert self.settings["names"]["token"] == "credential:names-token"
        assert self.settings["announce"]["token"] == "credential:names-token"
        named = secrets_named(self.settings)
        assert {"[tls] certificate", "[tls] private_key"} <= named.keys(), named
        for key, value in named.items():
            assert value.startswith("credential:"), f"{key} = {value!r}"
            assert value.removeprefix("credential:") in self.loaded, (
                f"{key} = {value!r} is no LoadCredential= of suite.service"
            )

    def test_what_the_service_writes_goes_to_its_own_directories(self):
        unit = self.unit.read_text()
        assert "\nLogsDirectory=suite\n" in unit and "\nStateDirectory=suite\n" in unit
        written = {
            "[logger] output": self.settings["logger"]["output"],
            "[names] store": self.settings["names"]["store"].removeprefix("sqlite:"),
        }
        if "lookup_audit" in self.settings["names"]:
            written["[names] lookup_audit"] = self.settings["names"]["lookup_audit"]
        for key, path in written.items():
            assert WRITABLE.match(path), f"{key} = {path!r}"

    def test_suite_check_accepts_the_installed_config(self):
        """
        With the unit's credentials, and its LogsDirectory and StateDirectory
        in the scratch root; without the credentials it finds them missing.
        """
        self.config.write_text(self.in_root(self.config.read_text()))
        check = [str(self.root / "opt" / "suite" / "bin" / "suite"), "check", str(self.config)]
        result = run(check, env=self.environment, capture_output=True, text=True, timeout=60)
        assert (result.returncode, result.stderr) == (0, ""), result
        assert result.stdout.startswith(f"{self.config}: ok ("), result
        bare = {name: value for name, value in os.environ.items() if "CREDENTIALS" not in name}
        result = run(check, env=bare, capture_output=True, text=True, timeout=60)
        assert result.returncode == 1 and "$CREDENTIALS_DIRECTORY is not set" in result.stdout

    def test_the_installed_suite_registers_itself_with_its_name_server(self):
        """
        The installed config as ExecStart= runs it, its listeners moved to
        free loopback ports and /var/log/suite and /var/lib/suite into the
        scratch root: echo is found through the name server, which accepted
        the suite's own registrations with the shared token; nothing is
        written beside the config, which the service could not write.
        """
        (name_server,) = self.settings["announce"]["name_server"]
        shipped_port = name_server.rsplit(":", 1)[1]
        names_port = free_port()

        def moved(found: re.Match) -> str:
            port = names_port if found[2] == shipped_port and found[1] == "tcp" else 0
            return f'"{found[1]}:{port}:interface=127.0.0.1"'

        text = LISTENER.sub(moved, self.in_root(self.config.read_text()))
        text = text.replace(f'"{name_server}"', f'"127.0.0.1:{names_port}"')
        listeners = [found[2] for found in LISTENER.finditer(text)]
        assert set(listeners) == {"0", str(names_port)}, listeners
        self.config.write_text(text)
        installed = files_under(self.root / "etc" / "suite")

        (start,) = re.findall(r"^ExecStart=(.+)$", self.unit.read_text(), re.M)
        log = self.directory / "journal.txt"
        with open(log, "w") as journal:
            process = popen(
                shlex.split(self.in_root(start)),
                cwd=self.directory,
                env={**self.environment, "PYTHONUNBUFFERED": "1"},
                stdout=journal,
                stderr=subprocess.STDOUT,
            )
        self.addCleanup(kill_if_running, process)
        deadline = time.monotonic() + 30
        while "suite ready" not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        ports = {
            found[1]: found[3].rsplit(":", 1)[1]
            for found in map(LISTENING.search, log.read_text().splitlines())
            if found and found[2].startswith("tcp:")
        }
        client = str(BIN / "suite-client")
        found = ""
        deadline = time.monotonic() + 15
        while f"127.0.0.1:{ports['echo']}\ttcp" not in found:
            assert time.monotonic() < deadline, (found, log.read_text())
            time.sleep(0.2)
            found = run(
                [client, "names", f"127.0.0.1:{names_port}", "lookup", "echo"],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout
        echoed = run(
            [client, "echo", "--lookup", f"127.0.0.1:{names_port}", "found"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert echoed.returncode == 0 and "found" in echoed.stdout, echoed
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) in (0, -signal.SIGTERM), log.read_text()
        output = log.read_text()
        assert "UNAUTHORIZED" not in output and "Traceback" not in output, output
        assert (self.root / "var" / "lib" / "suite" / "names.sqlite").exists()
        assert (self.root / "var" / "log" / "suite").is_dir()
        assert files_under(self.root / "etc" / "suite") == installed, "written in /etc/suite"
