"""The sleep RPC with a Clock: AMP client and server joined in memory."""

import math

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from suite.contracts.errors import Overloaded
from suite.contracts.sleep import InvalidDuration, Sleep
from suite.sleep.protocol import SleepFactory
from suite.sleep.service import SleepSettings
from tests.helpers import AMPPair as Pair
from tests.helpers import elapse


def sleep(pair, seconds):
    return pair.call(Sleep, seconds=float(seconds))


class SleepTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.factory = SleepFactory(
            SleepSettings(idle_timeout=0, max_pending=3, max_total=5), self.clock
        )
        self.pair = Pair(self.factory)

    def advance(self, seconds):
        self.clock.advance(seconds)
        self.pair.pump()

    def test_answer_comes_after_the_time_never_before(self):
        answers = sleep(self.pair, 2.5)
        self.advance(2.499)
        self.assertEqual(answers, [])
        self.advance(0.001)
        self.assertEqual(answers, [{"slept": 2.5}])

    def test_sleeps_on_one_connection_run_concurrently(self):
        order = []
        for seconds in (3, 1, 2):
            self.pair.client.callRemote(Sleep, seconds=float(seconds)).addCallback(
                lambda answer: order.append(answer["slept"])
            )
        self.pair.pump()
        for _ in range(3):
            self.advance(1)
        self.assertEqual(order, [1, 2, 3])

    def test_invalid_durations(self):
        for seconds in (-1, 60.001, math.nan, math.inf, -math.inf):
            [failure] = sleep(self.pair, seconds)
            failure.trap(InvalidDuration)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_zero_and_max_seconds_are_allowed(self):
        answers = sleep(self.pair, 0)
        self.advance(0)
        self.assertEqual(answers, [{"slept": 0}])
        answers = sleep(self.pair, 60)
        self.advance(60)
        self.assertEqual(answers, [{"slept": 60}])

    def test_max_pending_per_connection(self):
        for _ in range(3):
            sleep(self.pair, 1)
        [failure] = sleep(self.pair, 1)
        failure.trap(Overloaded)
        self.assertIn("max_pending", failure.value.args[0])

    def test_max_total_across_connections(self):
        for _ in range(3):
            sleep(self.pair, 1)
        other = Pair(self.factory)
        for _ in range(2):
            sleep(other, 1)
        [failure] = sleep(other, 1)
        failure.trap(Overloaded)
        self.assertIn("max_total", failure.value.args[0])
        self.advance(1)
        self.assertEqual(self.factory.pending_total, 0)

    def test_disconnect_cancels_every_pending_timer(self):
        for seconds in (1, 2, 3):
            sleep(self.pair, seconds)
        self.assertEqual(len(self.clock.getDelayedCalls()), 3)
        self.pair.server.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.factory.pending_total, 0)

    def test_a_waiting_client_is_not_idle(self):
        pair = Pair(
            SleepFactory(SleepSettings(idle_timeout=10, max_pending=3, max_total=5), self.clock)
        )
        answers = sleep(pair, 50)
        elapse(self.clock, 50)
        pair.pump()
        self.assertEqual(answers, [{"slept": 50}])
        self.assertFalse(pair.server_transport.disconnecting)
        elapse(self.clock, 9.875)
        self.assertFalse(pair.server_transport.disconnecting)
        elapse(self.clock, 1.125)  # idle_timeout after the answer, within a tenth
        self.assertTrue(pair.server_transport.disconnecting)
