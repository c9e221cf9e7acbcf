"""
The fast path's stream ports and transports, on Twisted's private code.

Write-through.  Twisted's `transport.write` never sends: it appends to a
buffer and asks the reactor to watch the socket for writability, so every
answer costs two `epoll_ctl` calls and a second pass through the reactor
before it leaves (twisted/twisted#5303).  L{WriteThrough} sends directly
when nothing is waiting in the buffer; whatever the kernel does not take at
once (a partial send, EAGAIN, or an error) goes through Twisted's own
buffering, so writability watching, producer pausing, half-close,
`loseConnection` ordering and `abortConnection` are Twisted's unchanged.
It relies on (read in Twisted 26.4.0 and 26.10.0, identical there):
  - `twisted.internet.abstract.FileDescriptor._tempDataLen` (instance
    attribute, set in `__init__`) and `.dataBuffer`: what waits to be sent;
  - `FileDescriptor._writeDisconnected`: set by `loseWriteConnection`;
  - `twisted.internet.tcp.Server.repstr`: the repr string kept on every
    connection, dropped to save 70 bytes each (optional);
  - `twisted.internet.tcp.Port._realPortNumber`: the port in the repr.
Public route, if Twisted offered one: a transport whose `write` sends at
once when nothing is buffered (twisted/twisted#5303), or a public
"bytes pending" attribute (IConsumer has none).

The accept loop.  At the file-descriptor limit `accept` fails with EMFILE
and the client would wait in the backlog, or (Twisted's own recovery) be
closed without a word at the cost of three log lines each.
L{RefusingPort} keeps one spare descriptor instead: on EMFILE (or ENFILE)
it is closed, the waiting connections are accepted one at a time, sent
the factory's `refusal` (L{IRefusesAtDescriptorLimit}) and closed, and
the spare is opened again.  When a port closes (shutdown), it first
accepts what waits in its backlog, so clients that connected and sent just
before are served (the logger's drain reads them), not reset.  It replaces
`twisted.internet.tcp.Port.doRead` and relies on:
  - `tcp.Port._buildAddr` and `unix.Port._buildAddr`: the peer's address
    object from what `accept` returned;
  - `tcp.Port.socket` (set by `startListening`), `.sessionno`,
    `.numberAccepts` and the documented, replaceable `.transport`;
  - `tcp.Port._fromListeningDescriptor` and `unix.Port._fromListeningDescriptor`:
    a port of the suite's class on an adopted socket (systemd, reuse_port).
Public route, if Twisted offered one: a hook on `tcp.Port` for EMFILE
(today Twisted closes the waiting client, `_accept` in tcp.py), a
`transportFactory` argument to `listenTCP`/`adoptStreamPort`, and a way
to drain the backlog in `stopListening`.
"""

import os
import socket
from collections.abc import Callable, Iterable
from errno import ECONNABORTED, EMFILE, ENFILE, ENOBUFS, ENOMEM, EPERM, EWOULDBLOCK
from functools import cache
from typing import TYPE_CHECKING, Any, cast

from twisted.internet import address as addresses
from twisted.internet import protocol as protocols
from twisted.internet import tcp, unix
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IReactorFDSet,
    IReactorTime,
)
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure

from suite.foundation.metrics import Counts
from suite.net.accept_share import PAUSE, AcceptShare
from suite.net.interfaces import IRefusesAtDescriptorLimit
from suite.net.transport import CountedServer, CountedUNIXServer
from suite.net.twisted_internals.dispatch import LEAN_TYPES

log = Logger()

# The mixins below are used over these classes only: the type checker sees them as their bases.
if TYPE_CHECKING:
    _TransportBase = CountedServer
    _PortBase = tcp.Port
else:
    _TransportBase = _PortBase = object

OUT_OF_DESCRIPTORS = (EMFILE, ENFILE)
CANNOT_ACCEPT_NOW = (ENOBUFS, ENOMEM)
REFUSED_PER_READ = 1000  # connections refused in one pass at the descriptor limit
NO_SPARE_PAUSE = 1.0  # seconds a port stops accepting when not even the spare is left


