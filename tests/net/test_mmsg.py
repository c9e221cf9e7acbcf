"""
The fast path's UDP port with and without its compiled calls
(suite/net/_mmsg.c: recvmmsg and sendmmsg): the same datagrams, addresses,
batches and replies either way, the Python path (recvfrom, sendto) the
reference.  The extension's own tests skip only where it was not built (no
compiler at install); the port's run on both paths whether or not
SUITE_PURE_PYTHON=1 is set.
"""

import errno
import os
import select
import socket

from twisted.internet import protocol
from twisted.internet.error import MessageLengthError
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from zope.interface import implementer

from suite.echo.service import EchoSettings
from suite.foundation.interfaces import IBatchedDatagramProtocol
from suite.net import compiled
from suite.net.compiled import load_mmsg
from suite.net.datagrams import rate_limited_replier
from suite.net.twisted_internals import datagrams
from suite.net.twisted_internals.datagrams import SEGMENT, BatchedDatagramPort

COMPILED = load_mmsg({})
SO_NO_CHECK = 11  # Linux: no UDP checksums sent, which the kernel's segmenting refuses


def needs_compiled() -> None:
    if COMPILED is None:
        raise SkipTest("suite/net/_mmsg.c was not built: no compiler at install")


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


class Sockets:
    """A bound non-blocking socket (ours) and peers, closed by the test's cleanup."""

    def __init__(self, test: SynchronousTestCase, family: int = socket.AF_INET) -> None:
        self.test, self.family = test, family
        self.host = "127.0.0.1" if family == socket.AF_INET else "::1"
        self.ours = self.peer()
        self.ours.setblocking(False)

    def peer(self) -> socket.socket:
        made = socket.socket(self.family, socket.SOCK_DGRAM)
        self.test.addCleanup(made.close)
        made.bind((self.host, 0))
        made.settimeout(2.0)
        return made

    def address(self, sock: socket.socket) -> tuple:
        return sock.getsockname()[:2]

    def send(self, peer: socket.socket, *payloads: bytes) -> None:
        for payload in payloads:  # queued on loopback when sendto returns
            peer.sendto(payload, self.ours.getsockname())

    def received(self, peer: socket.socket, count: int) -> list[bytes]:
        return [peer.recv(70000) for _ in range(count)]

    def nothing_waits(self, peer: socket.socket) -> bool:
        return not select.select([peer], [], [], 0)[0]


def python_reads(sock: socket.socket, size: int) -> list[tuple[bytes, tuple]]:
    """What recvfrom(SIZE) gives until the socket is empty, addresses cut to (host, port)."""
    read = []
    for _ in range(100):
        try:
            data, address = sock.recvfrom(size)
        except BlockingIOError:
            return read
        read.append((data, address[:2]))
    raise AssertionError("more than 100 datagrams")


