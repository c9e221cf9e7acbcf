"""
Stream transports that count what crosses the socket, over public API only.

Each connection adds the bytes it reads and sends to `counts` (the
L{suite.foundation.metrics.Counts} its connection policy gives it), so the
byte counts are what crossed the socket, TLS records included.  The
counting transports, L{CountedServer} and L{CountedUNIXServer}, are what
Twisted's stock ports build on the stock path (`Port.transport`, which
Twisted documents as replaceable); the fast path's write-through
transports (L{suite.net.twisted_internals.streams}) build on them.

Also here: binding a listening socket with SO_REUSEPORT (`reuse_port`)
before the reactor adopts it (`IReactorSocket.adoptStreamPort`), the
kernel's count of unread bytes, and the shutdown drain's read.
"""

import fcntl
import socket
import struct
import termios
from errno import EWOULDBLOCK
from typing import Protocol, cast, runtime_checkable

from twisted.internet import abstract, error, main, tcp, unix
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IReactorFDSet,
)
from twisted.protocols.policies import ProtocolWrapper

from suite.foundation.metrics import UNCOUNTED, Counts
from suite.net.accept_share import AcceptShare


def socket_transport(transport: object) -> object:
    """
    The transport that owns the socket: TRANSPORT itself, or the one beneath
    TLS (None before the TLS layer is connected).
    """
    return transport.transport if isinstance(transport, ProtocolWrapper) else transport


def held_bytes(transport: object) -> int:
    """
    The bytes the kernel holds unread for TRANSPORT's socket (FIONREAD):
    what a close now would discard; 0 once it is closed or has no socket.
    """
    below = socket_transport(transport)
    sock: socket.socket | None = getattr(below, "socket", None)
    if sock is None:
        return 0
    try:
        held: int = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]
    except (AttributeError, OSError, ValueError):
        return 0
    return held


@runtime_checkable
class ReadableTransport(Protocol):
    """What the reactor reads from: Twisted's `FileDescriptor` (or a stand-in)."""

    disconnecting: bool

    def doRead(self) -> object: ...


def read_held(transport: object) -> bool:
    """
    Read once (up to the transport's buffer size) from what the kernel holds
    for TRANSPORT, paused or not, as the reactor would; False when nothing
    was held or the connection is closing or gone.  The shutdown drain uses
    it to take in what senders already handed to the kernel.
    """
    below = socket_transport(transport)
    if not isinstance(below, ReadableTransport):  # gone, or no socket of its own
        return False
    if below.disconnecting or not held_bytes(below):
        return False
    return below.doRead() is None


class CountedServer(tcp.Server):
    """
    A TCP connection that adds what it reads and sends to `counts`.  Its
    read is Twisted's `Connection.doRead` in one call, with public names
    only (C{getHandle}, C{bufferSize}, C{protocol}); it runs for every read.
    """

    counts: Counts = UNCOUNTED

    def __init__(
        self,
        sock: socket.socket,
        protocol: IProtocol,
        client: tuple[object, ...],
        server: tcp.Port,
        sessionno: int,
        reactor: IReactorFDSet,
    ) -> None:
        super().__init__(sock, protocol, client, server, sessionno, reactor)
        self.handle: socket.socket = self.getHandle()

    # Twisted's own Connection.doRead differs from its _AbortingMixin's the same way.
    def doRead(  # type: ignore[override]
        self,
    ) -> error.ConnectionLost | error.ConnectionDone | None:
        try:
            data = self.handle.recv(self.bufferSize)
        except OSError as e:
            return None if e.args[0] == EWOULDBLOCK else main.CONNECTION_LOST
        if not data:
            return main.CONNECTION_DONE
        self.counts.received += len(data)
        self.protocol.dataReceived(data)
        return None

    def writeSomeData(self, data: bytes) -> int | error.ConnectionLost:
        """Twisted's buffered path, counted."""
        sent = super().writeSomeData(data)
        if type(sent) is int:
            self.counts.sent += sent
        return sent


class CountedUNIXServer(CountedServer, unix.Server):
    """
    A Unix-socket connection that counts like L{CountedServer}; it reads
    with `recv`, not Twisted's `recvmsg`, since no suite protocol receives
    file descriptors.
    """


def counted_transport_for(family: int) -> type[CountedServer]:
    """The counting transport for connections accepted on a socket of FAMILY."""
    return CountedUNIXServer if family == socket.AF_UNIX else CountedServer


