"""
How peers and bound addresses are written in logs and records (`host:port`),
and which source a peer counts against for per-source limits.
"""

import ipaddress

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

from suite.foundation.printable import printable

PeerAddress = IPv4Address | IPv6Address | UNIXAddress  # what a stream listener's peers have


def plain_host(host: str) -> str:
    """HOST, with an IPv4 address mapped into IPv6 (`::ffff:127.0.0.1`) shown as plain IPv4."""
    if host.startswith("::ffff:"):
        try:
            mapped = ipaddress.IPv6Address(host.split("%", 1)[0]).ipv4_mapped
        except ValueError:
            return host
        if mapped is not None:
            return str(mapped)
    return host


def host_port(host: str, port: int) -> str:
    """`host:port`, with IPv6 hosts in brackets and v4-mapped ones as IPv4."""
    host = plain_host(host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def describe_peer(address: PeerAddress) -> str:
    """
    `host:port` for IP peers, the socket path (or `unix`) for Unix ones,
    L{printable}: a Unix client names its own socket, newlines and ESC
    sequences included, and every log line about a peer prints this.
    """
    if not isinstance(address, UNIXAddress):
        return host_port(address.host, address.port)
    name = address.name
    text = name.decode(errors="replace") if isinstance(name, bytes) else name
    return printable(text) if text else "unix"


def source_of(address: PeerAddress) -> str:
    """The source a peer counts against: its IP address; every Unix-socket peer is `unix`."""
    if isinstance(address, UNIXAddress):
        return "unix"
    return plain_host(address.host)