class ReceiveTests(SynchronousTestCase):
    def setUp(self) -> None:
        needs_compiled()

    def same_as_python(self, family: int, payloads: list[bytes], size: int) -> list:
        """
        Two sockets sent the same PAYLOADS by two peers each: what recv_batch
        reads from one is what recvfrom reads from the other, addresses
        (host, port) as Python's socket module gives them.
        """
        read = {}
        for way in ("compiled", "python"):
            sockets = Sockets(self, family)
            peers = [sockets.peer(), sockets.peer()]
            for peer in peers:
                sockets.send(peer, *payloads)
            if way == "compiled":
                found = COMPILED.recv_batch(sockets.ours.fileno(), 100, size)
                self.assertEqual(COMPILED.recv_batch(sockets.ours.fileno(), 100, size), [])
            else:
                found = python_reads(sockets.ours, size)
            numbered = {sockets.address(peer): n for n, peer in enumerate(peers)}
            read[way] = [(data, numbered[address]) for data, address in found]
            if way == "compiled":
                compiled_read = found
        self.assertEqual(read["compiled"], read["python"])
        self.assertEqual(len(compiled_read), 2 * len(payloads))
        return compiled_read

    def test_ipv4_datagrams_and_addresses_as_recvfrom_gives_them(self):
        read = self.same_as_python(socket.AF_INET, [b"one", b"two", b"three"], 8192)
        self.assertEqual({type(a) for _, a in read}, {tuple})
        self.assertEqual({a[0] for _, a in read}, {"127.0.0.1"})

    def test_ipv6_addresses_cut_to_host_and_port(self):
        if not has_ipv6_loopback():
            raise SkipTest("no IPv6 loopback here")
        read = self.same_as_python(socket.AF_INET6, [b"one", b"two"], 8192)
        self.assertEqual({a[0] for _, a in read}, {"::1"})
        self.assertEqual({len(a) for _, a in read}, {2})

    def test_an_ipv4_peer_of_a_dual_stack_socket_as_python_writes_it(self):
        if not has_ipv6_loopback():
            raise SkipTest("no IPv6 loopback here")
        ours = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.addCleanup(ours.close)
        ours.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        ours.bind(("::", 0))
        ours.setblocking(False)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.bind(("127.0.0.1", 0))
            for payload in (b"one", b"two"):
                peer.sendto(payload, ("127.0.0.1", ours.getsockname()[1]))
            (first,) = COMPILED.recv_batch(ours.fileno(), 1, 100)
            (second,) = python_reads(ours, 100)
            self.assertEqual(first, (b"one", ("::ffff:127.0.0.1", peer.getsockname()[1])))
            self.assertEqual(second[1], first[1])

    def test_a_datagram_longer_than_the_size_is_cut_as_recvfrom_cuts_it(self):
        read = self.same_as_python(socket.AF_INET, [b"x" * 3000, b"y" * 10, b""], 100)
        self.assertEqual(sorted(len(d) for d, _ in read), [0, 0, 10, 10, 100, 100])

    def test_an_empty_datagram_is_one(self):
        sockets = Sockets(self)
        peer = sockets.peer()
        sockets.send(peer, b"", b"after")
        read = COMPILED.recv_batch(sockets.ours.fileno(), 10, 100)
        self.assertEqual([d for d, _ in read], [b"", b"after"])

    def test_nothing_waiting_is_an_empty_list(self):
        self.assertEqual(COMPILED.recv_batch(Sockets(self).ours.fileno(), 16, 100), [])

    def test_at_most_the_count_in_order(self):
        sockets = Sockets(self)
        peer = sockets.peer()
        sockets.send(peer, *(b"%d" % n for n in range(5)))
        fd, source = sockets.ours.fileno(), sockets.address(peer)
        reads = [COMPILED.recv_batch(fd, 2, 100) for _ in range(4)]
        self.assertEqual(
            reads,
            [
                [(b"0", source), (b"1", source)],
                [(b"2", source), (b"3", source)],
                [(b"4", source)],
                [],
            ],
        )

    def test_reads_of_changing_counts_sizes_and_sockets_each_read_whole(self):
        """The headers kept between calls are set up again where a call needs it."""
        sockets = Sockets(self)
        other = Sockets(self)
        peer, second = sockets.peer(), other.peer()
        steps = [(sockets, peer, 1, 100), (sockets, peer, 6, 100), (other, second, 3, 10)]
        steps += [(sockets, peer, 2, 100), (other, second, 8, 4000), (sockets, peer, 1, 50)]
        if has_ipv6_loopback():  # a longer address where shorter ones were written
            six = Sockets(self, socket.AF_INET6)
            steps += [(six, six.peer(), 4, 100), (sockets, peer, 8, 100)]
        for number, (where, sender, count, size) in enumerate(steps):
            payloads = [b"%d-%d-" % (number, n) + b"x" * (n * 20) for n in range(count)]
            where.send(sender, *payloads)
            read = COMPILED.recv_batch(where.ours.fileno(), 8, size)
            self.assertEqual(read, [(p[:size], where.address(sender)) for p in payloads])

    def test_one_peer_s_datagrams_share_one_address(self):
        sockets = Sockets(self)
        sockets.send(sockets.peer(), b"a", b"b")
        (_, first), (_, second) = COMPILED.recv_batch(sockets.ours.fileno(), 10, 100)
        self.assertIs(first, second)

    def test_errors(self):
        with open(os.devnull, "rb") as not_a_socket:
            with self.assertRaises(OSError) as raised:
                COMPILED.recv_batch(not_a_socket.fileno(), 4, 100)
        self.assertEqual(raised.exception.errno, errno.ENOTSOCK)
        fd = Sockets(self).ours.fileno()
        for count, size in ((0, 100), (1025, 100), (4, 0)):
            with self.assertRaises(ValueError):
                COMPILED.recv_batch(fd, count, size)
        with self.assertRaises(TypeError):
            COMPILED.recv_batch(fd, 4)  # type: ignore[call-arg]
        with self.assertRaises(ValueError):
            COMPILED.recv_batch(-1, 4, 100)


