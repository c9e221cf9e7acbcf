"""Every config error is one line naming file, section, key, value and problem."""

import os
import re
import sqlite3
import textwrap

from twisted.internet.testing import MemoryReactor
from twisted.python.usage import UsageError
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from suite.app import tap as services
from suite.app.compose import build, plugin_options
from suite.app.lifecycle import walk
from suite.echo import tap as echo_tap
from suite.echo.service import EchoSettings
from suite.foundation.config import ConfigError, load
from suite.logger import tap as logger_tap
from suite.logger.service import LoggerSettings
from suite.names.service import NamesSettings
from suite.net.listeners import Listener, ListenerService, parse_listeners
from suite.net.tls import TLSSettings
from suite.timestamp import service as timestamp_service
from suite.timestamp import tap as timestamp_tap
from tests.helpers import make_pki, tmp_dir


def listener_names(root):
    """The names of every listener of ROOT's tree, in start order."""
    return [child.name for child in walk(root) if isinstance(child, ListenerService)]


REFUSALS = [
    (
        "[timestmp]\n",
        "FILE: [timestmp]: unknown section "
        "(known: announce, echo, logger, metrics, names, sleep, timestamp, tls)",
    ),
    ("[echo]\nport = 5\n", "FILE: [echo] port = 5: unknown key"),
    ('[echo]\nmode = "loud"\n', 'FILE: [echo] mode = "loud": must be one of line, raw'),
    ('[echo]\nmax_line = "big"\n', 'FILE: [echo] max_line = "big": must be an integer'),
    ("[echo]\nmax_line = 0\n", "FILE: [echo] max_line = 0: must be at least 1"),
    ("[echo]\nmax_line = true\n", "FILE: [echo] max_line = true: must be an integer"),
    ("[echo]\nudp_rate = -1\n", "FILE: [echo] udp_rate = -1: must be at least 0"),
    ('[echo]\nidle_timeout = "5m"\n', 'FILE: [echo] idle_timeout = "5m": must be a number'),
    ('[echo]\nenabled = "yes"\n', 'FILE: [echo] enabled = "yes": must be true or false'),
    ('[echo]\nlisten = "tcp:1"\n', 'FILE: [echo] listen = "tcp:1": must be a list of strings'),
    ("[echo]\nlisten = [1]\n", "FILE: [echo] listen = [1]: must be a list of strings"),
    ('[timestamp]\nformat = "isoo"\n', 'FILE: [timestamp] format = "isoo": must be ctime'),
    ("[timestamp]\nutc = 1\n", "FILE: [timestamp] utc = 1: must be true or false"),
    ('[tls]\nmin_version = "1.1"\n', 'FILE: [tls] min_version = "1.1": must be one of 1.2, 1.3'),
    (
        '[echo]\nlisten = ["tcp:0"]\n[metrics]\nlisten = ["udp:9100"]\n',
        'FILE: [metrics] listen = "udp:9100": bad endpoint: metrics has no datagram side',
    ),
    (
        '[echo]\nlisten = ["tcp:0"]\n[metrics]\ntls_listen = ["tcp:9100"]\n',
        'FILE: [metrics] tls_listen = ["tcp:9100"]: needs [tls] certificate',
    ),
    (
        "[metrics]\nmax_connections = 0\n",
        "FILE: [metrics] max_connections = 0: must be at least 1",
    ),
    ("echo = 1\n", "FILE: [echo] must be a table, not 1"),
    (
        '[echo]\nlisten = ["frob:1"]\n',
        "FILE: [echo] listen = \"frob:1\": bad endpoint: Unknown endpoint type: 'frob'",
    ),
    ('[echo]\nlisten = ["tcp:http"]\n', 'FILE: [echo] listen = "tcp:http": bad endpoint'),
    (
        '[echo]\nlisten = ["tcp:70000"]\n',
        'FILE: [echo] listen = "tcp:70000": bad endpoint: port must be 0-65535',
    ),
    (
        '[echo]\nlisten = ["tcp6:port=99999:interface=\\\\:\\\\:1"]\n',
        'FILE: [echo] listen = "tcp6:port=99999:interface=\\\\:\\\\:1": '
        "bad endpoint: port must be 0-65535",
    ),
    (
        '[timestamp]\nformat = "%Q"\n',
        'FILE: [timestamp] format = "%Q": unknown strftime directive %Q',
    ),
    (
        '[timestamp]\nformat = "%H%"\n',
        'FILE: [timestamp] format = "%H%": a % that starts no directive',
    ),
    (
        '[tls]\ncertificate = "/nonexistent.crt"\nprivate_key = "/nonexistent.key"\n'
        '[echo]\nlisten = ["tcp:0"]\n',
        'FILE: [tls] certificate = "/nonexistent.crt": cannot read: No such file or directory',
    ),
    (
        '[tls]\nclient_ca = "/nonexistent.crt"\n[echo]\nlisten = ["tcp:0"]\n',
        'FILE: [tls] client_ca = "/nonexistent.crt": needs [tls] certificate too',
    ),
    (
        '[echo]\nlisten = ["udp:70000"]\n',
        'FILE: [echo] listen = "udp:70000": bad endpoint: port must be 0-65535',
    ),
    (
        '[echo]\nlisten = ["udp:1:ttl=3"]\n',
        "FILE: [echo] listen = \"udp:1:ttl=3\": bad endpoint: unknown udp option 'ttl=3'",
    ),
    (
        '[announce]\nname_server = ["nohostport"]\n[echo]\nlisten = ["tcp:0"]\n',
        'FILE: [announce] name_server = ["nohostport"]: nohostport: expected host:port, '
        "[v6]:port or an endpoint string",
    ),
    (
        '[announce]\nname_server = ["127.0.0.1:1"]\ntoken_file = "/nonexistent"\n'
        '[echo]\nlisten = ["tcp:0"]\n',
        'FILE: [announce] token_file = "/nonexistent": cannot read: No such file or directory',
    ),
    (
        '[names]\nstore = "memory"\ndns_listen = ["udp:70000"]\n',
        'FILE: [names] dns_listen = "udp:70000": bad endpoint: port must be 0-65535',
    ),
    (
        '[names]\nstore = "memory"\ndomain = "Bad_Zone"\n',
        'FILE: [names] domain = "Bad_Zone": must be a DNS name such as suite or svc.example.com '
        "(lowercase)",
    ),
    (
        '[echo]\ntls_listen = ["udp:1"]\n',
        'FILE: [echo] tls_listen = "udp:1": bad endpoint: TLS needs a stream endpoint',
    ),
    (
        '[echo]\ntls_listen = ["ssl:1"]\n',
        'FILE: [echo] tls_listen = "ssl:1": bad endpoint: tls_listen takes tcp:',
    ),
    (
        "[echo]\nlisten = []\n",
        "FILE: [echo] listen = []: no listeners (set listen or tls_listen, or enabled = false)",
    ),
    (
        '[logger]\nrelp_listen = ["udp:2514"]\n',
        'FILE: [logger] relp_listen = "udp:2514": bad endpoint: relp_listen takes stream '
        "endpoints (tcp:, tcp6:, unix:, systemd:), not udp",
    ),
    (
        '[echo]\ntls_listen = ["tcp:0"]\n',
        'FILE: [echo] tls_listen = ["tcp:0"]: needs [tls] certificate',
    ),
    (
        '[timestamp]\nlisten = ["systemd-udp:name=ts-udp"]\n',
        'FILE: [timestamp] listen = "systemd-udp:name=ts-udp": bad endpoint: '
        "no socket passed by systemd is named 'ts-udp'",
    ),
    (
        '[timestamp]\nlisten = ["systemd-udp:ts-udp"]\n',
        'FILE: [timestamp] listen = "systemd-udp:ts-udp": bad endpoint: '
        "expected systemd-udp:name=NAME",
    ),
    (
        '[timestamp]\nlisten = ["systemd:domain=INET:name=ts-tcp"]\n',
        'FILE: [timestamp] listen = "systemd:domain=INET:name=ts-tcp": '
        "no socket passed by systemd is named 'ts-tcp'",
    ),
    (
        '[echo]\ntls_listen = ["systemd-udp:name=x"]\n',
        'FILE: [echo] tls_listen = "systemd-udp:name=x": bad endpoint: '
        "TLS needs a stream endpoint, not systemd-udp",
    ),
    (
        '[sleep]\nlisten = ["systemd-udp:name=x"]\n',
        'FILE: [sleep] listen = "systemd-udp:name=x": bad endpoint: sleep has no datagram side',
    ),
    (
        '[sleep]\nlisten = ["udp:5200"]\n',
        'FILE: [sleep] listen = "udp:5200": bad endpoint: sleep has no datagram side',
    ),
    (
        "[sleep]\nmax_seconds = -1\n",
        "FILE: [sleep] max_seconds = -1: must be at least 0",
    ),
    ("[echo]\nenabled = false\n", "FILE: no service enabled"),
    ("", "FILE: no service enabled"),
]


