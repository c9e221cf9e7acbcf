"""The config loader gives one line for every input, never a traceback."""

import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from suite.app import tap as services
from suite.foundation.config import ConfigError, ServiceSettings, load
from suite.net.listeners import parse_listeners
from suite.net.tls import TLSSettings
from tests.fuzz import fuzzed

KINDS = [TLSSettings, *(declaration.settings for declaration in services.SERVICES)]
SECTIONS = [kind.section for kind in KINDS] + ["other"]
KEYS = sorted({key.name for kind in KINDS for key in kind.keys()} | {"unknown"})

TOML_VALUES = st.recursive(
    st.none().map(lambda _: "1")
    | st.integers().map(str)
    | st.floats().map(lambda f: {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(str(f), repr(f)))
    | st.booleans().map(lambda b: str(b).lower())
    | st.text(max_size=20).map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"')
    | st.sampled_from(
        [
            '"tcp:0"',
            '"udp:1"',
            '"systemd:domain=INET:name=x"',
            '"sqlite:"',
            '"%Q"',
            '"line"',
            '"1.3"',
        ]
    ),
    lambda inner: st.lists(inner, max_size=4).map(lambda items: "[" + ", ".join(items) + "]"),
    max_leaves=8,
)
DOCUMENTS = st.lists(
    st.tuples(
        st.sampled_from(SECTIONS),
        st.lists(st.tuples(st.sampled_from(KEYS), TOML_VALUES), max_size=5),
    ),
    max_size=4,
).map(
    lambda sections: "".join(
        f"[{name}]\n" + "".join(f"{key} = {value}\n" for key, value in keys)
        for name, keys in sections
    ).encode("utf-8", "surrogatepass")
)


class ConfigFuzz(SynchronousTestCase):
    def setUp(self):
        self.directory = Path(tempfile.mkdtemp())
        self.addCleanup(
            lambda: [p.unlink() for p in self.directory.iterdir()] or self.directory.rmdir()
        )

    def check(self, document: bytes):
        path = self.directory / "suite.toml"
        path.write_bytes(document)
        try:
            loaded = load(str(path), KINDS)
            for settings in loaded.values():
                if isinstance(settings, ServiceSettings):
                    parse_listeners(settings, settings.section != "sleep")
        except ConfigError as e:
            self.assertNotIn("\n", str(e))
            self.assertLess(len(str(e)), 1200)

    @fuzzed
    @given(DOCUMENTS)
    def test_documents_of_known_sections_and_keys(self, document):
        self.check(document)

    @fuzzed
    @given(st.binary(max_size=300))
    def test_any_bytes(self, document):
        self.check(document)
