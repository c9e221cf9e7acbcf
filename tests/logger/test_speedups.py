"""
The compiled record formatting (suite/logger/_speedups.c) writes the very
bytes the Python code does, for every message: the common case it formats
itself, everything else it hands back.  Each test compares the two on one
RecordSink; they run whether or not SUITE_PURE_PYTHON=1 is set, and skip
only where the extension was not built (no compiler at install).
"""

import os

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from suite.logger import compiled, framing, records
from suite.logger.compiled import load_speedups
from suite.logger.delivery import Needs, Preparation
from suite.logger.framing import SyslogFrameDecoder
from suite.logger.records import RecordSink, encode_lines
from tests.logger.test_records import HOSTILE, raw_messages

COMPILED = load_speedups({})
EXAMPLES = int(os.environ.get("SUITE_FUZZ_EXAMPLES", "300"))

PEERS = ["127.0.0.1:514", "[::1]:6514", 'odd "peer"\u202e']
CLIENTS = [None, "CN=client", 'CN=a "quoted", O=\u00e9', "CN=\u202egnp.exe\x7f"]

PRIS = [
    "<0>", "<00>", "<9>", "<13>", "<99>", "<100>", "<189>", "<190>", "<191>", "<192>",
    "<199>", "<099>", "<000>", "<1000>", "<>", "<a>", "<13", "13>", "<\u0661\u0663>",
]  # fmt: skip
VERSIONS = ["1", "0", "01", "12", "123", "1234", "\u0661", ""]
FIELDS = [
    "-", "host", 'q"uote', "back\\slash", "caf\u00e9", "nb\u00a0sp", "ide\u3000o", "nel\x85",
    "fs\x1c", "tab\t", "del\x7f", "\u202e", "--", "[x]", "", "2026-11-20T21:39:31.334991Z",
]  # fmt: skip
AFTER_HEADER = [
    "-", "- ", "- msg", "-  two spaces", "- \ufeffbom", "- \ufeff\ufeffboms", "-\ufeff",
    "-x", "--", '[id a="b"] sd', "[bad", "", " - extra space", "-\n", "- \u202e\x7f\x9b",
]  # fmt: skip


def _sink() -> RecordSink:
    clock = Clock()
    clock.advance(1763726400.5)
    return RecordSink(None, clock)  # type: ignore[arg-type]  # no writer: nothing is written