class SendPaths:
    """send_batch's tests, each run with and without segmenting runs of replies."""

    segment: int

    def setUp(self) -> None:
        needs_compiled()

    def send(self, sockets: Sockets, replies: list, start: int = 0) -> tuple[int, int]:
        stop, dropped, segmenting = COMPILED.send_batch(  # type: ignore[union-attr]
            sockets.ours.fileno(), sockets.family, replies, start, self.segment
        )
        self.assertIs(segmenting, True)  # type: ignore[attr-defined]
        return stop, dropped

    def test_replies_to_several_peers_in_order(self):
        sockets = Sockets(self)  # type: ignore[arg-type]
        first, second = sockets.peer(), sockets.peer()
        replies = [
            (b"1a", sockets.address(first)),
            (b"2a", sockets.address(second)),
            (b"1b", sockets.address(first)),
            (b"", sockets.address(second)),
        ]
        self.assertEqual(self.send(sockets, replies), (4, 0))
        self.assertEqual(sockets.received(first, 2), [b"1a", b"1b"])
        self.assertEqual(sockets.received(second, 2), [b"2a", b""])

    def test_runs_to_one_peer_arrive_as_the_datagrams_they_were(self):
        sockets = Sockets(self)  # type: ignore[arg-type]
        peer, other = sockets.peer(), sockets.peer()
        to, elsewhere = sockets.address(peer), sockets.address(other)
        payloads = [b"%03d" % n for n in range(100)]  # more than one segmented message holds
        payloads += [b"ab", b"", b"c", b"d", b"longer than three", b"x" * 1452, b"y" * 1453]
        replies = [(payload, to) for payload in payloads]
        replies[50:50] = [(b"between", elsewhere)]
        self.assertEqual(self.send(sockets, replies), (len(replies), 0))
        self.assertEqual(sockets.received(peer, len(payloads)), payloads)
        self.assertEqual(sockets.received(other, 1), [b"between"])
        self.assertTrue(sockets.nothing_waits(peer))

    def test_from_start(self):
        sockets = Sockets(self)  # type: ignore[arg-type]
        peer = sockets.peer()
        replies = [(b"%d" % n, sockets.address(peer)) for n in range(3)]
        self.assertEqual(self.send(sockets, replies, 1), (3, 0))
        self.assertEqual(sockets.received(peer, 2), [b"1", b"2"])
        self.assertTrue(sockets.nothing_waits(peer))

    def test_more_replies_than_one_call_takes(self):
        sockets = Sockets(self)  # type: ignore[arg-type]
        peer = sockets.peer()
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 2**20)
        replies = [(b"%d" % n, sockets.address(peer)) for n in range(1500)]
        self.assertEqual(self.send(sockets, replies), (1500, 0))
        self.assertEqual(sockets.received(peer, 1500), [b"%d" % n for n in range(1500)])

    def test_ipv6(self):
        if not has_ipv6_loopback():
            raise SkipTest("no IPv6 loopback here")
        sockets = Sockets(self, socket.AF_INET6)  # type: ignore[arg-type]
        peer = sockets.peer()
        replies = [(b"six", sockets.address(peer)), (b"666", peer.getsockname())]
        self.assertEqual(self.send(sockets, replies), (2, 0))
        self.assertEqual(sockets.received(peer, 2), [b"six", b"666"])

    def test_it_stops_at_a_reply_it_cannot_address_or_send(self):
        sockets = Sockets(self)  # type: ignore[arg-type]
        peer = sockets.peer()
        to = sockets.address(peer)
        for unsendable in (
            (b"name", ("localhost", to[1])),
            (b"port", (to[0], 70000)),
            (b"port", (to[0], -1)),
            (b"port", (to[0], "53")),
            (b"short", (to[0],)),
            ("text", to),
            [b"list", to],
            (b"six", ("::1", to[1])),
            (b"bad", ("127.0.0.\udcff", to[1])),
            (b"x" * 70000, to),  # EMSGSIZE
        ):
            with self.subTest(unsendable=unsendable):  # type: ignore[attr-defined]
                replies = [(b"before", to), unsendable, (b"after", to)]
                self.assertEqual(self.send(sockets, replies), (1, 0))
                self.assertEqual(sockets.received(peer, 1), [b"before"])
                self.assertTrue(sockets.nothing_waits(peer))

    def test_a_reply_the_kernel_refuses_is_dropped_and_counted(self):
        sockets = Sockets(self)  # type: ignore[arg-type]
        peer, gone = sockets.peer(), sockets.peer()
        gone_address = sockets.address(gone)
        gone.close()
        sockets.ours.connect(gone_address)  # so the kernel reports the refusal (ECONNREFUSED)
        sockets.ours.send(b"refused")
        replies = [
            (b"lost", gone_address),
            (b"lost", gone_address),
            (b"kept", sockets.address(peer)),
        ]
        self.assertEqual(self.send(sockets, replies), (3, 2 if self.segment else 1))
        self.assertEqual(sockets.received(peer, 1), [b"kept"])

    def test_errors(self):
        sockets = Sockets(self)  # type: ignore[arg-type]
        fd = sockets.ours.fileno()
        for family, replies, start, segment in (
            (socket.AF_UNIX, [], 0, 0),
            (socket.AF_INET, [], 1, 0),
            (socket.AF_INET, [], 0, -1),
            (socket.AF_INET, [], 0, 65536),
        ):
            with self.assertRaises(ValueError):  # type: ignore[attr-defined]
                COMPILED.send_batch(fd, family, replies, start, segment)  # type: ignore[union-attr]
        with self.assertRaises(TypeError):  # type: ignore[attr-defined]
            COMPILED.send_batch(fd, socket.AF_INET, (), 0, 0)  # type: ignore[union-attr,arg-type]
        self.assertEqual(self.send(sockets, []), (0, 0))
        with self.assertRaises(ValueError):  # type: ignore[attr-defined]
            COMPILED.send_batch(-1, socket.AF_INET, [(b"x", ("127.0.0.1", 9))], 0, 0)  # type: ignore[union-attr]
        with open(os.devnull, "rb") as not_a_socket:
            sent = COMPILED.send_batch(  # type: ignore[union-attr]
                not_a_socket.fileno(), socket.AF_INET, [(b"x", ("127.0.0.1", 9))], 0, 0
            )
        self.assertEqual(sent, (0, 0, True))  # ENOTSOCK: the caller's sendto says so


