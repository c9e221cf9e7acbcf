"""
The Python client API: Deferred-returning functions for each service, over
any Twisted client endpoint (UDP over host and port).  `suite-client` is a
thin layer over these.

    from twisted.internet import reactor
    from twisted.internet.endpoints import HostnameEndpoint
    from suite.client import api

    d = api.sleep(reactor, HostnameEndpoint(reactor, "127.0.0.1", 5200), 1.5)
    d.addCallback(print)          # 1.50012...

Every function takes the reactor first, for a uniform signature.
"""

import os
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol, TypedDict, TypeVar, Unpack, cast

from twisted.internet import defer, error
from twisted.internet.endpoints import connectProtocol
from twisted.internet.interfaces import (
    IListeningPort,
    IReactorCore,
    IReactorTime,
    IReactorUDP,
    IStreamClientEndpoint,
    IUDPTransport,
)
from twisted.internet.protocol import DatagramProtocol, connectionDone
from twisted.internet.protocol import Protocol as StreamProtocol
from twisted.protocols import amp
from twisted.python.failure import Failure

from suite.contracts.errors import Overloaded
from suite.contracts.names import (
    Changed,
    Deregister,
    Lookup,
    NotFound,
    Register,
    Services,
    Watch,
)
from suite.contracts.sleep import Sleep

T = TypeVar("T")
R = TypeVar("R")


class Instance(tuple[str, int, str]):
    """
    An instance a name server answered: the (host, port, description) tuple
    that callers unpack, compare and hash, as they did before instances had
    more, with the rest as attributes: `id`, `tags`, `meta` (string
    metadata) and `status` (passing or warning: critical instances are not
    served).  An older name server sends none of those: its instances have
    the ID "", no tags, no metadata and are passing.
    """

    id: str
    tags: tuple[str, ...]
    meta: dict[str, str]
    status: str

    def __new__(
        cls,
        host: str,
        port: int,
        description: str = "",
        id: str = "",
        tags: Sequence[str] = (),
        meta: dict[str, str] | None = None,
        status: str = "passing",
    ) -> "Instance":
        instance = super().__new__(cls, (host, port, description))
        instance.id, instance.tags, instance.meta = id, tuple(tags), dict(meta or {})
        instance.status = status
        return instance

    @property
    def host(self) -> str:
        return self[0]

    @property
    def port(self) -> int:
        return self[1]

    @property
    def description(self) -> str:
        return self[2]

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> "Instance":
        """An instance of a Lookup, Watch or Changed answer (FIELDS: AMP's values)."""
        return cls(
            fields["host"],
            fields["port"],
            fields["description"],
            fields.get("id") or "",
            fields.get("tags") or (),
            {pair["key"]: pair["value"] for pair in fields.get("meta") or ()},
            fields.get("status") or "passing",
        )


OnChange = Callable[[str, list[Instance]], None]


class IDatagramReactor(IReactorUDP, IReactorCore):
    """
    What opening datagrams asks of a reactor: a UDP port and a resolved
    name.  Twisted's IReactorUDP leaves out the defaults its reactors give.
    """

    def listenUDP(
        port: int, protocol: DatagramProtocol, interface: str = "", maxPacketSize: int = 8192
    ) -> IListeningPort:
        """A UDP port for PROTOCOL."""


class ExchangeOptions(TypedDict, total=False):
    """The keyword arguments of L{Exchange}, passed on by the functions that open one."""

    frame: Callable[[bytes], bytes]
    on_reply: Callable[[bytes], object] | None
    expect_replies: bool


class StreamConnection(Protocol):
    """
    What a stream exchange asks of its transport; `disconnecting` is on
    every Twisted stream transport but in none of its interfaces.
    """

    disconnecting: bool

    def write(self, data: bytes) -> None: ...
    def loseConnection(self) -> None: ...


class ServerClosed(Exception):
    """The server closed the connection before answering everything."""


def line_frame(message: bytes) -> bytes:
    return message + b"\n"


