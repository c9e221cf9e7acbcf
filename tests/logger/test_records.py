"""
Message records written by formatting: the same text json.dumps gives for
the record, with the characters a terminal or an editor would obey escaped.
"""

import base64
import json

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.logger.records import RecordSink, utc_stamp
from suite.logger.syslog import parse

pri = st.integers(0, 999).map(lambda p: f"<{p}>")
word = st.just("-") | st.text(
    st.characters(blacklist_categories=("Zs", "Zl", "Zp", "Cc")), min_size=1, max_size=6
)
structured = st.sampled_from(
    ["-", "- ", "-x ", '[id a="b"] ', '[x@1 k="v\\"q" n="\\]"][y@2] ', "[bad ", ""]
)
message = st.text(max_size=30) | st.sampled_from(
    ["\ufeffBOM", "tab\there", 'quote " \\ \x00', "del\x7f csi\x9b bidi\u202e\u2067 nel\x85"]
)
rfc5424 = st.builds(
    lambda p, version, words, sd, text: f"{p}{version} {' '.join(words)} {sd}{text}",
    pri,
    st.sampled_from(["1", "0", "12"]),
    st.lists(word, min_size=5, max_size=5),
    structured,
    message,
)
rfc3164 = st.builds(
    lambda p, head, text: p + head + text,
    pri,
    st.sampled_from(
        [
            "Nov 21 12:00:00 host app[1]: ",
            "Nov  1 12:00:00 app: ",
            "app[9]: ",
            "Nov 21 12:00:00 host ",
            "",
        ]
    ),
    message,
)
raw_messages = (rfc5424 | rfc3164 | message).map(
    lambda text: text.encode("utf-8", "surrogatepass")
) | st.binary(max_size=40)


# Escaped although JSON allows them raw: DEL, C1, bidi controls, line and paragraph separators.
HOSTILE = [
    0x7F,
    *range(0x80, 0xA0),
    0x61C,
    0x200E,
    0x200F,
    0x2028,
    0x2029,
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
]
ESCAPED = {code: f"\\u{code:04x}" for code in HOSTILE}


class Lines:
    full = False

    def __init__(self):
        self.written = []

    def write_lines(self, lines, records=None):
        self.written += lines


def expected_record(raw, truncated, peer, transport, client, moment):
    try:
        text, utf8 = raw.decode("utf-8"), True
    except UnicodeDecodeError:
        text, utf8 = raw.decode("utf-8", "backslashreplace"), False
    text_message, fields = parse(text)
    record = {
        "received": utc_stamp(moment),
        "event": "message",
        "peer": peer,
        "transport": transport,
        "message": text_message,
    }
    if not utf8:
        record["message_base64"] = base64.b64encode(raw).decode()
    if client is not None:
        record["client"] = client
    if fields is not None:
        record["syslog"] = fields
    if truncated:
        record["truncated"] = True
    return record


class FormattedRecordTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(st.tuples(raw_messages, st.booleans()), min_size=1, max_size=4),
        st.sampled_from(["127.0.0.1:514", "[::1]:6514", 'odd "peer"']),
        st.sampled_from(["tcp", "tls", "udp"]),
        st.none() | st.sampled_from(["CN=client", 'CN=a "quoted", O=\u00e9']),
    )
    def test_byte_for_byte_json_dumps_of_the_record(self, frames, peer, transport, client):
        clock, lines = Clock(), Lines()
        clock.advance(1763726400.5)
        RecordSink(lines, clock).messages(frames, peer, transport, client)
        written = b"".join(lines.written).decode("utf-8", "surrogatepass").split("\n")[:-1]
        expected = [
            json.dumps(
                expected_record(raw, truncated, peer, transport, client, clock.seconds()),
                ensure_ascii=False,
            ).translate(ESCAPED)
            for raw, truncated in frames
        ]
        self.assertEqual(written, expected)


class HostileTextTests(SynchronousTestCase):
    """Controls, DEL, C1 and bidi overrides a client sends never reach the file raw."""

    def test_a_hostile_message_and_client_are_escaped_in_the_json(self):
        hostile = "".join(map(chr, HOSTILE)) + "\x1b[2J\n\r\x00 caf\u00e9 \u65e5\u672c"
        lines = Lines()
        sink = RecordSink(lines, Clock())
        sink.messages(
            [(("<13>" + hostile).encode(), False)],
            "127.0.0.1:514",
            "tcp",
            client="CN=\u202egnp.exe",
        )
        sink.event("error", "127.0.0.1:514", "tls", hostile, client="CN=\u202egnp.exe")
        for line in b"".join(lines.written).decode().splitlines():
            self.assertFalse(set(map(ord, line)) & (set(HOSTILE) | set(range(0x20))), line)
            # The rest stays readable.
            self.assertIn("\\u001b[2J\\n\\r\\u0000 caf\u00e9 \u65e5\u672c", line)
            self.assertIn("\\u202e", line)
            record = json.loads(line)
            self.assertEqual((record["message"], record["client"]), (hostile, "CN=\u202egnp.exe"))
