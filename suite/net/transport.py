"""
Stream transports that send at once.

Twisted's `transport.write` never sends: it appends to a buffer and asks
the reactor to watch the socket for writability, so every answer costs two
`epoll_ctl` calls and a second pass through the reactor before it leaves
(twisted/twisted#5303).  The suite's stream ports build L{WriteThroughServer}
transports instead: when nothing is waiting in the buffer, `write` sends
directly; whatever the kernel does not take at once (a partial send,
EAGAIN, or an error) goes through Twisted's own buffering, so writability
watching, producer pausing, half-close, `loseConnection` ordering and
`abortConnection` are Twisted's unchanged.

The ports are Twisted's `tcp.Port` and `unix.Port` with this transport,
built by L{StreamReactor}: a reactor whose `listenTCP`, `listenUNIX` and
`adoptStreamPort` make them, so every Twisted server endpoint string
(`tcp:`, `tcp6:`, `unix:`, `systemd:`) listens through it unchanged.
With `reuse_port`, TCP ports bind with SO_REUSEPORT.

At the file-descriptor limit `accept` fails with EMFILE and the client
would wait in the backlog, or (Twisted's own recovery) be closed without a
word at the cost of three log lines each.  The suite's ports keep one
spare descriptor instead: on EMFILE (or ENFILE) it is closed, the waiting
connections are accepted one at a time, sent their protocol's `refusal`
line (`ERROR too many connections` where the protocol can say it) and
closed, and the spare is opened again; the factory counts each refusal
and logs it flood-controlled.  This replaces Twisted's private
`tcp.Port.doRead`; should that name (or `_buildAddr`) ever go, the ports
fall back to Twisted's own accept loop.  When a port closes (shutdown), it
first accepts what waits in its backlog, so that clients that connected and
sent just before are served (the logger's drain reads them), not reset.

Each transport adds the bytes it reads and sends to `counts` (the
L{suite.foundation.metrics.Counts} its connection policy gives it), so the
byte counts are what crossed the socket, TLS records included.
"""

import fcntl
import os
import socket
import struct
import termios
from errno import ECONNABORTED, EMFILE, ENFILE, ENOBUFS, ENOMEM, EPERM, EWOULDBLOCK

from twisted.internet import main, tcp, unix
from twisted.internet.tcp import makeBinding
from twisted.logger import Logger

from suite.foundation.metrics import UNCOUNTED

log = Logger()


def socket_transport(transport):
    """The transport that owns the socket: TRANSPORT itself, or the one beneath TLS."""
    return getattr(transport, "transport", transport)


def held_bytes(transport) -> int:
    """
    The bytes the kernel holds unread for TRANSPORT's socket (FIONREAD):
    what a close now would discard; 0 once it is closed or has no socket.
    """
    sock = getattr(socket_transport(transport), "socket", None)
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]
    except (AttributeError, OSError, ValueError):
        return 0


def read_held(transport) -> bool:
    """
    Read once (up to the transport's buffer size) from what the kernel holds
    for TRANSPORT, paused or not, as the reactor would; False when nothing
    was held or the connection is closing or gone.  The shutdown drain uses
    it to take in what senders already handed to the kernel.
    """
    below = socket_transport(transport)
    if getattr(below, "disconnecting", True) or not held_bytes(below):
        return False
    return below.doRead() is None


class WriteThrough:
    """Mixin for a Twisted stream transport (`tcp.Server`, `unix.Server`)."""

    counts = UNCOUNTED

    def write(self, data):
        if (self._tempDataLen or self.dataBuffer or not self.connected
                or self._writeDisconnected or type(data) is not bytes or not data):
            return super().write(data)  # Twisted's path: queue behind what is waiting, or refuse
        try:
            sent = self.socket.send(data)
        except OSError:
            sent = 0  # EAGAIN, EINTR, or a dead peer: the reactor's write pass finds out
        self.counts.sent += sent
        if sent < len(data):
            super().write(data[sent:])

    def writeSomeData(self, data):
        """Twisted's buffered path (what `write` could not send at once), counted."""
        sent = super().writeSomeData(data)
        if type(sent) is int:
            self.counts.sent += sent
        return sent

    def writeSequence(self, iovec):
        iovec = list(iovec)
        if all(type(chunk) is bytes for chunk in iovec):
            self.write(b"".join(iovec))
        else:
            super().writeSequence(iovec)  # raises Twisted's TypeError


class WriteThroughServer(WriteThrough, tcp.Server):
    """
    A TCP connection accepted by a suite port.  Its repr is built when asked
    for, not kept as a string on every connection (70 bytes each).
    """

    def __init__(self, *arguments):
        super().__init__(*arguments)
        del self.repstr

    def doRead(self):
        """Twisted's `doRead` and `_dataReceived` in one call: it runs for every read."""
        try:
            data = self.socket.recv(self.bufferSize)
        except OSError as e:
            return None if e.args[0] == EWOULDBLOCK else main.CONNECTION_LOST
        if not data:
            return main.CONNECTION_DONE
        self.counts.received += len(data)
        self.protocol.dataReceived(data)

    def __repr__(self):
        return f"<{type(self).__name__} #{self.sessionno} on {self.server._realPortNumber}>"


class WriteThroughUNIXServer(WriteThrough, unix.Server):
    """A Unix-socket connection accepted by a suite port."""

    def _dataReceived(self, data):
        if data:
            self.counts.received += len(data)
        return super()._dataReceived(data)


# Twisted's private names the accept loop below stands in for.
OWN_ACCEPT_LOOP = all(hasattr(tcp.Port, name) for name in ("doRead", "_buildAddr"))
OUT_OF_DESCRIPTORS = (EMFILE, ENFILE)
CANNOT_ACCEPT_NOW = (ENOBUFS, ENOMEM)
REFUSED_PER_READ = 1000  # connections refused in one pass at the descriptor limit
NO_SPARE_PAUSE = 1.0  # seconds a port stops accepting when not even the spare is left


