"""
Telling systemd how the process is doing (sd_notify): READY=1 once every
listener is bound and the reactor runs, STOPPING=1 when shutdown begins.
Twisted has no sd_notify of its own; the protocol is one datagram.
"""

import os
import socket


def notify(state: bytes, environ=os.environ) -> bool:
    """Send STATE (e.g. b"READY=1") to systemd's NOTIFY_SOCKET; False when there is none."""
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(state)
    return True
