"""The collector's JSON records, one per line: messages and connection events."""

import base64
import json
from datetime import datetime, timezone

from suite.logger.syslog import parse

_encode = json.JSONEncoder(ensure_ascii=False).encode


def utc_stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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


class RecordSink:
    """Turns received frames and connection events into JSON lines for the writer."""

    def __init__(self, writer, clock):
        self.writer = writer
        self.clock = clock

    def messages(self, frames: list[tuple[bytes, bool]], peer: str, transport: str,
                 client: str | None = None):
        """Message records; CLIENT is the subject of a TLS client certificate, if any."""
        # Frames of one read share one arrival time.
        received = utc_stamp(self.clock.seconds())
        lines = []
        for raw, truncated in frames:
            text, utf8 = decode(raw)
            message, fields = parse(text)
            record = {
                "received": received,
                "event": "message",
                "peer": peer,
                "transport": transport,
                "message": message,
            }
            if not utf8:
                record["message_base64"] = base64.b64encode(raw).decode()
            if client is not None:
                record["client"] = client
            if fields is not None:
                record["syslog"] = fields
            if truncated:
                record["truncated"] = True
            lines.append((_encode(record) + "\n").encode())
        self.writer.write_lines(lines)

    def event(self, event: str, peer: str, transport: str, message: str | None = None,
              client: str | None = None):
        """A `connected`, `disconnected` or `error` record."""
        record = {
            "received": utc_stamp(self.clock.seconds()),
            "event": event,
            "peer": peer,
            "transport": transport,
        }
        if client is not None:
            record["client"] = client
        if message is not None:
            record["message"] = message
        self.writer.write_lines([(_encode(record) + "\n").encode()])
