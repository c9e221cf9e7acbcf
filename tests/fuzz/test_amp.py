"""Any bytes, and boxes of the real commands with any values, into the sleep and name servers."""

import struct

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from suite.names.protocol import NamesFactory
from suite.names.registry import Registry
from suite.names.server import NameServer
from suite.names.service import NamesSettings
from suite.names.store import MemoryStore
from suite.sleep.protocol import SleepFactory
from suite.sleep.service import SleepSettings
from tests.fuzz import fuzzed
from tests.fuzz.test_logger import split
from tests.helpers import connect

KEYS = [
    b"_command",
    b"_ask",
    b"_answer",
    b"_error",
    b"_error_code",
    b"_error_description",
    b"seconds",
    b"name",
    b"host",
    b"port",
    b"description",
    b"token",
    b"k",
]
VALUES = st.sampled_from(
    [
        b"Sleep",
        b"Register",
        b"Deregister",
        b"Lookup",
        b"Services",
        b"Nap",
        b"1",
        b"0.5",
        b"-1",
        b"nan",
        b"inf",
        b"echo",
        b"127.0.0.1",
        b"70000",
        b"\xff",
        b"",
    ]
) | st.binary(max_size=40)
BOXES = st.lists(
    st.lists(st.tuples(st.sampled_from(KEYS) | st.binary(max_size=8), VALUES), max_size=6),
    max_size=4,
).map(
    lambda boxes: b"".join(
        b"".join(struct.pack("!H", len(k)) + k + struct.pack("!H", len(v)) + v for k, v in box)
        + b"\x00\x00"
        for box in boxes
    )
)


def sleep_server():
    return SleepFactory(SleepSettings(idle_timeout=0, max_box=512), Clock())


def name_server():
    server = NameServer(Registry(100), MemoryStore(), "", 5, Clock())
    return NamesFactory(NamesSettings(idle_timeout=0, max_box=512), Clock(), server)


class BoxFuzz(SynchronousTestCase):
    def feed(self, factory, data, cuts):
        protocol, transport = connect(factory)
        for piece in split(data, cuts):
            protocol.dataReceived(piece)  # nothing may escape
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.flushLoggedErrors(), [])

    @fuzzed
    @given(BOXES | st.binary(max_size=300), st.lists(st.integers(min_value=0), max_size=6))
    def test_sleep_server(self, data, cuts):
        self.feed(sleep_server(), data, cuts)

    @fuzzed
    @given(BOXES | st.binary(max_size=300), st.lists(st.integers(min_value=0), max_size=6))
    def test_name_server(self, data, cuts):
        self.feed(name_server(), data, cuts)
