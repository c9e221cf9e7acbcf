"""
The fast path's UDP port: Twisted's `udp.Port`, reading in batches and
answering without Twisted's per-datagram address checks.

Each readiness event drains up to READ_BATCH datagrams in one tight loop
(names looked up once per batch, not once per datagram), so a burst is
taken off the kernel's receive buffer before it overflows.  A protocol
providing L{IBatchedDatagramProtocol} gets the whole batch in one call, so
what it does per batch (a timestamp, a write) is not done per datagram;
one with a `batch_size` gets the read that many datagrams at a time (the
DNS listener: its first answers leave while later queries are queued).
`reply` sends to an address the socket itself reported, so it skips
`write`'s parsing of the address text (about a microsecond per datagram);
a reply the kernel cannot queue (ENOBUFS, EAGAIN) is dropped, as the
network may drop any datagram, and counted (`replies_dropped`).

With the compiled calls of L{suite.net.compiled} (suite/net/_mmsg.c), a
read takes the waiting datagrams with one recvmmsg per batch instead of a
recvfrom each, and the replies a batch's protocol call makes are gathered
and sent, in order, with one sendmmsg when the call returns (raised or
not), before the next batch is read: the kernel's entry and exit once per
batch, not twice per datagram.  Consecutive replies of one size (up to
SEGMENT bytes) to one peer go as one message the kernel cuts into those
datagrams (UDP_SEGMENT): its network stack is crossed once for the run,
which on loopback costs a DNS answer half of what sendto costs.  Where the
kernel refuses that (older than Linux 4.18, a route that cannot), the
port stops asking.  A reply outside a read is sent at once.
Without them (not built, SUITE_PURE_PYTHON=1) the port reads and sends
one datagram per call, as described above.

It replaces `twisted.internet.udp.Port.doRead` (keeping its rules: the
errors it ignores, IPv6 addresses cut to (host, port)) and relies on
(read in Twisted 26.4.0 and 26.10.0, identical there):
  - `udp.Port._fromListeningDescriptor`: a port of this class on an
    adopted socket (systemd, reuse_port);
  - `udp.Port.maxPacketSize`, `.addressFamily` and `.protocol`, set by its
    constructor, and the public `getHandle()`.
Public route, if Twisted offered one: a batched `IDatagramProtocol`
(`datagramsReceived`, or `recvmmsg`), a `write` that takes the address
as the socket reported it, and a `protocolFactory`-like class argument to
`adoptDatagramPort`.
"""

import select
import socket
from collections.abc import Callable
from errno import EAGAIN, ECONNREFUSED, EINTR, EMSGSIZE, ENOBUFS

from twisted.internet import error, protocol, udp
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from zope.interface import implementer

from suite.foundation.interfaces import IBatchedDatagramProtocol
from suite.net.compiled import Mmsg, mmsg
from suite.net.twisted_internals.dispatch import LEAN_TYPES
from suite.net.twisted_internals.streams import Unwatched

log = Logger()

READ_BATCH = 512
SEGMENT = 1452  # bytes: a 1500-byte MTU's datagram over IPv6, the longest sent segmented
_IGNORED = (EINTR, EAGAIN, EMSGSIZE, ECONNREFUSED)  # as Twisted's udp.Port.doRead
_DROPPED = (EAGAIN, ENOBUFS, ECONNREFUSED)


