"""
The kernel side of a datagram listener: a receive buffer large enough for
bursts (`udp_receive_buffer`), and the datagrams the kernel dropped anyway,
counted from /proc/net/udp and logged as a summary.  A burst larger than the
buffer is lost before the process sees it; without a count nothing would say so.
"""

import os
import socket
from dataclasses import dataclass

from suite.foundation.config import Settings, integer, key

MiB = 2**20
# Linux: beyond rmem_max, with CAP_NET_ADMIN
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


@dataclass(frozen=True, kw_only=True)
class DatagramLimits(Settings):
    udp_receive_buffer: int = key(
        integer(4096), 8 * MiB, "bytes of kernel receive buffer for each UDP listener"
    )


def apply_receive_buffer(sock: socket.socket, size: int) -> int:
    """Ask for SIZE bytes (forced where permitted); returns what the kernel granted."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except OSError:  # not permitted: the ordinary option, capped at net.core.rmem_max
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    # Linux reports twice what was asked (the doubling covers its bookkeeping).
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2


def kernel_drops(sock: socket.socket) -> int | None:
    """Datagrams the kernel dropped on SOCK (its `drops` in /proc/net/udp), None if unknown."""
    inode = str(os.fstat(sock.fileno()).st_ino)
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as f:
                for line in f:
                    fields = line.split()
                    if len(fields) >= 13 and fields[9] == inode:
                        return int(fields[12])
        except OSError:
            continue
    return None
