"""
The suite's stream transport on real sockets: a write leaves at once when
nothing waits, and everything else is Twisted's transport behaviour
(buffering, flow control, half-close, loseConnection ordering, abort).
Also the SO_REUSEPORT listeners and the batched UDP port.
"""

import errno
import os
import shutil
import socket
import tempfile

from twisted.internet import defer, error, protocol, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint, connectProtocol
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.trial.unittest import SkipTest, TestCase
from zope.interface import implementer

from suite.foundation.interfaces import IBatchedDatagramProtocol
from suite.net.interfaces import IRefusesAtDescriptorLimit
from suite.net.listeners import SuiteStreamPorts
from suite.net.twisted_internals import fast_path
from suite.net.twisted_internals import streams as streams_module
from suite.net.twisted_internals.datagrams import BatchedDatagramPort
from suite.net.twisted_internals.streams import WriteThroughServer, WriteThroughUNIXServer
from suite.net.udpport import listen_datagram, reply_path
from tests.helpers import tmp_dir

BIG = 8 * 2**20  # more than any socket buffer holds


class Server(protocol.Protocol):
    """Runs the test's ON_CONNECT with itself once connected; records what happens."""

    def __init__(self, on_connect):
        self.on_connect = on_connect
        self.lost = defer.Deferred()
        self.received = bytearray()
        self.paused = self.resumed = 0

    def connectionMade(self):
        self.on_connect(self)

    def dataReceived(self, data):
        self.received += data

    def pauseProducing(self):
        self.paused += 1

    def resumeProducing(self):
        self.resumed += 1

    def stopProducing(self):
        pass

    def connectionLost(self, reason):
        self.reason = reason
        self.lost.callback(None)


@implementer(IHalfCloseableProtocol)
class Client(protocol.Protocol):
    """Reads everything until the connection closes; can hold off reading."""

    def __init__(self, reading=True):
        self.reading = reading
        self.received = bytearray()
        self.eof = defer.Deferred()
        self.lost = defer.Deferred()

    def connectionMade(self):
        if not self.reading:
            self.transport.pauseProducing()

    def dataReceived(self, data):
        self.received += data

    def readConnectionLost(self):
        self.eof.callback(bytes(self.received))

    def writeConnectionLost(self):
        pass

    def connectionLost(self, reason):
        if not self.eof.called:
            self.eof.callback(bytes(self.received))
        self.lost.callback(None)


def until(predicate, timeout=10.0):
    """A Deferred that fires once PREDICATE() is true (checked every 10 ms)."""
    waited = defer.Deferred()

    def check(remaining):
        if predicate():
            waited.callback(None)
        elif remaining <= 0:
            waited.errback(AssertionError("timed out"))
        else:
            reactor.callLater(0.01, check, remaining - 0.01)

    check(timeout)
    return waited


def needs_fast_path(test: TestCase, lacking: str) -> None:
    """Skip TEST on the stock path, which lacks LACKING."""
    if not fast_path().fast:
        raise SkipTest(f"the stock path ({fast_path().reason}) lacks {lacking}")


