"""The line protocol against any bytes in any pieces: it answers exactly what the rules say."""

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.echo.protocol import LineEchoFactory
from suite.echo.service import EchoSettings
from tests.fuzz import fuzzed
from tests.fuzz.test_logger import split
from tests.helpers import connect

MAX_LINE = 8
LINEY = st.lists(
    st.sampled_from([b"a", b"quit", b"\n", b"\r", b"\r\n", b"x" * 7, b"\xff", b"\0"]), max_size=40
).map(b"".join)


def expected_replies(data: bytes, half_closed: bool) -> bytes:
    """The rules, written as plainly as possible."""
    out = []
    *lines, rest = data.split(b"\n")
    if half_closed and rest:
        lines.append(rest)
        rest = b""
    for line in lines:
        line = line.removesuffix(b"\r")
        if len(line) > MAX_LINE:
            return b"".join(out) + b"ERROR line longer than 8 bytes\r\n"
        if line == b"quit":
            return b"".join(out) + b"Goodbye.\r\n"
        out.append(b"You said: " + line + b"\r\n")
    if len(rest) > MAX_LINE + 1:
        out.append(b"ERROR line longer than 8 bytes\r\n")
    return b"".join(out)


class LineProtocolFuzz(SynchronousTestCase):
    @fuzzed
    @given(
        LINEY | st.binary(max_size=200),
        st.lists(st.integers(min_value=0), max_size=8),
        st.booleans(),
    )
    def test_replies_follow_the_rules_whatever_the_pieces(self, data, cuts, half_close):
        protocol, transport = connect(LineEchoFactory(EchoSettings(max_line=MAX_LINE), Clock()))
        for piece in split(data, cuts):
            protocol.dataReceived(piece)
        if half_close:
            protocol.readConnectionLost()
        self.assertEqual(transport.value(), expected_replies(data, half_close))
