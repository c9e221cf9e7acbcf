"""
The heard table (suite/names/heard_table.py): what each watched (host
form, app) was last heard, in Python (HeardDicts) and compiled
(suite/names/_heard_table.c).  Every contract test runs on both; the
compiled one is held to the Python one by random operations, and by the
hashes the collector's compiled parser makes of hostile messages.  The
compiled tests skip only where the extensions were not built.
"""

import os

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from suite.foundation.heard import IDENTITY_SEED
from suite.logger import records
from suite.logger.compiled import load_speedups
from suite.logger.delivery import Needs, Preparation
from suite.logger.records import RecordSink
from suite.names.heard_table import HeardDicts, load_heard_table
from tests.logger.test_records import raw_messages

COMPILED = load_heard_table({})
SPEEDUPS = load_speedups({})
EXAMPLES = int(os.environ.get("SUITE_FUZZ_EXAMPLES", "300"))


def message(app="web", hostname="web1.example", priority=14):
    return (priority, hostname, app)


class TableContract:
    """What both tables do; `new()` makes the one under test."""

    def new(self):
        raise NotImplementedError

    def setUp(self):
        self.table = self.new()

    def test_a_watched_app_is_heard_by_its_hostname_whatever_its_case(self):
        self.table.add("web1.example", "web")
        self.assertIsNone(self.table.last("web1.example", "web"))
        self.table.heard([message(hostname="WEB1.Example")], "10.0.0.9", 5.0)
        self.assertEqual(self.table.last("web1.example", "web"), 5.0)
        self.table.heard([message(app="Web"), message(app=None), None], "10.0.0.9", 6.0)
        self.assertEqual(self.table.last("web1.example", "web"), 5.0)  # apps: exactly

    def test_non_ascii_hostnames_are_matched_by_their_lower_case(self):
        self.table.add("café.example", "web")
        self.table.heard([message(hostname="CAFÉ.example")], "", 3.0)
        self.assertEqual(self.table.last("café.example", "web"), 3.0)

    def test_text_that_is_not_utf_8_is_heard_as_any_other(self):
        self.table.add("h\udcff", "a\udcfe")  # what surrogateescape makes of stray bytes
        self.table.heard([message(hostname="H\udcff", app="a\udcfe")], "", 4.0)
        self.assertEqual(self.table.last("h\udcff", "a\udcfe"), 4.0)

    def test_the_sender_s_address_is_heard_when_it_is_a_watched_host(self):
        self.table.add("10.0.0.7", "web")
        self.table.heard([message(hostname=None)], "10.0.0.8", 1.0)
        self.assertIsNone(self.table.last("10.0.0.7", "web"))
        self.table.heard([message(hostname="elsewhere")], "10.0.0.7", 2.0)
        self.assertEqual(self.table.last("10.0.0.7", "web"), 2.0)

    def test_only_waiting_entries_are_returned_each_as_host_form_and_app(self):
        self.table.add("h", "a")
        self.table.add("h", "b")
        self.table.add("10.0.0.1", "a")
        self.assertEqual(self.table.heard([message("a", "h")], "10.0.0.1", 1.0), [])
        self.table.wait("h", "a", True)
        self.table.wait("10.0.0.1", "a", True)
        self.table.wait("nobody", "a", True)  # not watched: nothing
        woken = self.table.heard([message("a", "H"), message("b", "h")], "10.0.0.1", 2.0)
        self.assertEqual(sorted(set(woken)), [("10.0.0.1", "a"), ("h", "a")])
        self.table.wait("h", "a", False)
        self.table.remove("10.0.0.1", "a")
        self.assertEqual(self.table.heard([message("a", "h")], "10.0.0.1", 3.0), [])

    def test_a_report_keeps_the_latest_and_says_whether_it_was_watched(self):
        self.table.add("h", "a")
        self.assertTrue(self.table.report("h", "a", 10.0))
        self.assertTrue(self.table.report("h", "a", 4.0))
        self.assertEqual(self.table.last("h", "a"), 10.0)
        self.assertFalse(self.table.report("h", "other", 10.0))
        self.assertIsNone(self.table.last("h", "other"))

    def test_added_again_it_is_not_heard_yet_and_removed_it_is_gone(self):
        self.table.add("h", "a")
        self.table.heard([message("a", "h")], "", 1.0)
        self.table.add("h", "a")
        self.assertIsNone(self.table.last("h", "a"))
        self.assertEqual(len(self.table), 1)
        self.table.remove("h", "a")
        self.table.remove("h", "a")  # twice: nothing
        self.assertEqual((len(self.table), self.table.keys()), (0, []))
        self.assertFalse(self.table)

    def test_heard_again_after_days_or_exactly_when_ticks_wrap(self):
        self.table.add("h", "a")
        self.table.heard([message("a", "h")], "", 10.0)
        wrap = (2**24 - 1) / 16  # the compiled table's ticks wrap: the same tick again
        for later in (10.0 + wrap, 10.0 + 2 * wrap):
            self.table.heard([message("a", "h")], "", later)
            self.assertEqual(self.table.last("h", "a"), later)

    def test_twenty_thousand_added_heard_and_half_removed(self):
        for n in range(20_000):
            self.table.add(f"h{n % 7}", f"app-{n}")
        self.table.heard([message(f"app-{n}", f"H{n % 7}") for n in range(20_000)], "", 1.0)
        for n in range(0, 20_000, 2):
            self.table.remove(f"h{n % 7}", f"app-{n}")
        self.table.heard([message(f"app-{n}", f"h{n % 7}") for n in range(20_000)], "", 2.0)
        self.assertEqual(len(self.table), 10_000)
        self.assertEqual(
            {self.table.last(f"h{n % 7}", f"app-{n}") for n in range(1, 20_000, 2)}, {2.0}
        )
        self.assertEqual(sorted(self.table.keys())[:2], [("h0", "app-10003"), ("h0", "app-1001")])
        self.table.clear()
        self.assertEqual((len(self.table), self.table.keys()), (0, []))


