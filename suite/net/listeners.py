"""
Listeners: `listen` / `tls_listen` strings -> bound ports.

`listen` takes Twisted server endpoint strings plus the suite's own
`udp:PORT[:interface=ADDR]` and `systemd-udp:name=NAME` (Twisted has no
datagram endpoints); `tls_listen` serves a stream endpoint through TLS.
Stream listeners without `backlog=` get a listen backlog of 1024 instead of
Twisted's 50, so bursts of connects are not dropped; Unix sockets without
`mode=` are made 0660 instead of Twisted's 0666.
"""

import ipaddress
import os
import re
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

from twisted.application import service
from twisted.internet import defer, endpoints, error, fdesc, ssl
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorTime,
    IReactorUDP,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.foundation.config import Listening
from suite.foundation.health import FAILING
from suite.foundation.interfaces import IHealthSource, IMetricSource
from suite.net.accept_share import AcceptShare
from suite.net.activation import activated_datagram_socket, adopt_datagram
from suite.net.addresses import PeerAddress, describe_peer
from suite.net.transport import StockStreamPorts, StreamPorts, listen_tcp_reusing_port
from suite.net.twisted_internals import close_shared, fast_path, lean_dispatch
from suite.net.twisted_internals.streams import FastStreamPorts
from suite.net.udpbuffer import apply_receive_buffer, kernel_drops
from suite.net.udpport import adopt_datagram_port, listen_datagram

log = Logger()

DEFAULT_BACKLOG = 1024
# Twisted's unix: endpoint makes its socket 0666: anyone on the host could
# connect.  Owner and group only, unless the endpoint string says mode=.
DEFAULT_UNIX_MODE = "660"
BACKLOG_PREFIXES = ("tcp", "tcp6", "ssl", "unix")
TLS_WRAPPABLE = ("tcp", "tcp6", "unix", "systemd")
UDP_MAX_DATAGRAM = 65535
DATAGRAM_PREFIXES = ("udp", "systemd-udp")


@dataclass(frozen=True)
class Listener:
    """One validated listener entry, as the operator wrote it."""

    description: str
    tls: bool = False
    key: str = "listen"  # the config key that named it
    udp_port: int | None = None
    udp_interface: str = ""
    activated_name: str | None = None  # systemd-udp:name=NAME

    @property
    def datagram(self) -> bool:
        return self.udp_port is not None or self.activated_name is not None

    @property
    def endpoint_string(self) -> str:
        """The stream endpoint string, with the suite's default backlog and Unix socket mode."""
        prefix, _, named = _arguments(self.description)
        defaults: dict[str, object] = {}
        if prefix in BACKLOG_PREFIXES:
            defaults["backlog"] = DEFAULT_BACKLOG
        if prefix == "unix":
            defaults["mode"] = DEFAULT_UNIX_MODE
        added = "".join(
            f":{name}={value}" for name, value in defaults.items() if name not in named
        )
        return self.description + added

    def __str__(self) -> str:
        return self.description if self.key == "listen" else f"{self.key} {self.description}"


def _split_arguments(description: str) -> list[str]:
    """Split on unescaped colons, as Twisted endpoint strings are ("\\:" is a colon)."""
    parts = re.split(r"(?<!\\):", description)
    return [p.replace("\\:", ":") for p in parts]


def _arguments(description: str) -> tuple[str, list[str], dict[str, str]]:
    """(prefix, positional arguments, keyword arguments) of an endpoint string."""
    prefix, *arguments = _split_arguments(description)
    named = dict(a.split("=", 1) for a in arguments if "=" in a)
    return prefix, [a for a in arguments if "=" not in a], named


