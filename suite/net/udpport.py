"""
The suite's UDP ports: on the fast path, L{BatchedDatagramPort} (batched
reads, `reply`; see L{suite.net.twisted_internals.datagrams}); on the stock
path, Twisted's own `udp.Port` as the reactor makes it (one
`datagramReceived` per datagram, replies through `write`).  With
`reuse_port`, the socket is bound with SO_REUSEPORT here and adopted
(`IReactorSocket.adoptDatagramPort` on the stock path).
"""

import socket
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from twisted.internet.interfaces import IListeningPort, IReactorSocket, IReactorUDP
from twisted.internet.protocol import DatagramProtocol

from suite.net.transport import bound_socket
from suite.net.twisted_internals import datagrams, fast_path
from suite.net.twisted_internals.datagrams import BatchedDatagramPort


def listen_datagram(
    reactor: IReactorUDP,
    port: int,
    protocol: DatagramProtocol,
    interface: str = "",
    max_packet_size: int = 8192,
    reuse_port: bool = False,
) -> IListeningPort:
    """Bind a UDP port like `reactor.listenUDP` does, with SO_REUSEPORT when REUSE_PORT."""
    if reuse_port:
        with bound_socket(socket.SOCK_DGRAM, interface, port, None) as sock:
            return adopt_datagram_port(
                reactor, sock.fileno(), sock.family, protocol, max_packet_size
            )
    if fast_path().fast:
        return datagrams.listen(reactor, port, protocol, interface, max_packet_size)
    return reactor.listenUDP(port, protocol, interface, max_packet_size)


def adopt_datagram_port(
    reactor: IReactorUDP,
    fd: int,
    family: socket.AddressFamily,
    protocol: DatagramProtocol,
    max_packet_size: int = 8192,
) -> IListeningPort:
    """Serve PROTOCOL on the already bound UDP socket FD, like `reactor.adoptDatagramPort`."""
    if fast_path().fast:
        return datagrams.adopt(reactor, fd, family, protocol, max_packet_size)
    adopting: IReactorSocket = reactor  # type: ignore[assignment]
    return adopting.adoptDatagramPort(fd, family, protocol, max_packet_size)


@runtime_checkable
class DatagramWriter(Protocol):
    """A port that sends a datagram to an address: Twisted's `IUDPTransport.write`."""

    def write(self, packet: bytes, addr: tuple) -> object: ...


def reply_path(port: object) -> Callable[[bytes, tuple], object]:
    """
    How to answer a peer through PORT (a datagram protocol's transport):
    the fast port's `reply` (no parsing of the address), else Twisted's `write`.
    """
    if isinstance(port, BatchedDatagramPort):
        return port.reply
    if not isinstance(port, DatagramWriter):
        raise TypeError(f"{port!r} cannot send datagrams (not a started datagram port)")
    return port.write