class ConfigTestCase(SynchronousTestCase):
    def setUp(self):
        self.directory = tmp_dir(self)

    def write(self, body):
        path = self.directory / "suite.toml"
        path.write_text(textwrap.dedent(body))
        return str(path)

    def load_suite(self, path, overrides=None):
        return build(services.SERVICES, path, overrides or {}, MemoryReactor(), only_listed=False)

    def refused(self, body, overrides=None):
        path = self.write(body)
        message = str(self.assertRaises(ConfigError, self.load_suite, path, overrides))
        self.assertNotIn("\n", message)
        return message.replace(path, "FILE")


class RefusalTests(ConfigTestCase):
    def test_each_mistake_is_one_line_naming_where(self):
        for body, expected in REFUSALS:
            message = self.refused(body)
            self.assertTrue(message.startswith(expected), f"{body!r}: {message!r}")

    def test_toml_syntax_error_names_file_and_line(self):
        message = self.refused('[echo]\nmode = "line"\nlisten = [tcp:1]\n')
        self.assertTrue(message.startswith("FILE:3: invalid TOML: "), message)

    def test_a_file_that_is_not_utf8_is_one_line(self):
        path = self.directory / "latin1.toml"
        path.write_bytes(b'[echo]\n# caf\xe9\nmode = "line"\n')
        message = str(self.assertRaises(ConfigError, self.load_suite, str(path)))
        self.assertEqual(message, f"{path}:2: not UTF-8 (byte 0xe9)")

    def test_deep_nesting_is_one_line(self):
        for body in (
            "x = " + "[" * 50000 + "]" * 50000,
            "x = " + "{a=" * 50000 + "1" + "}" * 50000,
        ):
            message = self.refused("[echo]\n" + body + "\n")
            self.assertTrue(message.startswith("FILE"), message)
            self.assertIn("invalid TOML", message)

    def test_a_secret_never_appears_in_a_message(self):
        for body, overrides in (
            ("[names]\ntoken = 12345\n", None),
            ("[names]\n", {"names": {"token": ["s3cret"]}}),
        ):
            message = self.refused(body, overrides)
            self.assertIn('token = "***"', message.replace("--token", "token ="))
            self.assertNotIn("12345", message)
            self.assertNotIn("s3cret", message)

    def test_a_long_value_is_cut_short(self):
        message = self.refused(f'[echo]\nmode = "{"x" * 5000}"\n')
        self.assertLess(len(message), 400)
        self.assertTrue(message.endswith("must be one of line, raw"), message)

    def test_missing_file(self):
        path = str(self.directory / "nowhere.toml")
        message = str(self.assertRaises(ConfigError, self.load_suite, path))
        self.assertEqual(message, f"{path}: config file not found")

    def test_datagram_listener_on_a_service_without_datagram_side(self):
        path = self.write('[echo]\nlisten = ["udp:5001"]\n')
        settings = load(path, [timestamp_service.TimestampSettings, EchoSettings])["echo"]
        caught = self.assertRaises(ConfigError, parse_listeners, settings, datagram_side=False)
        self.assertEqual(
            str(caught),
            f'{path}: [echo] listen = "udp:5001": bad endpoint: echo has no datagram side',
        )

    def test_nan_and_infinities_are_refused_for_every_number(self):
        for value, shown in (("nan", "nan"), ("inf", "inf"), ("-inf", "-inf")):  # as TOML has them
            self.assertEqual(
                self.refused(f"[echo]\nidle_timeout = {value}\n"),
                f"FILE: [echo] idle_timeout = {shown}: must be a finite number",
            )
        self.assertEqual(
            self.refused("[sleep]\nmax_seconds = inf\n"),
            "FILE: [sleep] max_seconds = inf: must be a finite number",
        )
        self.assertEqual(
            self.refused("[echo]\n", {"echo": {"idle_timeout": "inf"}}),
            "command line: [echo] --idle-timeout inf: must be a finite number",
        )

    def test_unwritable_logger_output_is_refused_at_start(self):
        (self.directory / "a-file").write_text("")
        output = f"{self.directory}/a-file/messages.jsonl"
        self.assertEqual(
            self.refused(f'[logger]\nlisten = ["tcp:0"]\noutput = "{output}"\n'),
            f'FILE: [logger] output = "{output}": '
            f"cannot open: File exists ({self.directory}/a-file)",
        )