def parse_udp(description: str) -> tuple[int, str]:
    """`udp:PORT[:interface=ADDR]` -> (port, interface); ValueError says what is wrong."""
    parts = _split_arguments(description)[1:]
    if not parts or not parts[0].isdigit():
        raise ValueError("expected udp:PORT[:interface=ADDR]")
    port = int(parts[0])
    if port > 65535:
        raise ValueError("port must be 0-65535")
    interface = ""
    for part in parts[1:]:
        name, _, value = part.partition("=")
        if name != "interface" or not value:
            raise ValueError(f"unknown udp option {part!r} (only interface=ADDR)")
        interface = value
    return port, interface


def check_port(description: str) -> None:
    """
    The port of a `tcp:`, `tcp6:` or `ssl:` endpoint must be 0-65535
    (Twisted binds anything).
    """
    _, positional, named = _arguments(description)
    port = named.get("port", positional[0] if positional else None)
    if port is None or not port.isdigit() or int(port) > 65535:
        raise ValueError("port must be 0-65535")


def parse_activated_udp(description: str) -> str:
    """`systemd-udp:name=NAME` -> NAME, checked to be a socket-activated UDP socket."""
    parts = _split_arguments(description)[1:]
    if len(parts) != 1 or not parts[0].startswith("name=") or parts[0] == "name=":
        raise ValueError("expected systemd-udp:name=NAME")
    name = parts[0].removeprefix("name=")
    activated_datagram_socket(name)
    return name


def _family_name(family: int) -> str:
    return socket.AddressFamily(family).name.removeprefix("AF_")


def check_activated_family(endpoint: endpoints.AdoptedStreamServerEndpoint) -> None:
    """
    A `systemd:domain=D` endpoint must name the family of the socket systemd
    passed: Twisted reads peers' addresses as family D, so an IPv6 socket
    (what a bare `ListenStream=PORT` gives) adopted as INET shows garbage.
    """
    with socket.socket(fileno=os.dup(endpoint.fileno)) as sock:
        passed = sock.family
    if passed != endpoint.addressFamily:
        raise ValueError(
            f"systemd passed an {_family_name(passed)} socket, but the endpoint says "
            f"domain={_family_name(endpoint.addressFamily)} (write domain={_family_name(passed)})"
        )


