"""
The collector's JSON records, one per line: messages and connection events.

A message record is written by string formatting rather than by building
dictionaries for `json.dumps`: every string goes through the JSON module's
C string escaper, the parts shared by one read's messages (time, peer,
transport, client) are encoded once, and the fixed words of the `syslog`
fields (format, facility, severity) come from a table.  The text is what
`json.dumps(record, ensure_ascii=False)` gives for the same record, key
order included (the tests compare the two), except that the characters in
L{UNSAFE} are escaped too.

Client text stays readable UTF-8, but JSON lets DEL, C1 controls (a
terminal takes 0x9B as CSI) and the Unicode bidi controls (text that reads
backwards in an editor or a terminal) through raw; `cat` or `less` of the
file would obey them.  They are written as `\\u` escapes such as `\\u202e`,
which any JSON reader decodes to the same text.  Text without them costs a
few byte searches.

When the compiled speedups are there (L{suite.logger.compiled}), the
records of plain RFC 5424 messages are written in C, the same bytes; the
Python code here is the reference, and formats every other message.
"""

import base64
import json
import re
from json.encoder import encode_basestring as _quote

from twisted.internet.interfaces import IReactorTime

from suite.foundation.heard import IDENTITY_SEED
from suite.foundation.jsonlines import BatchWriter
from suite.foundation.stamps import utc_stamp
from suite.logger.compiled import speedups
from suite.logger.syslog import (
    FACILITIES,
    SEVERITIES,
    match_plain_rfc5424,
    parse_fields,
    plain_header_fields,
)

_encode = json.JSONEncoder(ensure_ascii=False).encode

# DEL, C1, the bidi marks, embeddings, overrides and isolates, and the line
# and paragraph separators; the C0 controls are escaped by JSON itself.
UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def _encode_safe(text: str) -> bytes:
    """JSON TEXT as UTF-8, the L{UNSAFE} characters (only ever inside strings) as \\u escapes."""
    if "\x7f" not in text:
        if text.isascii():  # known without a scan
            return text.encode()
        data = text.encode()
        # The first byte of the others in UTF-8 (U+0080-00BF, U+0600-063F, U+2000-2FFF): a
        # search for one byte is far quicker than the regex, which runs only when one is found.
        if b"\xc2" not in data and b"\xd8" not in data and b"\xe2" not in data:
            return data
    return UNSAFE.sub(lambda found: f"\\u{ord(found[0]):04x}", text).encode()


# '{"format": "rfc5424", "facility": "local0", "severity": "info", "timestamp": ' by (form, pri)
_SYSLOG_HEAD = {
    (form, pri): (
        f', "syslog": {{"format": "{form}", "facility": "{FACILITIES[pri >> 3]}", '
        f'"severity": "{SEVERITIES[pri & 7]}", "timestamp": '
    )
    for form in ("rfc5424", "rfc3164")
    for pri in range(192)
}

# The same, as the speedups take them: bytes by PRI.
_SYSLOG_HEAD_BYTES = tuple(_SYSLOG_HEAD["rfc5424", pri].encode() for pri in range(192))


def _nullable(value: str | None) -> str:
    return "null" if value is None else _quote(value)


MAX_CACHED_HEADERS = 4096
RoutingFields = tuple[int, str | None, str | None]  # (pri, hostname, app): what routes match
_plain_headers: dict[tuple, tuple[str, str, RoutingFields]] = {}


def _plain_header_json(pri: str, rest: str) -> tuple[str, str, RoutingFields]:
    """
    The `syslog` JSON of a plain RFC 5424 header around its timestamp:
    (up to `"timestamp": `, from `, "hostname"` on), for the PRI and REST
    groups of match_plain_rfc5424, and its routing fields.  Senders repeat
    their header fields, so these are kept, up to MAX_CACHED_HEADERS of them.
    """
    if len(_plain_headers) >= MAX_CACHED_HEADERS:
        _plain_headers.clear()
    fields = plain_header_fields(rest)
    hostname, app, procid, msgid = map(_nullable, fields)
    found = _plain_headers[pri, rest] = (
        _SYSLOG_HEAD["rfc5424", int(pri)],
        f', "hostname": {hostname}, "app": {app}, "procid": {procid}, "msgid": {msgid}, '
        '"structured_data": null}',
        (int(pri), fields[0], fields[1]),
    )
    return found


def _general_line(
    raw: bytes, text: str | None, head: str, client_part: str, end: str
) -> tuple[str, RoutingFields | None]:
    """
    The record of any message, and its routing fields (None: not syslog);
    TEXT is RAW decoded, None when RAW is not UTF-8.
    """
    line = head
    if text is None:
        text = decode(raw)[0]
        message, fields = parse_fields(text)
        line += _quote(message) + f', "message_base64": "{base64.b64encode(raw).decode()}"'
    else:
        message, fields = parse_fields(text)
        line += _quote(message)
    line += client_part
    if fields is None:
        return line + end, None
    return line + syslog_json(fields) + end, (fields[1], fields[3], fields[4])


