"""The syslog framing and parser never raise, and framing does not depend on how bytes arrive."""

import json
import re

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from suite.logger.framing import SyslogFrameDecoder
from suite.logger.records import decode
from suite.logger.syslog import parse
from tests.fuzz import fuzzed

# Bytes rich in what framing and parsing look at: digits, spaces, LF, NUL, '<', '>', '[' ...
SYSLOGGY = st.binary(max_size=400) | st.lists(
    st.sampled_from(
        [
            b"<",
            b">",
            b"1",
            b"0",
            b"9",
            b" ",
            b"\n",
            b"\r",
            b"\0",
            b"-",
            b"[",
            b"]",
            b"=",
            b'"',
            b"\\",
            b"<34>1 ",
            b"<13>Oct 11 22:14:15 ",
            b"12 ",
            b"\xff",
        ]
    ),
    max_size=80,
).map(b"".join)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def decode_all(chunks, max_message=16, max_frame=64):
    decoder = SyslogFrameDecoder(max_message, max_frame)
    frames = []
    for chunk in chunks:
        frames += decoder.feed(chunk)
        assert decoder.buffered <= max_message + 1
        if decoder.error:
            break
    if not decoder.error:
        frames += decoder.finish()
    return frames, decoder.error


class FramingFuzz(SynchronousTestCase):
    @fuzzed
    @given(SYSLOGGY, st.lists(st.integers(min_value=0), max_size=8))
    def test_frames_are_the_same_however_the_bytes_arrive(self, data, cuts):
        whole = decode_all([data])
        self.assertEqual(decode_all(split(data, cuts)), whole)
        frames, _ = whole
        for message, truncated in frames:
            self.assertLessEqual(len(message), 16)
            self.assertIsInstance(truncated, bool)


class ParserFuzz(SynchronousTestCase):
    @fuzzed
    @given(SYSLOGGY)
    def test_any_message_parses_to_a_json_record(self, raw):
        message, fields = parse(decode(raw)[0])
        self.assertIsInstance(message, str)
        json.dumps({"message": message, "syslog": fields})
        if fields is not None:
            self.assertIn(fields["format"], ("rfc5424", "rfc3164"))


# Messages of at most 16 bytes (max_message) as a sender frames them: octet-counted (any
# bytes, LF and NUL included), or lines ended by LF or NUL (none inside, no CR at the end,
# not starting as a count does, though digits, a leading 0 or eleven digits before a space
# are fine); the last line may be left unterminated.
OCTET_COUNTED = (
    st.binary(min_size=1, max_size=16)
    .filter(lambda m: not m.endswith(b"\n"))
    .map(lambda m: (m, b"%d %s" % (len(m), m)))
)
COUNT = re.compile(rb"[1-9][0-9]{0,9} ")
LINE = st.builds(
    lambda start, rest: (start + rest.replace(b"\n", b"").replace(b"\0", b""))[:16],
    st.sampled_from([b"", b"0", b"05 ", b"12", b"12345678901 ", b"2024-11-20 "]),
    st.binary(max_size=16),
).filter(lambda m: m and not m.endswith(b"\r") and not COUNT.match(m))
DELIMITED = st.tuples(LINE, st.sampled_from([b"\n", b"\0", b"\r\n"])).map(
    lambda pair: (pair[0], pair[0] + pair[1])
)
SENT = st.tuples(
    st.lists(OCTET_COUNTED | DELIMITED, max_size=16), st.none() | LINE.map(lambda m: (m, m))
).map(lambda sent: sent[0] + [sent[1]] if sent[1] else sent[0])


class FramingModelFuzz(SynchronousTestCase):
    """
    The framer takes lines split at once and octet-counted frames in a loop
    of their own, realigning between them: any mix of the two, cut anywhere,
    must come out as it was sent.
    """

    @fuzzed
    @given(SENT, st.lists(st.integers(min_value=0), max_size=16))
    def test_every_message_sent_comes_out_whole_and_in_order(self, sent, cuts):
        data = b"".join(framed for _, framed in sent)
        expected = [(message, False) for message, _ in sent]
        self.assertEqual(decode_all([data]), (expected, None))
        self.assertEqual(decode_all(split(data, cuts)), (expected, None))

    @fuzzed
    @given(SENT.map(lambda sent: b"".join(framed for _, framed in sent)) | SYSLOGGY)
    def test_one_byte_reads_give_what_one_read_gives(self, data):
        self.assertEqual(
            decode_all([data[i : i + 1] for i in range(len(data))]), decode_all([data])
        )