def parse_listeners(
    settings: Listening,
    datagram_side: bool,
    keys: tuple[str, ...] = ("listen", "tls_listen"),
    required: bool = True,
    inherited: bool = False,
) -> list[Listener]:
    """
    Check every entry of SETTINGS' KEYS (`listen` and `tls_listen`, or a
    service's other listeners such as `dns_listen`) without binding, and
    without a reactor: the endpoints parsed here are never listened on.
    REQUIRED: `listen` and `tls_listen` may not both be empty (false when the
    service listens through another key, a logger on `relp_listen` alone).
    INHERITED: the sockets were bound by a parent process (a worker's), so
    what systemd passed is not looked for here.
    """
    listeners = []
    for key in keys:
        for description in getattr(settings, key):
            prefix = description.split(":", 1)[0]
            try:
                tls = key.endswith("tls_listen")  # tls_listen, or a service's http_tls_listen
                if prefix in DATAGRAM_PREFIXES:
                    if tls:
                        raise ValueError(f"TLS needs a stream endpoint, not {prefix}")
                    if not datagram_side and key in ("listen", "tls_listen"):
                        raise ValueError(f"{settings.section} has no datagram side")
                    if not datagram_side:
                        raise ValueError(
                            f"{key} takes stream endpoints (tcp:, tcp6:, unix:, systemd:), "
                            f"not {prefix}"
                        )
                    if prefix == "udp":
                        port, interface = parse_udp(description)
                        listener = Listener(
                            description, key=key, udp_port=port, udp_interface=interface
                        )
                    else:
                        name = (
                            description.partition("name=")[2]
                            if inherited
                            else parse_activated_udp(description)
                        )
                        listener = Listener(description, key=key, activated_name=name)
                else:
                    if tls and prefix not in TLS_WRAPPABLE:
                        raise ValueError(f"{key} takes tcp:, tcp6:, unix: or systemd:")
                    listener = Listener(description, tls=tls, key=key)
                    if prefix in ("tcp", "tcp6", "ssl"):
                        check_port(description)
                    if not (inherited and prefix == "systemd"):
                        endpoint = endpoints.serverFromString(None, listener.endpoint_string)
                        if prefix == "systemd":
                            check_activated_family(endpoint)
            except Exception as e:
                problem = f"bad endpoint: {e}"
                # Twisted's parser raises KeyError for a name systemd did not pass.
                if prefix == "systemd" and isinstance(e, KeyError):
                    problem = f"no socket passed by systemd is named {e.args[0]!r}"
                raise settings.error(key, problem, description) from None
            listeners.append(listener)
    if not listeners and "listen" in keys and required:
        raise settings.error(
            "listen", "no listeners (set listen or tls_listen, or enabled = false)"
        )
    return listeners


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False  # a host name: it may resolve anywhere
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def reaches_beyond_loopback(description: str, reactor: object) -> bool:
    """
    Whether the stream endpoint DESCRIPTION accepts connections from other
    hosts: a TCP port without a loopback `interface=`, or a socket passed by
    systemd bound to a non-loopback address.  Unix sockets never do.  REACTOR
    is only given to the endpoint parser: nothing listens.
    """
    prefix, positional, named = _arguments(description)
    if prefix == "systemd":
        try:
            endpoint = endpoints.serverFromString(reactor, description)
        except (KeyError, ValueError):
            return False  # not passed to this process (a worker's: its parent was told)
        with socket.socket(fileno=os.dup(endpoint.fileno)) as sock:
            return not _is_loopback(sock.getsockname()[0])
    if prefix not in ("tcp", "tcp6", "ssl"):
        return False
    position = {"tcp": 1, "tcp6": 2}.get(prefix)  # where Twisted takes a positional interface
    interface = named.get("interface")
    if interface is None and position is not None and len(positional) > position:
        interface = positional[position]
    return not _is_loopback(interface or "")


class ListenFailed(Exception):
    """A listener could not bind; str() names the service and the endpoint."""


@implementer(IMetricSource, IHealthSource)
class ListenerService(service.Service):
    """
    Keeps one listener bound while running.  Binding happens in
    privilegedStartService (before twistd drops privileges) and a failure is
    raised there as L{ListenFailed}, so the process stops before serving.
    """

    def __init__(
        self,
        service_name: str,
        listener: Listener,
        bind: Callable[[], IListeningPort | defer.Deferred],
    ) -> None:
        self.setName(f"{service_name} {listener}")
        self.service_name = service_name
        self.listener = listener
        self._bind = bind
        self.port: IListeningPort | None = None
        # A worker's Unix socket on the stock path: Twisted's unix.Port would remove
        # the path its parent bound when it closes, so it only stops accepting.
        self.keep_open = False

    def privilegedStartService(self) -> None:
        service.Service.privilegedStartService(self)
        failures: list[Failure] = []
        defer.maybeDeferred(self._bind).addCallbacks(self._bound, failures.append)
        if failures:
            reason = failures[0].value
            if isinstance(reason, error.CannotListenError) and reason.socketError:
                reason = getattr(reason.socketError, "strerror", None) or reason.socketError
            raise ListenFailed(f"{self.service_name}: cannot listen on {self.listener}: {reason}")

    def _bound(self, port: IListeningPort) -> None:
        self.port = port
        log.info(
            "{service} listening on {listener} ({address})",
            service=self.service_name,
            listener=str(self.listener),
            address=describe_peer(cast(PeerAddress, port.getHost())),  # an IP or Unix port's
        )

    def startService(self) -> None:
        if self.port is None:
            self.privilegedStartService()
        service.Service.startService(self)

    def stopService(self) -> defer.Deferred | None:
        service.Service.stopService(self)
        port, self.port = self.port, None
        if port is not None and self.keep_open:
            port.stopReading()  # type: ignore[attr-defined]  # a FileDescriptor; closed at exit
            return None
        if port is not None:
            return defer.maybeDeferred(port.stopListening)
        return None

    def release(self) -> bool:
        """
        Close this process's copy of a socket that worker processes share
        (the parent's, once none will be started again), leaving theirs
        listening; False on the stock path, where it stays until the end.
        """
        port = self.port
        if port is None or not (self.listener.datagram or fast_path().fast):
            return False
        self.port = None
        if self.listener.datagram:
            port.stopListening()  # a datagram socket is closed without a shutdown
        else:
            close_shared(port)
        return True

    def health_problems(self) -> list[tuple[str, str]]:
        return [] if self.port is not None else [(FAILING, f"not listening on {self.listener}")]

    def metric_samples(self) -> Iterator[tuple[str, tuple, object]]:
        """A datagram port's protocol counts its own datagrams; a stream's factory counts."""
        port = self.port
        if self.listener.datagram and port is not None:
            protocol = port.protocol  # type: ignore[attr-defined]
            if IMetricSource.providedBy(protocol):
                yield from protocol.metric_samples()


