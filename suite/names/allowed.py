"""
Where the name server may look.  Every registered instance is health-checked
by a TCP connect from the name server, and eviction timing tells an open
port from a closed one: left open, Register turns the name server into a
port scanner of its own network (a cloud metadata service at
169.254.169.254, `127.0.0.1:22`) and into a connect flood aimed at any
victim.  So an instance's host is either an IP literal (no scope id: it
would name an interface, and carry any text) or an RFC 1123 host name,
and every address it stands for must lie in `allowed_networks`.
Link-local, unspecified ("this network", which Linux connects to itself),
multicast and broadcast addresses never do, whatever the list says.

A host name is resolved once, at registration, without blocking the
reactor (the reactor's IHostnameResolver: getaddrinfo in its thread
pool), and the checker connects to the addresses found then, never to the
name again: a name re-pointed afterwards (DNS rebinding) changes nothing.
"""

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from typing import NoReturn

from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import (
    IAddress,
    IHostResolution,
    IReactorPluggableNameResolver,
    IReactorTime,
    IResolutionReceiver,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.contracts.names import Invalid
from suite.foundation.printable import printable

DEFAULT_NETWORKS = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "127.0.0.0/8",
    "::1/128",
    "fc00::/7",
)
NEVER = tuple(
    (ipaddress.ip_network(network), why)
    for network, why in (
        ("169.254.0.0/16", "a link-local"),
        ("fe80::/10", "a link-local"),
        ("0.0.0.0/8", "an unspecified"),
        ("::/128", "an unspecified"),
        ("224.0.0.0/4", "a multicast"),
        ("ff00::/8", "a multicast"),
        ("255.255.255.255/32", "a broadcast"),
    )
)
MAX_ADDRESSES = 4  # addresses of one host name a check tries: one registration, at most 4 connects
RESOLVE_TIMEOUT = 5.0  # seconds a host name may take to resolve before Register answers INVALID
SHOWN = 80  # characters of a refused host repeated in the reason

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class IResolvingClock(IReactorTime, IReactorPluggableNameResolver):
    """
    What L{host_resolver} asks of its reactor: a clock and a name resolver.
    No reactor declares it: it is the type of a reactor that is both.
    """


class NotAllowed(Invalid):
    """
    A host the name server may not look at.  A stored row refused for this
    was written before these rules (or under a wider `allowed_networks`):
    it is skipped at start rather than stopping it.
    """


def shown(text: str) -> str:
    """TEXT, a client's, as a reason may repeat it: escaped and at most SHOWN characters."""
    return printable(text[:SHOWN]) + ("…" if len(text) > SHOWN else "")


def check_network(value: str) -> None:
    """An `allowed_networks` entry: a CIDR network without host bits (ValueError otherwise)."""
    ipaddress.ip_network(value)


def ip_literal(host: str) -> IPAddress | None:
    """HOST as an IP address, None for a host name; an address with a scope id is NotAllowed."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if getattr(address, "scope_id", None) is not None:
        raise NotAllowed(
            f"host '{shown(host)}': an IP address with a scope id (%…) is not accepted"
        )
    return address


class AllowedHosts:
    """The hosts and addresses an instance may have: NETWORKS (CIDR strings), minus NEVER."""

    def __init__(self, networks: Iterable[str] = DEFAULT_NETWORKS) -> None:
        self.networks = tuple(ipaddress.ip_network(network) for network in networks)

    def check_address(self, address: str, host: str) -> str:
        """
        ADDRESS (of HOST) as the checker connects to it (v4-mapped as
        IPv4); NotAllowed if not.
        """
        parsed = ip_literal(address)
        if parsed is None:
            raise NotAllowed(f"host '{shown(host)}': '{shown(address)}' is not an IP address")
        return self._allowed(parsed, host)

    def _allowed(self, parsed: IPAddress, host: str) -> str:
        """As L{check_address}, of an address already parsed."""
        if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
            parsed = parsed.ipv4_mapped
        for network, why in NEVER:
            if parsed in network:
                raise NotAllowed(f"host '{shown(host)}': {parsed} is {why} address, never checked")
        if not any(parsed in network for network in self.networks):
            raise NotAllowed(f"host '{shown(host)}': {parsed} is outside allowed_networks")
        return str(parsed)

    def addresses(self, host: str, resolved: Sequence[str] = ()) -> tuple[str, ...]:
        """
        The addresses the checker connects to for HOST: an IP literal's own,
        or the first MAX_ADDRESSES of RESOLVED (a host name's, every one of
        them checked); NotAllowed naming the first that is not allowed.
        """
        literal = ip_literal(host)
        if literal is not None:
            return (self._allowed(literal, host),)
        if not resolved:
            raise NotAllowed(
                f"host '{shown(host)}': a host name never resolved (a registration "
                "from before allowed_networks): register it again"
            )
        checked = dict.fromkeys(self.check_address(address, host) for address in resolved)
        return tuple(checked)[:MAX_ADDRESSES]


@implementer(IResolutionReceiver)
class _Addresses:
    """Collects one resolution's addresses into `done`."""

    def __init__(self) -> None:
        self.found: list[str] = []
        self.done: defer.Deferred[list[str]] = defer.Deferred()

    def resolutionBegan(self, resolution: IHostResolution) -> None:
        pass

    def addressResolved(self, address: IAddress) -> None:
        if isinstance(address, IPv4Address | IPv6Address):  # the only types asked for
            self.found.append(address.host)

    def resolutionComplete(self) -> None:
        if not self.done.called:  # not timed out meanwhile
            self.done.callback(self.found)


def host_resolver(
    reactor: IResolvingClock, timeout: float = RESOLVE_TIMEOUT
) -> Callable[[str], defer.Deferred[list[str]]]:
    """
    resolve(name) -> Deferred firing with the addresses (strings) REACTOR's
    name resolver finds for NAME over TCP, or failing with Invalid when
    there are none or they take longer than TIMEOUT seconds.
    """

    def resolve(name: str) -> defer.Deferred[list[str]]:
        receiver = _Addresses()
        reactor.nameResolver.resolveHostName(receiver, name, 0, (IPv4Address, IPv6Address), "TCP")

        def found(addresses: list[str]) -> list[str]:
            if not addresses:
                raise Invalid(f"host '{name}': host name not found")
            return addresses

        def late(failure: Failure) -> NoReturn:
            failure.trap(defer.TimeoutError, defer.CancelledError)
            raise Invalid(f"host '{name}': host name not resolved within {timeout:g} s")

        return receiver.done.addTimeout(timeout, reactor).addCallbacks(found, late)

    return resolve
