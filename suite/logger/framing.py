"""
RFC 6587 framing of syslog over a stream, decided per frame: a frame that
starts with a non-zero digit followed by digits and a space is octet-counted
(`LEN SP MSG`); anything else runs to the next LF or NUL (Python's
SysLogHandler and some appliances end messages with NUL).  Both may be mixed
on one connection.  Pure: bytes in, frames out, no I/O.

Every read costs work proportional to its length, whatever it holds:
one client's read is served while every other client waits, so no
byte may be looked at more than a few times.  A read's lines are split once,
whole octet-counted frames are cut in one loop, and where the next LF and
NUL are is looked up once per delimiter, never again from each frame.
"""

import re
from collections.abc import Callable
from itertools import chain

from suite.logger.compiled import speedups

_DIGITS = re.compile(rb"[0-9]{0,10}")
_MAX_COUNT_DIGITS = 10

_START, _COUNT, _OCTETS, _LINE = range(4)


def _is_header(line: bytes) -> bool:
    """Whether LINE, which starts with a non-zero digit, starts with `LEN SP`."""
    space = line.find(b" ", 1, 1 + _MAX_COUNT_DIGITS)
    return space > 0 and line[:space].isdigit()


class _Lines:
    """
    The lines of one stretch of a read, from START up to STOP, split at
    DELIMITER (LF, or NUL) at once: the common case of framing.  STOP is
    where the other delimiter comes next (it ends the last line), or the
    read's end.  Octet-counted frames may cut across lines, so each `take`
    begins where the decoder is and skips what those frames consumed; every
    line is visited once, however the frames mix.
    """

    def __init__(self, data: bytes, start: int, stop: int, delimiter: bytes):
        self.stop = stop
        self._data = data
        pieces = data[start:stop].split(delimiter)
        if stop == len(data):
            pieces.pop()  # after the last delimiter: incomplete
        self._lines = iter(pieces)
        self._line = next(self._lines, None)
        self._start = start

    def take(self, i: int, frames: list[tuple[bytes, bool]], max_message: int) -> int:
        """
        The lines from I on, up to the first that is octet-counted; returns
        where that one, or what follows the last whole line, begins.
        """
        line, start = self._line, self._start
        if line is None:
            return i
        end = start + len(line)
        while end < i:
            line = next(self._lines, None)
            if line is None:
                self._line = None
                return i
            start, end = end + 1, end + 1 + len(line)
        if start < i:
            line, start = self._data[i:end], i
        append = frames.append
        first = line
        for line in chain((first,), self._lines):
            if line and 0x31 <= line[0] <= 0x39 and _is_header(line):
                self._line, self._start = line, start
                return start
            start += len(line) + 1
            if line[-1:] == b"\r":
                line = line[:-1]
            if line:
                append((line[:max_message], len(line) > max_message))
        self._line = None
        return start


class _CompiledLines:
    """
    L{_Lines} by the compiled speedups (L{suite.logger.compiled}): nothing
    split ahead, each `take` scans from where the decoder is, in C.
    """

    __slots__ = ("stop", "_data", "_delimiter", "_take")

    def __init__(self, data: bytes, stop: int, delimiter: bytes, take: Callable[..., int]) -> None:
        self.stop = stop
        self._data = data
        self._delimiter = delimiter[0]
        self._take = take

    def take(self, i: int, frames: list[tuple[bytes, bool]], max_message: int) -> int:
        return self._take(self._data, i, self.stop, self._delimiter, max_message, frames)


def _lines(data: bytes, start: int, stop: int, delimiter: bytes) -> "_Lines | _CompiledLines":
    """The lines of DATA from START to STOP, split at DELIMITER: compiled when built."""
    if speedups is None:
        return _Lines(data, start, stop, delimiter)
    return _CompiledLines(data, stop, delimiter, speedups.take_lines)