DROPS_INTERVAL = 10.0


class DatagramListenerService(ListenerService):
    """
    A datagram listener with its kernel receive buffer set to RECEIVE_BUFFER
    (the size granted is logged), and the datagrams the kernel dropped for
    lack of room logged every DROPS_INTERVAL seconds (and at stop) as a count.
    """

    def __init__(
        self,
        service_name: str,
        listener: Listener,
        bind: Callable[[], IListeningPort | defer.Deferred],
        receive_buffer: int,
        clock: IReactorTime,
    ) -> None:
        super().__init__(service_name, listener, bind)
        self.receive_buffer = receive_buffer
        self._drops_seen = 0
        self._watch = LoopingCall(self.report_drops)
        self._watch.clock = clock

    def _bound(self, port: IListeningPort) -> None:
        super()._bound(port)
        handle = port.getHandle()  # type: ignore[attr-defined]
        granted = apply_receive_buffer(handle, self.receive_buffer)
        self._drops_seen = kernel_drops(handle) or 0
        log.info(
            "{service}: {listener} receive buffer {granted} bytes (udp_receive_buffer {asked})",
            service=self.service_name,
            listener=str(self.listener),
            granted=granted,
            asked=self.receive_buffer,
        )

    def startService(self) -> None:
        super().startService()
        self._watch.start(DROPS_INTERVAL, now=False)

    def report_drops(self) -> None:
        drops = self._kernel_drops()
        if drops is None or drops <= self._drops_seen:
            return
        log.warn(
            "{service}: the kernel dropped {count} datagrams on {listener} (receive buffer "
            "full; raise udp_receive_buffer)",
            service=self.service_name,
            count=drops - self._drops_seen,
            listener=str(self.listener),
            dropped=drops - self._drops_seen,
        )
        self._drops_seen = drops

    def _kernel_drops(self) -> int | None:
        port = self.port
        return kernel_drops(port.getHandle()) if port is not None else None  # type: ignore[attr-defined]

    def stopService(self) -> defer.Deferred | None:
        if self._watch.running:
            self._watch.stop()
        self.report_drops()
        return super().stopService()

    def metric_samples(self) -> Iterator[tuple[str, tuple, object]]:
        yield from super().metric_samples()
        drops = self._kernel_drops()
        if drops is not None:
            yield "datagrams", ("dropped",), drops