class TLSFileTests(ConfigTestCase):
    def tls_config(self, **tls):
        pki = make_pki(self.directory)
        values = {"certificate": pki["server_crt"], "private_key": pki["server_key"], **tls}
        lines = "".join(f'{k} = "{v.format(**pki)}"\n' for k, v in values.items())
        return f'[tls]\n{lines}[echo]\ntls_listen = ["tcp:0"]\n'

    def test_valid_pair_is_accepted(self):
        root = self.load_suite(self.write(self.tls_config(client_ca="{ca}")))
        self.assertIn("echo tls_listen tcp:0", listener_names(root))

    def test_missing_certificate_file(self):
        self.assertEqual(
            self.refused(self.tls_config(certificate="/nonexistent.crt")),
            'FILE: [tls] certificate = "/nonexistent.crt": cannot read: No such file or directory',
        )

    def test_certificate_that_is_not_pem(self):
        message = self.refused(self.tls_config(certificate="{server_key}"))
        self.assertTrue(message.endswith(": no PEM certificate in file"), message)
        self.assertIn("[tls] certificate = ", message)

    def test_key_that_is_not_pem(self):
        message = self.refused(self.tls_config(private_key="{ca}"))
        self.assertTrue(message.endswith(": not a PEM private key"), message)

    def test_key_of_another_certificate(self):
        message = self.refused(self.tls_config(private_key="{client_key}"))
        self.assertIn("[tls] private_key = ", message)
        self.assertTrue(message.endswith(": does not match the certificate"), message)

    def test_missing_client_ca(self):
        message = self.refused(self.tls_config(client_ca="/nope/ca.crt"))
        self.assertTrue(message.startswith('FILE: [tls] client_ca = "/nope/ca.crt": cannot read'))


