"""
The audit of lookups: one JSON line per Lookup in its own file, written in
batches by the logger's writer (rotation, disk-full retry, SIGHUP reopen).

Lookups are the name server's hot path, so a lookup is not a formatted
log event: its line is built from a per-connection part encoded once
(peer, client certificate) and a timestamp whose date and time of day
are formatted once per second.  Names are validated to `a-z 0-9 -`, so they need no
escaping.  Registrations, deregistrations and evictions stay structured
log events.  When the file cannot be written and `max_buffer` is
reached, lines are dropped and counted; lookups are answered regardless.
"""

import json

from twisted.internet.interfaces import IReactorTime

from suite.foundation.jsonlines import BatchWriter
from suite.foundation.stamps import utc_stamp


def connection_fields(peer: str, client: str | None) -> str:
    """The end of a connection's audit lines: `, "peer": …[, "client": …]}` and LF."""
    fields = {"peer": peer}
    if client is not None:
        fields["client"] = client
    return ", " + json.dumps(fields)[1:] + "\n"


class LookupAudit:
    """Writes lookup lines to WRITER (a L{BatchWriter}); CLOCK gives their time."""

    def __init__(self, writer: BatchWriter, clock: IReactorTime) -> None:
        self.writer = writer
        self.clock = clock

    def lookup(self, name: str, answers: int, fields: str) -> None:
        """
        NAME was looked up and ANSWERS instances were answered; FIELDS from
        connection_fields.
        """
        writer = self.writer
        if writer.full:
            writer.dropped += 1
            return
        stamp = utc_stamp(self.clock.seconds())
        line = (
            f'{{"time": "{stamp}", "event": "lookup", "name": "{name}", '
            f'"answers": {answers:d}{fields}'
        )
        writer.write_lines([line.encode()], 1)
