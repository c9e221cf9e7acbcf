"""The sleep RPC with a Clock: AMP client and server joined in memory."""

import math

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from suite.commands import InvalidDuration, Overloaded, Sleep
from suite.sleep.protocol import SleepFactory
from tests.helpers import connect


class Pair:
    """An AMP client talking to a SleepProtocol through two StringTransports."""

    def __init__(self, factory):
        self.server, self.server_transport = connect(factory)
        self.client = amp.AMP()
        self.client_transport = StringTransport()
        self.client.makeConnection(self.client_transport)

    def pump(self):
        for _ in range(10):
            to_server = self.client_transport.value()
            to_client = self.server_transport.value()
            if not to_server and not to_client:
                return
            self.client_transport.clear()
            self.server_transport.clear()
            if to_server:
                self.server.dataReceived(to_server)
            if to_client:
                self.client.dataReceived(to_client)

    def call(self, seconds):
        answers = []
        self.client.callRemote(Sleep, seconds=float(seconds)).addBoth(answers.append)
        self.pump()
        return answers


class SleepTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.factory = SleepFactory("sleep", self.clock, 1000, 0, 60, 3, 5)  # no idle timer
        self.pair = Pair(self.factory)

    def advance(self, seconds):
        self.clock.advance(seconds)
        self.pair.pump()

    def test_answer_comes_after_the_time_never_before(self):
        answers = self.pair.call(2.5)
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
            [failure] = self.pair.call(seconds)
            failure.trap(InvalidDuration)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_zero_and_max_seconds_are_allowed(self):
        answers = self.pair.call(0)
        self.advance(0)
        self.assertEqual(answers, [{"slept": 0}])
        answers = self.pair.call(60)
        self.advance(60)
        self.assertEqual(answers, [{"slept": 60}])

    def test_max_pending_per_connection(self):
        for _ in range(3):
            self.pair.call(1)
        [failure] = self.pair.call(1)
        failure.trap(Overloaded)
        self.assertIn("max_pending", failure.value.args[0])

    def test_max_total_across_connections(self):
        for _ in range(3):
            self.pair.call(1)
        other = Pair(self.factory)
        for _ in range(2):
            other.call(1)
        [failure] = other.call(1)
        failure.trap(Overloaded)
        self.assertIn("max_total", failure.value.args[0])
        self.advance(1)
        self.assertEqual(self.factory.pending_total, 0)

    def test_disconnect_cancels_every_pending_timer(self):
        for seconds in (1, 2, 3):
            self.pair.call(seconds)
        self.assertEqual(len(self.clock.getDelayedCalls()), 3)
        self.pair.server.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.factory.pending_total, 0)

    def test_a_waiting_client_is_not_idle(self):
        pair = Pair(SleepFactory("sleep", self.clock, 1000, 10, 60, 3, 5))
        answers = pair.call(50)
        self.clock.advance(50)
        pair.pump()
        self.assertEqual(answers, [{"slept": 50}])
        self.assertFalse(pair.server_transport.disconnecting)
        self.clock.advance(10)
        self.assertTrue(pair.server_transport.disconnecting)