class SyslogFrameDecoder:
    """
    Feed it bytes as they arrive; it returns complete frames as
    (message, truncated) pairs.

    A message longer than MAX_MESSAGE is cut to that size and marked
    truncated; the rest of its frame is read and discarded, never delivered
    as a message of its own.  Only MAX_MESSAGE (+1) bytes are ever buffered,
    whatever the frame's size.  An octet count above MAX_FRAME sets `error`;
    the connection is then to be closed, as nothing after it can be framed.
    """

    def __init__(self, max_message: int, max_frame: int):
        self.max_message = max_message
        self.max_frame = max_frame
        self.error: str | None = None
        self._state = _START
        self._digits = b""
        self._remaining = 0
        self._buffer = bytearray()
        self._overflow = False

    @property
    def buffered(self) -> int:
        """Bytes held for the frame being read: never more than max_message + 1."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        frames: list[tuple[bytes, bool]] = []
        i, n = 0, len(data)
        lines: _Lines | _CompiledLines | None = None
        # Where the next LF and NUL are (N: none), looked up again only once passed.
        next_lf = next_nul = -1
        while i < n and self.error is None:
            state = self._state
            if state == _START:
                digit = 0x31 <= data[i] <= 0x39
                if digit:
                    after = self._octet_frames(data, i, frames)
                    if after > i:
                        i = after
                        continue
                # Whole lines ahead: split once, up to where the other delimiter comes.
                if lines is None or lines.stop < i:
                    if next_lf < i:
                        next_lf = _find(data, b"\n", i)
                    if next_nul < i:
                        next_nul = _find(data, b"\0", i)
                    if next_lf < next_nul:
                        lines = _lines(data, i, next_nul, b"\n")
                    elif next_nul < next_lf:
                        lines = _lines(data, i, next_lf, b"\0")
                if lines is not None and lines.stop >= i:
                    after = lines.take(i, frames, self.max_message)
                    if after > i:
                        i = after
                        continue
                # A count cut by the end of the read, or a frame longer than
                # what is left of it: the frame is read on in later reads.
                if digit:
                    digits = _DIGITS.match(data, i, i + _MAX_COUNT_DIGITS)
                    assert digits is not None  # _DIGITS matches no digit too
                    count_end = digits.end()
                    if count_end == n or data[count_end] == 0x20:
                        i = self._read_count(data, i)
                        continue
            # A line begun in an earlier read, or the last of this one, not ended yet.
            if state == _START or state == _LINE:
                if next_lf < i:
                    next_lf = _find(data, b"\n", i)
                if next_nul < i:
                    next_nul = _find(data, b"\0", i)
                end = next_lf if next_lf < next_nul else next_nul
                if end == n:
                    self._append(data, i, n)
                    self._state = _LINE
                    break
                if self._buffer or self._overflow:
                    self._append(data, i, end)
                    message = bytes(self._buffer)
                else:
                    message = data[i:end]
                self._emit_line(message, frames)
                i = end + 1
            elif state == _OCTETS:
                take = min(self._remaining, n - i)
                self._append(data, i, i + take)
                self._remaining -= take
                i += take
                if not self._remaining:
                    message = bytes(self._buffer)
                    if message.endswith(b"\n"):
                        message = message[:-1]
                    self._emit(message, frames)
            else:
                i = self._read_count(data, i)
        return frames

    def _octet_frames(self, data: bytes, i: int, frames: list[tuple[bytes, bool]]) -> int:
        """
        The common case of octet counting: `LEN SP MSG` frames whole in DATA,
        one after another from I, cut in one loop.  Returns where the first
        frame that is not such a one begins.
        """
        if speedups is not None:
            return speedups.octet_frames(data, i, self.max_message, self.max_frame, frames)
        n, find, append = len(data), data.find, frames.append
        max_message, max_frame = self.max_message, self.max_frame
        # A sender's counts tend to have as many digits as the last one: a
        # space right after that many digits is found without a search.
        width = 2
        while True:
            space = i + width
            count = data[i:space]
            if space >= n or data[space] != 0x20 or not count.isdigit():
                space = find(b" ", i, i + 1 + _MAX_COUNT_DIGITS)
                if space < 0:
                    break
                count = data[i:space]
                if not count.isdigit():
                    # Some senders end each frame with an LF beyond its count
                    # too: an empty line, skipped here rather than as a line.
                    if data[i] == 0x0A:
                        i += 1
                        continue
                    break
                width = space - i
            if count[0] == 0x30:
                break
            length = int(count)
            end = space + 1 + length
            if end > n or length > max_frame:
                break
            if data[end - 1] == 0x0A:
                message = data[space + 1 : end - 1]
            else:
                message = data[space + 1 : end]
            if length > max_message:
                append((message[:max_message], len(message) > max_message))
            else:
                append((message, False))
            i = end
        return i

    def _read_count(self, data: bytes, i: int) -> int:
        """In a frame that started with a digit: is it `LEN SP`, or a line after all?"""
        digits = _DIGITS.match(data, i, i + _MAX_COUNT_DIGITS - len(self._digits))
        assert digits is not None  # _DIGITS matches no digit too
        end = digits.end()
        self._digits += data[i:end]
        self._state = _COUNT
        if end == len(data):
            return end
        counted, self._digits = self._digits, b""
        if data[end] == 0x20:
            count = int(counted)
            if count > self.max_frame:
                self.error = f"octet count {count} above max_frame {self.max_frame}"
                return len(data)
            self._state, self._remaining = _OCTETS, count
            return end + 1
        self._state = _LINE
        self._append(counted, 0, len(counted))
        return end

    def finish(self, cut: bool = False) -> list[tuple[bytes, bool]]:
        """
        At end of stream: the unterminated last frame, if any.  An
        octet-counted one is always marked truncated; a line only when CUT
        (the stream was reset or shut down, not closed by the sender).
        """
        frames: list[tuple[bytes, bool]] = []
        if self._state == _COUNT:
            self._append(self._digits, 0, len(self._digits))
            self._state = _LINE
        if self._state == _LINE and (self._buffer or self._overflow):
            self._overflow = self._overflow or cut
            self._emit_line(bytes(self._buffer), frames)
        elif self._state == _OCTETS:
            self._overflow = True
            self._emit(bytes(self._buffer), frames)
        return frames

    def _append(self, data: bytes, start: int, end: int) -> None:
        # One byte beyond max_message is kept, so a CR or LF that is stripped
        # at the end does not by itself count as truncation.  Only what is
        # kept is copied: a huge frame costs no more than a short one.
        room = self.max_message + 1 - len(self._buffer)
        if end - start > room:
            self._buffer += data[start : start + room]
            self._overflow = True
        else:
            self._buffer += data[start:end]

    def _emit_line(self, message: bytes, frames: list[tuple[bytes, bool]]) -> None:
        if message.endswith(b"\r"):
            message = message[:-1]
        if message or self._overflow:
            self._emit(message, frames)
        else:
            self._reset()

    def _emit(self, message: bytes, frames: list[tuple[bytes, bool]]) -> None:
        truncated = self._overflow or len(message) > self.max_message
        frames.append((message[: self.max_message], truncated))
        self._reset()

    def _reset(self) -> None:
        self._state = _START
        if self._buffer:
            self._buffer = bytearray()
        self._overflow = False


def _find(data: bytes, byte: bytes, start: int) -> int:
    """Where BYTE next occurs in DATA from START; len(DATA) when it does not."""
    found = data.find(byte, start)
    return len(data) if found < 0 else found
