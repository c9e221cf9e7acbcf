"""
The door to Twisted's internals: the guard's decision (fast path on the
installed Twisted; the stock path when an internal is missing, a self-test
fails, or SUITE_STOCK_TWISTED=1 asks, with one warning naming the Twisted
version), and the stock path itself on real sockets: Twisted's own ports
with counting transports, slower and never wrong.
"""

import os
import shutil
import socket
import tempfile

from twisted import __version__ as twisted_version
from twisted.internet import abstract, protocol, reactor, tcp, udp
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python import log as legacy_log
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import alsoProvides
from zope.interface.verify import verifyObject

from suite.echo.service import EchoSettings
from suite.foundation.interfaces import IBatchedDatagramProtocol, IHealthSource, IMetricSource
from suite.foundation.metrics import Counts
from suite.net.datagrams import rate_limited_replier
from suite.net.listeners import Listener, ListenerService, SuiteStreamPorts
from suite.net.transport import CountedServer, CountedUNIXServer
from suite.net.twisted_internals import (
    STOCK_ENV,
    Decision,
    close_shared,
    dispatch,
    fast_path,
    guard,
)
from suite.net.twisted_internals.datagrams import BatchedDatagramPort
from suite.net.twisted_internals.streams import WriteThroughServer
from suite.net.udpport import listen_datagram, reply_path
from tests.net.test_transport import RefusalFactory, _readable, until


def stock_path(test: TestCase) -> None:
    """Run TEST on the stock path, as a failed check would make it."""
    test.patch(guard, "_decided", Decision(False, "the test asked for the stock path"))


def warnings_logged(test: SynchronousTestCase) -> list[str]:
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    test.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


class GuardTests(SynchronousTestCase):
    def test_the_fast_path_on_the_installed_twisted(self):
        self.assertEqual(guard.decide({}), Decision(True))

    def test_a_missing_attribute_means_the_stock_path(self):
        build = tcp.Port.__dict__["_buildAddr"]
        del tcp.Port._buildAddr
        self.addCleanup(setattr, tcp.Port, "_buildAddr", build)
        decision = guard.decide({})
        self.assertFalse(decision.fast)
        self.assertEqual(
            decision.reason,
            "the attribute check failed (twisted.internet.tcp.Port._buildAddr is missing)",
        )

    def test_a_failed_self_test_means_the_stock_path(self):
        """Twisted's buffer no longer drained by doWrite: a write-through write would overtake."""
        self.patch(abstract.FileDescriptor, "doWrite", lambda transport: None)
        decision = guard.decide({})
        self.assertFalse(decision.fast)
        self.assertEqual(
            decision.reason,
            "the write-through self-test failed "
            "(what Twisted had buffered did not leave in order)",
        )

    def test_a_self_test_that_raises_means_the_stock_path(self):
        def broken(*arguments):
            raise OSError("no loopback")

        self.patch(udp.Port, "__init__", broken)
        decision = guard.decide({})
        self.assertEqual(
            decision,
            Decision(
                False, "the batched UDP read's self-test failed (raised OSError: no loopback)"
            ),
        )

    def test_the_environment_asks_for_the_stock_path(self):
        self.assertEqual(
            guard.decide({STOCK_ENV: "1"}),
            Decision(False, "SUITE_STOCK_TWISTED=1 asked for the stock path"),
        )
        self.assertTrue(guard.decide({STOCK_ENV: "0"}).fast)

    def test_one_warning_naming_the_twisted_version_once_per_process(self):
        events = warnings_logged(self)
        self.patch(guard, "_decided", None)
        self.patch(guard.os, "environ", {STOCK_ENV: "1"})
        self.assertFalse(fast_path().fast)
        self.assertFalse(fast_path().fast)
        lines = [formatEvent(e) for e in events if e.get("log_namespace") == guard.log.namespace]
        self.assertEqual(
            lines,
            [
                f"Twisted {twisted_version}: suite.net.twisted_internals: "
                "SUITE_STOCK_TWISTED=1 asked for the stock path; using Twisted's stock "
                "transports and ports (slower, never wrong)"
            ],
        )
        self.assertEqual(events[-1]["log_level"].name, "warn")

    def test_a_failed_check_is_named_in_the_warning(self):
        events = warnings_logged(self)
        self.patch(guard, "_decided", None)
        self.patch(guard.os, "environ", {})
        self.patch(abstract.FileDescriptor, "doWrite", lambda transport: None)
        self.assertFalse(fast_path().fast)
        (line,) = [formatEvent(e) for e in events if e.get("log_namespace") == guard.log.namespace]
        self.assertEqual(
            line,
            f"Twisted {twisted_version}: suite.net.twisted_internals: "
            "the write-through self-test failed (what Twisted had buffered "
            "did not leave in order); using Twisted's stock transports and "
            "ports (slower, never wrong)",
        )

    def test_no_warning_on_the_fast_path(self):
        events = warnings_logged(self)
        self.patch(guard, "_decided", None)
        self.patch(guard.os, "environ", {})
        self.assertTrue(fast_path().fast)
        self.assertEqual([e for e in events if e.get("log_namespace") == guard.log.namespace], [])


