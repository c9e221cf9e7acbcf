"""Log flood control: the first warning per source, then one summary per kind every 10 s."""

from twisted.internet.task import Clock
from twisted.logger import LogLevel
from twisted.trial.unittest import SynchronousTestCase

from suite.foundation.flood import FloodControl, LineBudget
from tests.helpers import captured_events, captured_log


class FloodControlTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.lines = captured_log(self)
        self.flood = FloodControl(self.clock, "echo", max_sources=3)

    def refuse(self, source, times=1):
        for _ in range(times):
            self.flood.warn("refused connections", source, "refused {peer}", peer=source)

    def test_first_time_per_source_then_one_summary_per_interval(self):
        self.refuse("127.0.0.2", 18000)
        self.refuse("127.0.0.3")
        self.assertEqual(self.lines, ["refused 127.0.0.2", "refused 127.0.0.3"])
        self.clock.advance(9.9)
        self.assertEqual(len(self.lines), 2)
        self.clock.advance(0.1)
        self.assertEqual(self.lines[2:], ["echo: 17999 more refused connections in the last 10 s"])
        self.refuse("127.0.0.2", 5)
        self.clock.advance(10)
        self.assertEqual(self.lines[3:], ["echo: 5 more refused connections in the last 10 s"])
        self.clock.advance(100)
        self.assertEqual(len(self.lines), 4)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_kinds_are_counted_apart(self):
        self.refuse("127.0.0.2", 2)
        self.flood.warn("protocol errors", "127.0.0.2", "bad line from {peer}", peer="127.0.0.2")
        self.flood.warn("protocol errors", "127.0.0.2", "bad line from {peer}", peer="127.0.0.2")
        self.clock.advance(10)
        self.assertEqual(
            sorted(self.lines[2:]),
            [
                "echo: 1 more protocol errors in the last 10 s",
                "echo: 1 more refused connections in the last 10 s",
            ],
        )

    def test_sources_remembered_are_bounded(self):
        for n in range(1000):
            self.refuse(f"10.0.{n // 256}.{n % 256}")
        self.assertEqual(len(self.lines), 3)
        self.clock.advance(10)
        self.assertEqual(self.lines[3], "echo: 997 more refused connections in the last 10 s")

    def test_flush_logs_the_pending_summary_and_leaves_no_timer(self):
        self.refuse("127.0.0.2", 3)
        self.flood.flush()
        self.assertEqual(self.lines[1], "echo: 2 more refused connections in the last 10 s")
        self.assertEqual(self.clock.getDelayedCalls(), [])


class LineBudgetTests(SynchronousTestCase):
    """Every event in full up to the budget of an interval, the rest counted in one line."""

    def setUp(self):
        self.clock = Clock()
        self.events = captured_events(self)
        self.budget = LineBudget(self.clock, "names", "status changes", lines=3, interval=10)

    def lines(self):
        return [e for e in self.events if e.get("flood_kind") == "status changes"]

    def test_a_source_repeating_itself_is_logged_each_time(self):
        for number in range(3):
            self.budget.emit(LogLevel.info, "change {n}", n=number)
        self.assertEqual([e["n"] for e in self.lines()], [0, 1, 2])
        self.assertEqual(self.clock.getDelayedCalls(), [])  # nothing to summarise: no timer

    def test_beyond_the_budget_events_are_counted_and_summarised_when_the_interval_ends(self):
        for number in range(10):
            self.budget.emit(LogLevel.info, "change {n}", n=number)
        self.assertEqual(len(self.lines()), 3)
        self.clock.advance(10)
        self.assertEqual(self.lines()[-1]["flood_count"], 7)
        self.budget.emit(LogLevel.info, "change {n}", n=10)  # a new interval: in full again
        self.assertEqual(self.lines()[-1]["n"], 10)

    def test_flush_logs_the_summary_at_once(self):
        for number in range(5):
            self.budget.emit(LogLevel.info, "change {n}", n=number)
        self.budget.flush()
        self.assertEqual(self.lines()[-1]["flood_count"], 2)
        self.assertEqual(self.clock.getDelayedCalls(), [])