class HeardDictsTests(TableContract, SynchronousTestCase):
    def new(self):
        return HeardDicts()


class CompiledTableTests(TableContract, SynchronousTestCase):
    def new(self):
        if COMPILED is None:
            raise SkipTest("suite/names/_heard_table.c was not built: no compiler at install")
        return COMPILED.HeardTable(IDENTITY_SEED)

    def test_last_heard_is_kept_to_a_sixteenth_of_a_second(self):
        self.table.add("h", "a")
        self.table.heard([message("a", "h")], "", 100.0)
        self.table.heard([message("a", "h")], "", 100.05)  # the same sixteenth: not written
        self.assertEqual(self.table.last("h", "a"), 100.0)
        self.table.heard([message("a", "h")], "", 100.07)
        self.assertEqual(self.table.last("h", "a"), 100.07)

    def test_hashes_that_do_not_fit_the_messages_are_refused(self):
        self.table.add("h", "a")
        with self.assertRaises(ValueError):
            self.table.heard([message("a", "h")], "", 1.0, b"\0" * 15)


HOSTS = ["h", "H", "web1.example", "10.0.0.1", "::ffff:10.0.0.1", "café", "CAFÉ"]
APPS = ["a", "b", "web", "App"]
operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from(HOSTS), st.sampled_from(APPS)),
        st.tuples(st.just("remove"), st.sampled_from(HOSTS), st.sampled_from(APPS)),
        st.tuples(st.just("wait"), st.sampled_from(HOSTS), st.sampled_from(APPS), st.booleans()),
        st.tuples(
            st.just("report"), st.sampled_from(HOSTS), st.sampled_from(APPS), st.integers(0, 9)
        ),
        st.tuples(
            st.just("heard"),
            st.lists(
                st.none()
                | st.tuples(
                    st.just(13),
                    st.none() | st.sampled_from(HOSTS),
                    st.none() | st.sampled_from(APPS),
                ),
                max_size=6,
            ),
            st.sampled_from(["", "10.0.0.1", "::ffff:10.0.0.1", "10.0.0.2"]),
        ),
    ),
    max_size=40,
)


class CompiledAsPython(SynchronousTestCase):
    """The compiled table answers as the Python one does, whatever is done to both."""

    def setUp(self):
        if COMPILED is None:
            raise SkipTest("suite/names/_heard_table.c was not built: no compiler at install")

    @settings(max_examples=EXAMPLES, deadline=None)
    @given(operations)
    def test_random_operations(self, steps):
        # Host forms as the name server adds them: lower case (watched_host's).
        python, compiled = HeardDicts(), COMPILED.HeardTable(IDENTITY_SEED)
        for now, step in enumerate(steps):
            kind, *args = step
            if kind in ("add", "remove", "wait", "report"):
                args[0] = args[0].lower()
            if kind == "heard":
                args.append(float(now))
            answers = [getattr(table, kind)(*args) for table in (python, compiled)]
            if kind == "heard":
                answers = [sorted(set(woken)) for woken in answers]
            self.assertEqual(answers[0], answers[1], step)
        for table in (python, compiled):
            self.assertEqual(len(table), len(python.keys()))
        self.assertEqual(sorted(python.keys()), sorted(compiled.keys()))
        for host, app in python.keys():
            self.assertEqual(python.last(host, app), compiled.last(host, app))


# Plain RFC 5424 messages (the compiled parser's own case) with hostnames of either case.
_word = st.text(alphabet="aAzZqQ09.-_-é\u0130", min_size=1, max_size=12)
plain_messages = st.builds(
    lambda host, app: b"<13>1 - %s %s - - - m" % (host.encode(), app.encode()), _word, _word
)