class ProviderTests(SynchronousTestCase):
    def test_listener_service(self):
        listener_service = ListenerService("echo", Listener("tcp:0"), lambda: None)
        self.assertTrue(verifyObject(IMetricSource, listener_service))
        self.assertTrue(verifyObject(IHealthSource, listener_service))

    def test_rate_limited_replier(self):
        replier = rate_limited_replier(EchoSettings(), bytes, Clock())()
        self.assertTrue(verifyObject(IBatchedDatagramProtocol, replier))
        self.assertTrue(verifyObject(IMetricSource, replier))


class Sent:
    def __init__(self):
        self.sent = []

    def write(self, data, address):
        self.sent.append((data, address))


class ReplierBatchTests(SynchronousTestCase):
    def test_a_batch_is_answered_datagram_by_datagram_a_failure_logged_not_fatal(self):
        events = warnings_logged(self)

        def answer(data):
            if data == b"bad":
                raise ValueError("bad datagram")
            return data

        replier = rate_limited_replier(EchoSettings(), answer, Clock())()
        replier.transport = Sent()
        replier.startProtocol()
        source = ("192.0.2.7", 4000)
        replier.datagramsReceived([(b"one", source), (b"bad", source), (b"two", source)])
        self.assertEqual(replier.transport.sent, [(b"one", source), (b"two", source)])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertTrue(any("failed on a datagram" in formatEvent(e) for e in events))


class BatchSizeTests(SynchronousTestCase):
    """A batched protocol with a `batch_size` gets one read's datagrams that many at a time."""

    def read_five(self, batch_size: int | None) -> list[list[bytes]]:
        batches: list[list[bytes]] = []

        class Taking(protocol.DatagramProtocol):
            def datagramsReceived(self, datagrams):
                batches.append([data for data, _ in datagrams])

        taking = Taking()
        if batch_size is not None:
            taking.batch_size = batch_size
        alsoProvides(taking, IBatchedDatagramProtocol)
        port = BatchedDatagramPort(0, taking, "127.0.0.1", 8192, None)
        ours = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(ours.close)
        self.addCleanup(peer.close)
        ours.bind(("127.0.0.1", 0))
        ours.setblocking(False)
        port.handle = ours
        for number in range(5):
            peer.sendto(b"%d" % number, ours.getsockname())  # queued on loopback at once
        port.doRead()
        return batches

    def test_batches_of_batch_size_in_order(self):
        self.assertEqual(self.read_five(2), [[b"0", b"1"], [b"2", b"3"], [b"4"]])

    def test_one_batch_without_a_batch_size(self):
        self.assertEqual(self.read_five(None), [[b"0", b"1", b"2", b"3", b"4"]])

    def test_a_batch_size_that_divides_the_read_exactly_ends_at_the_empty_socket(self):
        self.assertEqual(self.read_five(5), [[b"0", b"1", b"2", b"3", b"4"]])


class Counting(protocol.DatagramProtocol):
    def metric_samples(self):
        yield "datagrams", ("answered",), 1