class SuiteStreamPorts:
    """
    REACTOR, except that its `listenTCP`, `listenUNIX` and `adoptStreamPort`
    make the suite's stream ports: the fast path's
    (L{suite.net.twisted_internals.streams.FastStreamPorts}) or, on the
    stock path, Twisted's own with counting transports
    (L{suite.net.transport.StockStreamPorts}); TCP ports are bound with
    SO_REUSEPORT when REUSE_PORT.  Pass it to `serverFromString`, so every
    Twisted server endpoint string (`tcp:`, `tcp6:`, `unix:`, `systemd:`)
    listens through it unchanged; everything else goes to REACTOR.
    """

    def __init__(
        self,
        reactor: object,
        reuse_port: bool = False,
        shared: bool = False,
        share: AcceptShare | None = None,
    ) -> None:
        self._reactor = reactor
        self._reuse_port = reuse_port
        self._shared = shared  # adopted sockets are shared with other worker processes
        self._share = share  # and their open connections counted there
        self._ports: StreamPorts = (
            FastStreamPorts(reactor) if fast_path().fast else StockStreamPorts(reactor)
        )

    def __getattr__(self, name: str) -> object:
        return getattr(self._reactor, name)

    def listenTCP(
        self, port: int, factory: IProtocolFactory, backlog: int = 50, interface: str = ""
    ) -> IListeningPort:
        if self._reuse_port:
            return listen_tcp_reusing_port(self._ports, port, factory, backlog, interface)
        return self._ports.listenTCP(port, factory, backlog, interface)

    def listenUNIX(
        self,
        address: str,
        factory: IProtocolFactory,
        backlog: int = 50,
        mode: int = 0o666,
        wantPID: bool = False,
    ) -> IListeningPort:
        return self._ports.listenUNIX(address, factory, backlog, mode, wantPID)

    def adoptStreamPort(
        self, fileDescriptor: int, addressFamily: socket.AddressFamily, factory: IProtocolFactory
    ) -> IListeningPort:
        return self._ports.adoptStreamPort(
            fileDescriptor, addressFamily, factory, self._shared, self._share
        )


class HeldForWorkers(Factory):
    """What a held listener is bound with: never used, never logged."""

    noisy = False


class DatagramsHeldForWorkers(DatagramProtocol):
    noisy = False


def socket_family(fd: int) -> socket.AddressFamily:
    """The address family of the socket FD (left open)."""
    with socket.socket(fileno=os.dup(fd)) as sock:
        return sock.family


def _held(
    bind: Callable[[], IListeningPort | defer.Deferred],
) -> Callable[[], defer.Deferred]:
    """BIND, whose port is then never read: its socket is held for worker processes."""

    def hold(port: Any) -> IListeningPort:
        port.stopReading()  # every port is a FileDescriptor
        return cast(IListeningPort, port)

    return lambda: defer.maybeDeferred(bind).addCallback(hold)


def _adopting(
    listener: Listener,
    fd: int,
    stream_reactor: "SuiteStreamPorts",
    datagram_reactor: IReactorUDP,
    stream_factory: IProtocolFactory | None,
    make_datagram_protocol: Callable[[], DatagramProtocol] | None,
    tls: ssl.CertificateOptions | None,
) -> Callable[[], IListeningPort | defer.Deferred]:
    """How a worker serves LISTENER on FD, the socket its parent bound."""
    family = socket_family(fd)
    if listener.datagram:
        assert make_datagram_protocol is not None

        def adopt() -> IListeningPort:
            fdesc.setNonBlocking(fd)
            return adopt_datagram_port(
                datagram_reactor, fd, family, make_datagram_protocol(), UDP_MAX_DATAGRAM
            )

        return adopt
    assert stream_factory is not None
    endpoint: IStreamServerEndpoint = endpoints.AdoptedStreamServerEndpoint(
        stream_reactor, fd, family
    )
    if listener.tls:
        assert tls is not None
        endpoint = endpoints.wrapServerTLS(tls, endpoint)
    return lambda: endpoint.listen(stream_factory)


