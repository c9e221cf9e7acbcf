"""Every config error of SPEC §3 is one line naming file, section, key, value and problem."""

import textwrap

import pytest
from twisted.internet.testing import MemoryReactor

from suite import compose
from suite.config import ConfigError, load
from suite.endpoints import Listener, parse_listeners
from suite.plugin import build
from suite.timestamp import service as timestamp_service
from tests.helpers import make_pki


def write(tmp_path, body):
    path = tmp_path / "suite.toml"
    path.write_text(textwrap.dedent(body))
    return str(path)


def load_suite(path, overrides=None):
    return build(compose.SERVICES, path, overrides or {}, MemoryReactor(), only_listed=False)


def refused(tmp_path, body, overrides=None):
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as caught:
        load_suite(path, overrides)
    message = str(caught.value)
    assert "\n" not in message
    return message.replace(path, "FILE")


@pytest.mark.parametrize(
    "body, expected",
    [
        ("[timestmp]\n", "FILE: [timestmp]: unknown section (known: echo, logger, names, sleep, timestamp, tls)"),
        ("[echo]\nport = 5\n", 'FILE: [echo] port = 5: unknown key'),
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
        ("echo = 1\n", "FILE: [echo] must be a table, not 1"),
        (
            '[echo]\nlisten = ["frob:1"]\n',
            'FILE: [echo] listen = "frob:1": bad endpoint: Unknown endpoint type: \'frob\'',
        ),
        ('[echo]\nlisten = ["tcp:http"]\n', 'FILE: [echo] listen = "tcp:http": bad endpoint'),
        (
            '[echo]\nlisten = ["udp:70000"]\n',
            'FILE: [echo] listen = "udp:70000": bad endpoint: port must be 0-65535',
        ),
        (
            '[echo]\nlisten = ["udp:1:ttl=3"]\n',
            "FILE: [echo] listen = \"udp:1:ttl=3\": bad endpoint: unknown udp option 'ttl=3'",
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
            '[echo]\ntls_listen = ["tcp:0"]\n',
            'FILE: [echo] tls_listen = ["tcp:0"]: needs [tls] certificate',
        ),
        (
            '[timestamp]\nlisten = ["systemd-udp:name=ts-udp"]\n',
            "FILE: [timestamp] listen = \"systemd-udp:name=ts-udp\": bad endpoint: "
            "no socket passed by systemd is named 'ts-udp'",
        ),
        (
            '[timestamp]\nlisten = ["systemd-udp:ts-udp"]\n',
            'FILE: [timestamp] listen = "systemd-udp:ts-udp": bad endpoint: '
            "expected systemd-udp:name=NAME",
        ),
        (
            '[timestamp]\nlisten = ["systemd:domain=INET:name=ts-tcp"]\n',
            "FILE: [timestamp] listen = \"systemd:domain=INET:name=ts-tcp\": "
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
    ],
)
def test_refused(tmp_path, body, expected):
    assert refused(tmp_path, body).startswith(expected)


def test_toml_syntax_error_names_file_and_line(tmp_path):
    message = refused(tmp_path, '[echo]\nmode = "line"\nlisten = [tcp:1]\n')
    assert message.startswith("FILE:3: invalid TOML: ")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nowhere.toml: config file not found"):
        load_suite(str(tmp_path / "nowhere.toml"))


def test_datagram_listener_on_a_service_without_datagram_side(tmp_path):
    path = write(tmp_path, '[echo]\nlisten = ["udp:5001"]\n')
    settings = load(path, [timestamp_service.SECTION, compose.ECHO.section])["echo"]
    with pytest.raises(ConfigError) as caught:
        parse_listeners(settings, datagram_side=False, reactor=MemoryReactor())
    assert str(caught.value) == (
        f'{path}: [echo] listen = "udp:5001": bad endpoint: echo has no datagram side'
    )


class TestTLSFiles:
    def tls_config(self, tmp_path, **tls):
        pki = make_pki(tmp_path)
        values = {"certificate": pki["server_crt"], "private_key": pki["server_key"], **tls}
        lines = "".join(f'{k} = "{v.format(**pki)}"\n' for k, v in values.items())
        return f'[tls]\n{lines}[echo]\ntls_listen = ["tcp:0"]\n'

    def test_valid_pair_is_accepted(self, tmp_path):
        path = write(tmp_path, self.tls_config(tmp_path, client_ca="{ca}"))
        assert load_suite(path) is not None

    def test_missing_certificate_file(self, tmp_path):
        message = refused(tmp_path, self.tls_config(tmp_path, certificate="/nonexistent.crt"))
        assert message == (
            'FILE: [tls] certificate = "/nonexistent.crt": cannot read: No such file or directory'
        )

    def test_certificate_that_is_not_pem(self, tmp_path):
        message = refused(tmp_path, self.tls_config(tmp_path, certificate="{server_key}"))
        assert message.endswith(": no PEM certificate in file")
        assert "[tls] certificate = " in message

    def test_key_that_is_not_pem(self, tmp_path):
        message = refused(tmp_path, self.tls_config(tmp_path, private_key="{ca}"))
        assert message.endswith(": not a PEM private key")

    def test_key_of_another_certificate(self, tmp_path):
        message = refused(tmp_path, self.tls_config(tmp_path, private_key="{client_key}"))
        assert "[tls] private_key = " in message
        assert message.endswith(": does not match the certificate")

    def test_missing_client_ca(self, tmp_path):
        message = refused(tmp_path, self.tls_config(tmp_path, client_ca="/nope/ca.crt"))
        assert message.startswith('FILE: [tls] client_ca = "/nope/ca.crt": cannot read')


class TestCommandLine:
    def options(self, *argv):
        options = timestamp_service.Options()
        options.parseOptions(list(argv))
        return options

    def test_defaults_without_config(self):
        root = timestamp_service.makeService(self.options(), reactor=MemoryReactor())
        names = sorted(child.name for child in root)
        assert names == ["timestamp tcp:12345", "timestamp udp:12345"]

    def test_options_override_the_file(self, tmp_path):
        path = write(tmp_path, '[timestamp]\nlisten = ["tcp:1"]\nformat = "iso"\nmax_line = 9\n')
        options = self.options("--config", path, "--listen", "tcp:2", "--listen", "udp:3",
                               "--max-line", "100", "--utc")
        assert options.overrides == {
            "timestamp": {"listen": ["tcp:2", "udp:3"], "max_line": "100", "utc": True}
        }
        root = timestamp_service.makeService(options, reactor=MemoryReactor())
        assert sorted(child.name for child in root) == ["timestamp tcp:2", "timestamp udp:3"]

    def test_bad_option_value_is_one_line_and_exit_1(self, tmp_path):
        with pytest.raises(SystemExit) as caught:
            timestamp_service.makeService(self.options("--max-line", "abc"), MemoryReactor())
        assert str(caught.value) == 'error: command line: [timestamp] --max-line "abc": must be an integer'

    def test_single_plugin_ignores_other_sections(self, tmp_path):
        path = write(tmp_path, '[echo]\nmode = "raw"\n[timestamp]\nlisten = ["tcp:7"]\n')
        root = timestamp_service.makeService(self.options("--config", path), MemoryReactor())
        assert [child.name for child in root] == ["timestamp tcp:7"]

    def test_suite_plugin_config_error_exits_with_the_line(self, tmp_path):
        path = write(tmp_path, "[nope]\n")
        options = compose.Options()
        options.parseOptions(["--config", path])
        with pytest.raises(SystemExit) as caught:
            compose.makeService(options, MemoryReactor())
        assert str(caught.value).startswith(f"error: {path}: [nope]: unknown section")


def test_nan_is_out_of_range(tmp_path):
    assert refused(tmp_path, "[echo]\nidle_timeout = nan\n") == (
        "FILE: [echo] idle_timeout = NaN: must be at least 0"
    )


def test_unwritable_logger_output_is_refused_at_start(tmp_path):
    (tmp_path / "a-file").write_text("")
    body = f'[logger]\nlisten = ["tcp:0"]\noutput = "{tmp_path}/a-file/messages.jsonl"\n'
    assert refused(tmp_path, body) == (
        f'FILE: [logger] output = "{tmp_path}/a-file/messages.jsonl": cannot open: File exists'
        f" ({tmp_path}/a-file)"
    )


@pytest.mark.parametrize(
    "description, bound",
    [
        ("tcp:5001", "tcp:5001:backlog=1024"),
        ("tcp6:5001:interface=\\:\\:1", "tcp6:5001:interface=\\:\\:1:backlog=1024"),
        ("unix:/run/suite.sock", "unix:/run/suite.sock:backlog=1024"),
        ("tcp:5001:backlog=64", "tcp:5001:backlog=64"),
        ("systemd:domain=INET:name=x", "systemd:domain=INET:name=x"),
    ],
)
def test_stream_listeners_get_a_backlog_of_1024(description, bound):
    assert Listener(description).endpoint_string == bound
