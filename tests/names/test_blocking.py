"""Blocking queries: held until the index of what they read rises, or their wait is over."""

from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from suite.names.blocking import (
    COMPACT_AT,
    DEFAULT_WAIT,
    MAX_WAIT,
    WHOLE_REGISTRY,
    BadQuery,
    Blocking,
    HeldReads,
    parse_blocking,
)
from suite.names.registry import Instance, Registry


class ParseTests(SynchronousTestCase):
    def test_defaults(self):
        self.assertEqual(parse_blocking(None, None), Blocking(0, DEFAULT_WAIT))
        self.assertEqual(parse_blocking("", ""), Blocking(0, DEFAULT_WAIT))

    def test_values(self):
        self.assertEqual(parse_blocking("42", "2s"), Blocking(42, 2.0))
        self.assertEqual(parse_blocking("7", "120000ms"), Blocking(7, 120.0))
        self.assertEqual(parse_blocking("0", "1m"), Blocking(0, 60.0))
        self.assertEqual(parse_blocking(str(2**64 - 1), None).index, 2**64 - 1)

    def test_wait_is_at_most_ten_minutes_and_none_is_the_default(self):
        self.assertEqual(parse_blocking("1", "1h").wait, MAX_WAIT)
        self.assertEqual(parse_blocking("1", "0s").wait, DEFAULT_WAIT)
        self.assertEqual(parse_blocking("1", "-5s").wait, DEFAULT_WAIT)

    def test_consul_s_refusals(self):
        for wait in ["5", "soon", "5 s"]:
            with self.assertRaisesRegex(BadQuery, "^Invalid wait time$"):
                parse_blocking("1", wait)
        for index in ["-1", "+1", "1.5", "x", str(2**64), "\uff11"]:
            with self.assertRaisesRegex(BadQuery, "^Invalid index$", msg=index):
                parse_blocking(index, None)

    def test_an_index_of_thousands_of_digits_is_refused_before_it_is_read(self):
        """int() refuses more than 4,300 digits with a ValueError of its own: never reached."""
        for index in ["1" * 5000, "1" * 21, "9" * 4301]:
            with self.assertRaisesRegex(BadQuery, "^Invalid index$"):
                parse_blocking(index, None)

    def test_leading_zeros_count_for_nothing_as_go_s(self):
        self.assertEqual(parse_blocking("0" * 5000 + "42", None).index, 42)
        self.assertEqual(parse_blocking("000", None).index, 0)


class HeldReadTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.registry = Registry(100)
        self.held = HeldReads(self.registry, self.clock, max_held=10, jitter=lambda: 1.0)
        self.answered: list[str] = []

    def put(self, name, port=1, index=None, **fields):
        instance = Instance(name, "127.0.0.1", port, **fields)
        self.registry.put(instance, self.registry.index + 1 if index is None else index)
        return instance

    def hold(self, key, index, wait=60.0, label=None):
        label = label or key or "*"
        return self.held.hold(key, Blocking(index, wait), lambda _: self.answered.append(label))

    def test_woken_one_turn_after_the_name_changes(self):
        self.put("web")
        self.assertIsNotNone(self.hold("web", self.registry.name_index("web")))
        self.put("web", port=2)
        self.assertEqual(self.answered, [], "not in the middle of the change")
        self.clock.advance(0)
        self.assertEqual(self.answered, ["web"])
        self.assertEqual(self.held.held, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [], "no timer is left behind")

    def test_other_names_do_not_wake_it_the_whole_registry_s_reads_wake(self):
        self.put("web")
        self.hold("web", self.registry.name_index("web"))
        self.hold(WHOLE_REGISTRY, self.registry.index)
        self.put("db")
        self.clock.advance(0)
        self.assertEqual(self.answered, ["*"])
        self.assertEqual(self.held.held, 1)

    def test_a_change_that_changes_nothing_wakes_nobody(self):
        instance = self.put("web")
        self.hold("web", self.registry.name_index("web"))
        self.registry.put(instance.copy(), self.registry.index + 1)  # the same record again
        self.clock.advance(0)
        self.assertEqual(self.answered, [])

    def test_the_wait_with_its_jitter(self):
        """wait 16 s, jitter at its most: 17 s."""
        self.hold("web", 1, wait=16.0)
        self.clock.advance(16.9)
        self.assertEqual(self.answered, [])
        self.clock.advance(0.1)
        self.assertEqual(self.answered, ["web"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_the_jitter_is_random_up_to_a_sixteenth(self):
        fractions = iter([0.0, 0.5])
        held = HeldReads(self.registry, self.clock, 10, jitter=lambda: next(fractions))
        held.hold("a", Blocking(1, 32.0), lambda _: self.answered.append("a"))
        held.hold("b", Blocking(1, 32.0), lambda _: self.answered.append("b"))
        self.clock.advance(32.0)
        self.assertEqual(self.answered, ["a"])
        self.clock.advance(1.0)
        self.assertEqual(self.answered, ["a", "b"])

    def test_one_timer_for_every_read_the_earliest_first(self):
        self.hold("a", 1, wait=30.0)
        self.hold("b", 1, wait=10.0)
        self.hold("c", 1, wait=20.0)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        for _ in range(40):
            self.clock.advance(1)
        self.assertEqual(self.answered, ["b", "c", "a"])

    def test_a_released_read_is_never_answered(self):
        read = self.hold("web", 1, wait=5.0)
        self.held.release(read)
        self.put("web", index=5)
        self.clock.advance(0)
        self.clock.advance(10)
        self.assertEqual(self.answered, [])
        self.assertEqual(self.held.held, 0)
        self.held.release(read)  # twice: nothing more
        self.assertEqual(self.held.held, 0)

    def test_at_most_max_held(self):
        for number in range(10):
            self.assertIsNotNone(self.hold("web", 1, label=str(number)))
        self.assertIsNone(self.hold("web", 1))
        self.assertEqual(self.held.refused, 1)
        self.put("web", index=2)
        self.clock.advance(0)
        self.assertEqual(len(self.answered), 10)
        self.assertIsNotNone(self.hold("web", 2))

    def test_an_index_ahead_waits_until_it_is_passed(self):
        self.hold("web", 10)
        self.put("web", index=5)
        self.clock.advance(0)
        self.assertEqual(self.answered, [])
        self.put("web", port=2, index=11)
        self.clock.advance(0)
        self.assertEqual(self.answered, ["web"])

    def test_a_burst_of_changes_wakes_each_read_once(self):
        self.hold("web", 1)
        for port in range(1, 6):
            self.put("web", port=port)
        self.clock.advance(0)
        self.assertEqual(self.answered, ["web"])

    def test_a_renamed_instance_is_seen_whole(self):
        """Gone from its old name and under its new one, never half way."""
        self.put("old", id="x")
        seen = []
        self.held.hold(
            WHOLE_REGISTRY,
            Blocking(self.registry.index, 60),
            lambda _: seen.append(self.registry.names()),
        )
        self.registry.put(Instance("new", "127.0.0.1", 1, id="x"), self.registry.index + 1)
        self.clock.advance(0)
        self.assertEqual(seen, [["new"]])

    def test_released_reads_do_not_pile_up(self):
        """Reads of a quiet name that clients give up on leave bounded heaps behind."""
        held = HeldReads(self.registry, self.clock, max_held=10, jitter=lambda: 0.0)
        for _ in range(10 * COMPACT_AT):
            read = held.hold("quiet", Blocking(1, 60), lambda _: None)
            assert read is not None
            held.release(read)
        self.assertLessEqual(len(held._by_key.get("quiet", [])), 2 * COMPACT_AT + 2)
        self.assertLessEqual(len(held._deadlines), 2 * COMPACT_AT + 2)
        self.assertEqual(held.held, 0)

    def test_expired_reads_of_a_quiet_name_do_not_pile_up(self):
        held = HeldReads(self.registry, self.clock, max_held=10, jitter=lambda: 0.0)
        for _ in range(10 * COMPACT_AT):
            held.hold("quiet", Blocking(1000, 1), lambda _: None)
            self.clock.advance(1)
        self.assertLessEqual(len(held._by_key.get("quiet", [])), 2 * COMPACT_AT + 2)
        self.assertEqual(held._deadlines, [])


class SharedRenderTests(SynchronousTestCase):
    """Reads answered together render each distinct query once."""

    def setUp(self):
        self.clock = Clock()
        self.registry = Registry(100)
        self.held = HeldReads(self.registry, self.clock, max_held=100, jitter=lambda: 0.0)
        self.renders: list[str] = []
        self.answered: list[tuple[str, str]] = []

    def hold(self, key, query, label, wait=60.0):
        def render():
            self.renders.append(query)
            return f"{query}@{self.registry.name_index(key)}"

        def answer(renders):
            self.answered.append((label, renders.once(query, render)))

        return self.held.hold(key, Blocking(self.registry.name_index(key), wait), answer)

    def test_one_render_per_query_per_wake(self):
        for number in range(50):
            self.hold("web", "all", f"all-{number}")
        self.hold("web", "tagged", "tagged")
        self.registry.put(Instance("web", "127.0.0.1", 1), 2)
        self.clock.advance(0)
        self.assertEqual(sorted(self.renders), ["all", "tagged"])
        self.assertEqual(len(self.answered), 51)
        self.assertEqual({answer for _, answer in self.answered}, {"all@2", "tagged@2"})

    def test_each_wake_renders_anew(self):
        self.hold("web", "all", "first")
        self.registry.put(Instance("web", "127.0.0.1", 1), 2)
        self.clock.advance(0)
        self.hold("web", "all", "second")
        self.registry.put(Instance("web", "127.0.0.1", 2), 3)
        self.clock.advance(0)
        self.assertEqual(self.renders, ["all", "all"])
        self.assertEqual(self.answered, [("first", "all@2"), ("second", "all@3")])

    def test_reads_whose_waits_end_together_share_too(self):
        for number in range(3):
            self.hold("quiet", "all", str(number), wait=5.0)
        self.clock.advance(5.0)
        self.assertEqual(self.renders, ["all"])
        self.assertEqual(len(self.answered), 3)


class FailingAnswerTests(SynchronousTestCase):
    def test_one_failing_answer_is_one_line_and_the_others_are_answered(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        clock, registry = Clock(), Registry(100)
        held = HeldReads(registry, clock, max_held=10, jitter=lambda: 0.0)
        answered = []

        def broken(renders):
            raise RuntimeError("a bug")

        for _ in range(5):
            held.hold("web", Blocking(1, 60), broken)
        held.hold("web", Blocking(1, 60), lambda _: answered.append("fine"))
        registry.put(Instance("web", "127.0.0.1", 1), 2)
        clock.advance(0)
        self.assertEqual((answered, held.held), (["fine"], 0))
        lines = [e for e in events if e.get("flood_kind") == "failed held reads"]
        self.assertEqual(len(lines), 1)
        self.assertIn("RuntimeError: a bug", formatEvent(lines[0]))
        self.assertFalse([e for e in events if "log_failure" in e], "no traceback")
        clock.advance(10)
        (summary,) = [e for e in events if e.get("flood_count")]
        self.assertEqual(summary["flood_count"], 4)