class ListenerMetricsTests(TestCase):
    async def test_a_datagram_listener_reports_its_protocol_s_samples(self):
        replier = rate_limited_replier(EchoSettings(), bytes, Clock())()
        bound = ListenerService(
            "echo",
            Listener("udp:0", udp_port=0, udp_interface="127.0.0.1"),
            lambda: listen_datagram(reactor, 0, replier, "127.0.0.1"),
        )
        bound.startService()
        self.addCleanup(bound.stopService)
        self.assertEqual(list(bound.metric_samples()), list(replier.metric_samples()))

    async def test_only_metric_sources_are_asked(self):
        bound = ListenerService(
            "echo",
            Listener("udp:0", udp_port=0, udp_interface="127.0.0.1"),
            lambda: listen_datagram(reactor, 0, Counting(), "127.0.0.1"),
        )
        bound.startService()
        self.addCleanup(bound.stopService)
        self.assertEqual(list(bound.metric_samples()), [])


class Answering(protocol.Protocol):
    def dataReceived(self, data):
        self.transport.write(b"served\r\n")


class StockPathTests(TestCase):
    """The stock path on real sockets: Twisted's ports, counting transports."""

    def setUp(self):
        stock_path(self)

    async def exchange(self, number: int) -> bytes:
        with socket.create_connection(("127.0.0.1", number), timeout=5) as sock:
            sock.setblocking(False)
            sock.sendall(b"hello\r\n")
            await until(lambda: _readable(sock))
            return sock.recv(100)

    async def test_twisted_s_own_ports_and_loop_serve_and_count(self):
        counts = Counts()
        factory = RefusalFactory()
        built = []

        def build(address):
            served = Answering()
            built.append(served)
            return served

        factory.buildProtocol = build
        port = SuiteStreamPorts(reactor).listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.assertIs(type(port), tcp.Port)
        self.assertIs(port.transport, CountedServer)
        original = port.transport

        def counted(*arguments):
            transport = original(*arguments)
            transport.counts = counts
            return transport

        port.transport = counted
        self.assertEqual(await self.exchange(port.getHost().port), b"served\r\n")
        self.assertEqual((counts.received, counts.sent), (7, 8))

    async def test_unix_ports_serve_with_counting_transports(self):
        directory = tempfile.mkdtemp(prefix="s")  # a socket path must stay short
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "s")
        port = SuiteStreamPorts(reactor).listenUNIX(path, protocol.Factory.forProtocol(Answering))
        self.addCleanup(port.stopListening)
        self.assertIs(port.transport, CountedUNIXServer)
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(path)
            sock.setblocking(False)
            sock.sendall(b"hello\r\n")
            await until(lambda: _readable(sock))
            self.assertEqual(sock.recv(100), b"served\r\n")

    async def test_reuse_port_on_twisted_s_own_ports(self):
        first = SuiteStreamPorts(reactor, reuse_port=True).listenTCP(
            0, protocol.Factory.forProtocol(Answering), interface="127.0.0.1"
        )
        self.addCleanup(first.stopListening)
        number = first.getHost().port
        second = SuiteStreamPorts(reactor, reuse_port=True).listenTCP(
            number, protocol.Factory.forProtocol(Answering), interface="127.0.0.1"
        )
        self.addCleanup(second.stopListening)
        self.assertIs(type(second), tcp.Port)
        self.assertIs(second.transport, CountedServer)
        self.assertEqual(await self.exchange(number), b"served\r\n")

    async def test_datagrams_one_at_a_time_through_twisted_s_udp_port(self):
        replier = rate_limited_replier(EchoSettings(), bytes.upper, Clock())()
        port = listen_datagram(reactor, 0, replier, "127.0.0.1")
        self.addCleanup(port.stopListening)
        self.assertIs(type(port), udp.Port)
        self.assertEqual(reply_path(port), port.write)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.bind(("127.0.0.1", 0))
            sender.settimeout(5)
            sender.sendto(b"ping", ("127.0.0.1", port.getHost().port))
            await until(lambda: replier.answered)
            self.assertEqual(sender.recv(100), b"PING")

    async def test_datagram_reuse_port_through_adoption(self):
        first = listen_datagram(
            reactor, 0, protocol.DatagramProtocol(), "127.0.0.1", reuse_port=True
        )
        self.addCleanup(first.stopListening)
        second = listen_datagram(
            reactor,
            first.getHost().port,
            protocol.DatagramProtocol(),
            "127.0.0.1",
            reuse_port=True,
        )
        self.addCleanup(second.stopListening)
        self.assertIs(type(second), udp.Port)
        self.assertEqual(second.getHost().port, first.getHost().port)


