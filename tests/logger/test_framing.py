"""RFC 6587 framing, octet-counted and LF, checked with whole and split input."""

import sys

from twisted.trial.unittest import SynchronousTestCase

from suite.logger import framing
from suite.logger.compiled import load_speedups
from suite.logger.framing import SyslogFrameDecoder

# Exact bytes util-linux logger 2.38 sends with --tcp, and with --octet-count.
LOGGER_LF = (
    b"<13>1 2026-11-20T23:11:15.935500+00:00 vm root - - "
    b'[timeQuality tzKnown="1" isSynced="0"] hello 5424\n'
)
LOGGER_OCTET = (
    b"103 <13>1 2026-11-20T23:11:15.937684+00:00 vm root - - "
    b'[timeQuality tzKnown="1" isSynced="0"] octet counted'
)

STREAM = LOGGER_LF + LOGGER_OCTET + b"plain line\r\n" + b"4 a\nb\n" + b"\nlast"
EXPECTED = [
    (LOGGER_LF[:-1], False),
    (LOGGER_OCTET[4:], False),
    (b"plain line", False),
    (b"a\nb", False),  # an octet-counted frame keeps inner LFs, drops the trailing one
    (b"last", False),
]


def decode(chunks, max_message=8192, max_frame=2**20):
    decoder = SyslogFrameDecoder(max_message, max_frame)
    frames = []
    for chunk in chunks:
        frames += decoder.feed(chunk)
    return frames + decoder.finish(), decoder


class FramingTests(SynchronousTestCase):
    def test_lf_and_octet_counted_frames_mixed_on_one_connection(self):
        frames, decoder = decode([STREAM])
        assert frames == EXPECTED
        assert decoder.error is None

    def test_split_at_every_byte_boundary_gives_the_same_frames(self):
        for cut in range(1, len(STREAM)):
            assert decode([STREAM[:cut], STREAM[cut:]])[0] == EXPECTED, cut
        assert decode([bytes([b]) for b in STREAM])[0] == EXPECTED

    def test_digits_without_a_space_are_a_line(self):
        frames, _ = decode([b"2024-11-20 boot ok\n", b"12345678901 eleven digits\n"])
        assert frames == [(b"2024-11-20 boot ok", False), (b"12345678901 eleven digits", False)]

    def test_a_number_and_space_at_line_start_is_read_as_an_octet_count(self):
        # RFC 6587's rule, as rsyslog applies it: "2024 " starts a 2024-byte frame.
        frames, decoder = decode([b"3 abc"])
        assert frames == [(b"abc", False)]

    def test_empty_lines_are_skipped(self):
        assert decode([b"\n\r\n\nx\n"])[0] == [(b"x", False)]

    def test_oversize_lf_message_is_truncated_and_the_rest_discarded(self):
        frames, _ = decode([b"a" * 20 + b"\nnext\n"], max_message=8)
        assert frames == [(b"a" * 8, True), (b"next", False)]

    def test_oversize_octet_message_is_truncated_and_the_rest_discarded(self):
        body = b"<13>" + b"b" * 30
        frames, _ = decode([b"%d " % len(body) + body + b"after\n"], max_message=8)
        assert frames == [(body[:8], True), (b"after", False)]

    def test_message_of_exactly_max_message_plus_line_end_is_not_truncated(self):
        frames, _ = decode([b"12345678\r\n", b"9 12345678\n"], max_message=8)
        assert frames == [(b"12345678", False), (b"12345678", False)]

    def test_buffer_stays_bounded_for_a_huge_frame(self):
        decoder = SyslogFrameDecoder(8, 2**20)
        decoder.feed(b"%d " % (2**20))
        for _ in range(15):
            assert decoder.feed(b"z" * 65536) == []
            assert decoder.buffered <= 9
        assert decoder.feed(b"z" * 65536 + b"tail\n") == [(b"z" * 8, True), (b"tail", False)]

    def test_octet_count_above_max_frame_is_an_error(self):
        frames, decoder = decode([b"4 okay" + b"2000 " + b"x" * 10], max_frame=1000)
        assert frames == [(b"okay", False)]
        assert decoder.error == "octet count 2000 above max_frame 1000"

    def test_end_of_stream_delivers_the_unterminated_frame(self):
        for tail, expected in [
            (b"no newline", [(b"no newline", False)]),
            (b"12", [(b"12", False)]),
            (b"10 short", [(b"short", True)]),
            (b"", []),
        ]:
            assert decode([b"x\n" + tail])[0] == [(b"x", False)] + expected, tail