class BatchedDatagramPort(udp.Port):
    """See the module's docstring."""

    handle: socket.socket
    mmsg: Mmsg | None = mmsg  # the compiled calls, or None: one datagram per call
    replies_dropped = 0  # replies the kernel could not queue
    segment = SEGMENT  # 0 once the kernel refuses segmented sends
    _gathered: list[tuple[bytes, tuple]] | None = None  # a batch's replies, while it is handled

    def startListening(self) -> None:
        super().startListening()
        self.handle = self.getHandle()

    def doRead(self) -> None:
        protocol = self.protocol
        batched = IBatchedDatagramProtocol.providedBy(protocol)
        if self.mmsg is not None:
            if batched:
                return self._read_mmsg(
                    protocol.datagramsReceived, getattr(protocol, "batch_size", READ_BATCH)
                )
            return self._read_mmsg(self._one_by_one, READ_BATCH)
        if batched:
            return self._read_batch(
                protocol.datagramsReceived, getattr(protocol, "batch_size", READ_BATCH)
            )
        recvfrom, size = self.handle.recvfrom, self.maxPacketSize
        received = protocol.datagramReceived
        v6 = self.addressFamily == socket.AF_INET6
        for _ in range(READ_BATCH):
            try:
                data, address = recvfrom(size)
            except OSError as e:
                if e.errno in _IGNORED:
                    return
                raise
            if v6:
                address = address[:2]  # without flow and scope, as Twisted gives it
            try:
                received(data, address)
            except BaseException:
                log.failure("{protocol} failed on a datagram", protocol=protocol)

    def _read_batch(
        self, deliver: Callable[[list[tuple[bytes, tuple]]], None], batch_size: int
    ) -> None:
        """
        Up to READ_BATCH datagrams, handed over BATCH_SIZE at a time (the
        protocol's `batch_size`, if it has one): a protocol that answers
        sends its first answers while later queries are still queued,
        rather than after reading them all.
        """
        recvfrom, size = self.handle.recvfrom, self.maxPacketSize
        v6 = self.addressFamily == socket.AF_INET6
        batch_size = min(max(batch_size, 1), READ_BATCH)
        for _ in range(READ_BATCH // batch_size):
            batch: list[tuple[bytes, tuple]] = []
            append = batch.append
            drained = False
            try:
                for _ in range(batch_size):
                    append(recvfrom(size))
            except OSError as e:
                if e.errno not in _IGNORED:
                    raise
                drained = True
            if batch:
                if v6:
                    batch = [(data, address[:2]) for data, address in batch]
                try:
                    deliver(batch)
                except BaseException:
                    log.failure("{protocol} failed on datagrams", protocol=self.protocol)
            if drained:
                return

    def _read_mmsg(
        self, deliver: Callable[[list[tuple[bytes, tuple]]], None], batch_size: int
    ) -> None:
        """
        _read_batch with recvmmsg and sendmmsg: each batch is one call to
        recv_batch, and the replies its delivery makes leave with one
        send_batch before the next batch is read.
        """
        recv_batch = self.mmsg.recv_batch  # type: ignore[union-attr]  # not None here
        fd, size = self.handle.fileno(), self.maxPacketSize
        batch_size = min(max(batch_size, 1), READ_BATCH)
        for _ in range(READ_BATCH // batch_size):
            try:
                batch = recv_batch(fd, batch_size, size)
            except OSError as e:
                if e.errno in _IGNORED:
                    return
                raise
            if not batch:
                return
            gathered: list[tuple[bytes, tuple]] = []
            self._gathered = gathered
            try:
                deliver(batch)
            except BaseException:
                log.failure("{protocol} failed on datagrams", protocol=self.protocol)
            finally:
                self._gathered = None
                if gathered:
                    self._send_gathered(gathered)
            if len(batch) < batch_size:
                return  # the socket was empty

    def _one_by_one(self, datagrams: list[tuple[bytes, tuple]]) -> None:
        """A batch handed to a protocol that takes one datagram per call."""
        protocol = self.protocol
        received = protocol.datagramReceived
        for data, address in datagrams:
            try:
                received(data, address)
            except BaseException:
                log.failure("{protocol} failed on a datagram", protocol=protocol)

    def _send_gathered(self, replies: list[tuple[bytes, tuple]]) -> None:
        """
        REPLIES in order, with sendmmsg (runs segmented); one it cannot send
        (an address that is not a numeric one of the socket's family, an
        error other than a full queue) goes alone through `reply`'s sendto,
        which says why.
        """
        send_batch = self.mmsg.send_batch  # type: ignore[union-attr]  # gathered only with it
        start, total = 0, len(replies)
        try:
            fd, family = self.handle.fileno(), self.addressFamily
            while start < total:
                start, dropped, segmenting = send_batch(fd, family, replies, start, self.segment)
                if dropped:
                    self.replies_dropped += dropped
                if not segmenting and self.segment:
                    self.segment = 0
                    log.info(
                        "{protocol}: the kernel refuses segmented UDP sends (UDP_SEGMENT); "
                        "replies go one datagram per message",
                        protocol=self.protocol,
                    )
                if start < total:
                    try:
                        self._send(*replies[start])
                    except Exception:
                        log.failure("{protocol} failed on a datagram", protocol=self.protocol)
                    start += 1
        except Exception:
            log.failure("{protocol} failed on a datagram", protocol=self.protocol)

    def reply(self, datagram: bytes, address: tuple) -> None:
        """
        Send DATAGRAM to ADDRESS, a peer's address as datagramReceived got it:
        at once, or with the batch's other replies when the batch is handled.
        """
        gathered = self._gathered
        if gathered is not None:
            gathered.append((datagram, address))
            return
        self._send(datagram, address)

    def _send(self, datagram: bytes, address: tuple) -> None:
        """DATAGRAM to ADDRESS with one sendto; dropped (counted) if the kernel cannot queue it."""
        while True:
            try:
                self.handle.sendto(datagram, address)
                return
            except OSError as e:
                if e.errno == EINTR:
                    continue
                if e.errno in _DROPPED:
                    self.replies_dropped += 1
                    return
                if e.errno == EMSGSIZE:
                    raise error.MessageLengthError("message too long") from None
                raise


def listen(
    reactor: object,
    port: int,
    protocol: protocol.DatagramProtocol,
    interface: str,
    max_packet_size: int,
) -> IListeningPort:
    """Bind a L{BatchedDatagramPort} as `reactor.listenUDP` binds Twisted's."""
    listening = BatchedDatagramPort(port, protocol, interface, max_packet_size, reactor)
    listening.startListening()
    return listening


def adopt(
    reactor: object,
    fd: int,
    family: int,
    protocol: protocol.DatagramProtocol,
    max_packet_size: int,
) -> IListeningPort:
    """Serve PROTOCOL on the bound UDP socket FD, as `reactor.adoptDatagramPort` does."""
    listening: BatchedDatagramPort = BatchedDatagramPort._fromListeningDescriptor(
        reactor, fd, family, protocol, maxPacketSize=max_packet_size
    )
    listening.startListening()
    return listening


# The guard's checks (suite.net.twisted_internals.guard).

LEAN_TYPES.add(BatchedDatagramPort)

REQUIRED = (
    ("twisted.internet.udp.Port._fromListeningDescriptor", udp.Port, "_fromListeningDescriptor"),
    ("twisted.internet.udp.Port.getHandle", udp.Port, "getHandle"),
)


@implementer(IBatchedDatagramProtocol)
class BatchProbe(protocol.DatagramProtocol):
    send = None

    def __init__(self) -> None:
        self.batches: list[list[tuple[bytes, tuple]]] = []

    def datagramsReceived(self, datagrams: list[tuple[bytes, tuple]]) -> None:
        self.batches.append(datagrams)


def batched_read_self_test() -> str | None:
    """
    Two datagrams read by one batched read and a reply sent back, on
    loopback; what failed, or None.
    """
    probe = BatchProbe()
    port = BatchedDatagramPort(0, probe, "127.0.0.1", 8192, Unwatched())
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ours,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer,
    ):
        ours.bind(("127.0.0.1", 0))
        ours.setblocking(False)
        peer.bind(("127.0.0.1", 0))
        peer.settimeout(1.0)
        port.handle = ours
        for datagram in (b"one", b"two"):
            peer.sendto(datagram, ours.getsockname())
        select.select([ours], [], [], 1.0)
        port.doRead()
        source = peer.getsockname()
        if probe.batches != [[(b"one", source), (b"two", source)]]:
            return "two datagrams did not arrive in one batch"
        port.reply(b"back", source)
        if peer.recv(100) != b"back":
            return "a reply did not arrive"
    return None


SELF_TESTS: tuple[tuple[str, Callable[[], str | None]], ...] = (
    ("the batched UDP read's self-test", batched_read_self_test),
)