class ParsersHashes(SynchronousTestCase):
    """The hashes the collector's compiled parser makes find what the strings would."""

    def setUp(self):
        if COMPILED is None or SPEEDUPS is None:
            raise SkipTest("the compiled extensions were not built: no compiler at install")
        self.patch(records, "speedups", SPEEDUPS)  # even under SUITE_PURE_PYTHON=1

    @settings(max_examples=EXAMPLES, deadline=None)
    @given(
        st.lists(st.tuples(raw_messages | plain_messages, st.booleans()), min_size=1, max_size=6)
    )
    def test_hostile_messages(self, frames):
        clock = Clock()
        preparation = Preparation(RecordSink(None, clock), Needs(fields=True, hashes=True))  # type: ignore[arg-type]
        _, routing, hashes = preparation.lines(frames, "10.0.0.1:514", "tcp")
        self.assertIsNotNone(hashes)
        assert routing is not None
        watched = {(f[1].lower(), f[2]) for f in routing if f and f[1] and f[2]}
        watched |= {("10.0.0.1", f[2]) for f in routing if f and f[2]}
        watched |= {("other", "app")}
        python, by_hash, by_text = (
            HeardDicts(),
            COMPILED.HeardTable(IDENTITY_SEED),
            COMPILED.HeardTable(IDENTITY_SEED),
        )
        for table in (python, by_hash, by_text):
            for host, app in watched:
                table.add(host, app)
                table.wait(host, app, True)
        answers = [
            python.heard(routing, "10.0.0.1", 1.0),
            by_hash.heard(routing, "10.0.0.1", 1.0, hashes),
            by_text.heard(routing, "10.0.0.1", 1.0),
        ]
        self.assertEqual(sorted(set(answers[0])), sorted(set(answers[1])))
        self.assertEqual(sorted(set(answers[0])), sorted(set(answers[2])))
        for host, app in watched:
            self.assertEqual(
                {table.last(host, app) for table in (python, by_hash, by_text)},
                {None if (host, app) == ("other", "app") else 1.0},
            )

    def test_asked_for_alone_the_hashes_come_without_fields(self):
        frames = [(b"<13>1 - h a - - - x", False), (b"<13>Dec  4 10:00:00 H cron: x", False)]
        preparation = Preparation(RecordSink(None, Clock()), Needs(hashes=True))  # type: ignore[arg-type]
        _, routing, hashes = preparation.lines(frames, "", "tcp")
        self.assertIsNone(routing)
        table = COMPILED.HeardTable(IDENTITY_SEED)
        table.add("h", "a")
        table.add("h", "cron")
        table.heard(None, "", 1.0, hashes)
        self.assertEqual((table.last("h", "a"), table.last("h", "cron")), (1.0, 1.0))

    def test_without_the_speedups_the_fields_come_instead(self):
        self.patch(records, "speedups", None)
        for needs in (Needs(fields=True, hashes=True), Needs(hashes=True)):
            preparation = Preparation(RecordSink(None, Clock()), needs)  # type: ignore[arg-type]
            _, routing, hashes = preparation.lines([(b"<13>1 - h a - - - x", False)], "", "tcp")
            self.assertEqual((routing, hashes), ([(13, "h", "a")], None))

    def test_plain_fallback_and_empty_fields(self):
        frames = [
            (b"<13>1 2026-12-04T10:00:00Z WEB1.Example web 1 - - plain", False),
            (b'<13>1 2026-12-04T10:00:00Z WEB1.Example db 1 - [sd x="y"] structured', False),
            (b"<13>Dec  4 10:00:00 MAIL.example cron[7]: rfc 3164", False),
            (b"<13>1 2026-12-04T10:00:00Z - web 1 - - no hostname", False),
            (b"<13>1 2026-12-04T10:00:00Z h2 - 1 - - no app", False),
            (b"<13>1 2026-12-04T10:00:00Z caf\xc3\x89 web 1 - - non-ASCII host", False),
            (b"not syslog", False),
        ]
        preparation = Preparation(RecordSink(None, Clock()), Needs(fields=True, hashes=True))  # type: ignore[arg-type]
        _, routing, hashes = preparation.lines(frames, "10.0.0.1:514", "tcp")
        watched = [
            ("web1.example", "web"),
            ("web1.example", "db"),
            ("mail.example", "cron"),
            ("café", "web"),
            ("10.0.0.1", "web"),
            ("h2", "app"),
        ]
        table = COMPILED.HeardTable(IDENTITY_SEED)
        for host, app in watched:
            table.add(host, app)
        table.heard(routing, "10.0.0.1", 1.0, hashes)
        self.assertEqual(
            [table.last(host, app) for host, app in watched], [1.0, 1.0, 1.0, 1.0, 1.0, None]
        )