def bound_socket(kind: int, interface: str, port: int, backlog: int | None) -> socket.socket:
    """
    A non-blocking socket of KIND bound to INTERFACE:PORT with SO_REUSEADDR
    and SO_REUSEPORT (listening with BACKLOG unless it is None), ready for
    `adoptStreamPort` or `adoptDatagramPort`.  Failures raise
    C{CannotListenError}, as Twisted's own ports do.  Twisted 26.10's
    `listenTCP(makeBinding(..., reusePort=True))` is the public route for
    TCP, but Twisted 26.4 has no `makeBinding`, and UDP has no route at all.
    """
    family = socket.AF_INET6 if abstract.isIPv6Address(interface) else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        flags = socket.AI_NUMERICHOST | socket.AI_PASSIVE
        address = socket.getaddrinfo(interface or None, port, family, kind, 0, flags)[0][4]
        sock.bind(address)
        if backlog is not None:
            sock.listen(backlog)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise error.CannotListenError(interface, port, e) from None
    return sock


class StreamPorts(Protocol):
    """
    What makes the stream ports: the reactor (its IReactorTCP, IReactorUNIX
    and IReactorSocket), or the suite's ports over it.  The factory is any
    IProtocolFactory, as Twisted's endpoints pass it.
    """

    def listenTCP(
        self, port: int, factory: IProtocolFactory, backlog: int = 50, interface: str = ""
    ) -> IListeningPort: ...

    def listenUNIX(
        self,
        address: str,
        factory: IProtocolFactory,
        backlog: int = 50,
        mode: int = 0o666,
        wantPID: bool = False,
    ) -> IListeningPort: ...

    def adoptStreamPort(
        self,
        fileDescriptor: int,
        addressFamily: socket.AddressFamily,
        factory: IProtocolFactory,
        shared: bool = False,
        share: "AcceptShare | None" = None,
    ) -> IListeningPort: ...


class StockStreamPorts:
    """
    The stock path's stream ports: Twisted's own `tcp.Port` and `unix.Port`
    as the reactor makes them (Twisted's accept loop and its handling of
    EMFILE, Twisted's buffered writes), with the counting transports.
    """

    def __init__(self, reactor: object) -> None:
        # The reactor provides all three; Twisted annotates their factory as its
        # ServerFactory class, narrower than the IProtocolFactory its endpoints pass.
        self._reactor = cast(StreamPorts, reactor)

    def listenTCP(
        self, port: int, factory: IProtocolFactory, backlog: int = 50, interface: str = ""
    ) -> IListeningPort:
        return _counted(self._reactor.listenTCP(port, factory, backlog, interface), socket.AF_INET)

    def listenUNIX(
        self,
        address: str,
        factory: IProtocolFactory,
        backlog: int = 50,
        mode: int = 0o666,
        wantPID: bool = False,
    ) -> IListeningPort:
        return _counted(
            self._reactor.listenUNIX(address, factory, backlog, mode, wantPID), socket.AF_UNIX
        )

    def adoptStreamPort(
        self,
        fileDescriptor: int,
        addressFamily: socket.AddressFamily,
        factory: IProtocolFactory,
        shared: bool = False,
        share: "AcceptShare | None" = None,
    ) -> IListeningPort:
        """Twisted's own port (its accept loop takes what it can, SHARED or not)."""
        return _counted(
            self._reactor.adoptStreamPort(fileDescriptor, addressFamily, factory), addressFamily
        )


def _counted(port: IListeningPort, family: int) -> IListeningPort:
    """
    PORT, building counting transports from now on: Twisted's `tcp.Port`
    documents its `transport` attribute as the one to replace, and no
    connection is accepted before the reactor's next turn.
    """
    port.transport = counted_transport_for(family)  # type: ignore[attr-defined]
    return port


def listen_tcp_reusing_port(
    ports: StreamPorts, port: int, factory: IProtocolFactory, backlog: int, interface: str
) -> IListeningPort:
    """Listen on INTERFACE:PORT with SO_REUSEPORT, through PORTS' `adoptStreamPort`."""
    with bound_socket(socket.SOCK_STREAM, interface, port, backlog) as sock:
        return ports.adoptStreamPort(sock.fileno(), sock.family, factory)