class WriteThrough(_TransportBase):
    """Mixin for a counting stream transport (L{CountedServer}, L{CountedUNIXServer})."""

    share: AcceptShare | None = None  # the workers' counts of open connections, if shared

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        if self.share is not None:
            self.share.closed()
            self.share = None

    def write(self, data: bytes) -> None:
        if (
            self._tempDataLen
            or self.dataBuffer
            or not self.connected
            or self._writeDisconnected
            or type(data) is not bytes
            or not data
        ):
            super().write(data)  # Twisted's path: queue behind what is waiting, or refuse
            return
        try:
            sent = self.handle.send(data)
        except OSError:
            sent = 0  # EAGAIN, EINTR, or a dead peer: the reactor's write pass finds out
        self.counts.sent += sent
        if sent < len(data):
            super().write(data[sent:])

    def writeSequence(self, iovec: Iterable[bytes]) -> None:
        iovec = list(iovec)
        if all(type(chunk) is bytes for chunk in iovec):
            self.write(b"".join(iovec))
        else:
            super().writeSequence(iovec)  # raises Twisted's TypeError


class WriteThroughServer(WriteThrough, CountedServer):
    """
    A TCP connection accepted by a fast-path port.  Its repr is built when
    asked for, not kept as a string on every connection (70 bytes each).
    """

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
        self.__dict__.pop("repstr", None)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} #{self.sessionno} on {self.server._realPortNumber}>"


class WriteThroughUNIXServer(WriteThrough, CountedUNIXServer):
    """A Unix-socket connection accepted by a fast-path port."""


class SpareDescriptor:
    """
    One open descriptor (of /dev/null) held back, so that at the limit one
    connection at a time can still be accepted to be told why it is closed.
    One is enough for every port: the reactor accepts in one thread.
    """

    def __init__(self) -> None:
        self._fd: int | None = None

    def reserve(self) -> bool:
        """Open the spare unless it is open; False when even that fails (at the limit)."""
        if self._fd is None:
            try:
                self._fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return False
        return True

    def release(self) -> bool:
        """Close the spare, freeing its slot; False when there was none to close."""
        if self._fd is None:
            return False
        os.close(self._fd)
        self._fd = None
        return True


SPARE = SpareDescriptor()


def _refuse(client: socket.socket, refusal: bytes) -> None:
    """
    Send REFUSAL and close CLIENT without a reset: its sending side is shut
    first, and what the client already sent is read away, since closing a
    socket with unread input makes the kernel answer with RST.
    """
    with client:
        client.setblocking(False)
        try:
            if refusal:
                client.send(refusal)
            client.shutdown(socket.SHUT_WR)
            client.recv(65536)
        except OSError:
            pass


def refusing_factory(factory: IProtocolFactory) -> IRefusesAtDescriptorLimit | None:
    """
    What FACTORY (under a TLS wrapper, the factory it wraps: the public
    `WrappingFactory.wrappedFactory`) says to refused connections, if anything.
    """
    while isinstance(factory, WrappingFactory):
        factory = factory.wrappedFactory
    return IRefusesAtDescriptorLimit(factory, None)


