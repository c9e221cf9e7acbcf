"""The `suite` command: init writes a setup that checks clean, check names every mistake."""

import contextlib
import io
import os
import sqlite3
import stat
import textwrap
from pathlib import Path

from cryptography import x509
from twisted.trial.unittest import SynchronousTestCase

from suite.app import command
from suite.app.compose import check
from suite.app.services import SERVICES
from tests.helpers import tmp_dir

CHECKOUT = Path(__file__).resolve().parents[2]


def run(*argv: str) -> tuple[int, str]:
    """`suite ARGV`: its exit status and what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        try:
            command.main(list(argv))
        except SystemExit as e:
            return int(e.code or 0), printed.getvalue()
    raise AssertionError("suite did not exit")


class Init(SynchronousTestCase):
    def setUp(self):
        self.directory = tmp_dir(self) / "new" / "suite"

    def test_writes_the_shipped_config_a_tls_pair_and_its_directories(self):
        status, printed = run("init", str(self.directory))
        self.assertEqual(status, 0, printed)
        config = self.directory / "suite.toml"
        self.assertEqual(config.read_bytes(), (CHECKOUT / "etc" / "suite.toml").read_bytes())
        key = self.directory / "tls" / "server.key"
        self.assertEqual(stat.S_IMODE(key.stat().st_mode), 0o600)
        certificate = x509.load_pem_x509_certificate(
            (self.directory / "tls" / "server.crt").read_bytes()
        )
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        self.assertIn("localhost", names.value.get_values_for_type(x509.DNSName))
        for made in ("log", "data"):
            self.assertTrue((self.directory / made).is_dir(), made)
        self.assertIn(f"twistd --nodaemon --pidfile= suite --config {config}", printed)
        self.assertEqual(check(SERVICES, str(config))[1], [])

    def test_never_overwrites(self):
        run("init", str(self.directory))
        config = self.directory / "suite.toml"
        config.write_text(config.read_text().replace('format = "ctime"', 'format = "iso"'))
        key_before = (self.directory / "tls" / "server.key").read_bytes()
        status, printed = run("init", str(self.directory))
        self.assertEqual(status, 0, printed)
        self.assertIn('format = "iso"', config.read_text())
        self.assertEqual((self.directory / "tls" / "server.key").read_bytes(), key_before)
        self.assertIn(f"kept {config} (it exists)", printed)

    def test_a_config_that_does_not_parse_is_kept_and_reported(self):
        self.directory.mkdir(parents=True)
        (self.directory / "suite.toml").write_text("[echo\n")
        status, printed = run("init", str(self.directory))
        self.assertEqual(status, 1)
        self.assertIn("invalid TOML", printed)
        self.assertFalse((self.directory / "tls").exists())


class Check(SynchronousTestCase):
    def setUp(self):
        self.directory = tmp_dir(self)

    def check(self, body: str) -> tuple[int, list[str]]:
        path = self.directory / "suite.toml"
        path.write_text(textwrap.dedent(body))
        status, printed = run("check", str(path))
        return status, printed.splitlines()

    def test_a_good_config_is_one_line_and_status_0(self):
        status, lines = self.check(
            """
            [echo]
            listen = ["tcp:0"]
            [logger]
            listen = ["tcp:0"]
            output = "log/messages.jsonl"
            """
        )
        self.assertEqual(status, 0)
        self.assertEqual(lines, [f"{self.directory / 'suite.toml'}: ok (echo, logger)"])
        self.assertFalse((self.directory / "log").exists(), "check wrote nothing")

    def test_every_mistake_is_one_line_and_secrets_are_never_shown(self):
        self.directory.joinpath("a-file").write_text("")
        status, lines = self.check(
            """
            [tls]
            certificate = "missing.crt"
            private_key = "missing.key"
            [echo]
            listen = ["tcp:abc"]
            tokn = "hunter2"
            [logger]
            output = "a-file/messages.jsonl"
            keep = -1
            [names]
            listen = ["tcp:0"]
            token_file = "no-such-token"
            [echoo]
            """
        )
        self.assertEqual(status, 1)
        text = "\n".join(lines)
        self.assertNotIn("hunter2", text)
        expected = [
            "[echoo]: unknown section",
            '[echo] tokn = "***": unknown key',
            "[logger] keep = -1: must be at least 1",
            '[echo] listen = "tcp:abc": bad endpoint',
            f'[tls] certificate = "missing.crt" ({self.directory / "missing.crt"}): cannot read',
            f"{self.directory / 'a-file'} is not a directory",
            '[names] token_file = "',
        ]
        self.assertEqual(len(lines), len(expected), text)
        for fragment in expected:
            self.assertEqual(sum(fragment in line for line in lines), 1, (fragment, text))

    def test_a_file_that_cannot_be_read(self):
        status, printed = run("check", str(self.directory / "absent.toml"))
        self.assertEqual(status, 1)
        self.assertEqual(printed, f"{self.directory / 'absent.toml'}: config file not found\n")

    def test_credentials_are_read_from_the_credentials_directory(self):
        credentials = self.directory / "credentials"
        credentials.mkdir()
        (credentials / "names-token").write_text("s3cret\n")
        body = """
            [names]
            listen = ["tcp:0"]
            store = "memory"
            lookup_audit = ""
            token = "credential:names-token"
            """
        status, lines = self.check(body)
        self.assertEqual(status, 1)
        self.assertIn("$CREDENTIALS_DIRECTORY is not set", lines[0])
        os.environ["CREDENTIALS_DIRECTORY"] = str(credentials)
        self.addCleanup(os.environ.pop, "CREDENTIALS_DIRECTORY")
        self.assertEqual(self.check(body)[0], 0)

    def test_credentials_as_a_unit_would_hand_them_over(self):
        secrets = self.directory / "secrets"
        secrets.mkdir()
        (secrets / "token").write_text("s3cret\n")
        unit = self.directory / "suite.service"
        unit.write_text(f"[Service]\nLoadCredential=names-token:{secrets / 'token'}\n")
        body = textwrap.dedent(
            """
            [names]
            listen = ["tcp:0"]
            store = "memory"
            lookup_audit = ""
            token = "credential:names-token"
            """
        )
        path = self.directory / "suite.toml"
        path.write_text(body)
        status, printed = run("check", "--unit", str(unit), str(path))
        self.assertEqual((status, printed), (0, f"{path}: ok (names)\n"))
        self.assertNotIn("CREDENTIALS_DIRECTORY", os.environ)
        unit.write_text(f"[Service]\nLoadCredential=other:{secrets / 'token'}\n")
        status, printed = run("check", "--unit", str(unit), str(path))
        self.assertEqual(status, 1)
        self.assertIn('[names] token = "***": cannot read: No such file or directory', printed)

    def test_the_store_is_checked_as_the_start_would_without_writing_it(self):
        data = self.directory / "data"
        data.mkdir()
        with sqlite3.connect(data / "names.sqlite") as database:  # an earlier version's schema
            database.execute(
                "CREATE TABLE instances (name TEXT, host TEXT, port INTEGER, description TEXT)"
            )
            database.executemany(
                "INSERT INTO instances VALUES (?, ?, ?, ?)",
                [("web", "127.0.0.1", port, "") for port in (1, 2)],
            )
        database.close()
        before = (data / "names.sqlite").read_bytes()
        body = """
            [names]
            listen = ["tcp:0"]
            lookup_audit = ""
            max_instances = %d
            """
        self.assertEqual(self.check(body % 2)[0], 0)
        status, lines = self.check(body % 1)
        self.assertEqual(status, 1)
        self.assertEqual(
            lines,
            [
                'default: [names] store = "sqlite:data/names.sqlite" '
                f"({data / 'names.sqlite'}): holds more than max_instances (1) instances"
            ],
        )
        self.assertEqual((data / "names.sqlite").read_bytes(), before)
        self.assertEqual(sorted(p.name for p in data.iterdir()), ["names.sqlite"])


class StatusTables(SynchronousTestCase):
    def test_services_and_registry_escaped(self):
        body = {
            "status": "degraded",
            "version": "suite 1",
            "services": {
                "echo": {"status": "ok"},
                "names": {
                    "status": "degraded",
                    "problems": ["audit \x1b[31m stopped"],
                    "instances": 3,
                    "names": 1,
                    "evictions": 0,
                    "registry": {
                        "web\u202e": {"instances": 3, "addresses": ["[::1]:80", "[::1]:81"]}
                    },
                },
            },
        }
        lines = command.status_lines(body)
        self.assertEqual(lines[0], "suite 1: degraded")
        self.assertEqual(lines[1].split(), ["SERVICE", "STATUS", "DETAIL"])
        self.assertNotIn("\x1b", "\n".join(lines))
        self.assertNotIn("\u202e", "\n".join(lines))
        last = lines[-1].split()
        self.assertEqual(last[1:], ["3", "[::1]:80", "[::1]:81", "and", "1", "more"])

    def test_an_unreachable_suite_is_status_1(self):
        status, printed = run("status", "http://127.0.0.1:9/", "--timeout", "2")
        self.assertEqual(status, 1)
        self.assertIn("127.0.0.1:9", printed)
