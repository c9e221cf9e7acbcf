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

Each transport adds the bytes it reads and sends to `counts` (the
L{suite.runtime.metrics.Counts} its connection policy gives it), so the
byte counts are what crossed the socket, TLS records included.
"""

import fcntl
import socket
import struct
import termios
from errno import EWOULDBLOCK

from twisted.internet import main, tcp, unix
from twisted.internet.tcp import makeBinding

from suite.runtime.metrics import UNCOUNTED


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


class TCPPort(tcp.Port):
    transport = WriteThroughServer


class UNIXPort(unix.Port):
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
