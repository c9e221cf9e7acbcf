"""Workers sharing a listening socket take turns by their open connections."""

import socket

from twisted.internet import protocol, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from suite.net.accept_share import ABSENT, PAUSE, AcceptShare
from suite.net.twisted_internals import Decision, guard
from suite.net.twisted_internals.streams import FastStreamPorts


class AcceptShareTests(SynchronousTestCase):
    def setUp(self):
        self.parent = AcceptShare.create(3)
        self.addCleanup(self.parent.close)

    def worker(self, slot):
        share = AcceptShare(self.parent.fd, 3, slot)
        self.addCleanup(share.close)
        return share

    def test_slots_start_absent_and_a_worker_marks_its_own(self):
        self.assertEqual(self.parent.counts(), [ABSENT] * 3)
        self.worker(1)
        self.assertEqual(self.parent.counts(), [ABSENT, 0, ABSENT])

    def test_a_worker_two_ahead_of_the_least_loaded_waits(self):
        first, second = self.worker(0), self.worker(1)
        first.opened()
        self.assertFalse(first.ahead())  # one ahead is within the slack
        first.opened()
        self.assertTrue(first.ahead())
        self.assertFalse(second.ahead())
        second.opened()
        self.assertFalse(first.ahead())

    def test_closed_connections_count_down(self):
        first, _ = self.worker(0), self.worker(1)
        for _ in range(3):
            first.opened()
        first.closed()
        self.assertEqual(self.parent.counts()[0], 2)
        self.assertTrue(first.ahead())
        first.closed()
        self.assertFalse(first.ahead())

    def test_a_slot_whose_worker_ended_is_not_waited_for(self):
        first, _ = self.worker(0), self.worker(1)
        for _ in range(5):
            first.opened()
        self.assertTrue(first.ahead())
        self.parent.mark(1, ABSENT)
        self.assertFalse(first.ahead())


class Kept(protocol.Protocol):
    pass


class TakingTurnsTests(TestCase):
    """A fast-path port on a shared socket, ahead of the other worker: it lets one wait."""

    def setUp(self):
        self.patch(guard, "_decided", Decision(True))
        self.parent = AcceptShare.create(2)
        self.addCleanup(self.parent.close)
        self.share = AcceptShare(self.parent.fd, 2, 0)
        self.other = AcceptShare(self.parent.fd, 2, 1)
        self.listening = socket.create_server(("127.0.0.1", 0))
        self.listening.setblocking(False)
        self.addCleanup(self.listening.close)
        self.port = FastStreamPorts(reactor).adoptStreamPort(
            self.listening.fileno(),
            socket.AF_INET,
            protocol.Factory.forProtocol(Kept),
            shared=True,
            share=self.share,
        )
        self.addCleanup(self.port.stopListening)
        self.clients: list[socket.socket] = []

    def connect(self):
        client = socket.create_connection(self.listening.getsockname(), timeout=5)
        self.clients.append(client)
        self.addCleanup(client.close)

    async def until(self, predicate, seconds=5.0):
        for _ in range(int(seconds / 0.01)):
            if predicate():
                return True
            await deferLater(reactor, 0.01)
        return predicate()

    async def test_accepted_connections_are_counted_and_closed_ones_uncounted(self):
        self.connect()
        self.assertTrue(await self.until(lambda: self.share.open == 1))
        self.assertEqual(self.parent.counts(), [1, 0])
        self.clients[0].close()
        self.assertTrue(await self.until(lambda: self.share.open == 0))

    async def test_ahead_it_waits_a_pause_then_takes_one_anyway(self):
        for _ in range(2):
            self.connect()
        self.assertTrue(await self.until(lambda: self.share.open == 2))
        self.connect()  # two ahead of the other worker, which takes nothing (it is stopped)
        await deferLater(reactor, PAUSE / 4)
        self.assertEqual(self.share.open, 2)
        self.assertTrue(await self.until(lambda: self.share.open == 3))