def syslog_message(
    message: bytes, app: str = "suite-client", pri: int = 13, hostname: str | None = None
) -> bytes:
    """An RFC 5424 message (user.notice by default) as `logger` would send it."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
    header = f"<{pri}>1 {stamp} {hostname or socket.gethostname()} {app} {os.getpid()} - - "
    return header.encode() + message


def octet_counted_syslog(message: bytes, **header: Any) -> bytes:
    """RFC 6587 octet counting around an RFC 5424 message (HEADER: syslog_message's)."""
    frame = syslog_message(message, **header)
    return b"%d %s" % (len(frame), frame)


class Exchange(ABC):
    """
    Messages out, replies in, over a stream or datagrams: the timestamp
    server, both echoes and the collector all follow it.  FRAME turns a
    message into what is sent; a stream expects one reply line per LF sent,
    a datagram one reply datagram, unless EXPECT_REPLIES is false (syslog).
    Replies go to ON_REPLY as they come; `finished` fires once everything
    was sent and answered (and, on a stream, the connection closed cleanly).
    """

    def __init__(
        self,
        frame: Callable[[bytes], bytes] = line_frame,
        on_reply: Callable[[bytes], object] | None = None,
        expect_replies: bool = True,
    ):
        self.frame = frame
        self.replies: list[bytes] = []
        self.on_reply = on_reply or self.replies.append
        self.expect_replies = expect_replies
        self.sent = self.expected = self.received = 0
        self.all_sent = False
        self.finished: defer.Deferred[Exchange] = defer.Deferred()

    @property
    def complete(self) -> bool:
        return self.all_sent and self.received >= self.expected

    @abstractmethod
    def replies_expected(self, data: bytes) -> int:
        """How many replies DATA, one framed message, asks for."""

    @abstractmethod
    def transmit(self, data: bytes) -> None:
        """DATA, one framed message, on its way to the server."""

    @abstractmethod
    def progressed(self) -> None:
        """Something was sent or answered: finish if that was all."""

    def send(self, message: bytes) -> None:
        data = self.frame(message)
        self.sent += 1
        if self.expect_replies:
            self.expected += self.replies_expected(data)
        self.transmit(data)

    def done_sending(self) -> None:
        self.all_sent = True
        self.progressed()

    def replied(self, reply: bytes) -> None:
        self.received += 1
        self.on_reply(reply)

    def fail(self, reason: Failure | Exception) -> None:
        if not self.finished.called:
            self.finished.errback(reason)

    def succeed(self) -> None:
        if not self.finished.called:
            self.finished.callback(self)


class StreamExchange(Exchange, StreamProtocol):
    """An L{Exchange} over a connection: replies are lines (CRLF or LF)."""

    _buffer = b""

    @property
    def connection(self) -> StreamConnection:
        """The transport: an exchange is only handed out once connected."""
        return cast(StreamConnection, self.transport)

    @staticmethod
    def replies_expected(data: bytes) -> int:
        return data.count(b"\n")

    def transmit(self, data: bytes) -> None:
        self.connection.write(data)

    def dataReceived(self, data: bytes) -> None:
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        for line in lines:
            self.replied(line.removesuffix(b"\r"))
        self.progressed()

    def progressed(self) -> None:
        if self.complete and not self.connection.disconnecting:
            self.connection.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.complete and reason.check(error.ConnectionDone):
            self.succeed()
        elif reason.check(error.ConnectionDone, error.ConnectionLost):
            self.fail(
                ServerClosed(
                    f"server closed the connection after {self.received} "
                    f"of {self.expected} replies"
                )
            )
        else:
            self.fail(reason)


class DatagramExchange(Exchange, DatagramProtocol):
    """An L{Exchange} over a connected UDP socket: each reply is one datagram."""

    @property
    def port(self) -> IUDPTransport:
        """The transport: an exchange is only handed out once listening."""
        return cast(IUDPTransport, self.transport)

    @staticmethod
    def replies_expected(data: bytes) -> int:
        return 1

    def transmit(self, data: bytes) -> None:
        self.port.write(data, None)  # connected: to the one peer

    def datagramReceived(self, data: bytes, address: object) -> None:
        self.replied(data)
        self.progressed()

    def progressed(self) -> None:
        if self.complete:
            self.succeed()

    def connectionRefused(self) -> None:
        self.fail(error.ConnectionRefusedError("port unreachable"))


def open_stream(
    reactor: object, endpoint: IStreamClientEndpoint, **options: Unpack[ExchangeOptions]
) -> defer.Deferred[StreamExchange]:
    """Deferred L{StreamExchange} connected through ENDPOINT (OPTIONS as for Exchange)."""
    opening: defer.Deferred[StreamExchange] = connectProtocol(endpoint, StreamExchange(**options))
    return opening


async def _open_datagrams(
    reactor: IDatagramReactor, host: str, port: int, options: ExchangeOptions
) -> DatagramExchange:
    exchange = DatagramExchange(**options)
    if ":" in host:
        reactor.listenUDP(0, exchange, interface="::")
    else:
        host = await reactor.resolve(host)
        reactor.listenUDP(0, exchange)
    exchange.port.connect(host, port)
    exchange.finished.addBoth(_stop_listening, exchange)
    return exchange


def open_datagrams(
    reactor: IDatagramReactor, host: str, port: int, **options: Unpack[ExchangeOptions]
) -> defer.Deferred[DatagramExchange]:
    """Deferred L{DatagramExchange} on an ephemeral UDP port connected to HOST:PORT."""
    return defer.ensureDeferred(_open_datagrams(reactor, host, port, options))


def _stop_listening(result: T, exchange: DatagramExchange) -> T:
    exchange.port.stopListening()
    return result


async def _run(opening: Awaitable[Exchange], messages: Iterable[bytes]) -> Exchange:
    exchange = await opening
    for message in messages:
        exchange.send(message)
    exchange.done_sending()
    return await exchange.finished


def _line_replies(
    reactor: object, endpoint: IStreamClientEndpoint, lines: list[bytes]
) -> defer.Deferred[list[bytes]]:
    return defer.ensureDeferred(_run(open_stream(reactor, endpoint), lines)).addCallback(
        lambda exchange: exchange.replies
    )


def timestamp(
    reactor: object, endpoint: IStreamClientEndpoint, lines: list[bytes]
) -> defer.Deferred[list[bytes]]:
    """Deferred list of `[T] line` replies, one per line."""
    return _line_replies(reactor, endpoint, lines)


def echo(
    reactor: object, endpoint: IStreamClientEndpoint, lines: list[bytes]
) -> defer.Deferred[list[bytes]]:
    """Deferred list of echo replies (`You said: …`, or the lines themselves from a raw echo)."""
    return _line_replies(reactor, endpoint, lines)


def exchange_datagrams(
    reactor: IDatagramReactor, host: str, port: int, payloads: list[bytes]
) -> defer.Deferred[list[bytes]]:
    """Deferred list of one reply datagram per payload (add a timeout: UDP may drop any)."""
    return defer.ensureDeferred(
        _run(open_datagrams(reactor, host, port, frame=bytes), payloads)
    ).addCallback(lambda exchange: exchange.replies)


def log(
    reactor: object, endpoint: IStreamClientEndpoint, messages: list[bytes]
) -> defer.Deferred[int]:
    """Send RFC 5424 MESSAGES octet-counted over a stream; Deferred count once closed cleanly."""
    opening = open_stream(reactor, endpoint, frame=octet_counted_syslog, expect_replies=False)
    return defer.ensureDeferred(_run(opening, messages)).addCallback(lambda e: e.sent)


def log_datagrams(
    reactor: IDatagramReactor, host: str, port: int, messages: list[bytes]
) -> defer.Deferred[int]:
    """Send MESSAGES as RFC 5424 syslog datagrams (RFC 5426); Deferred count sent."""
    opening = open_datagrams(reactor, host, port, frame=syslog_message, expect_replies=False)
    return defer.ensureDeferred(_run(opening, messages)).addCallback(lambda e: e.sent)


async def _call(
    endpoint: IStreamClientEndpoint, command: type[amp.Command], **arguments: object
) -> dict[str, Any]:
    protocol = await connectProtocol(endpoint, amp.AMP())
    try:
        answer: dict[str, Any] = await protocol.callRemote(command, **arguments)
        return answer
    finally:
        protocol.transport.loseConnection()


def call(
    endpoint: IStreamClientEndpoint, command: type[amp.Command], **arguments: object
) -> defer.Deferred[dict[str, Any]]:
    """One AMP COMMAND on a connection of its own; Deferred response dict (AMP's values)."""
    return defer.ensureDeferred(_call(endpoint, command, **arguments))


def sleep(
    reactor: object, endpoint: IStreamClientEndpoint, seconds: float
) -> defer.Deferred[float]:
    """Deferred seconds the server measured; fails with InvalidDuration or Overloaded."""
    answered = call(endpoint, Sleep, seconds=float(seconds))
    return answered.addCallback(lambda answer: answer["slept"])


def register(
    reactor: object,
    endpoint: IStreamClientEndpoint,
    name: str,
    host: str,
    port: int | str,
    description: str = "",
    token: str | None = None,
    *,
    instance_id: str | None = None,
    tags: Sequence[str] = (),
    meta: dict[str, str] | None = None,
    logs_app: str | None = None,
    max_silence: float | None = None,
) -> defer.Deferred[dict[str, Any]]:
    """
    Register (or update) an instance: the instance of INSTANCE_ID (by default
    NAME@HOST:PORT) with its TAGS and META; with LOGS_APP, a logs check
    silent once that syslog app on HOST sent nothing for MAX_SILENCE seconds
    (the name server's default: 60).  Fails with Unauthorized or Invalid.
    (An older name server ignores the ID, tags, metadata and logs check.)
    """
    return call(
        endpoint,
        Register,
        name=name,
        host=host,
        port=int(port),
        description=description,
        token=token,
        id=instance_id,
        tags=list(tags) or None,
        meta=[{"key": k, "value": v} for k, v in (meta or {}).items()] or None,
        logs_app=logs_app,
        max_silence=None if max_silence is None else float(max_silence),
    )


def deregister(
    reactor: object,
    endpoint: IStreamClientEndpoint,
    name: str,
    host: str,
    port: int | str,
    token: str | None = None,
) -> defer.Deferred[dict[str, Any]]:
    """Remove an instance; fails with Unauthorized or NotFound."""
    return call(endpoint, Deregister, name=name, host=host, port=int(port), token=token)


def deregister_id(
    reactor: object, endpoint: IStreamClientEndpoint, instance_id: str, token: str | None = None
) -> defer.Deferred[dict[str, Any]]:
    """
    Remove the instance of INSTANCE_ID; fails with Unauthorized or NotFound
    (an older name server, which knows no IDs, answers an error of its own).
    """
    return call(endpoint, Deregister, id=instance_id, token=token)


def lookup(
    reactor: object, endpoint: IStreamClientEndpoint, name: str, token: str | None = None
) -> defer.Deferred[tuple[list[Instance], int]]:
    """
    Deferred (instances, ttl): the live L{Instance}s, rotated by the server.
    TOKEN: the server's read token, when it has one.
    """
    return call(endpoint, Lookup, name=name, token=token).addCallback(
        lambda answer: (_as_instances(answer["instances"]), answer["ttl"])
    )


def services(
    reactor: object, endpoint: IStreamClientEndpoint, token: str | None = None
) -> defer.Deferred[list[str]]:
    """Deferred sorted list of the names with live instances (TOKEN: as for L{lookup})."""
    return call(endpoint, Services, token=token).addCallback(lambda answer: answer["names"])


class _Watching(amp.AMP):
    """
    A connection that watches names: each Changed call goes to
    ON_CHANGE(name, instances), and its loss to ON_LOST(self, reason).
    """

    def __init__(
        self,
        on_change: OnChange,
        on_lost: Callable[["_Watching", Failure], None],
    ) -> None:
        super().__init__()
        self.on_change = on_change
        self.on_lost = on_lost

    @Changed.responder
    def changed(self, name: str, instances: list[dict[str, Any]]) -> dict[str, object]:
        self.on_change(name, _as_instances(instances))
        return {}

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.on_lost(self, reason)


async def _watch(
    endpoint: IStreamClientEndpoint, name: str, on_change: OnChange, token: str | None
) -> None:
    closed: defer.Deferred[None] = defer.Deferred()

    def lost(protocol: _Watching, reason: Failure) -> None:
        if not closed.called:  # not cancelled
            closed.errback(reason)

    protocol = await connectProtocol(endpoint, _Watching(on_change, lost))
    try:
        answer = await protocol.callRemote(Watch, name=name, token=token)
        on_change(name, _as_instances(answer["instances"]))
        await closed
    finally:
        closed.addErrback(lambda _: None)  # the end of a watch refused or cancelled: no news
        if protocol.transport is not None:  # refused or cancelled: not lost already
            protocol.transport.loseConnection()


def watch(
    reactor: object,
    endpoint: IStreamClientEndpoint,
    name: str,
    on_change: OnChange,
    token: str | None = None,
) -> defer.Deferred[None]:
    """
    ON_CHANGE(name, instances) with NAME's live instances now, then at each
    change, until the connection ends (the Deferred fails with why);
    cancelling the Deferred closes it.  TOKEN: as for L{lookup}.
    """
    return defer.ensureDeferred(_watch(endpoint, name, on_change, token))


def _as_instances(instances: list[dict[str, Any]]) -> list[Instance]:
    """AMP's instances (dicts) as the L{Instance}s every caller is given."""
    return [Instance.from_fields(fields) for fields in instances]


async def first_connecting(candidates: Sequence[T], attempt: Callable[[T], Awaitable[R]]) -> R:
    """
    ATTEMPT(candidate) on each of CANDIDATES in turn until one connects; the
    last one's ConnectError if none does.
    """
    for number, candidate in enumerate(candidates, 1):
        try:
            return await attempt(candidate)
        except error.ConnectError:
            if number == len(candidates):
                raise
    raise ValueError("no candidate to connect to")


class NameClient:
    """
    Lookups through a name server, over one connection that watches every
    name looked up: the cache is the server's live set, replaced the moment
    a Changed call says an instance came or left, so traffic never goes on
    to an evicted instance until a TTL runs out.  Answers rotate here, one
    further each call, as Lookup does on the server.

    ENDPOINT is one client endpoint or a list of them: the name servers are
    tried in turn until one connects, and after a lost connection the next
    lookup connects again (and watches again).  A name the server will not
    watch (over its max_watches) is looked up and cached for the `ttl`
    answered instead; NOT_FOUND is then cached NEGATIVE_TTL seconds.
    TOKEN: the name servers' read token, when they have one.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        endpoint: IStreamClientEndpoint
        | list[IStreamClientEndpoint]
        | tuple[IStreamClientEndpoint, ...],
        negative_ttl: float = 1.0,
        clock: IReactorTime | None = None,
        token: str | None = None,
    ) -> None:
        self.reactor = reactor
        self.clock = clock or reactor
        self.token = token
        self.endpoints = list(endpoint) if isinstance(endpoint, (list, tuple)) else [endpoint]
        self.negative_ttl = negative_ttl
        self._protocol: _Watching | None = None
        self._closed: defer.Deferred[None] | None = None
        self._waiting: list[defer.Deferred[_Watching]] = []
        self._watched: dict[str, list[Instance]] = {}
        self._turns: dict[str, int] = {}
        self._cache: dict[str, tuple[float, list[Instance] | NotFound]] = {}

    def lookup(self, name: str) -> defer.Deferred[list[Instance]]:
        """Deferred list of L{Instance}s, rotated; fails with NotFound."""
        instances = self._watched.get(name)
        if instances is not None:
            return self._rotated(name, instances)
        cached = self._cache.get(name)
        if cached is not None and cached[0] > self.clock.seconds():
            answer = cached[1]
            return defer.fail(answer) if isinstance(answer, NotFound) else defer.succeed(answer)
        return defer.ensureDeferred(self._ask(name))

    def close(self) -> defer.Deferred[None]:
        """Drop the connection (and with it the watches); the Deferred fires once it is closed."""
        if self._protocol is None:
            return defer.succeed(None)
        closed: defer.Deferred[None] = defer.Deferred()
        self._closed = closed
        transport = self._protocol.transport
        assert transport is not None  # _protocol is only ever a connected one
        transport.loseConnection()
        return closed

    def _rotated(self, name: str, instances: list[Instance]) -> defer.Deferred[list[Instance]]:
        if not instances:
            return defer.fail(NotFound(f"no live instance of {name}"))
        turn = self._turns.get(name, 0) % len(instances)
        self._turns[name] = turn + 1
        return defer.succeed(instances[turn:] + instances[:turn])

    async def _ask(self, name: str) -> list[Instance]:
        protocol = await self._connection()
        try:
            answer = await protocol.callRemote(Watch, name=name, token=self.token)
        except Overloaded:
            return await self._look_up(protocol, name)
        instances = _as_instances(answer["instances"])
        if protocol is self._protocol:
            self._watched[name] = instances
        return await self._rotated(name, instances)

    async def _look_up(self, protocol: _Watching, name: str) -> list[Instance]:
        try:
            answer = await protocol.callRemote(Lookup, name=name, token=self.token)
        except NotFound as e:
            self._cache[name] = (self.clock.seconds() + self.negative_ttl, e)
            raise
        instances = _as_instances(answer["instances"])
        self._cache[name] = (self.clock.seconds() + answer["ttl"], instances)
        return instances

    def _connection(self) -> defer.Deferred[_Watching]:
        """Deferred connected protocol: the one open, or the first name server that answers."""
        if self._protocol is not None:
            return defer.succeed(self._protocol)
        waiter: defer.Deferred[_Watching] = defer.Deferred()
        self._waiting.append(waiter)
        if len(self._waiting) == 1:
            defer.ensureDeferred(self._connect()).addBoth(self._connected)
        return waiter

    async def _connect(self) -> _Watching:
        return await first_connecting(
            self.endpoints,
            lambda endpoint: connectProtocol(endpoint, _Watching(self._changed, self._lost)),
        )

    def _connected(self, result: _Watching | Failure) -> None:
        waiting, self._waiting = self._waiting, []
        if isinstance(result, amp.AMP):
            self._protocol = result
        for waiter in waiting:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    def _changed(self, name: str, instances: list[Instance]) -> None:
        if name in self._watched:
            self._watched[name] = instances

    def _lost(self, protocol: _Watching, reason: Failure) -> None:
        if protocol is self._protocol:
            self._protocol = None
            self._watched.clear()
            closed, self._closed = self._closed, None
            if closed is not None:
                closed.callback(None)
