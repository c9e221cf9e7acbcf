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
from typing import Callable

from twisted.internet import defer, error
from twisted.internet.endpoints import connectProtocol
from twisted.internet.protocol import DatagramProtocol, Protocol
from twisted.protocols import amp

from suite.names.commands import Deregister, Lookup, NotFound, Register, Services
from suite.sleep.commands import Sleep


class ServerClosed(Exception):
    """The server closed the connection before answering everything."""


def line_frame(message: bytes) -> bytes:
    return message + b"\n"


def syslog_message(message: bytes, app: str = "suite-client", pri: int = 13,
                   hostname: str | None = None) -> bytes:
    """An RFC 5424 message (user.notice by default) as `logger` would send it."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + ".%06dZ" % (now % 1 * 1e6)
    header = f"<{pri}>1 {stamp} {hostname or socket.gethostname()} {app} {os.getpid()} - - "
    return header.encode() + message


def octet_counted_syslog(message: bytes, **header) -> bytes:
    """RFC 6587 octet counting around an RFC 5424 message (HEADER: syslog_message's)."""
    frame = syslog_message(message, **header)
    return b"%d %s" % (len(frame), frame)


class Exchange:
    """
    Messages out, replies in, over a stream or datagrams: the timestamp
    server, both echoes and the collector all follow it.  FRAME turns a
    message into what is sent; a stream expects one reply line per LF sent,
    a datagram one reply datagram, unless EXPECT_REPLIES is false (syslog).
    Replies go to ON_REPLY as they come; `finished` fires once everything
    was sent and answered (and, on a stream, the connection closed cleanly).
    """

    def __init__(self, frame: Callable[[bytes], bytes] = line_frame,
                 on_reply: Callable[[bytes], object] | None = None, expect_replies: bool = True):
        self.frame = frame
        self.replies: list[bytes] = []
        self.on_reply = on_reply or self.replies.append
        self.expect_replies = expect_replies
        self.sent = self.expected = self.received = 0
        self.all_sent = False
        self.finished = defer.Deferred()
        self.transport = None

    @property
    def complete(self) -> bool:
        return self.all_sent and self.received >= self.expected

    def send(self, message: bytes):
        data = self.frame(message)
        self.sent += 1
        if self.expect_replies:
            self.expected += self.replies_expected(data)
        self.transport.write(data)

    def done_sending(self):
        self.all_sent = True
        self.progressed()

    def replied(self, reply: bytes):
        self.received += 1
        self.on_reply(reply)

    def fail(self, reason):
        if not self.finished.called:
            self.finished.errback(reason)

    def succeed(self):
        if not self.finished.called:
            self.finished.callback(self)


class StreamExchange(Exchange, Protocol):
    """An L{Exchange} over a connection: replies are lines (CRLF or LF)."""

    _buffer = b""

    @staticmethod
    def replies_expected(data: bytes) -> int:
        return data.count(b"\n")

    def dataReceived(self, data):
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        for line in lines:
            self.replied(line.removesuffix(b"\r"))
        self.progressed()

    def progressed(self):
        if self.complete and not self.transport.disconnecting:
            self.transport.loseConnection()

    def connectionLost(self, reason):
        if self.complete and reason.check(error.ConnectionDone):
            self.succeed()
        elif reason.check(error.ConnectionDone, error.ConnectionLost):
            self.fail(ServerClosed(
                f"server closed the connection after {self.received} of {self.expected} replies"
            ))
        else:
            self.fail(reason)


class DatagramExchange(Exchange, DatagramProtocol):
    """An L{Exchange} over a connected UDP socket: each reply is one datagram."""

    @staticmethod
    def replies_expected(data: bytes) -> int:
        return 1

    def datagramReceived(self, data, address):
        self.replied(data)
        self.progressed()

    def progressed(self):
        if self.complete:
            self.succeed()

    def connectionRefused(self):
        self.fail(error.ConnectionRefusedError("port unreachable"))


def open_stream(reactor, endpoint, **options) -> defer.Deferred:
    """Deferred L{StreamExchange} connected through ENDPOINT (OPTIONS as for Exchange)."""
    return connectProtocol(endpoint, StreamExchange(**options))


async def _open_datagrams(reactor, host, port, options) -> DatagramExchange:
    exchange = DatagramExchange(**options)
    if ":" in host:
        reactor.listenUDP(0, exchange, interface="::")
    else:
        host = await reactor.resolve(host)
        reactor.listenUDP(0, exchange)
    exchange.transport.connect(host, port)
    exchange.finished.addBoth(_stop_listening, exchange)
    return exchange


def open_datagrams(reactor, host: str, port: int, **options) -> defer.Deferred:
    """Deferred L{DatagramExchange} on an ephemeral UDP port connected to HOST:PORT."""
    return defer.ensureDeferred(_open_datagrams(reactor, host, port, options))


def _stop_listening(result, exchange):
    exchange.transport.stopListening()
    return result


async def _run(opening, messages):
    exchange = await opening
    for message in messages:
        exchange.send(message)
    exchange.done_sending()
    return await exchange.finished


def _line_replies(reactor, endpoint, lines) -> defer.Deferred:
    return defer.ensureDeferred(_run(open_stream(reactor, endpoint), lines)).addCallback(
        lambda exchange: exchange.replies
    )


def timestamp(reactor, endpoint, lines: list[bytes]) -> defer.Deferred:
    """Deferred list of `[T] line` replies, one per line."""
    return _line_replies(reactor, endpoint, lines)


def echo(reactor, endpoint, lines: list[bytes]) -> defer.Deferred:
    """Deferred list of echo replies (`You said: …`, or the lines themselves from a raw echo)."""
    return _line_replies(reactor, endpoint, lines)


def exchange_datagrams(reactor, host: str, port: int, payloads: list[bytes]) -> defer.Deferred:
    """Deferred list of one reply datagram per payload (add a timeout: UDP may drop any)."""
    return defer.ensureDeferred(
        _run(open_datagrams(reactor, host, port, frame=bytes), payloads)
    ).addCallback(lambda exchange: exchange.replies)


def log(reactor, endpoint, messages: list[bytes]) -> defer.Deferred:
    """Send RFC 5424 MESSAGES octet-counted over a stream; Deferred count once closed cleanly."""
    opening = open_stream(reactor, endpoint, frame=octet_counted_syslog, expect_replies=False)
    return defer.ensureDeferred(_run(opening, messages)).addCallback(lambda e: e.sent)


def log_datagrams(reactor, host: str, port: int, messages: list[bytes]) -> defer.Deferred:
    """Send MESSAGES as RFC 5424 syslog datagrams (RFC 5426); Deferred count sent."""
    opening = open_datagrams(reactor, host, port, frame=syslog_message, expect_replies=False)
    return defer.ensureDeferred(_run(opening, messages)).addCallback(lambda e: e.sent)


async def _call(endpoint, command, **arguments) -> dict:
    protocol = await connectProtocol(endpoint, amp.AMP())
    try:
        return await protocol.callRemote(command, **arguments)
    finally:
        protocol.transport.loseConnection()


def call(endpoint, command, **arguments) -> defer.Deferred:
    """One AMP COMMAND on a connection of its own; Deferred response dict."""
    return defer.ensureDeferred(_call(endpoint, command, **arguments))


def sleep(reactor, endpoint, seconds: float) -> defer.Deferred:
    """Deferred seconds the server measured; fails with InvalidDuration or Overloaded."""
    return call(endpoint, Sleep, seconds=float(seconds)).addCallback(lambda answer: answer["slept"])


def register(reactor, endpoint, name, host, port, description="", token=None):
    """Register (or update) an instance; fails with Unauthorized or Invalid."""
    return call(endpoint, Register, name=name, host=host, port=int(port),
                description=description, token=token)


def deregister(reactor, endpoint, name, host, port, token=None):
    """Remove an instance; fails with Unauthorized or NotFound."""
    return call(endpoint, Deregister, name=name, host=host, port=int(port), token=token)


def lookup(reactor, endpoint, name) -> defer.Deferred:
    """Deferred (instances, ttl): instances as (host, port, description), rotated by the server."""
    return call(endpoint, Lookup, name=name).addCallback(
        lambda answer: (
            [(i["host"], i["port"], i["description"]) for i in answer["instances"]],
            answer["ttl"],
        )
    )


def services(reactor, endpoint) -> defer.Deferred:
    """Deferred sorted list of the names with live instances."""
    return call(endpoint, Services).addCallback(lambda answer: answer["names"])


class NameClient:
    """
    Lookups through a name server, cached for the `ttl` the server answers;
    NOT_FOUND is cached for the shorter NEGATIVE_TTL, so a service that
    registers soon after is found soon after.
    """

    def __init__(self, reactor, endpoint, negative_ttl: float = 1.0, clock=None):
        self.reactor = reactor
        self.clock = clock or reactor
        self.endpoint = endpoint
        self.negative_ttl = negative_ttl
        self._cache: dict[str, tuple[float, object]] = {}

    def lookup(self, name: str) -> defer.Deferred:
        """Deferred list of (host, port, description); fails with NotFound."""
        now = self.clock.seconds()
        cached = self._cache.get(name)
        if cached is not None and cached[0] > now:
            answer = cached[1]
            return defer.fail(answer) if isinstance(answer, NotFound) else defer.succeed(answer)
        d = lookup(self.reactor, self.endpoint, name)

        def found(result):
            instances, ttl = result
            self._cache[name] = (self.clock.seconds() + ttl, instances)
            return instances

        def missing(failure):
            failure.trap(NotFound)
            self._cache[name] = (self.clock.seconds() + self.negative_ttl, failure.value)
            return failure

        return d.addCallbacks(found, missing)