class SendTests(SendPaths, SynchronousTestCase):
    segment = 0


class SegmentedSendTests(SendPaths, SynchronousTestCase):
    segment = SEGMENT

    def test_where_segmenting_is_refused_each_reply_is_sent_alone_and_it_says_so(self):
        sockets = Sockets(self)
        peer = sockets.peer()
        sockets.ours.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)  # segmenting then: EINVAL
        replies = [(b"%03d" % n, sockets.address(peer)) for n in range(10)]
        sent = COMPILED.send_batch(  # type: ignore[union-attr]
            sockets.ours.fileno(), socket.AF_INET, replies, 0, SEGMENT
        )
        self.assertEqual(sent, (10, 0, False))
        self.assertEqual(sockets.received(peer, 10), [data for data, _ in replies])


@implementer(IBatchedDatagramProtocol)
class Replying(protocol.DatagramProtocol):
    """Answers each datagram with it in capitals, seeing whether each answer left at once."""

    send = None

    def __init__(self, sockets: Sockets, peer: socket.socket, batch_size: int = 16) -> None:
        self.sockets, self.peer, self.batch_size = sockets, peer, batch_size
        self.batches: list[list[bytes]] = []
        self.left_at_once: list[bool] = []
        self.fail_after: bytes | None = None

    def datagramsReceived(self, datagrams: list[tuple[bytes, tuple]]) -> None:
        self.batches.append([data for data, _ in datagrams])
        for data, address in datagrams:
            self.transport.reply(data.upper(), address)
            self.left_at_once.append(not self.sockets.nothing_waits(self.peer))
            if data == self.fail_after:
                raise ValueError("failed after replying")