class CommandLineTests(ConfigTestCase):
    def options(self, *argv, plugin=timestamp_tap):
        options = plugin.Options()
        options.parseOptions(list(argv))
        return options

    def test_defaults_without_config(self):
        root = timestamp_tap.makeService(self.options(), reactor=MemoryReactor())
        names = sorted(listener_names(root))
        self.assertEqual(names, ["timestamp tcp:12345", "timestamp udp:12345:interface=127.0.0.1"])

    def test_options_override_the_file(self):
        path = self.write('[timestamp]\nlisten = ["tcp:1"]\nformat = "iso"\nmax_line = 9\n')
        options = self.options(
            "--config",
            path,
            "--listen",
            "tcp:2",
            "--listen",
            "udp:3",
            "--max-line",
            "100",
            "--utc",
        )
        self.assertEqual(
            options.overrides,
            {"timestamp": {"listen": ["tcp:2", "udp:3"], "max_line": "100", "utc": True}},
        )
        root = timestamp_tap.makeService(options, reactor=MemoryReactor())
        self.assertEqual(sorted(listener_names(root)), ["timestamp tcp:2", "timestamp udp:3"])

    def test_bad_option_value_is_a_usage_error_of_one_line(self):
        caught = self.assertRaises(UsageError, self.options, "--max-line", "abc")
        self.assertEqual(
            str(caught), 'command line: [timestamp] --max-line "abc": must be an integer'
        )

    def test_under_twistd_a_bad_value_is_one_line_and_exit_1(self):
        """
        twistd prints its whole usage before a UsageError's reason: a config
        mistake is one line.
        """
        caught = self.assertRaises(
            SystemExit, ServerOptions().parseOptions, ["suite-timestamp", "--max-line", "abc"]
        )
        self.assertEqual(
            str(caught), 'error: command line: [timestamp] --max-line "abc": must be an integer'
        )

    def test_under_twistd_a_misused_option_is_still_twistd_s_usage_error(self):
        self.assertRaises(UsageError, ServerOptions().parseOptions, ["suite-timestamp", "--bogus"])

    def test_a_service_that_cannot_open_its_files_exits_from_make_service(self):
        """The config is valid; the output's directory is a file: known only once built."""
        blocker = self.directory / "a-file"
        blocker.write_text("")
        options = self.options("--output", str(blocker / "out.jsonl"), plugin=logger_tap)
        caught = self.assertRaises(SystemExit, logger_tap.makeService, options, MemoryReactor())
        self.assertTrue(str(caught).startswith("error: command line: [logger] --output "), caught)
        self.assertIn(": cannot open: ", str(caught))

    def test_each_plugin_runs_its_service_as_a_named_service(self):
        root = timestamp_tap.makeService(self.options(), reactor=MemoryReactor())
        self.assertEqual([child.name for child in root], ["timestamp"])
        self.assertEqual(
            sorted(child.name for child in root.getServiceNamed("timestamp")),
            ["timestamp tcp:12345", "timestamp udp:12345:interface=127.0.0.1"],
        )

    def test_single_plugin_ignores_other_sections(self):
        path = self.write('[echo]\nmode = "raw"\n[timestamp]\nlisten = ["tcp:7"]\n')
        root = timestamp_tap.makeService(self.options("--config", path), MemoryReactor())
        self.assertEqual(listener_names(root), ["timestamp tcp:7"])

    def test_suite_plugin_config_error_is_the_line(self):
        path = self.write("[nope]\n")
        caught = self.assertRaises(UsageError, self.options, "--config", path, plugin=services)
        self.assertTrue(str(caught).startswith(f"{path}: [nope]: unknown section"))
        caught = self.assertRaises(
            SystemExit, ServerOptions().parseOptions, ["suite", "--config", path]
        )
        self.assertTrue(str(caught).startswith(f"error: {path}: [nope]: unknown section"))

    def test_suite_plugin_reads_etc_suite_toml_by_default(self):
        self.assertEqual(services.Options()["config"], "etc/suite.toml")

    def test_every_option_of_every_plugin_shows_its_default(self):
        for declaration in services.SERVICES:
            options = plugin_options([declaration], declaration.description)
            usage = str(options())
            for key in declaration.settings.keys():
                if key.name == "enabled" or key.kind.table is not None:
                    continue
                option = re.search(rf"(?<![\w-])--{key.option}(?![\w-])", usage)
                described = usage[option.start() :]
                described = re.split(r"\n +-", described)[0]
                self.assertIn("[default:", described, f"{declaration.name} --{key.option}")

    def test_every_default_passes_its_own_check(self):
        for declaration in services.SERVICES:
            for key in declaration.settings.keys():
                toml_value = list(key.default) if isinstance(key.default, tuple) else key.default
                self.assertEqual(key.kind.check(toml_value), key.default, key.name)


