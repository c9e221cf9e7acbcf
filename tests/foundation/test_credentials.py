"""Secrets from files and from systemd credentials ($CREDENTIALS_DIRECTORY)."""

import os
import re
import shutil
import subprocess
from pathlib import Path

from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from suite.app import tap as services
from suite.app.compose import build
from suite.app.lifecycle import walk
from suite.foundation.config import ConfigError
from suite.foundation.credentials import credential_path, read_secret, resolve_token
from suite.names import service as names_service
from suite.names.server import NameServer
from suite.names.service import NamesSettings
from suite.net.listeners import ListenerService
from tests.helpers import make_pki, tmp_dir

ROOT = Path(__file__).resolve().parents[2]


class CredentialTests(SynchronousTestCase):
    def test_credential_names_a_file_in_the_credentials_directory(self):
        environ = {"CREDENTIALS_DIRECTORY": "/run/credentials/suite.service"}
        self.assertEqual(
            credential_path("credential:server.key", environ),
            "/run/credentials/suite.service/server.key",
        )
        self.assertEqual(
            credential_path("/etc/suite/server.key", environ), "/etc/suite/server.key"
        )
        for value, problem in (
            ("credential:", "needs a file name"),
            ("credential:../etc/shadow", "needs a file name"),
        ):
            with self.assertRaises(ValueError) as caught:
                credential_path(value, environ)
            self.assertIn(problem, str(caught.exception))
        with self.assertRaises(ValueError) as caught:
            credential_path("credential:x", {})
        self.assertIn("$CREDENTIALS_DIRECTORY is not set", str(caught.exception))

    def test_read_secret(self):
        directory = tmp_dir(self)
        (directory / "token").write_text("s3cret\n")
        (directory / "empty").write_text("\n")
        self.assertEqual(read_secret(str(directory / "token")), "s3cret")
        for name, problem in (
            ("empty", "the file is empty"),
            ("missing", "cannot read: No such file or directory"),
        ):
            with self.assertRaises(ValueError) as caught:
                read_secret(str(directory / name))
            self.assertEqual(str(caught.exception), problem)


class TokenSourceTests(SynchronousTestCase):
    def test_token_file_and_token_credential(self):
        directory = tmp_dir(self)
        (directory / "token").write_text("from-file\n")
        settings = NamesSettings(token_file=str(directory / "token"), store="memory")
        self.assertEqual(resolve_token(settings), "from-file")
        self.assertEqual(resolve_token(NamesSettings(token="plain")), "plain")

    def test_mistakes_are_one_line_and_never_show_the_token(self):
        for settings, expected in (
            (
                NamesSettings(token="t", token_file="/f"),
                'default: [names] token_file = "/f": set token or token_file, not both',
            ),
            (
                NamesSettings(token_file="/nonexistent"),
                'default: [names] token_file = "/nonexistent": '
                "cannot read: No such file or directory",
            ),
        ):
            with self.assertRaises(ConfigError) as caught:
                names_service.build(settings, MemoryReactor())
            self.assertEqual(str(caught.exception), expected)


class InstalledConfigTests(SynchronousTestCase):
    def test_the_readme_install_steps_give_a_config_that_loads_from_credentials(self):
        """The README's sed line over etc/suite.toml, with the credentials systemd would pass."""
        readme = (ROOT / "README.md").read_text()
        sed = re.search(r"^(sed -e .*?etc/suite\.toml) \\\n", readme, re.M | re.S)
        self.assertIsNotNone(sed, "the install steps' sed line")
        command = sed.group(1).replace("\\\n", " ")
        directory = tmp_dir(self)
        installed = subprocess.run(
            ["sh", "-c", command], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        (directory / "suite.toml").write_text(installed)
        credentials = directory / "credentials"
        credentials.mkdir()
        pki = make_pki(directory)
        shutil.copy(pki["server_crt"], credentials / "server.crt")
        shutil.copy(pki["server_key"], credentials / "server.key")
        (credentials / "names-token").write_text("s3cret\n")
        os.environ["CREDENTIALS_DIRECTORY"] = str(credentials)
        self.addCleanup(os.environ.pop, "CREDENTIALS_DIRECTORY")
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(directory)  # the config's var/ paths land here
        root = build(services.SERVICES, "suite.toml", {}, MemoryReactor(), only_listed=False)
        names = next(c for c in walk(root) if isinstance(c, NameServer))
        self.assertEqual(names.token, b"s3cret")
        self.assertIn("logger tls_listen tcp:6514", [c.name for c in walk(root)])
        for child in walk(root):
            if isinstance(child, NameServer):
                child.store.close()

    def test_the_per_core_config_loads_from_credentials(self):
        directory = tmp_dir(self)
        credentials = directory / "credentials"
        credentials.mkdir()
        pki = make_pki(directory)
        shutil.copy(pki["server_crt"], credentials / "server.crt")
        shutil.copy(pki["server_key"], credentials / "server.key")
        os.environ["CREDENTIALS_DIRECTORY"] = str(credentials)
        self.addCleanup(os.environ.pop, "CREDENTIALS_DIRECTORY")
        config = ROOT / "etc" / "systemd" / "per-core" / "per-core.toml"
        root = build(services.SERVICES, str(config), {}, MemoryReactor(), only_listed=False)
        listeners = sorted(c.name for c in walk(root) if isinstance(c, ListenerService))
        self.assertEqual(
            listeners,
            [
                "echo tcp:5001:interface=127.0.0.1",
                "echo udp:5001:interface=127.0.0.1",
                "sleep tcp:5200:interface=127.0.0.1",
                "timestamp tcp:12345:interface=127.0.0.1",
                "timestamp udp:12345:interface=127.0.0.1",
            ],
        )
