"""
The suite's UDP port: Twisted's `udp.Port`, reading in batches and
answering without Twisted's per-datagram address checks.

Each readiness event drains up to READ_BATCH datagrams in one tight loop
(names looked up once per batch, not once per datagram), so a burst is
taken off the kernel's receive buffer before it overflows.  A protocol
with `datagramsReceived(list of (data, address))` gets the whole batch in
one call, so what it does per batch (a timestamp, a write) is not done per
datagram.  `reply` sends
to an address the socket itself reported, so it skips `write`'s parsing of
the address text (about a microsecond per datagram); a reply the kernel
cannot queue (ENOBUFS, EAGAIN) is dropped, as the network may drop any
datagram.  With `reuse_port`, the socket binds with SO_REUSEPORT.
"""

import socket
from errno import EAGAIN, ECONNREFUSED, EINTR, EMSGSIZE, ENOBUFS

from twisted.internet import error, udp
from twisted.logger import Logger

log = Logger()

READ_BATCH = 512
_IGNORED = (EINTR, EAGAIN, EMSGSIZE, ECONNREFUSED)  # as Twisted's udp.Port.doRead
_DROPPED = (EAGAIN, ENOBUFS, ECONNREFUSED)


class DatagramPort(udp.Port):
    reuse_port = False

    def createInternetSocket(self):
        sock = super().createInternetSocket()
        if self.reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        return sock

    def doRead(self):
        batch = getattr(self.protocol, "datagramsReceived", None)
        if batch is not None:
            return self._read_batch(batch)
        recvfrom, size = self.socket.recvfrom, self.maxPacketSize
        received = self.protocol.datagramReceived
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
                log.failure("{protocol} failed on a datagram", protocol=self.protocol)

    def _read_batch(self, deliver):
        recvfrom, size = self.socket.recvfrom, self.maxPacketSize
        batch = []
        append = batch.append
        try:
            for _ in range(READ_BATCH):
                append(recvfrom(size))
        except OSError as e:
            if e.errno not in _IGNORED:
                raise
        if not batch:
            return
        if self.addressFamily == socket.AF_INET6:
            batch = [(data, address[:2]) for data, address in batch]
        try:
            deliver(batch)
        except BaseException:
            log.failure("{protocol} failed on datagrams", protocol=self.protocol)

    def reply(self, datagram: bytes, address) -> None:
        """Send DATAGRAM to ADDRESS, a peer's address as datagramReceived got it."""
        while True:
            try:
                self.socket.sendto(datagram, address)
                return
            except OSError as e:
                if e.errno == EINTR:
                    continue
                if e.errno in _DROPPED:
                    return
                if e.errno == EMSGSIZE:
                    raise error.MessageLengthError("message too long") from None
                raise


def listen_datagram(reactor, port: int, protocol, interface: str = "",
                    max_packet_size: int = 8192, reuse_port: bool = False) -> DatagramPort:
    """Bind a L{DatagramPort} like `reactor.listenUDP` does."""
    listening = DatagramPort(port, protocol, interface, max_packet_size, reactor)
    listening.reuse_port = reuse_port
    listening.startListening()
    return listening


def adopt_datagram_port(reactor, fd: int, family: int, protocol,
                        max_packet_size: int = 8192) -> DatagramPort:
    """Serve PROTOCOL on the already bound UDP socket FD, like `reactor.adoptDatagramPort`."""
    listening = DatagramPort._fromListeningDescriptor(
        reactor, fd, family, protocol, maxPacketSize=max_packet_size
    )
    listening.startListening()
    return listening