def listener_services(
    service_name: str,
    listeners: list[Listener],
    reactor: object,
    stream_factory: IProtocolFactory | None = None,
    make_datagram_protocol: Callable[[], DatagramProtocol] | None = None,
    tls: ssl.CertificateOptions | None = None,
    receive_buffer: int | None = None,
    reuse_port: bool = False,
    held: bool = False,
    inherited: Mapping[tuple[str, str], int] | None = None,
    share: AcceptShare | None = None,
) -> list[ListenerService]:
    """
    One ListenerService per listener: stream listeners share STREAM_FACTORY
    (so its connection limit covers them all); each datagram port gets its
    own protocol from MAKE_DATAGRAM_PROTOCOL.  Stream ports send without
    waiting a reactor turn on the fast path (L{SuiteStreamPorts}); REUSE_PORT
    binds TCP and UDP ports with SO_REUSEPORT.

    With workers: HELD (the parent) binds each listener on Twisted's stock
    ports and never reads it (its socket is passed to the workers; the
    factories are not used); INHERITED (a worker) maps each listener's
    (key, description) to the descriptor of the socket its parent bound,
    which it serves instead of binding, taking turns with the other
    workers by SHARE (L{suite.net.accept_share}).
    """
    services: list[ListenerService] = []
    if fast_path().fast:
        lean_dispatch(reactor)  # only on Twisted's epoll reactor; others are left as they are
    stream_reactor = SuiteStreamPorts(reactor, reuse_port, inherited is not None, share)
    # REACTOR is the running reactor: its datagram ports, and its clock for the drops watch.
    datagram_reactor, clock = cast(IReactorUDP, reactor), cast(IReactorTime, reactor)
    if held:
        stream_factory = stream_factory or HeldForWorkers()
        make_datagram_protocol = DatagramsHeldForWorkers
    for listener in listeners:
        bind: Callable[[], IListeningPort | defer.Deferred]
        if listener.datagram and make_datagram_protocol is None:
            raise ValueError(f"{service_name} has no datagram side for {listener}")
        if inherited is not None:
            fd = inherited[listener.key, listener.description]
            bind = _adopting(
                listener,
                fd,
                stream_reactor,
                datagram_reactor,
                stream_factory,
                make_datagram_protocol,
                tls,
            )
            adopted = ListenerService(service_name, listener, bind)
            adopted.keep_open = socket_family(fd) == socket.AF_UNIX and not fast_path().fast
            services.append(adopted)
            continue
        if listener.activated_name is not None and make_datagram_protocol is not None:

            def bind(
                name: str = listener.activated_name,
                make: Callable[[], DatagramProtocol] = make_datagram_protocol,
            ) -> IListeningPort:
                return adopt_datagram(datagram_reactor, name, make(), UDP_MAX_DATAGRAM)

        elif listener.udp_port is not None and make_datagram_protocol is not None:

            def bind(
                listener: Listener = listener,
                port: int = listener.udp_port,
                make: Callable[[], DatagramProtocol] = make_datagram_protocol,
            ) -> IListeningPort:
                return listen_datagram(
                    datagram_reactor,
                    port,
                    make(),
                    interface=listener.udp_interface,
                    max_packet_size=UDP_MAX_DATAGRAM,
                    reuse_port=reuse_port,
                )

        else:
            if stream_factory is None:
                raise ValueError(f"{service_name} has no stream factory for {listener}")
            endpoint = endpoints.serverFromString(
                reactor if held else stream_reactor, listener.endpoint_string
            )
            if listener.tls and not held:
                if tls is None:
                    raise ValueError(f"{service_name}: {listener} needs the [tls] context")
                endpoint = endpoints.wrapServerTLS(tls, endpoint)

            def bind(
                endpoint: IStreamServerEndpoint = endpoint,
                factory: IProtocolFactory = stream_factory,
            ) -> defer.Deferred:
                return endpoint.listen(factory)

        if held:
            bind = _held(bind)
        if listener.datagram and receive_buffer:
            services.append(
                DatagramListenerService(service_name, listener, bind, receive_buffer, clock)
            )
        else:
            services.append(ListenerService(service_name, listener, bind))
    return services