class CompiledFormattingTests(SynchronousTestCase):
    def setUp(self):
        if COMPILED is None:
            raise SkipTest("suite/logger/_speedups.c was not built: no compiler at install")

    def assertSame(self, frames, peer="127.0.0.1:514", transport="tcp", client=None):
        """Compiled and pure: the same bytes, and the same routing fields."""
        sink = _sink()
        pure_routing, compiled_routing = [], []
        pure = encode_lines(sink.message_lines(frames, peer, transport, client, pure_routing))
        self.patch(records, "speedups", COMPILED)
        compiled = sink.message_bytes(frames, peer, transport, client, compiled_routing)
        self.assertEqual(compiled.split(b"\n"), pure.split(b"\n"))
        self.assertEqual(compiled_routing, pure_routing)
        self.assertEqual(sink.message_bytes(frames, peer, transport, client), pure)
        self.patch(records, "speedups", None)
        self.assertEqual(sink.message_bytes(frames, peer, transport, client), pure)
        return compiled

    @settings(max_examples=EXAMPLES, deadline=None)
    @given(
        st.lists(st.tuples(raw_messages | st.binary(max_size=120), st.booleans()), max_size=6),
        st.sampled_from(PEERS),
        st.sampled_from(["tcp", "tls", "udp", "unix"]),
        st.sampled_from(CLIENTS),
    )
    def test_arbitrary_messages(self, frames, peer, transport, client):
        self.assertSame(frames, peer, transport, client)

    @settings(max_examples=EXAMPLES, deadline=None)
    @given(
        st.sampled_from(PRIS),
        st.sampled_from(VERSIONS),
        st.lists(st.sampled_from(FIELDS), min_size=5, max_size=5),
        st.sampled_from(AFTER_HEADER),
        st.text(max_size=20),
        st.booleans(),
    )
    def test_header_variants(self, pri, version, fields, after, message, truncated):
        text = f"{pri}{version} {' '.join(fields)} {after}{message}"
        self.assertSame([(text.encode("utf-8", "surrogatepass"), truncated)])

    def test_every_header_variant_of_the_lists(self):
        """Each PRI, version, field and ending once, the rest plain."""
        plain = ["<13>", "1", "t", "h", "a", "p", "m", "- "]
        frames = []
        for slot, choices in enumerate([PRIS, VERSIONS, *[FIELDS] * 5, AFTER_HEADER]):
            for choice in choices:
                parts = [*plain[:slot], choice, *plain[slot + 1 :]]
                text = f"{parts[0]}{parts[1]} {' '.join(parts[2:7])} {parts[7]}body"
                frames.append((text.encode(), False))
        compiled = self.assertSame(frames)
        self.assertEqual(compiled.count(b"\n"), len(frames))

    def test_not_utf8_anywhere(self):
        """Overlong forms, surrogates, beyond U+10FFFF, cut and stray bytes: the Python path's."""
        bad = [
            b"\xc0\xaf", b"\xc1\xbf", b"\xe0\x80\xaf", b"\xe0\x9f\xbf", b"\xed\xa0\x80",
            b"\xed\xbf\xbf", b"\xf0\x8f\xbf\xbf", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80",
            b"\xff", b"\x80", b"\xbf", b"\xc2", b"\xe2\x80", b"\xf0\x9f\x98", b"\xc2\x41",
        ]  # fmt: skip
        good = [b"\xc2\x80", b"\xdf\xbf", b"\xe0\xa0\x80", b"\xed\x9f\xbf", b"\xee\x80\x80",
                b"\xef\xbf\xbf", b"\xf0\x90\x80\x80", b"\xf4\x8f\xbf\xbf"]  # fmt: skip
        frames = []
        for sequence in bad + good:
            for place in (b"", b"x", b"xxxxxxxxxxxxxxxxxxxx"):
                frames.append((b"<13>1 t h a p m - " + place + sequence, False))
                frames.append((b"<13>1 t h a p m - " + sequence + place, True))
                frames.append((sequence + b"<13>1 t h a p m - ", False))
                frames.append((b"<13>1 t " + sequence + b" a p m - x", False))
        self.assertSame(frames)

    def test_hostile_characters_in_the_message(self):
        """DEL, C1, bidi controls and separators, C0 controls: escaped as the Python code does."""
        characters = [
            *map(chr, HOSTILE),
            *map(chr, range(0x20)),
            '"',
            "\\",
            "\u00e9",
            "\U0001f600",
        ]
        frames = [(f"<13>1 t h a p m - {c}".encode(), False) for c in characters]
        frames += [(f"<13>1 t h a p m - 12345678{c}12345678".encode(), False) for c in characters]
        frames.append((("<13>1 t h a p m - " + "".join(characters) * 3).encode(), True))
        self.assertSame(frames, client="CN=\u202egnp.exe")

    def test_long_messages_and_cuts_at_max_message(self):
        """A cut may split a UTF-8 sequence: that record is the Python path's, truncated."""
        body = "caf\u00e9 \u65e5\u672c \U0001f600 " * 40
        stream = "".join(f"<14>1 - host app 42 ID7 - {body[:n]}\n" for n in range(0, 400, 7))
        for max_message in (20, 31, 32, 33, 100, 8192):
            decoder = SyslogFrameDecoder(max_message, 2**20)
            frames = decoder.feed(stream.encode()) + decoder.finish()
            self.assertTrue(any(truncated for _, truncated in frames) or max_message == 8192)
            self.assertSame(frames, transport="tls", client="CN=client")

    def test_octet_counted_and_nul_framing(self):
        """The frames of octet-counted and NUL-ended streams, mixed with LF ones."""
        messages = [b"<13>1 t h a p m - one", b"<13>1 t h a p m - two\nlines", b"plain"]
        stream = b"".join(b"%d %s" % (len(m), m) for m in messages)
        stream += b"".join(m.replace(b"\n", b" ") + b"\0" for m in messages)
        stream += b"".join(m.replace(b"\n", b" ") + b"\r\n" for m in messages)
        decoder = SyslogFrameDecoder(8192, 2**20)
        frames = decoder.feed(stream) + decoder.finish(cut=True)
        self.assertEqual(len(frames), 9)
        self.assertSame(frames)

    def test_routing_fields_follow_each_header(self):
        """Consecutive messages sharing a header share its fields; a change is seen."""
        frames = [
            (b"<13>1 t h a p m - x", False),
            (b"<13>1 t2 h a p2 m2 - y", False),  # same PRI, host and app
            (b"<13>1 t h2 a p m - x", False),
            (b"<13>1 t h2 -  p m - x", False),  # not plain: two spaces
            (b"<13>1 t - - p m - x", False),
            (b"<191>1 t - - p m - x", False),
            (b"<05>1 t - - p m - x", False),
            (b"<5>1 t - - p m - x", False),
            (b"no syslog", False),
        ]
        self.assertSame(frames)
        sink = _sink()
        self.patch(records, "speedups", COMPILED)
        routing = []
        sink.message_bytes(frames, "127.0.0.1:514", "tcp", None, routing)
        self.assertEqual(routing[:3], [(13, "h", "a"), (13, "h", "a"), (13, "h2", "a")])
        self.assertEqual(
            routing[4:],
            [(13, None, None), (191, None, None), (5, None, None), (5, None, None), None],
        )

    def test_the_preparation_of_workers_and_one_process(self):
        """Preparation.lines, with each kind of needs: the same records either way."""
        frames = [(b"<13>1 t h a p m - x", False), (b"\xff", True), (b"<13>bsd: y", False)]
        results = {}
        for chosen in (COMPILED, None):
            self.patch(records, "speedups", chosen)
            for needs in (Needs(), Needs(fields=True), Needs(fields=True, routed=True)):
                results[chosen, needs] = Preparation(_sink(), needs).lines(
                    frames, "127.0.0.1:514", "tcp", None
                )
        for needs in (Needs(), Needs(fields=True), Needs(fields=True, routed=True)):
            self.assertEqual(results[COMPILED, needs], results[None, needs])
        self.assertIsInstance(results[COMPILED, Needs()][0], bytes)
        self.assertIsInstance(results[COMPILED, Needs(fields=True, routed=True)][0], list)

    def test_frames_that_are_not_pairs_are_refused(self):
        self.patch(records, "speedups", COMPILED)
        with self.assertRaises(TypeError):
            _sink().message_bytes([b"<13>1 t h a p m - x"], "p", "tcp")  # type: ignore[list-item]

    def test_a_huge_read(self):
        """Thousands of messages, some far longer than the first guess of the output's size."""
        frames = [(b"<13>1 t h a p m - " + b"\x01" * (n % 7 * 300), False) for n in range(3000)]
        self.assertSame(frames)


