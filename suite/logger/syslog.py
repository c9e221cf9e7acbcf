"""
Parsing one syslog message: RFC 5424, else RFC 3164, else raw.  Pure: text
in, (message, fields) out.  The fields are those of the JSON records; facility and
severity are the keywords `logger -p` takes (`local0`, `err`).

parse_fields() is the collector's hot path: one compiled pattern matches a
whole RFC 5424 header, PRI included, and the fields come back as a tuple
(FIELD_NAMES) rather than a dictionary; parse() gives them as a dictionary.
"""

import re

FACILITIES = (
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "audit",
    "alert",
    "clock",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
)
SEVERITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")

FIELD_NAMES = (
    "format",
    "pri",
    "timestamp",
    "hostname",
    "app",
    "procid",
    "msgid",
    "structured_data",
)

_PRI = re.compile(r"<(\d{1,3})>")
_RFC5424_HEADER = re.compile(r"([1-9]\d{0,2}) (\S+) (\S+) (\S+) (\S+) (\S+) ")
# The common case whole: PRI, header, no structured data (`-`), then the message
# (after its BOM, if it has one).
_RFC5424_PLAIN = re.compile(
    r"<(1[0-8]\d|19[01]|\d{1,2})>[1-9]\d{0,2} (\S+)( \S+ \S+ \S+ \S+ )-(?: \ufeff?|\Z)"
)
BOM = "\ufeff"


def match_plain_rfc5424(text: str) -> re.Match[str] | None:
    """
    The match of an RFC 5424 message without structured data: groups PRI,
    timestamp, and ` hostname app procid msgid ` (see plain_header_fields;
    `-` for nil); the message is what follows end().  None otherwise.
    """
    return _RFC5424_PLAIN.match(text)


_SD_ELEMENT = re.compile(r'\[([^\s=\]"]+)((?: [^\s=\]"]+="(?:[^"\\]|\\.)*")*)\]', re.S)
_SD_PARAM = re.compile(r'([^\s=\]"]+)="((?:[^"\\]|\\.)*)"', re.S)
_SD_ESCAPE = re.compile(r'\\(["\\\]])')
# BSD's `Mmm dd hh:mm:ss`, or the RFC 3339 stamp rsyslog's forwarding templates
# (RSYSLOG_ForwardFormat, omrelp's and omfwd's default) put in a BSD header.
_RFC3164_TIMESTAMP = re.compile(
    r"([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d"
    r"|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d)) "
)
_RFC3164_TAG = re.compile(r"([^\s:\[\]]{1,48})(?:\[([^\s\]]{1,128})\])?: ?")


def _nil(value: str) -> str | None:
    return None if value == "-" else value


def as_dict(fields: tuple) -> dict:
    """The fields tuple of parse_fields() as the records' `syslog` dictionary."""
    form, pri, timestamp, hostname, app, procid, msgid, structured = fields
    return {
        "format": form,
        "facility": FACILITIES[pri >> 3],
        "severity": SEVERITIES[pri & 7],
        "timestamp": timestamp,
        "hostname": hostname,
        "app": app,
        "procid": procid,
        "msgid": msgid,
        "structured_data": structured,
    }


def parse(text: str) -> tuple[str, dict | None]:
    """(message, syslog fields), or (text, None) when it is not syslog at all."""
    message, fields = parse_fields(text)
    return message, None if fields is None else as_dict(fields)


def plain_header_fields(rest: str) -> list[str | None]:
    """[hostname, app, procid, msgid] from the third group of match_plain_rfc5424."""
    return [None if field == "-" else field for field in rest[1:-1].split(" ")]


def parse_fields(text: str) -> tuple[str, tuple | None]:
    """(message, fields tuple in FIELD_NAMES order), or (text, None) when it is not syslog."""
    plain = _RFC5424_PLAIN.match(text)
    if plain is not None:
        pri, timestamp, rest = plain.groups()
        hostname, app, procid, msgid = plain_header_fields(rest)
        return text[plain.end() :], (
            "rfc5424",
            int(pri),
            None if timestamp == "-" else timestamp,
            hostname,
            app,
            procid,
            msgid,
            None,
        )
    pri_match = _PRI.match(text)
    if pri_match is None or int(pri_match[1]) > 191:
        return text, None
    pri = int(pri_match[1])
    return parse_rfc5424(text, pri, pri_match.end()) or parse_rfc3164(text, pri, pri_match.end())


def parse_rfc5424(text: str, pri: int, start: int) -> tuple[str, tuple] | None:
    header = _RFC5424_HEADER.match(text, start)
    if header is None:
        return None
    return _rfc5424_body(text, pri, header)


def _rfc5424_body(text: str, pri: int, header: re.Match[str]) -> tuple[str, tuple] | None:
    """After a matched header (groups: version, timestamp … msgid): SD and message."""
    position = header.end()
    if text.startswith("-", position):
        structured, position = None, position + 1
    else:
        structured, position = parse_structured_data(text, position)
        if structured is None:
            return None
    if position < len(text):
        if text[position] != " ":
            return None
        position += 1
    message = text[position:]
    if message.startswith(BOM):
        message = message[1:]
    _, timestamp, hostname, app, procid, msgid = header.groups()
    return message, (
        "rfc5424",
        pri,
        _nil(timestamp),
        _nil(hostname),
        _nil(app),
        _nil(procid),
        _nil(msgid),
        structured,
    )


def parse_structured_data(text: str, position: int) -> tuple[dict | None, int]:
    """`[id p="v" …][id2 …]` from POSITION -> ({id: {param: value}}, end); None if malformed."""
    elements = {}
    while True:
        element = _SD_ELEMENT.match(text, position)
        if element is None:
            break
        elements[element[1]] = {
            name: _SD_ESCAPE.sub(r"\1", value) if "\\" in value else value
            for name, value in _SD_PARAM.findall(element[2])
        }
        position = element.end()
    return (elements or None), position


def parse_rfc3164(text: str, pri: int, start: int) -> tuple[str, tuple]:
    """BSD syslog: `<PRI>[Mmm dd hh:mm:ss HOST ][TAG[PID]: ]MSG`, every part but PRI optional."""
    timestamp = hostname = app = procid = None
    position = start
    stamp = _RFC3164_TIMESTAMP.match(text, position)
    if stamp is not None:
        timestamp = stamp[1]
        position = stamp.end()
        # After a timestamp comes the host, unless the next word is already the tag.
        space = text.find(" ", position)
        if space > position and _RFC3164_TAG.fullmatch(text, position, space + 1) is None:
            hostname = text[position:space]
            position = space + 1
    tag = _RFC3164_TAG.match(text, position)
    if tag is not None:
        app, procid = tag[1], tag[2]
        position = tag.end()
    return text[position:], ("rfc3164", pri, timestamp, hostname, app, procid, None, None)
