"""The syslog framing and parser never raise, and framing does not depend on how bytes arrive."""

import json

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from suite.logger.framing import SyslogFrameDecoder
from suite.logger.records import decode
from suite.logger.syslog import parse
from tests.fuzz import fuzzed

# Bytes rich in what framing and parsing look at: digits, spaces, LF, NUL, '<', '>', '[' ...
SYSLOGGY = st.binary(max_size=400) | st.lists(
    st.sampled_from([b"<", b">", b"1", b"0", b"9", b" ", b"\n", b"\r", b"\0", b"-", b"[", b"]",
                     b"=", b'"', b"\\", b"<34>1 ", b"<13>Oct 11 22:14:15 ", b"12 ", b"\xff"]),
    max_size=80,
).map(b"".join)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


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