# Streams made of the pieces framing tells apart: counts, LF, CRLF, NUL, digits that are no count.
stream_pieces = st.sampled_from(
    [
        b"<13>1 t h a p m - msg\n",
        b"<13>1 t h a p m - msg\r\n",
        b"plain\0",
        b"\n",
        b"\r\n",
        b"\0",
        b"\r",
        b"12 <13>1 t h - ",
        b"5 ab\ncd",
        b"3 abc\n",
        b"4 abc\n",
        b"3 abc",
        b"0 x\n",
        b"0 x",
        b"1 \n",
        b"123456789012 big\n",
        b"1234567890 ten digits\n",
        b"999999999 nine\n",
        b"42",
        b" ",
        b"9x\n",
        b"1 ",
        b"caf\xc3\xa9 \xff\n",
    ]
)


def frame_all(chunks, max_message, max_frame, cut):
    decoder = SyslogFrameDecoder(max_message, max_frame)
    frames = []
    for chunk in chunks:
        frames += decoder.feed(chunk)
        if decoder.error:
            break
    if not decoder.error:
        frames += decoder.finish(cut)
    return frames, decoder.error, decoder.buffered


class CompiledFramingTests(SynchronousTestCase):
    """The lines of each read framed in C: the same frames, in the same reads."""

    def setUp(self):
        if COMPILED is None:
            raise SkipTest("suite/logger/_speedups.c was not built: no compiler at install")

    def assertSameFrames(self, chunks, max_message=8192, max_frame=2**20, cut=False):
        self.patch(framing, "speedups", None)
        pure = frame_all(chunks, max_message, max_frame, cut)
        self.patch(framing, "speedups", COMPILED)
        self.assertEqual(frame_all(chunks, max_message, max_frame, cut), pure)
        return pure[0]

    @settings(max_examples=EXAMPLES, deadline=None)
    @given(
        st.lists(stream_pieces | st.binary(max_size=12), max_size=30),
        st.lists(st.integers(0, 200), max_size=4),
        st.sampled_from([1, 4, 16, 8192]),
        st.sampled_from([10, 2**20]),
        st.booleans(),
    )
    def test_arbitrary_streams_in_arbitrary_reads(self, pieces, cuts, max_message, max_frame, cut):
        stream = b"".join(pieces)
        points = sorted({min(c, len(stream)) for c in cuts})
        chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
        self.assertSameFrames(chunks, max_message, max_frame, cut)

    def test_lf_nul_and_octet_counted_in_one_read(self):
        stream = (
            b"<13>1 t h a p m - one\n"
            b"21 <13>1 t h a p m - two"
            b"<13>1 t h a p m - three\r\n"
            b"four\0five\0\0six\n\nseven\r\n"
            b"8 12345678"
            b"no end"
        )
        frames = self.assertSameFrames([stream], cut=True)
        self.assertEqual(
            [message for message, _ in frames],
            [
                b"<13>1 t h a p m - one",
                b"<13>1 t h a p m - two",
                b"<13>1 t h a p m - three",
                b"four",
                b"five",
                b"six",
                b"seven",
                b"12345678",
                b"no end",
            ],
        )

    def test_octet_counted_frames_one_after_another(self):
        """
        Frames cut in one loop: a count that takes the LF in (dropped), an LF
        after a frame (skipped), a count with a leading zero or too large (a
        line then), or cut by the read's end.
        """
        stream = b"4 abc\n3 def\n\n\n1 g0 zero\n2 hi1 \n10 012345678999 over max_frame\n5 cut"
        for max_message in (2, 8192):
            frames = self.assertSameFrames([stream], max_message=max_message, max_frame=50)
            self.assertSameFrames([stream[:k] for k in (5, 9)] + [stream[9:]], max_message)
        self.assertEqual(
            [message for message, _ in frames[:6]],
            [b"abc", b"def", b"g", b"0 zero", b"hi", b""],
        )
        frames, error, _ = frame_all([b"10 012345678911 01234567890"], 8192, 10, False)
        self.assertEqual(
            (frames, error), ([(b"0123456789", False)], "octet count 11 above max_frame 10")
        )
        self.assertSameFrames([b"10 012345678911 01234567890"], max_frame=10)

    def test_counts_of_ten_digits_and_more(self):
        """Ten digits and a space are a count (here above max_frame); eleven are a line."""
        for stream, error in [(b"x\n1234567890 ten\n", True), (b"x\n12345678901 eleven\n", False)]:
            frames, found, _ = frame_all([stream], 8192, 2**20, False)
            self.assertEqual(found is not None, error)
            self.assertSameFrames([stream])

    def test_long_lines_are_cut_and_marked(self):
        stream = b"".join(b"x" * n + b"\n" for n in range(40))
        frames = self.assertSameFrames([stream], max_message=16)
        self.assertEqual(len(frames), 39)
        self.assertEqual([len(m) for m, t in frames if t], [16] * 23)

    def test_the_take_arguments_are_checked(self):
        with self.assertRaises(ValueError):
            COMPILED.take_lines(b"abc", 0, 4, 10, 10, [])
        with self.assertRaises(TypeError):
            COMPILED.take_lines("abc", 0, 3, 10, 10, [])


class ChoiceTests(SynchronousTestCase):
    def test_pure_python_when_asked(self):
        self.assertIsNone(load_speedups({"SUITE_PURE_PYTHON": "1"}))

    def test_pure_python_when_built_from_older_sources(self):
        if COMPILED is None:
            raise SkipTest("suite/logger/_speedups.c was not built: no compiler at install")
        self.patch(compiled, "FUNCTIONS", (*compiled.FUNCTIONS, "from_a_later_version"))
        self.assertIsNone(load_speedups({}))
        self.patch(compiled, "FUNCTIONS", ())
        self.assertIs(load_speedups({}), COMPILED)

    def test_the_environment_decides_at_import(self):
        asked = os.environ.get("SUITE_PURE_PYTHON") == "1"
        self.assertEqual(records.speedups is None, asked or COMPILED is None)