def _append_lines(
    frames: list[tuple[bytes, bool]],
    head: str,
    client_part: str,
    lines: list[str],
    routing: list[RoutingFields | None] | None,
) -> None:
    """The records of FRAMES onto LINES, their routing fields onto ROUTING (a list)."""
    append = lines.append
    plain_match, headers = match_plain_rfc5424, _plain_headers
    for raw, truncated in frames:
        end = ', "truncated": true}\n' if truncated else "}\n"
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            line, fields = _general_line(raw, None, head, client_part, end)
        else:
            plain = plain_match(text)
            if plain is not None:  # the common case, in one formatting
                key = plain.group(1, 3)
                before, after, routed = headers.get(key) or _plain_header_json(*key)
                timestamp = plain.group(2)
                append(
                    f"{head}{_quote(text[plain.end() :])}{client_part}{before}"
                    f"{'null' if timestamp == '-' else _quote(timestamp)}{after}{end}"
                )
                if routing is not None:
                    routing.append(routed)
                continue
            line, fields = _general_line(raw, text, head, client_part, end)
        append(line)
        if routing is not None:
            routing.append(fields)


def _fallback_line(raw: bytes, truncated: bool, shared: tuple) -> bytes:
    """What the speedups leave to Python: one message's record as written."""
    head, client_part, routing = shared
    lines: list[str] = []
    _append_lines([(raw, truncated)], head, client_part, lines, routing)
    return _encode_safe(lines[0])


def syslog_json(fields: tuple) -> str:
    """`, "syslog": {…}` for the fields tuple of parse_fields()."""
    form, pri, timestamp, hostname, app, procid, msgid, structured = fields
    structured_data = "null" if structured is None else _encode(structured)
    return (
        f"{_SYSLOG_HEAD[form, pri]}{_nullable(timestamp)}, "
        f'"hostname": {_nullable(hostname)}, "app": {_nullable(app)}, '
        f'"procid": {_nullable(procid)}, "msgid": {_nullable(msgid)}, '
        f'"structured_data": {structured_data}}}'
    )


def decode(raw: bytes) -> tuple[str, bool]:
    """
    (text, whether RAW was UTF-8).  Bytes that are not UTF-8 become `\\xNN`
    escapes, so the JSON stays valid; such a record also carries the frame's
    exact bytes as `message_base64`, since the text `\\xff` and the byte
    0xFF would otherwise look the same.
    """
    try:
        return raw.decode("utf-8"), True
    except UnicodeDecodeError:
        return raw.decode("utf-8", "backslashreplace"), False


def encode_lines(lines: list[str]) -> bytes:
    """Record lines as the bytes written, the L{UNSAFE} characters escaped (one scan for all)."""
    return _encode_safe("".join(lines))


class RecordSink:
    """Turns received frames and connection events into JSON lines for the writer."""

    def __init__(self, writer: BatchWriter, clock: IReactorTime) -> None:
        self.writer = writer
        self.clock = clock

    def messages(
        self,
        frames: list[tuple[bytes, bool]],
        peer: str,
        transport: str,
        client: str | None = None,
    ) -> None:
        """Message records; CLIENT is the subject of a TLS client certificate, if any."""
        self.writer.write_lines([self.message_bytes(frames, peer, transport, client)], len(frames))

    def _shared(self, peer: str, transport: str, client: str | None) -> tuple[str, str]:
        """
        The parts every record of one read shares (the frames of one read share
        one arrival time, peer and transport): up to the message, and `client`.
        """
        head = (
            f'{{"received": "{utc_stamp(self.clock.seconds())}", "event": "message", '
            f'"peer": {_quote(peer)}, "transport": {_quote(transport)}, "message": '
        )
        return head, "" if client is None else ', "client": ' + _quote(client)

    def message_bytes(
        self,
        frames: list[tuple[bytes, bool]],
        peer: str,
        transport: str,
        client: str | None = None,
        routing: list[RoutingFields | None] | None = None,
        hashes: bytearray | None = None,
        fields: bool = True,
    ) -> bytes:
        """
        encode_lines(message_lines(...)): the records of FRAMES as written,
        formatted by the compiled speedups when they are there (the common
        case; every other message by the Python code, in order).  HASHES,
        with ROUTING, gets each message's identity hashes when the speedups
        make them (L{suite.foundation.heard.Hearing}); it stays empty
        without them.  Without FIELDS the speedups put in ROUTING only the
        fields of the messages they leave to Python.
        """
        head, client_part = self._shared(peer, transport, client)
        if speedups is None:
            lines: list[str] = []
            _append_lines(frames, head, client_part, lines, routing)
            return encode_lines(lines)
        return speedups.encode_plain(
            frames,
            _encode_safe(head),
            _encode_safe(client_part),
            _SYSLOG_HEAD_BYTES,
            routing,
            fields,
            hashes,
            IDENTITY_SEED,
            _fallback_line,
            (head, client_part, routing),
        )

    def message_lines(
        self,
        frames: list[tuple[bytes, bool]],
        peer: str,
        transport: str,
        client: str | None = None,
        routing: list[RoutingFields | None] | None = None,
    ) -> list[str]:
        """
        The message records of FRAMES, one JSON line each, for L{encode_lines}.
        ROUTING, when a list, gets each message's (pri, hostname, app), or
        None when it is not syslog: what routes match, from the one parse
        the record needs anyway.
        """
        head, client_part = self._shared(peer, transport, client)
        lines: list[str] = []
        _append_lines(frames, head, client_part, lines, routing)
        return lines

    def event(
        self,
        event: str,
        peer: str,
        transport: str,
        message: str | None = None,
        client: str | None = None,
        at: float | None = None,
    ) -> None:
        """A `connected`, `disconnected` or `error` record, of now or of the time AT."""
        record = {
            "received": utc_stamp(self.clock.seconds() if at is None else at),
            "event": event,
            "peer": peer,
            "transport": transport,
        }
        if client is not None:
            record["client"] = client
        if message is not None:
            record["message"] = message
        self.writer.write_lines([_encode_safe(_encode(record) + "\n")], 1)