class SpareDescriptor:
    """
    One open descriptor (of /dev/null) held back, so that at the limit one
    connection at a time can still be accepted to be told why it is closed.
    One is enough for every port: the reactor accepts in one thread.
    """

    def __init__(self):
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


class RefusingPort:
    """
    Mixin for a Twisted stream port (`tcp.Port`, `unix.Port`): its accept
    loop refuses connections at the descriptor limit with the factory's
    protocol's `refusal` (see the module's docstring), and it accepts what
    waits in its backlog before it closes.  The factory (under
    a TLS wrapper, the one it wraps) is told through
    `refused_at_descriptor_limit(address, reason)`, address None when not
    even the spare was left to accept one.
    """

    numberAccepts = 100  # Twisted's start; startListening sets it again
    _paused = None  # the call that resumes accepting after NO_SPARE_PAUSE

    def startListening(self):
        SPARE.reserve()
        super().startListening()

    def doRead(self):
        if not OWN_ACCEPT_LOOP:
            return super().doRead()
        accepted = 0
        try:
            for _ in range(self.numberAccepts):
                try:
                    client, address = self.socket.accept()
                except OSError as e:
                    if e.errno in (EPERM, ECONNABORTED):
                        continue  # refused by netfilter, or reset while waiting
                    if e.errno in OUT_OF_DESCRIPTORS:
                        self._refuse_waiting(e)
                    elif e.errno not in CANNOT_ACCEPT_NOW and e.errno != EWOULDBLOCK:
                        raise
                    break
                accepted += 1
                self._serve(client, address)
        except BaseException:
            log.failure("{port}: accepting connections failed", port=self)
        # Twisted's scaling: more accepts per read while the backlog keeps them busy.
        if accepted == self.numberAccepts:
            self.numberAccepts += 20
        else:
            self.numberAccepts = max(1, accepted)

    def _serve(self, client: socket.socket, address):
        """What Twisted's loop does with an accepted socket: a protocol and a transport."""
        if isinstance(address, tuple) and len(address) == 4:  # IPv6: the scope id, as a name
            host = socket.getnameinfo(address, socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
            address = (host[0], *address[1:])
        protocol = self.factory.buildProtocol(self._buildAddr(address))
        if protocol is None:
            client.close()
            return
        session = self.sessionno
        self.sessionno = session + 1
        protocol.makeConnection(self.transport(client, protocol, address, self, session,
                                               self.reactor))

    def _refuse_waiting(self, error: OSError):
        """Out of descriptors: refuse what waits, through the spare's slot."""
        policy = getattr(self.factory, "wrappedFactory", self.factory)
        report = getattr(policy, "refused_at_descriptor_limit", None)
        reason = f"out of file descriptors ({os.strerror(error.errno)})"
        if not SPARE.release():
            SPARE.reserve()  # perhaps there is room again for the next time
            self.stopReading()  # not even the spare: do not spin on a readable socket
            self._paused = self.reactor.callLater(NO_SPARE_PAUSE, self._resume_accepting)
            if report is not None:
                report(None, reason)
            return
        refusal = getattr(getattr(self.factory, "protocol", None), "refusal", b"")
        try:
            for _ in range(REFUSED_PER_READ):
                try:
                    client, address = self.socket.accept()
                except OSError:
                    break
                _refuse(client, refusal)
                if report is not None:
                    report(self._buildAddr(address), reason)
        finally:
            SPARE.reserve()

    def _resume_accepting(self):
        self._paused = None
        if self.connected and not self.disconnecting:
            self.startReading()

    def loseConnection(self, *arguments):
        """
        Accept what waits in the backlog before closing: those clients have
        connected and may have sent already (the logger's shutdown drain
        then reads them); closing the port would reset them.
        """
        if self._paused is not None:  # no timer outlives the port
            self._paused.cancel()
            self._paused = None
        if self.connected and not self.disconnecting:
            self.doRead()
        return super().loseConnection(*arguments)

    stopListening = loseConnection


class TCPPort(RefusingPort, tcp.Port):
    transport = WriteThroughServer


class UNIXPort(RefusingPort, unix.Port):
    transport = WriteThroughUNIXServer


class StreamReactor:
    """
    REACTOR, except that the stream ports it makes are the suite's
    (L{TCPPort}, L{UNIXPort}), bound with SO_REUSEPORT when REUSE_PORT.
    Pass it to `serverFromString`; everything else goes to REACTOR.
    """

    def __init__(self, reactor, reuse_port: bool = False):
        self._reactor = reactor
        self._reuse_port = reuse_port

    def __getattr__(self, name):
        return getattr(self._reactor, name)

    def listenTCP(self, port, factory, backlog=50, interface=""):
        binding = makeBinding(interface, port, reuseAddress=True, reusePort=self._reuse_port)
        listening = TCPPort(binding, factory, backlog, interface, self._reactor)
        listening.startListening()
        return listening

    def listenUNIX(self, address, factory, backlog=50, mode=0o666, wantPID=0):
        listening = UNIXPort(address, factory, backlog, mode, self._reactor, wantPID)
        listening.startListening()
        return listening

    def adoptStreamPort(self, fileDescriptor, addressFamily, factory):
        if addressFamily == socket.AF_UNIX:
            listening = UNIXPort._fromListeningDescriptor(self._reactor, fileDescriptor, factory)
        else:
            listening = TCPPort._fromListeningDescriptor(
                self._reactor, fileDescriptor, addressFamily, factory
            )
        listening.startListening()
        return listening