class WriteThroughTests(TestCase):
    """
    On the stock path the same transport behaviours are Twisted's own
    (a stock transport with counting): every test but the first two runs
    both ways.
    """

    async def connect(self, on_connect, client=None, unix=False):
        servers = []

        def build(address):
            server = Server(on_connect)
            servers.append(server)
            return server

        factory = protocol.Factory()
        factory.buildProtocol = build
        listening = SuiteStreamPorts(reactor)
        if unix:
            directory = tempfile.mkdtemp(prefix="s")  # a socket path must stay short
            self.addCleanup(shutil.rmtree, directory)
            path = os.path.join(directory, "s")
            port = listening.listenUNIX(path, factory)
            endpoint = UNIXClientEndpoint(reactor, path)
        else:
            port = listening.listenTCP(0, factory, interface="127.0.0.1")
            endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        self.addCleanup(port.stopListening)
        client = client or Client()
        await connectProtocol(endpoint, client)
        await until(lambda: servers)
        self.addCleanup(lambda: client.transport.connected and client.transport.abortConnection())
        return servers[0], client

    async def test_a_write_leaves_at_once_without_watching_for_writability(self):
        needs_fast_path(self, "writes that leave without a reactor turn")
        seen = {}

        def write(server):
            server.transport.write(b"hello")
            server.transport.writeSequence([b" ", b"world"])
            seen["buffered"] = len(server.transport.dataBuffer) + server.transport._tempDataLen
            seen["watched"] = server.transport in reactor.getWriters()

        server, client = await self.connect(write)
        self.assertIsInstance(server.transport, WriteThroughServer)
        self.assertEqual(seen, {"buffered": 0, "watched": False})
        await until(lambda: client.received == b"hello world")

    async def test_unix_sockets_too(self):
        needs_fast_path(self, "writes that leave without a reactor turn")

        def write(server):
            server.transport.write(b"over unix")
            self.assertEqual(server.transport._tempDataLen, 0)

        server, client = await self.connect(write, unix=True)
        self.assertIsInstance(server.transport, WriteThroughUNIXServer)
        await until(lambda: client.received == b"over unix")

    async def test_what_the_kernel_cannot_take_is_buffered_in_order_with_flow_control(self):
        chunks = [bytes([n % 256]) * 65536 for n in range(BIG // 65536)]

        def write(server):
            server.transport.registerProducer(server, True)
            for chunk in chunks:
                server.transport.write(chunk)

        server, client = await self.connect(write, Client(reading=False))
        self.assertGreater(server.transport._tempDataLen + len(server.transport.dataBuffer), 0)
        self.assertGreaterEqual(server.paused, 1)  # Twisted paused the producer: buffer full
        self.assertIn(server.transport, reactor.getWriters())
        server.transport.write(b"last")  # queued behind the rest, never ahead of it
        client.transport.resumeProducing()
        await until(lambda: len(client.received) == BIG + 4)
        self.assertEqual(bytes(client.received), b"".join(chunks) + b"last")
        self.assertEqual(server.resumed, 1)
        await until(lambda: server.transport not in reactor.getWriters())

    async def test_lose_connection_sends_everything_first(self):
        payload = bytes(range(256)) * (BIG // 256)

        def write(server):
            server.transport.write(payload)
            server.transport.loseConnection()

        server, client = await self.connect(write)
        self.assertEqual(await client.eof, payload)
        await server.lost
        self.assertTrue(server.reason.check(error.ConnectionDone))

    async def test_half_close_after_the_writes_and_the_client_may_still_send(self):
        def write(server):
            server.transport.write(b"x" * BIG)
            server.transport.loseWriteConnection()

        server, client = await self.connect(write)
        self.assertEqual(len(await client.eof), BIG)
        client.transport.write(b"still talking")
        await until(lambda: server.received == b"still talking")
        self.assertFalse(server.lost.called)

    async def test_abort_drops_what_waits_and_reports_the_abort(self):
        def write(server):
            server.transport.write(b"x" * BIG)
            server.transport.abortConnection()

        server, client = await self.connect(write, Client(reading=False))
        await server.lost
        self.assertTrue(server.reason.check(error.ConnectionAborted))
        client.transport.resumeProducing()
        await client.lost
        self.assertLess(len(client.received), BIG)

    async def test_writes_after_close_are_ignored_and_non_bytes_refused(self):
        def write(server):
            self.assertRaises(TypeError, server.transport.write, "text")
            self.assertRaises(TypeError, server.transport.writeSequence, [b"ok", "text"])
            server.transport.write(b"bye")
            server.transport.loseConnection()
            server.transport.write(b" after close is still sent")  # Twisted's own rule

        server, client = await self.connect(write)
        self.assertEqual(await client.eof, b"bye after close is still sent")
        await server.lost
        server.transport.write(b"dropped")  # after connectionLost: nothing, no error


class ReusePortTests(TestCase):
    def test_two_tcp_listeners_share_a_port_only_with_reuse_port(self):
        first = SuiteStreamPorts(reactor, reuse_port=True).listenTCP(
            0, protocol.Factory(), interface="127.0.0.1"
        )
        self.addCleanup(first.stopListening)
        number = first.getHost().port
        second = SuiteStreamPorts(reactor, reuse_port=True).listenTCP(
            number, protocol.Factory(), interface="127.0.0.1"
        )
        self.addCleanup(second.stopListening)
        self.assertEqual(second.getHost().port, number)
        self.assertRaises(
            error.CannotListenError,
            SuiteStreamPorts(reactor).listenTCP,
            number,
            protocol.Factory(),
            interface="127.0.0.1",
        )

    def test_two_udp_listeners_share_a_port_only_with_reuse_port(self):
        first = listen_datagram(
            reactor, 0, protocol.DatagramProtocol(), "127.0.0.1", reuse_port=True
        )
        self.addCleanup(first.stopListening)
        number = first.getHost().port
        second = listen_datagram(
            reactor, number, protocol.DatagramProtocol(), "127.0.0.1", reuse_port=True
        )
        self.addCleanup(second.stopListening)
        self.assertRaises(
            error.CannotListenError,
            listen_datagram,
            reactor,
            number,
            protocol.DatagramProtocol(),
            "127.0.0.1",
        )

    async def test_the_suite_with_reuse_port_twice_on_one_port_serves_from_both(self):
        from tests.helpers import start_suite

        first = start_suite(
            self,
            tmp_dir(self),
            """
            [echo]
            listen = ["tcp:0:interface=127.0.0.1"]
            reuse_port = true
        """,
        )
        number = first["echo tcp:0:interface=127.0.0.1"]
        first_root = self.suite_root
        start_suite(
            self,
            tmp_dir(self),
            f"""
            [echo]
            listen = ["tcp:{number}:interface=127.0.0.1"]
            reuse_port = true
        """,
        )
        self.assertIsNot(self.suite_root, first_root)
        with socket.create_connection(("127.0.0.1", number), timeout=5) as sock:
            sock.setblocking(False)
            sock.sendall(b"hello\n")
            await until(lambda: _readable(sock))
            self.assertEqual(sock.recv(100), b"You said: hello\r\n")


class Refusing(protocol.Protocol):
    refusal = b"ERROR too many connections\r\n"

    def dataReceived(self, data):
        self.transport.write(b"served\r\n")


@implementer(IRefusesAtDescriptorLimit)
class RefusalFactory(protocol.Factory):
    """Serves Refusing; records what the port reports of refusals at the descriptor limit."""

    protocol = Refusing
    refusal = Refusing.refusal

    def __init__(self):
        self.refused = []

    def refused_at_descriptor_limit(self, address, reason):
        self.refused.append((address and address.host, reason))


class OutOfDescriptors:
    """A listening socket whose next FAILURES accepts fail with EMFILE, as at the limit."""

    def __init__(self, listening, failures):
        self._socket = listening
        self.failures = failures

    def accept(self):
        if self.failures:
            self.failures -= 1
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return self._socket.accept()

    def __getattr__(self, name):
        return getattr(self._socket, name)


class DescriptorLimitTests(TestCase):
    """At the file-descriptor limit a connection is answered with the refusal line, not reset."""

    def setUp(self):
        needs_fast_path(
            self,
            "the refusal at the descriptor limit (Twisted closes the waiting "
            "client without a word) and the backlog's accept at close",
        )

    def listen(self, failures):
        factory = RefusalFactory()
        port = SuiteStreamPorts(reactor).listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        port.socket = OutOfDescriptors(port.socket, failures)
        self.listening_port = port
        return factory, port.getHost().port

    async def exchange(self, number) -> bytes:
        with socket.create_connection(("127.0.0.1", number), timeout=5) as sock:
            sock.setblocking(False)
            sock.sendall(b"hello\r\n")
            await until(lambda: _readable(sock))
            return sock.recv(100)

    async def test_refused_with_the_refusal_line_and_reported_then_served_again(self):
        factory, number = self.listen(failures=1)
        self.assertEqual(await self.exchange(number), b"ERROR too many connections\r\n")
        self.assertEqual(
            factory.refused, [("127.0.0.1", "out of file descriptors (Too many open files)")]
        )
        self.assertEqual(await self.exchange(number), b"served\r\n")
        self.assertTrue(streams_module.SPARE.reserve())  # the spare is back

    async def test_without_the_spare_the_port_pauses_instead_of_spinning(self):
        factory, number = self.listen(failures=2)
        self.assertTrue(streams_module.SPARE.release())
        self.addCleanup(streams_module.SPARE.reserve)
        self.patch(streams_module, "NO_SPARE_PAUSE", 0.2)
        with socket.create_connection(("127.0.0.1", number), timeout=5) as sock:
            await until(lambda: factory.refused)
            self.assertEqual(
                factory.refused, [(None, "out of file descriptors (Too many open files)")]
            )
            sock.setblocking(False)
            sock.sendall(b"hello\r\n")
            await until(lambda: _readable(sock))  # the spare was taken again: refused
            self.assertEqual(sock.recv(100), b"ERROR too many connections\r\n")
        self.assertEqual(await self.exchange(number), b"served\r\n")

    async def test_a_pause_does_not_outlive_the_port(self):
        factory, number = self.listen(failures=2)
        self.assertTrue(streams_module.SPARE.release())
        self.addCleanup(streams_module.SPARE.reserve)
        port = self.listening_port
        with socket.create_connection(("127.0.0.1", number), timeout=5):
            await until(lambda: factory.refused)
            await port.stopListening()
        resuming = [
            call for call in reactor.getDelayedCalls() if call.func == port._resume_accepting
        ]
        self.assertEqual(resuming, [])

    async def test_what_waits_in_the_backlog_is_accepted_before_the_port_closes(self):
        factory, number = self.listen(failures=0)
        port = self.listening_port
        served = []
        factory.buildProtocol = lambda address: served.append(address) or Refusing()
        with socket.create_connection(("127.0.0.1", number), timeout=5) as sock:
            sock.sendall(b"sent before the port closed\r\n")
            await port.stopListening()  # the reactor had no turn to accept it
            self.assertEqual(len(served), 1)


def _readable(sock) -> bool:
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False


@implementer(IBatchedDatagramProtocol)
class Batch(protocol.DatagramProtocol):
    send = None

    def __init__(self):
        self.batches = []

    def datagramsReceived(self, datagrams):
        self.batches.append(datagrams)


class One(protocol.DatagramProtocol):
    def __init__(self):
        self.datagrams = []

    def datagramReceived(self, data, address):
        self.datagrams.append((data, address))
        reply_path(self.transport)(data.upper(), address)


class DatagramPortTests(TestCase):
    async def test_a_burst_arrives_in_batches_in_order(self):
        needs_fast_path(self, "batched datagram reads")
        receiver = Batch()
        port = listen_datagram(reactor, 0, receiver, "127.0.0.1")
        self.addCleanup(port.stopListening)
        self.assertIsInstance(port, BatchedDatagramPort)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.bind(("127.0.0.1", 0))
            for n in range(200):
                sender.sendto(b"%d" % n, ("127.0.0.1", port.getHost().port))
            source = sender.getsockname()
            await until(lambda: sum(map(len, receiver.batches)) == 200)
        received = [d for batch in receiver.batches for d in batch]
        self.assertEqual(received, [(b"%d" % n, source) for n in range(200)])
        self.assertLess(len(receiver.batches), 200)  # not one call per datagram

    async def test_one_at_a_time_for_plain_protocols_and_reply_over_ipv6(self):
        receiver = One()
        try:
            port = listen_datagram(reactor, 0, receiver, "::1")
        except error.CannotListenError:
            raise self.skipTest("no IPv6 loopback here") from None
        self.addCleanup(port.stopListening)
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sender:
            sender.settimeout(5)
            sender.sendto(b"ping", ("::1", port.getHost().port))
            await until(lambda: receiver.datagrams)
            answer = await task.deferLater(reactor, 0, sender.recv, 100)
        self.assertEqual(answer, b"PING")
        ((_, address),) = receiver.datagrams
        self.assertEqual(len(address), 2)  # (host, port) as Twisted gives it, no flow or scope
