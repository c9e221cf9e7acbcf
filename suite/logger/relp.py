"""
RELP frames as librelp (rsyslog's `omrelp` and `imrelp`) writes and reads
them: `TXNR SP COMMAND SP DATALEN [SP DATA] LF`, where TXNR has 1 to 9
digits, COMMAND 1 to 32 letters, DATALEN 1 to 9 digits and DATA exactly
DATALEN octets (absent, with its space, when DATALEN is 0).  Pure: bytes in,
frames out, no I/O.

The decoder is incremental and each byte it is fed is looked at a bounded
number of times: a header is at most 54 bytes, matched by one regular
expression; a frame's data is cut out once, when all of it has come (the
pieces of a large frame are kept in a list and joined once).  What it holds
is bounded by `max_frame`: a larger DATALEN is an error at once, before its
data arrives.  Any other departure from the format is an error too, with a
reason a person can act on; after an error the decoder takes nothing more.
"""

import re
from typing import NamedTuple

MAX_TXNR = 999_999_999
HEADER_BYTES = 9 + 1 + 32 + 1 + 9 + 1  # the longest TXNR SP COMMAND SP DATALEN, and SP or LF

_HEADER = re.compile(rb"([0-9]{1,9}) ([A-Za-z]{1,32}) ([0-9]{1,9})([ \n])")
# What a header that has not all come yet may start with.
_HEADER_START = re.compile(rb"[0-9]{0,9}(?: (?:[A-Za-z]{1,32}(?: [0-9]{0,9})?)?)?")
_DIGITS = b"0123456789"
_LETTERS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


class RelpFrame(NamedTuple):
    txnr: int
    command: str
    data: bytes


def next_txnr(txnr: int) -> int:
    """The transaction number after TXNR: 1 follows 999999999."""
    return 1 if txnr >= MAX_TXNR else txnr + 1


def encode_frame(txnr: int, command: bytes, data: bytes = b"") -> bytes:
    """One frame, written as librelp writes it (no space and no data when DATA is empty)."""
    if data:
        return b"%d %s %d %s\n" % (txnr, command, len(data), data)
    return b"%d %s 0\n" % (txnr, command)


def rsp(txnr: int, text: bytes) -> bytes:
    """The answer to transaction TXNR: TEXT is `200 OK`, `500 reason`, or empty (to `close`)."""
    return encode_frame(txnr, b"rsp", text)


def rsp_ok(txnr: int) -> bytes:
    """`rsp 200 OK`, the answer to a `syslog` message that is safe."""
    return b"%d rsp 6 200 OK\n" % txnr


# The server's hint that it closes the session (transaction 0, never answered):
# omrelp then reconnects and resends what was not acknowledged.
SERVERCLOSE = encode_frame(0, b"serverclose")


def parse_offers(data: bytes) -> dict[str, list[str]]:
    """
    The offers of an `open` (`name=value,value` lines) by name; a name
    without `=` has no values.  Bytes that are not UTF-8 are replaced.
    """
    offers: dict[str, list[str]] = {}
    for line in data.decode("utf-8", "replace").split("\n"):
        if not line:
            continue
        name, _, values = line.partition("=")
        offers[name] = [value for value in values.split(",") if value]
    return offers


def encode_offers(offers: list[tuple[str, list[str]]]) -> bytes:
    """OFFERS as `name=value,value` lines, in order, with no LF after the last."""
    return "\n".join(f"{name}={','.join(values)}" for name, values in offers).encode()


def _run(head: bytes, start: int, allowed: bytes) -> int:
    """How many bytes of HEAD from START are among ALLOWED."""
    end = start
    while end < len(head) and head[end] in allowed:
        end += 1
    return end - start


def _header_error(head: bytes) -> str:
    """Why HEAD, the start of a frame that does not match the format, is not a header."""
    txnr = _run(head, 0, _DIGITS)
    if txnr == 0:
        return "frame does not start with a transaction number"
    if txnr > 9:
        return "transaction number longer than 9 digits"
    if head[txnr : txnr + 1] != b" ":
        return "transaction number not followed by a space"
    start = txnr + 1
    command = _run(head, start, _LETTERS)
    if command == 0:
        return "frame has no command"
    if command > 32:
        return "command longer than 32 letters"
    if head[start + command : start + command + 1] != b" ":
        return "command not followed by a space"
    start += command + 1
    datalen = _run(head, start, _DIGITS)
    if datalen == 0:
        return "frame has no data length"
    if datalen > 9:
        return "data length longer than 9 digits"
    return "data length not followed by a space or LF"


class RelpFrameDecoder:
    """
    Frames from the bytes of one connection, as they come.  `error` says
    why the stream stopped being RELP (the frames before it are returned
    all the same); frames whose DATALEN is above MAX_FRAME are refused.
    """

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self.error: str | None = None
        # The start of a frame, not all of it come yet: one growing buffer, so
        # a frame dribbled in tiny reads costs about its own size (a list of
        # the reads would cost some 20 times that, in per-object overhead).
        self._held = bytearray()
        self._wanted = 0  # the length at which it is worth looking again

    def feed(self, data: bytes) -> list[RelpFrame]:
        if self.error is not None:
            return []
        if self._held:
            self._held += data
            if len(self._held) < self._wanted:
                return []
            data, self._held = bytes(self._held), bytearray()
        frames: list[RelpFrame] = []
        position, end = 0, len(data)
        match = _HEADER.match
        while position < end:
            header = match(data, position)
            if header is None:
                if _HEADER_START.fullmatch(data, position, min(end, position + HEADER_BYTES)):
                    self._keep(data, position, end - position + 1)
                else:
                    self.error = _header_error(data[position : position + HEADER_BYTES + 1])
                break
            txnr, command, datalen, after = header.groups()
            number, length = int(txnr), int(datalen)
            if number == 0:
                self.error = "transaction number 0 (only the server's hints use it)"
                break
            if length > self.max_frame:
                self.error = f"data length {length} above max_frame {self.max_frame}"
                break
            start = header.end()
            if length == 0:
                if after != b"\n":
                    self.error = "data length 0 not followed by LF"
                    break
                frames.append(RelpFrame(number, command.decode(), b""))
                position = start
                continue
            if after != b" ":
                self.error = f"data length {length} followed by LF instead of the data"
                break
            stop = start + length
            if stop >= end:  # the data, or its LF, has not all come
                self._keep(data, position, stop + 1 - position)
                break
            if data[stop] != 0x0A:
                self.error = f"frame not ended by LF after its {length} bytes of data"
                break
            frames.append(RelpFrame(number, command.decode(), data[start:stop]))
            position = stop + 1
        return frames

    def _keep(self, data: bytes, position: int, wanted: int) -> None:
        """Hold what is left of DATA from POSITION until WANTED bytes of the frame are here."""
        self._held = bytearray(memoryview(data)[position:])
        self._wanted = wanted

    @property
    def pending(self) -> int:
        """Bytes of a frame that has not all come (dropped when the connection ends)."""
        return len(self._held)