class One(protocol.DatagramProtocol):
    def __init__(self) -> None:
        self.datagrams: list[tuple[bytes, tuple]] = []

    def datagramReceived(self, data: bytes, address: tuple) -> None:
        self.datagrams.append((data, address))
        if data == b"bad":
            raise ValueError("bad datagram")
        self.transport.reply(data.upper(), address)


class PortPaths:
    """The port's tests, run on the Python path and (where built) the compiled one."""

    compiled: bool

    def port(self, protocol: protocol.DatagramProtocol, sockets: Sockets) -> BatchedDatagramPort:
        if self.compiled:
            needs_compiled()
        port = BatchedDatagramPort(0, protocol, sockets.host, 8192, None)
        port.mmsg = COMPILED if self.compiled else None
        port.handle = sockets.ours
        port.addressFamily = sockets.family
        protocol.transport = port
        return port

    def replying(self, count: int, batch_size: int = 16) -> tuple:
        sockets = Sockets(self)  # type: ignore[arg-type]
        peer = sockets.peer()
        replying = Replying(sockets, peer, batch_size)
        port = self.port(replying, sockets)
        sockets.send(peer, *(b"q%d" % n for n in range(count)))
        return sockets, peer, replying, port

    def test_batches_of_batch_size_in_order(self):
        sockets, peer, replying, port = self.replying(5, batch_size=2)
        port.doRead()
        self.assertEqual(replying.batches, [[b"q0", b"q1"], [b"q2", b"q3"], [b"q4"]])
        self.assertEqual(sockets.received(peer, 5), [b"Q%d" % n for n in range(5)])
        self.assertTrue(sockets.nothing_waits(peer))

    def test_a_batch_s_replies_leave_at_its_end_with_the_compiled_calls(self):
        sockets, peer, replying, port = self.replying(3)
        port.doRead()
        self.assertEqual(replying.left_at_once, [not self.compiled] * 3)
        self.assertEqual(sockets.received(peer, 3), [b"Q0", b"Q1", b"Q2"])

    def test_replies_leave_even_when_the_protocol_raises(self):
        sockets, peer, replying, port = self.replying(4, batch_size=2)
        replying.fail_after = b"q0"
        port.doRead()
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)  # type: ignore[attr-defined]
        self.assertEqual(replying.batches, [[b"q0", b"q1"], [b"q2", b"q3"]])
        self.assertEqual(sockets.received(peer, 3), [b"Q0", b"Q2", b"Q3"])

    def test_a_reply_outside_a_read_leaves_at_once(self):
        sockets, peer, replying, port = self.replying(0)
        port.reply(b"now", sockets.address(peer))
        self.assertEqual(sockets.received(peer, 1), [b"now"])

    def test_a_read_of_more_than_the_read_batch_stops_there(self):
        self.patch(datagrams, "READ_BATCH", 8)  # type: ignore[attr-defined]
        sockets, peer, replying, port = self.replying(11, batch_size=4)
        port.doRead()
        self.assertEqual(replying.batches, [[b"q%d" % n for n in range(k, k + 4)] for k in (0, 4)])
        port.doRead()
        self.assertEqual(replying.batches[-1], [b"q8", b"q9", b"q10"])
        self.assertEqual(len(sockets.received(peer, 11)), 11)

    def test_a_plain_protocol_gets_one_datagram_per_call(self):
        sockets = Sockets(self)  # type: ignore[arg-type]
        peer = sockets.peer()
        one = One()
        port = self.port(one, sockets)
        sockets.send(peer, b"a", b"bad", b"c")
        port.doRead()
        self.assertEqual([d for d, _ in one.datagrams], [b"a", b"bad", b"c"])
        self.assertEqual({a for _, a in one.datagrams}, {sockets.address(peer)})
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)  # type: ignore[attr-defined]
        self.assertEqual(sockets.received(peer, 2), [b"A", b"C"])

    def test_ipv6_addresses_are_host_and_port(self):
        if not has_ipv6_loopback():
            raise SkipTest("no IPv6 loopback here")
        sockets = Sockets(self, socket.AF_INET6)  # type: ignore[arg-type]
        peer = sockets.peer()
        one = One()
        port = self.port(one, sockets)
        sockets.send(peer, b"six")
        port.doRead()
        self.assertEqual(one.datagrams, [(b"six", sockets.address(peer))])
        self.assertEqual(sockets.received(peer, 1), [b"SIX"])

    def test_a_reply_it_cannot_send_is_logged_and_the_rest_leave_in_order(self):
        sockets = Sockets(self)  # type: ignore[arg-type]
        peer = sockets.peer()
        to = sockets.address(peer)

        @implementer(IBatchedDatagramProtocol)
        class Odd(protocol.DatagramProtocol):
            send = None

            raised = 0

            def datagramsReceived(self, datagrams):
                reply = self.transport.reply
                reply(b"first", to)
                try:
                    reply(b"x" * 70000, to)  # too long for a datagram: raised now, or logged
                except MessageLengthError:
                    self.raised += 1
                reply(b"by name", ("localhost", to[1]))  # sendto resolves it
                reply(b"last", to)

        odd = Odd()
        port = self.port(odd, sockets)
        sockets.send(peer, b"go")
        port.doRead()
        logged = self.flushLoggedErrors(MessageLengthError)  # type: ignore[attr-defined]
        self.assertEqual((odd.raised, len(logged)), (0, 1) if self.compiled else (1, 0))
        self.assertEqual(sockets.received(peer, 3), [b"first", b"by name", b"last"])

    def test_a_reply_the_kernel_refuses_is_dropped_and_counted(self):
        sockets, peer, replying, port = self.replying(1)
        gone = sockets.peer()
        gone_address = sockets.address(gone)
        gone.close()

        def refused_then_kept(datagrams: list[tuple[bytes, tuple]]) -> None:
            sockets.ours.connect(gone_address)  # so the kernel reports the refusal
            sockets.ours.send(b"refused")  # the next send fails: ECONNREFUSED
            port.reply(b"lost", gone_address)
            port.reply(b"kept", datagrams[0][1])

        replying.datagramsReceived = refused_then_kept  # type: ignore[method-assign]
        port.doRead()
        self.assertEqual(port.replies_dropped, 1)
        self.assertEqual(sockets.received(peer, 1), [b"kept"])

    def test_an_error_reading_is_raised_as_twisted_s_port_raises_it(self):
        sockets, peer, replying, port = self.replying(0)
        port.handle = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # not connected
        self.addCleanup(port.handle.close)  # type: ignore[attr-defined]
        with self.assertRaises(OSError) as raised:  # type: ignore[attr-defined]
            port.doRead()
        self.assertEqual(raised.exception.errno, errno.ENOTCONN)  # type: ignore[attr-defined]

    def test_an_error_twisted_ignores_ends_the_read(self):
        sockets, peer, replying, port = self.replying(1)
        if self.compiled:
            port.mmsg = Interrupted()  # type: ignore[assignment]
        else:
            port.handle = Interrupted()  # type: ignore[assignment]
        port.doRead()
        self.assertEqual(replying.batches, [])

    def test_a_rate_limited_replier_answers_as_on_the_other_path(self):
        """The echo's datagram side: the same answers, refusals per source and /24, counts."""
        sockets = Sockets(self)  # type: ignore[arg-type]
        settings = EchoSettings(udp_rate=1, udp_burst=3, udp_network_rate=1, udp_network_burst=5)
        replier = rate_limited_replier(settings, bytes.upper, Clock())()
        port = self.port(replier, sockets)
        replier.startProtocol()
        first, second = sockets.peer(), sockets.peer()
        elsewhere = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # same /24, other address
        self.addCleanup(elsewhere.close)
        elsewhere.bind(("127.0.0.2", 0))
        elsewhere.settimeout(2.0)
        sockets.send(first, b"a1", b"a2")
        sockets.send(second, b"b1", b"b2", b"")  # the same source address as FIRST
        sockets.send(elsewhere, b"c1", b"c2", b"c3")
        port.doRead()
        self.assertEqual(sockets.received(first, 2), [b"A1", b"A2"])
        self.assertEqual(sockets.received(second, 1), [b"B1"])
        self.assertEqual(sockets.received(elsewhere, 2), [b"C1", b"C2"])
        for peer in (first, second, elsewhere):
            self.assertTrue(sockets.nothing_waits(peer))
        self.assertEqual(
            (replier.answered, replier.rate_limited, replier.network_rate_limited),
            (5, 1, 1),
        )
        self.assertEqual((replier.counts.requests, replier.counts.sent), (7, 10))