class FastPathTests(TestCase):
    def setUp(self):
        self.patch(guard, "_decided", Decision(True))

    async def test_a_reply_path_that_skips_the_address_parsing(self):
        replier = rate_limited_replier(EchoSettings(), bytes, Clock())()
        port = listen_datagram(reactor, 0, replier, "127.0.0.1")
        self.addCleanup(port.stopListening)
        self.assertIsInstance(port, BatchedDatagramPort)
        self.assertEqual(replier.send, port.reply)


class LeanDispatchTests(TestCase):
    """The running reactor dispatches the suite's own reads without the legacy log context."""

    def setUp(self):
        self.patch(guard, "_decided", Decision(True))

    def test_the_self_test_passes_on_the_installed_twisted(self):
        self.assertIsNone(dispatch.self_test())

    def test_only_twisted_s_own_epoll_reactor_is_changed(self):
        self.assertFalse(dispatch.install(MemoryReactor()))
        self.assertTrue(dispatch.install(reactor))  # the tests' reactor: epoll, as twistd's
        self.assertTrue(dispatch.install(reactor))  # once is enough

    async def test_a_listener_reads_without_the_log_context_and_others_keep_it(self):
        wrapped: list[object] = []
        real = legacy_log.callWithLogger
        fresh = dispatch.EPollReactor()
        self.addCleanup(fresh._poller.close)
        self.patch(
            legacy_log,
            "callWithLogger",
            lambda logger, f, *a: (wrapped.append(logger), real(logger, f, *a))[1],
        )
        dispatch.install(fresh)
        ours, peer = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(peer.close)
        transport = WriteThroughServer(
            ours, Answering(), ("127.0.0.1", 1), tcp.Port(0, None), 0, fresh
        )
        transport.counts = Counts()
        transport.protocol.makeConnection(transport)
        fresh.addReader(transport)
        peer.send(b"ping")
        fresh.doIteration(0.5)
        self.assertEqual(transport.counts.received, 4)
        self.assertEqual(wrapped, [])
        peer.close()  # the hang-up (EPOLLIN|EPOLLRDHUP or a read of nothing) disconnects it
        for _ in range(3):
            fresh.doIteration(0.1)
        self.assertNotIn(transport, fresh.getReaders())
        fresh.removeAll()

    async def test_a_read_that_raises_is_logged_and_disconnects(self):
        events = warnings_logged(self)
        fresh = dispatch.EPollReactor()
        self.addCleanup(fresh._poller.close)
        dispatch.install(fresh)
        ours, peer = socket.socketpair()
        self.addCleanup(peer.close)
        lost: list[object] = []

        class Failing(protocol.Protocol):
            def dataReceived(self, data):
                raise ValueError("boom")

            def connectionLost(self, reason):
                lost.append(reason)

        transport = WriteThroughServer(
            ours, Failing(), ("127.0.0.1", 1), tcp.Port(0, None), 0, fresh
        )
        transport.protocol.makeConnection(transport)
        fresh.addReader(transport)
        peer.send(b"x")
        fresh.doIteration(0.5)
        self.assertEqual(len(lost), 1)
        self.assertTrue(any("failed to read" in formatEvent(e) for e in events))
        self.flushLoggedErrors(ValueError)
        fresh.removeAll()


class SharedSocketTests(TestCase):
    async def test_a_shared_socket_closed_here_still_listens_for_the_others(self):
        port = reactor.listenTCP(0, protocol.Factory(), interface="127.0.0.1")
        port.stopReading()
        other = socket.socket(fileno=os.dup(port.fileno()))  # a worker's copy
        self.addCleanup(other.close)
        address = port.getHost()
        await close_shared(port)
        client = socket.create_connection((address.host, address.port), timeout=5)
        self.addCleanup(client.close)
        other.settimeout(5)
        accepted, _ = other.accept()
        accepted.close()

    async def test_twisted_s_own_close_would_end_it_for_all(self):
        """Why close_shared exists: a shutdown() stops the listening of every copy."""
        port = reactor.listenTCP(0, protocol.Factory(), interface="127.0.0.1")
        port.stopReading()
        other = socket.socket(fileno=os.dup(port.fileno()))
        self.addCleanup(other.close)
        address = port.getHost()
        await port.stopListening()
        self.assertRaises(
            ConnectionRefusedError, socket.create_connection, (address.host, address.port), 5
        )