class BacklogTests(SynchronousTestCase):
    def test_stream_listeners_get_a_backlog_of_1024(self):
        for description, bound in [
            ("tcp:5001", "tcp:5001:backlog=1024"),
            ("tcp6:5001:interface=\\:\\:1", "tcp6:5001:interface=\\:\\:1:backlog=1024"),
            ("unix:/run/suite.sock", "unix:/run/suite.sock:backlog=1024:mode=660"),
            ("tcp:5001:backlog=64", "tcp:5001:backlog=64"),
            ("systemd:domain=INET:name=x", "systemd:domain=INET:name=x"),
        ]:
            self.assertEqual(Listener(description).endpoint_string, bound)


class StoredRowTests(ConfigTestCase):
    def stored(self, rows):
        path = self.directory / "names.sqlite"
        with sqlite3.connect(path) as database:
            database.execute(  # a database of an earlier version: migrated at start
                "CREATE TABLE instances (name TEXT, host TEXT, port INTEGER, description TEXT)"
            )
            database.executemany(
                "INSERT INTO instances (name, host, port, description) VALUES (?, ?, ?, ?)", rows
            )
        database.close()
        return path

    def test_a_stored_row_that_does_not_validate_stops_the_start(self):
        path = self.stored([("echo", "127.0.0.1", 5001, ""), ("Bad Name", "h", 1, "")])
        message = self.refused(f'[names]\nlisten = ["tcp:0"]\nstore = "sqlite:{path}"\n')
        self.assertEqual(
            message,
            f"FILE: [names] store = \"sqlite:{path}\": stored instance 2 ('Bad Name', 'h', 1) is "
            "invalid: name 'Bad Name': 1-63 of a-z 0-9 -, not starting with -",
        )

    def test_more_stored_rows_than_max_instances_stops_the_start(self):
        path = self.stored([("echo", "127.0.0.1", port, "") for port in (1, 2, 3)])
        message = self.refused(
            f'[names]\nlisten = ["tcp:0"]\nstore = "sqlite:{path}"\nmax_instances = 2\n'
        )
        self.assertEqual(
            message,
            f'FILE: [names] store = "sqlite:{path}": holds more than max_instances (2) instances',
        )


