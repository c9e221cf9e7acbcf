"""Table-driven parsing tests; the inputs are the exact bytes util-linux logger 2.38.1 sent."""

from twisted.trial.unittest import SynchronousTestCase

from suite.logger.syslog import parse

TQ = {"timeQuality": {"tzKnown": "1", "isSynced": "0"}}


def fields(form, facility="user", severity="notice", **given):
    result = dict.fromkeys(("timestamp", "hostname", "app", "procid", "msgid", "structured_data"))
    result.update(format=form, facility=facility, severity=severity, **given)
    return result


CASES = [
    (  # logger --tcp "hello 5424"
        b"<13>1 2026-11-20T23:11:15.935500+00:00 vm root - - "
        b'[timeQuality tzKnown="1" isSynced="0"] hello 5424',
        "hello 5424",
        fields(
            "rfc5424",
            timestamp="2026-11-20T23:11:15.935500+00:00",
            hostname="vm",
            app="root",
            structured_data=TQ,
        ),
    ),
    (  # logger --tcp -p local0.err -t tag "with tag"
        b"<131>1 2026-11-20T23:11:15.941372+00:00 vm tag - - "
        b'[timeQuality tzKnown="1" isSynced="0"] with tag',
        "with tag",
        fields(
            "rfc5424",
            "local0",
            "err",
            timestamp="2026-11-20T23:11:15.941372+00:00",
            hostname="vm",
            app="tag",
            structured_data=TQ,
        ),
    ),
    (  # logger --tcp --msgid ID47 "with msgid"
        b"<13>1 2026-11-20T23:11:15.946603+00:00 vm root - ID47 "
        b'[timeQuality tzKnown="1" isSynced="0"] with msgid',
        "with msgid",
        fields(
            "rfc5424",
            timestamp="2026-11-20T23:11:15.946603+00:00",
            hostname="vm",
            app="root",
            msgid="ID47",
            structured_data=TQ,
        ),
    ),
    (  # logger --sd-id zoo@123 --sd-param tiger="hungry" --sd-param 'esc="a\"b\]c\\d"'
        b'<13>1 2026-11-20T23:11:23.430017+00:00 vm root - - [timeQuality tzKnown="1" '
        b'isSynced="0"][zoo@123 tiger="hungry" esc="a\\"b\\]c\\\\d"] with sd',
        "with sd",
        fields(
            "rfc5424",
            timestamp="2026-11-20T23:11:23.430017+00:00",
            hostname="vm",
            app="root",
            structured_data={**TQ, "zoo@123": {"tiger": "hungry", "esc": 'a"b]c\\d'}},
        ),
    ),
    (  # RFC 5424 example 1: NILVALUE structured data, BOM before the message
        "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - "
        "\ufeff'su root' failed for lonvick on /dev/pts/8".encode(),
        "'su root' failed for lonvick on /dev/pts/8",
        fields(
            "rfc5424",
            "auth",
            "crit",
            timestamp="2003-10-11T22:14:15.003Z",
            hostname="mymachine.example.com",
            app="su",
            msgid="ID47",
        ),
    ),
    (  # every header field NILVALUE, no message
        b"<165>1 - - - - - -",
        "",
        fields("rfc5424", "local4", "notice"),
    ),
    (  # logger --rfc3164 "hello 3164"
        b"<13>Nov 20 23:11:15 vm root: hello 3164",
        "hello 3164",
        fields("rfc3164", timestamp="Nov 20 23:11:15", hostname="vm", app="root"),
    ),
    (  # logger --rfc3164 -i -t app "with pid"
        b"<13>Nov 20 23:11:15 vm app[5078]: with pid",
        "with pid",
        fields("rfc3164", timestamp="Nov 20 23:11:15", hostname="vm", app="app", procid="5078"),
    ),
    (  # logger --octet-count --rfc3164 -p local0.err -t tag "oc 3164" (after framing)
        b"<131>Nov 20 23:11:23 vm tag: oc 3164",
        "oc 3164",
        fields("rfc3164", "local0", "err", timestamp="Nov 20 23:11:23", hostname="vm", app="tag"),
    ),
    (  # BSD style without a host name, single-digit day
        b"<30>Feb  5 01:02:03 cron[77]: job done",
        "job done",
        fields("rfc3164", "daemon", "info", timestamp="Feb  5 01:02:03", app="cron", procid="77"),
    ),
    (  # rsyslog's RSYSLOG_ForwardFormat (omrelp's and omfwd's default): RFC 3339 in a BSD header
        b"<13>2026-12-03T17:42:01.123456+00:00 edge1 app[42]: forwarded",
        "forwarded",
        fields(
            "rfc3164",
            timestamp="2026-12-03T17:42:01.123456+00:00",
            hostname="edge1",
            app="app",
            procid="42",
        ),
    ),
    (  # no timestamp, a tag
        b"<14>myapp: started",
        "started",
        fields("rfc3164", "user", "info", app="myapp"),
    ),
    (  # PRI-only line
        b"<0>kernel panic at the disco",
        "kernel panic at the disco",
        fields("rfc3164", "kern", "emerg"),
    ),
    (  # RFC 5424 header with malformed structured data: kept whole, as BSD
        b"<13>1 2026-11-20T00:00:00Z h a - - [broken hello",
        "1 2026-11-20T00:00:00Z h a - - [broken hello",
        fields("rfc3164"),
    ),
]


class ParseTests(SynchronousTestCase):
    def test_parse(self):
        for raw, message, expected in CASES:
            self.assertEqual(
                parse(raw.decode("utf-8", "backslashreplace")), (message, expected), raw
            )

    def test_not_syslog_is_kept_raw(self):
        for raw in ["plain text from nc", "<192>PRI above 191", "<x>not a pri", "", "<13"]:
            self.assertEqual(parse(raw), (raw, None))