class RefusingPort(_PortBase):
    """
    Mixin for a Twisted stream port (`tcp.Port`, `unix.Port`): its accept
    loop refuses connections at the descriptor limit with the factory's
    `refusal` (see the module's docstring), and it accepts what waits in its
    backlog before it closes.  The factory (under a TLS wrapper, the one it
    wraps) is told through L{IRefusesAtDescriptorLimit}, the address None
    when not even the spare was left to accept one.
    """

    numberAccepts = 100  # Twisted's start; startListening sets it again
    _paused: IDelayedCall | None = None  # resumes accepting after NO_SPARE_PAUSE
    # Its socket is shared by worker processes: each wake-up accepts one
    # connection, so that the others woken with it take their share instead
    # of the first taking the whole backlog, and a worker ahead of the others
    # in open connections (SHARE) lets a connection wait for them first.
    shared = False
    share: AcceptShare | None = None
    _turn: IDelayedCall | None = None  # a worker ahead: when it takes one anyway
    _overdue = False  # it waited its turn: the next connection is its
    _draining = False  # closing: the whole backlog is accepted

    def startListening(self) -> None:
        SPARE.reserve()
        super().startListening()

    def doRead(self) -> None:
        share = self.share
        if share is not None and not self._draining and not self._overdue and share.ahead():
            self.stopReading()
            clock = cast(IReactorTime, self.reactor)
            self._turn = clock.callLater(PAUSE, self._take_turn)
            return
        self._overdue = False
        accepted = 0
        one = self.shared and not self._draining
        try:
            for _ in range(1 if one else self.numberAccepts):
                try:
                    client, address = self.socket.accept()
                except OSError as e:
                    if e.errno in (EPERM, ECONNABORTED):
                        continue  # refused by netfilter, or reset while waiting
                    if e.errno in OUT_OF_DESCRIPTORS:
                        self._refuse_waiting(e.errno)
                    elif e.errno not in CANNOT_ACCEPT_NOW and e.errno != EWOULDBLOCK:
                        raise
                    break
                accepted += 1
                self._serve(client, address)
        except BaseException:
            log.failure("{port}: accepting connections failed", port=self)
        # Twisted's scaling: more accepts per read while the backlog keeps them busy.
        if self.shared:
            return
        if accepted == self.numberAccepts:
            self.numberAccepts += 20
        else:
            self.numberAccepts = max(1, accepted)

    def _serve(self, client: socket.socket, address: Any) -> None:
        """
        What Twisted's loop does with an accepted socket: a protocol and a
        transport.  ADDRESS is what `accept` returned (typeshed: Any), a tuple
        for IP peers, a path for Unix ones.
        """
        if isinstance(address, tuple) and len(address) == 4:  # IPv6: the scope id, as a name
            host = socket.getnameinfo(address, socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
            address = (host[0], *address[1:])
        protocol = self._served.buildProtocol(self._buildAddr(address))
        if protocol is None:
            client.close()
            return
        session = self.sessionno
        self.sessionno = session + 1
        transport = self.transport(client, protocol, address, self, session, self.reactor)
        if self.share is not None:
            self.share.opened()
            cast(WriteThrough, transport).share = self.share
        protocol.makeConnection(transport)

    @property
    def _served(self) -> IProtocolFactory:
        """The factory, which the port's constructor sets (Twisted types it as optional)."""
        return cast(IProtocolFactory, self.factory)

    def _refuse_waiting(self, errno: int) -> None:
        """Out of descriptors (ERRNO): refuse what waits, through the spare's slot."""
        told = refusing_factory(self._served)
        reason = f"out of file descriptors ({os.strerror(errno)})"
        if not SPARE.release():
            SPARE.reserve()  # perhaps there is room again for the next time
            self.stopReading()  # not even the spare: do not spin on a readable socket
            clock = cast(IReactorTime, self.reactor)  # the reactor the port was made with
            self._paused = clock.callLater(NO_SPARE_PAUSE, self._resume_accepting)
            if told is not None:
                told.refused_at_descriptor_limit(None, reason)
            return
        refusal = told.refusal if told is not None else b""
        try:
            for _ in range(REFUSED_PER_READ):
                try:
                    client, address = self.socket.accept()
                except OSError:
                    break
                _refuse(client, refusal)
                if told is not None:
                    told.refused_at_descriptor_limit(self._buildAddr(address), reason)
        finally:
            SPARE.reserve()

    def _resume_accepting(self) -> None:
        self._paused = None
        if self.connected and not self.disconnecting:
            self.startReading()

    def _take_turn(self) -> None:
        """The others had PAUSE to take the waiting connection; what is left is this one's."""
        self._turn = None
        self._overdue = True
        self._resume_accepting()

    def loseConnection(self, *arguments: object) -> object:
        """
        Accept what waits in the backlog before closing: those clients have
        connected and may have sent already (the logger's shutdown drain
        then reads them); closing the port would reset them.
        """
        for timer in (self._paused, self._turn):  # no timer outlives the port
            if timer is not None and timer.active():
                timer.cancel()
        self._paused = self._turn = None
        if self.connected and not self.disconnecting:
            self._draining = True
            self.doRead()
        return super().loseConnection(*arguments)

    stopListening = loseConnection


class TCPPort(RefusingPort, tcp.Port):
    transport = WriteThroughServer


class UNIXPort(RefusingPort, unix.Port):
    transport = WriteThroughUNIXServer

    def connectionLost(self, reason: Failure) -> None:
        # Twisted's unix.Port removes the socket's path when it closes (the path is
        # `_bindPath` in Twisted 26.10, `port` in 26.4), an adopted socket's too: a
        # worker's is its parent's to remove.
        if self.shared:
            setattr(self, unix_path_attribute(), b"\0")  # abstract: nothing to remove
        super().connectionLost(reason)


@cache
def unix_path_attribute() -> str:
    """The attribute naming the path a Twisted unix.Port removes when it closes ("": none)."""
    probe = unix.Port(b"/run/probe", protocols.Factory(), reactor=Unwatched())
    for name in ("_bindPath", "port"):
        if getattr(probe, name, None) == b"/run/probe":
            return name
    return ""


class FastStreamPorts:
    """
    The fast path's stream ports (L{TCPPort}, L{UNIXPort}) made the way
    REACTOR's `listenTCP`, `listenUNIX` and `adoptStreamPort` make Twisted's.
    """

    def __init__(self, reactor: object) -> None:
        self._reactor = reactor

    def listenTCP(
        self, port: int, factory: IProtocolFactory, backlog: int = 50, interface: str = ""
    ) -> IListeningPort:
        listening = TCPPort(port, factory, backlog, interface, self._reactor)
        listening.startListening()
        return listening

    def listenUNIX(
        self,
        address: str,
        factory: IProtocolFactory,
        backlog: int = 50,
        mode: int = 0o666,
        wantPID: bool = False,
    ) -> IListeningPort:
        # As the reactor's own listenUNIX does: unix.Port takes a str path too.
        listening = UNIXPort(address, factory, backlog, mode, self._reactor, wantPID)  # type: ignore[arg-type]
        listening.startListening()
        return listening

    def adoptStreamPort(
        self,
        fileDescriptor: int,
        addressFamily: socket.AddressFamily,
        factory: IProtocolFactory,
        shared: bool = False,
        share: AcceptShare | None = None,
    ) -> IListeningPort:
        """
        A port on the socket FILEDESCRIPTOR; SHARED: with other processes
        (workers), whose open connections SHARE counts.
        """
        listening: RefusingPort
        if addressFamily == socket.AF_UNIX:
            listening = UNIXPort._fromListeningDescriptor(self._reactor, fileDescriptor, factory)
        else:
            listening = TCPPort._fromListeningDescriptor(
                self._reactor, fileDescriptor, addressFamily, factory
            )
        listening.shared = shared
        listening.share = share
        listening.startListening()
        return listening


# The guard's checks (suite.net.twisted_internals.guard).

LEAN_TYPES.update((WriteThroughServer, WriteThroughUNIXServer, TCPPort, UNIXPort))


def close_shared(port: Any) -> Any:
    """
    Stop PORT (a Twisted `tcp.Port` or `unix.Port` that bound its own
    socket) without `shutdown()`: worker processes share that socket, and
    a shutdown would end its listening for all of them; a close only drops
    this process's descriptor.  Twisted shuts down the sockets it bound
    (`_SocketCloser._shouldShutdown`), not those it adopted.
    """
    port._shouldShutdown = False
    return port.stopListening()


REQUIRED = (
    ("twisted.internet.abstract.FileDescriptor.dataBuffer", tcp.Server, "dataBuffer"),
    (
        "twisted.internet.abstract.FileDescriptor._writeDisconnected",
        tcp.Server,
        "_writeDisconnected",
    ),
    ("twisted.internet.tcp.Port._realPortNumber", tcp.Port, "_realPortNumber"),
    ("twisted.internet.tcp._SocketCloser._shouldShutdown", tcp.Port, "_shouldShutdown"),
    ("twisted.internet.tcp.Port._buildAddr", tcp.Port, "_buildAddr"),
    ("twisted.internet.tcp.Port._fromListeningDescriptor", tcp.Port, "_fromListeningDescriptor"),
    ("twisted.internet.tcp.Port.transport", tcp.Port, "transport"),
    ("twisted.internet.unix.Port._buildAddr", unix.Port, "_buildAddr"),
    ("twisted.internet.unix.Port._fromListeningDescriptor", unix.Port, "_fromListeningDescriptor"),
)


class Unwatched:
    """An IReactorFDSet that watches nothing: the self-tests drive their transports by hand."""

    def addReader(self, reader: object) -> None:
        pass

    def addWriter(self, writer: object) -> None:
        self.writing = True

    def removeReader(self, reader: object) -> None:
        pass

    def removeWriter(self, writer: object) -> None:
        self.writing = False

    writing = False


class Received(protocols.Protocol):
    def __init__(self) -> None:
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data


def _pending(peer: socket.socket) -> bytes:
    try:
        return peer.recv(65536)
    except BlockingIOError:
        return b"(nothing)"


def write_through_self_test() -> str | None:
    """
    Write through a fast transport on a socketpair and read back the same
    bytes; what failed, or None.  It checks what the write relies on: a
    write with nothing waiting leaves at once without watching for
    writability, one behind what Twisted buffered waits its turn, a read is
    delivered and counted, and nothing is sent once the half-close is done.
    """
    reactor = Unwatched()
    server = TCPPort(0, protocols.Factory(), reactor=reactor)
    ours, peer = socket.socketpair()
    with ours, peer:
        peer.setblocking(False)
        protocol = Received()
        # Unwatched has the four IReactorFDSet methods a transport calls, not the rest.
        fd_set = cast(IReactorFDSet, reactor)
        transport = WriteThroughServer(ours, protocol, ("127.0.0.1", 1), server, 0, fd_set)
        transport.counts = Counts()
        if not hasattr(transport, "_tempDataLen"):
            return "twisted.internet.abstract.FileDescriptor._tempDataLen is missing"
        transport.write(b"at once")
        if _pending(peer) != b"at once" or reactor.writing:
            return "a write with nothing buffered did not leave at once"
        tcp.Server.write(transport, b"queued")  # Twisted's own write: buffered
        transport.write(b" behind")
        if _pending(peer) != b"(nothing)":
            return "a write went ahead of what Twisted had buffered"
        transport.doWrite()
        if _pending(peer) != b"queued behind":
            return "what Twisted had buffered did not leave in order"
        peer.send(b"read")
        transport.doRead()
        if protocol.received != b"read" or transport.counts.received != 4:
            return "a read was not delivered and counted"
        transport.loseWriteConnection()
        transport.doWrite()
        if not transport._writeDisconnected:
            return "FileDescriptor._writeDisconnected was not set by a half-close"
        transport.write(b"after half-close")
        if _pending(peer) != b"":
            return "a write after the half-close was sent"
        if transport.counts.sent != len(b"at oncequeued behind"):
            return "the bytes sent were not counted"
        if repr(transport) != "<WriteThroughServer #0 on None>":
            return "a connection's repr could not be built"
    return None


def accept_loop_self_test() -> str | None:
    """
    The peer addresses the accept loop builds with Twisted's `_buildAddr`;
    what failed, or None.
    """
    tcp_port = TCPPort(0, protocols.Factory(), reactor=Unwatched())
    if tcp_port._buildAddr(("127.0.0.1", 5)) != addresses.IPv4Address("TCP", "127.0.0.1", 5):
        return "tcp.Port._buildAddr did not build an IPv4Address"
    unix_port = UNIXPort(b"/run/probe", protocols.Factory(), reactor=Unwatched())
    if unix_port._buildAddr(b"/run/peer") != addresses.UNIXAddress(b"/run/peer"):
        return "unix.Port._buildAddr did not build a UNIXAddress"
    if not unix_path_attribute():
        return "unix.Port holds the path it removes when it closes in neither _bindPath nor port"
    return None


SELF_TESTS: tuple[tuple[str, Callable[[], str | None]], ...] = (
    ("the write-through self-test", write_through_self_test),
    ("the accept loop's self-test", accept_loop_self_test),
)