class NulTests(SynchronousTestCase):
    def test_nul_ends_a_frame_as_lf_does(self):
        """Python's SysLogHandler over TCP ends each message with NUL, not LF."""
        stream = b"<11>first\x00<11>second\x00third\n10 <11>a\x00b\x00c\n"
        whole, _ = decode([stream])
        self.assertEqual(
            whole,
            [
                (b"<11>first", False),
                (b"<11>second", False),
                (b"third", False),
                (b"<11>a\x00b\x00c", False),
            ],
        )  # octet-counted keeps its NULs
        split, _ = decode([bytes([b]) for b in stream])
        self.assertEqual(split, whole)

    def test_a_line_cut_by_a_reset_is_truncated_one_closed_by_the_sender_is_not(self):
        for cut in (False, True):
            decoder = SyslogFrameDecoder(8192, 2**20)
            self.assertEqual(decoder.feed(b"whole\nhalf a li"), [(b"whole", False)])
            self.assertEqual(decoder.finish(cut), [(b"half a li", cut)])


class CountedRead(bytes):
    """
    A read that counts the bytes the decoder scans or copies out of it: the
    work a read costs, measured without a clock.  A method it does not count
    would hide work, so using one fails the test.
    """

    COUNTED = {"find", "split", "touched", "__class__"}

    def __init__(self, _data):
        super().__init__()
        self.touched = 0

    def __getattribute__(self, name):
        if name not in CountedRead.COUNTED:
            raise AssertionError(f"the decoder used bytes.{name}, which this test does not count")
        return super().__getattribute__(name)

    def find(self, sub, start=0, end=None):
        stop = len(self) if end is None else min(end, len(self))
        found = super().find(sub, start, stop)
        self.touched += max((found + len(sub) if found >= 0 else stop) - start, 0)
        return found

    def split(self, sep=None, maxsplit=-1):
        self.touched += len(self)
        return super().split(sep, maxsplit)

    def __contains__(self, sub):
        found = super().find(sub)
        self.touched += found + len(sub) if found >= 0 else len(self)
        return found >= 0

    def __getitem__(self, key):
        item = super().__getitem__(key)
        self.touched += len(item) if isinstance(key, slice) else 1
        return item


def work(data: bytes, read_size: int) -> tuple[int, int]:
    """
    Bytes of DATA scanned or copied, and calls the decoder made (a slice of
    a CountedRead is one too), framing DATA in reads of READ_SIZE.
    """
    decoder = SyslogFrameDecoder(8192, 2**20)
    reads = [CountedRead(data[i : i + read_size]) for i in range(0, len(data), read_size)]
    calls = 0

    def count(frame, event, arg):
        nonlocal calls
        caller = frame if event == "c_call" else frame.f_back
        calls += event in ("call", "c_call") and caller.f_code.co_filename == framing.__file__

    sys.setprofile(count)
    try:
        for read in reads:
            decoder.feed(read)
    finally:
        sys.setprofile(None)
    return sum(read.touched for read in reads), calls


def filled(unit: bytes, size: int) -> bytes:
    return (unit * (size // len(unit) + 1))[:size]


# What an attacker sends to make each frame cost more than its own bytes.
ADVERSARIAL = {
    "digit lines": b"1\n",
    "one-byte octet-counted frames": b"1 x",
    "digits without a space": b"1234567890",
    "digit lines ended by NUL": b"1\0",
    "octet-counted frames between lines": b"1 x\n",
    "mixed": b"<13>plain\n1 x\n12 y\n2024-11-20 up\n12345678901 z\n3 abc\x00a\x005 a\nb\n",
}


class LinearWorkTests(SynchronousTestCase):
    """
    Every read costs work in proportion to its length, whatever it holds:
    the reactor serves no one else while one read is framed.  Bounded
    against plain LF lines of the same size (two bytes each, the most frames
    a plain read can hold), counting bytes and calls, not time.
    """

    def assert_linear(self, size, read_size):
        # The bound is the Python framing's plain read.  The compiled framing
        # (suite/logger/_speedups.c) takes a read's lines in one call that
        # scans each byte once, unseen by the counts: plain lines cost it far
        # less, and the frames it leaves to Python must stay within the bound.
        self.patch(framing, "speedups", None)
        plain_bytes, plain_calls = work(filled(b"a\n", size), read_size)
        for compiled in {None, load_speedups({})}:
            self.patch(framing, "speedups", compiled)
            for name, unit in ADVERSARIAL.items():
                touched, calls = work(filled(unit, size), read_size)
                self.assertLessEqual(touched, 3 * plain_bytes, f"{name}: bytes scanned or copied")
                self.assertLessEqual(calls, 3 * plain_calls, f"{name}: calls")

    def test_one_read_of_64_kib(self):
        self.assert_linear(65536, 65536)

    def test_the_same_bytes_in_reads_of_a_few_bytes(self):
        self.assert_linear(8192, 7)