class Interrupted:
    """A socket (or compiled calls) whose every read is interrupted: EINTR, ignored."""

    def fileno(self) -> int:
        return 0

    def recvfrom(self, size: int) -> tuple:
        raise InterruptedError(errno.EINTR, "interrupted")

    def recv_batch(self, fd: int, count: int, size: int) -> list:
        raise InterruptedError(errno.EINTR, "interrupted")


class PythonPortTests(PortPaths, SynchronousTestCase):
    compiled = False


class CompiledPortTests(PortPaths, SynchronousTestCase):
    compiled = True

    def test_a_port_whose_segmented_sends_are_refused_stops_asking(self):
        sockets, peer, replying, port = self.replying(3)
        sockets.ours.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)  # segmenting then: EINVAL
        self.assertEqual(port.segment, SEGMENT)
        logged: list[dict] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        port.doRead()
        self.assertEqual(port.segment, 0)
        told = [formatEvent(event) for event in logged]
        self.assertEqual(len([t for t in told if "refuses segmented UDP sends" in t]), 1)
        self.assertEqual(sockets.received(peer, 3), [b"Q0", b"Q1", b"Q2"])


class ChoiceTests(SynchronousTestCase):
    def test_pure_python_when_asked(self):
        self.assertIsNone(load_mmsg({"SUITE_PURE_PYTHON": "1"}))

    def test_pure_python_when_built_from_older_sources(self):
        needs_compiled()
        self.patch(compiled, "FUNCTIONS", (*compiled.FUNCTIONS, "from_a_later_version"))
        self.assertIsNone(load_mmsg({}))
        self.patch(compiled, "FUNCTIONS", ())
        self.assertIs(load_mmsg({}), COMPILED)

    def test_the_environment_decides_at_import(self):
        asked = os.environ.get("SUITE_PURE_PYTHON") == "1"
        self.assertEqual(datagrams.mmsg is None, asked or COMPILED is None)
        self.assertIs(BatchedDatagramPort.mmsg, datagrams.mmsg)
