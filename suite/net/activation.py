"""
Socket-activated UDP sockets (`systemd-udp:name=NAME`): Twisted's own
`systemd:` endpoint covers stream sockets only.
"""

import os
import socket
from collections.abc import Mapping

from twisted.internet import fdesc
from twisted.internet.interfaces import IListeningPort, IReactorUDP
from twisted.internet.protocol import DatagramProtocol

from suite.net.udpport import adopt_datagram_port

FIRST_ACTIVATED_FD = 3


def activated_datagram_socket(
    name: str, environ: Mapping[str, str] = os.environ
) -> tuple[int, socket.AddressFamily]:
    """
    (fd, address family) of the socket-activated UDP socket named NAME.

    Twisted's import of its endpoints consumes LISTEN_FDS and LISTEN_PID but
    leaves LISTEN_FDNAMES; the descriptors are numbered from 3 in that order.
    The descriptor is checked to really be a datagram socket, so a stale
    LISTEN_FDNAMES inherited from another process cannot be mistaken for one.
    """
    names = environ.get("LISTEN_FDNAMES", "").split(":")
    if name not in names:
        raise ValueError(f"no socket passed by systemd is named {name!r}")
    fd = FIRST_ACTIVATED_FD + names.index(name)
    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            kind, family = sock.type, sock.family
    except OSError:
        raise ValueError(f"socket {name!r} (fd {fd}) is not open") from None
    if kind != socket.SOCK_DGRAM:
        raise ValueError(f"socket {name!r} (fd {fd}) is not a datagram socket")
    return fd, family


def adopt_datagram(
    reactor: IReactorUDP, name: str, protocol: DatagramProtocol, max_packet_size: int
) -> IListeningPort:
    """
    Serve PROTOCOL on the activated UDP socket NAME, made non-blocking first
    (or the reactor hangs).
    """
    fd, family = activated_datagram_socket(name)
    fdesc.setNonBlocking(fd)
    return adopt_datagram_port(reactor, fd, family, protocol, max_packet_size)