class PathsBesideTheConfigTests(ConfigTestCase):
    """A relative path in a config file means a file beside it, from any working directory."""

    def settings(self, body, section, overrides=None):
        path = self.write(body)
        kinds = [LoggerSettings, NamesSettings, TLSSettings]
        return load(path, kinds, overrides, only_listed=True)[section]

    def test_relative_paths_in_the_file_and_defaults_are_beside_it(self):
        logger = self.settings('[logger]\noutput = "log/messages.jsonl"\n', "logger")
        self.assertEqual(logger.output, str(self.directory / "log" / "messages.jsonl"))
        names = self.settings("[names]\n", "names")
        self.assertEqual(names.store, f"sqlite:{self.directory / 'data' / 'names.sqlite'}")
        self.assertEqual(names.lookup_audit, str(self.directory / "log" / "names-lookups.jsonl"))
        tls = self.settings('[tls]\ncertificate = "tls/server.crt"\n', "tls")
        self.assertEqual(tls.certificate, str(self.directory / "tls" / "server.crt"))

    def test_what_names_no_file_stays_as_written(self):
        body = """
            [logger]
            output = "-"
            [names]
            store = "memory"
            lookup_audit = ""
            token_file = "/etc/suite/names.token"
            [tls]
            certificate = "credential:server.crt"
            """
        self.assertEqual(self.settings(body, "logger").output, "-")
        names = self.settings(body, "names")
        self.assertEqual((names.store, names.lookup_audit), ("memory", ""))
        self.assertEqual(names.token_file, "/etc/suite/names.token")
        self.assertEqual(self.settings(body, "tls").certificate, "credential:server.crt")

    def test_paths_on_the_command_line_are_read_from_the_working_directory(self):
        logger = self.settings(
            '[logger]\noutput = "log/x.jsonl"\n', "logger", {"logger": {"output": "here.jsonl"}}
        )
        self.assertEqual(logger.output, "here.jsonl")

    def test_the_suite_starts_from_another_directory(self):
        make_pki(self.directory)
        path = self.write(
            """
            [tls]
            certificate = "server.crt"
            private_key = "server.key"
            [logger]
            listen = ["tcp:0"]
            tls_listen = ["tcp:0"]
            output = "log/messages.jsonl"
            """
        )
        elsewhere = tmp_dir(self)
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(elsewhere)
        root = self.load_suite(path)
        self.assertTrue((self.directory / "log" / "messages.jsonl").exists())
        self.assertEqual(list(elsewhere.iterdir()), [])
        self.assertIn("logger tls_listen tcp:0", listener_names(root))


class SectionTests(ConfigTestCase):
    def test_a_single_service_plugin_refuses_a_misspelt_section(self):
        path = self.write('[echoo]\nmode = "raw"\n')
        options = echo_tap.Options()
        caught = self.assertRaises(UsageError, options.parseOptions, ["--config", path])
        self.assertEqual(
            str(caught),
            f"{path}: [echoo]: unknown section (known: announce, echo, logger, metrics, names, "
            "sleep, timestamp, tls)",
        )

    def test_a_single_service_plugin_reads_only_its_section_of_a_whole_config(self):
        path = self.write('[echo]\nmode = "raw"\n[logger]\noutput = 7\n')
        options = echo_tap.Options()
        options.parseOptions(["--config", path])
        self.assertEqual(options.validated.services[0].settings.mode, "raw")

    def test_a_misspelt_secret_key_never_shows_its_value(self):
        for name in ("tokn", "secret", "pasword", "api_key", "credential"):
            message = self.refused(f'[names]\n{name} = "hunter2"\n')
            self.assertNotIn("hunter2", message)
            self.assertIn(f'[names] {name} = "***": unknown key', message)
        self.assertIn('mdoe = "raw"', self.refused('[echo]\nmdoe = "raw"\n'))


