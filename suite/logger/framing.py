"""
RFC 6587 framing of syslog over a stream, decided per frame: a frame that
starts with a non-zero digit followed by digits and a space is octet-counted
(`LEN SP MSG`); anything else runs to the next LF or NUL (Python's
SysLogHandler and some appliances end messages with NUL).  Both may be mixed
on one connection.  Pure: bytes in, frames out, no I/O.
"""

import re

_DIGITS = re.compile(rb"[0-9]{0,10}")
_MAX_COUNT_DIGITS = 10

_START, _COUNT, _OCTETS, _LINE = range(4)


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
        frames = []
        i, n = 0, len(data)
        max_message = self.max_message
        lines_at_once = b"\0" not in data
        while i < n and self.error is None:
            state = self._state
            if lines_at_once and state == _START and not self._buffer:
                after = self._whole_lines(data, i, frames)
                if after > i:
                    i = after
                    continue
            if state == _START and 0x31 <= data[i] <= 0x39:
                # The common case first: `LEN SP MSG` whole in this read.
                space = data.find(b" ", i + 1, i + 1 + _MAX_COUNT_DIGITS)
                if space > 0 and data[i:space].isdigit():
                    count = int(data[i:space])
                    end = space + 1 + count
                    if end <= n and count <= self.max_frame:
                        message = data[space + 1:end]
                        if message[-1:] == b"\n":
                            message = message[:-1]
                        frames.append((message[:max_message], len(message) > max_message))
                        i = end
                        continue
                i = self._read_count(data, i, frames)
            elif state == _LINE or (state == _START and not 0x31 <= data[i] <= 0x39):
                end = data.find(b"\n", i)
                nul = data.find(b"\0", i, n if end < 0 else end)
                if nul >= 0:
                    end = nul
                if end < 0:
                    self._append(data[i:])
                    self._state = _LINE
                    break
                if self._buffer or self._overflow:
                    self._append(data[i:end])
                    message = bytes(self._buffer)
                else:
                    message = data[i:end]
                self._emit_line(message, frames)
                i = end + 1
            elif state == _OCTETS:
                take = min(self._remaining, n - i)
                self._append(data[i:i + take])
                self._remaining -= take
                i += take
                if not self._remaining:
                    message = bytes(self._buffer)
                    if message.endswith(b"\n"):
                        message = message[:-1]
                    self._emit(message, frames)
            else:
                i = self._read_count(data, i, frames)
        return frames

    def _whole_lines(self, data: bytes, start: int, frames: list) -> int:
        """
        The common case of LF framing: the complete lines of DATA from
        START, split at once, up to the first that may be octet-counted (it
        starts with a digit); returns where the rest begins.
        """
        max_message, append, position = self.max_message, frames.append, start
        lines = (data[start:] if start else data).split(b"\n")
        lines.pop()  # after the last LF: incomplete
        for line in lines:
            if line and 0x31 <= line[0] <= 0x39:
                break
            position += len(line) + 1
            if line[-1:] == b"\r":
                line = line[:-1]
            if line:
                append((line[:max_message], len(line) > max_message))
        return position

    def _read_count(self, data: bytes, i: int, frames: list) -> int:
        """In a frame that started with a digit: is it `LEN SP`, or a line after all?"""
        end = _DIGITS.match(data, i, i + _MAX_COUNT_DIGITS - len(self._digits)).end()
        self._digits += data[i:end]
        self._state = _COUNT
        if end == len(data):
            return end
        digits, self._digits = self._digits, b""
        if data[end] == 0x20:
            count = int(digits)
            if count > self.max_frame:
                self.error = f"octet count {count} above max_frame {self.max_frame}"
                return len(data)
            self._state, self._remaining = _OCTETS, count
            return end + 1
        self._state = _LINE
        self._append(digits)
        return end

    def finish(self, cut: bool = False) -> list[tuple[bytes, bool]]:
        """
        At end of stream: the unterminated last frame, if any.  An
        octet-counted one is always marked truncated; a line only when CUT
        (the stream was reset or shut down, not closed by the sender).
        """
        frames = []
        if self._state == _COUNT:
            self._append(self._digits)
            self._state = _LINE
        if self._state == _LINE and (self._buffer or self._overflow):
            self._overflow = self._overflow or cut
            self._emit_line(bytes(self._buffer), frames)
        elif self._state == _OCTETS:
            self._overflow = True
            self._emit(bytes(self._buffer), frames)
        return frames

    def _append(self, chunk: bytes):
        # One byte beyond max_message is kept, so a CR or LF that is stripped
        # at the end does not by itself count as truncation.
        room = self.max_message + 1 - len(self._buffer)
        if len(chunk) > room:
            self._buffer += chunk[:room]
            self._overflow = True
        else:
            self._buffer += chunk

    def _emit_line(self, message: bytes, frames: list):
        if message.endswith(b"\r"):
            message = message[:-1]
        if message or self._overflow:
            self._emit(message, frames)
        else:
            self._reset()

    def _emit(self, message: bytes, frames: list):
        truncated = self._overflow or len(message) > self.max_message
        frames.append((message[: self.max_message], truncated))
        self._reset()

    def _reset(self):
        self._state = _START
        if self._buffer:
            self._buffer = bytearray()
        self._overflow = False