class RelayTablesTests(ConfigTestCase):
    """[[logger.forward]] and [[logger.route]]: lists of tables, each checked as a section."""

    def logger(self, body):
        return self.load_suite(self.write(body))

    def settings(self, body):
        return load(self.write(body), [LoggerSettings], only_listed=True)["logger"]

    def test_tables_are_read_with_their_paths_beside_the_config(self):
        logger = self.settings(
            """
            [logger]
            [[logger.forward]]
            name = "central"
            target = "relp:127.0.0.1:2514"
            queue_dir = "spool/central"
            when_full = "drop"
            [[logger.route]]
            match = { facility = ["auth", "authpriv"], severity = "warning", app = "sshd*" }
            output = "log/auth.jsonl"
            forward = ["central"]
            stop = true
            """
        )
        (forward,) = logger.forward
        self.assertEqual((forward.name, forward.when_full), ("central", "drop"))
        self.assertEqual(str(forward.parsed_target), "relp:127.0.0.1:2514")
        self.assertEqual(forward.queue_dir, str(self.directory / "spool" / "central"))
        (route,) = logger.route
        self.assertEqual(route.output, str(self.directory / "log" / "auth.jsonl"))
        self.assertEqual(route.match.facilities, frozenset({4, 10}))
        self.assertEqual((route.match.severity, route.match.app), (4, "sshd*"))
        self.assertEqual((route.forward, route.stop), (("central",), True))

    def test_a_mistake_inside_a_table_is_one_line_naming_it(self):
        cases = [
            (
                '[logger]\n[[logger.forward]]\nname = "a"\ntarget = "udp:h:1"\n',
                'FILE: [logger.forward] target = "udp:h:1": must be tcp:HOST:PORT',
            ),
            (
                '[logger]\n[[logger.forward]]\nname = "a"\ntarget = "tcp:h:1"\nqueue = 1\n',
                "FILE: [logger.forward] queue = 1: unknown key (known: ",
            ),
            (
                '[logger]\n[[logger.route]]\nmatch = { severity = "loud" }\nstop = true\n',
                "FILE: [logger.route] match = ",
            ),
            (
                '[logger]\n[[logger.route]]\nmatch = { source = "10.0.0.0/33" }\nstop = true\n',
                "FILE: [logger.route] match = ",
            ),
            ('[logger]\nforward = "x"\n', 'FILE: [logger] forward = "x": must be tables'),
            (
                '[logger]\n[[logger.route]]\nforward = ["nowhere"]\n',
                'FILE: [logger.route] forward = ["nowhere"]: no [[logger.forward]] is named',
            ),
            (
                '[logger]\n[[logger.forward]]\nname = "a"\ntarget = "tcp:h:1"\n'
                '[[logger.forward]]\nname = "a"\ntarget = "tcp:h:2"\n',
                'FILE: [logger.forward] name = "a": another [[logger.forward]] has this name',
            ),
            (
                '[logger]\n[[logger.forward]]\nname = "a"\ntarget = "tcp:h:1"\nca = "ca.pem"\n',
                "FILE: [logger.forward] ca = ",
            ),
        ]
        for body, expected in cases:
            message = self.refused(body)
            self.assertTrue(message.startswith(expected), f"{body!r}: {message!r}")

    def test_a_logger_may_listen_on_relp_alone(self):
        root = self.load_suite(self.write('[logger]\nlisten = []\nrelp_listen = ["tcp:0"]\n'))
        self.assertEqual(listener_names(root), ["logger relp_listen tcp:0"])

    def test_tables_are_no_command_line_options(self):
        usage = str(logger_tap.Options())
        self.assertNotIn("--forward", usage)
        self.assertNotIn("--route", usage)
