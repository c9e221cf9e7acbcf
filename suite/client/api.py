"""
The Python client API: Deferred-returning functions for each service, over
any Twisted client endpoint.  `suite-client` is a thin layer over these.

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

from twisted.internet import defer, error
from twisted.internet.endpoints import connectProtocol
from twisted.internet.protocol import DatagramProtocol, Protocol
from twisted.protocols import amp

from suite.commands import Deregister, Lookup, NotFound, Register, Services, Sleep


class ServerClosed(Exception):
    """The server closed the connection before answering everything."""


class LineExchange(Protocol):
    """
    Sends lines and reads one reply line per line sent: the timestamp
    server, the line echo and the raw echo all answer that way.  Replies go
    to ON_REPLY as they come; `finished` fires once all have come.
    """

    def __init__(self, on_reply=None):
        self.replies: list[bytes] = []
        self.on_reply = on_reply or self.replies.append
        self.sent = self.received = 0
        self.finished = defer.Deferred()
        self._buffer = b""
        self._done_sending = False

    def send(self, line: bytes):
        data = line + b"\n"
        self.sent += data.count(b"\n")
        self.transport.write(data)

    def done_sending(self):
        self._done_sending = True
        self._check()

    def dataReceived(self, data):
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        for line in lines:
            self.received += 1
            self.on_reply(line.removesuffix(b"\r"))
        self._check()

    def _check(self):
        if self._done_sending and self.received >= self.sent and not self.finished.called:
            self.finished.callback(self.received)
            self.transport.loseConnection()

    def connectionLost(self, reason):
        if not self.finished.called:
            if reason.check(error.ConnectionDone, error.ConnectionLost):
                reason = ServerClosed(
                    f"server closed the connection after {self.received} of {self.sent} replies"
                )
            self.finished.errback(reason)


class DatagramExchange(DatagramProtocol):
    """
    One datagram per message (made by FRAME) to a connected UDP peer, and,
    when EXPECT_REPLIES, one reply datagram expected for each.
    """

    def __init__(self, on_reply=None, frame=bytes, expect_replies=True):
        self.replies: list[bytes] = []
        self.on_reply = on_reply or self.replies.append
        self.frame = frame
        self.expect_replies = expect_replies
        self.sent = self.received = 0
        self.finished = defer.Deferred()
        self._done_sending = False

    def send(self, payload: bytes):
        self.sent += 1
        self.transport.write(self.frame(payload))

    def done_sending(self):
        self._done_sending = True
        self._check()

    def datagramReceived(self, data, address):
        self.received += 1
        self.on_reply(data)
        self._check()

    def _check(self):
        enough = not self.expect_replies or self.received >= self.sent
        if self._done_sending and enough and not self.finished.called:
            self.finished.callback(self.received)

    def connectionRefused(self):
        if not self.finished.called:
            self.finished.errback(error.ConnectionRefusedError("port unreachable"))


class SyslogSender(Protocol):
    """Sends RFC 5424 messages, octet-counted (RFC 6587), then closes."""

    def __init__(self, app="suite-client"):
        self.app = app
        self.sent = 0
        self.finished = defer.Deferred()

    def send(self, message: bytes):
        frame = syslog_message(message, self.app)
        self.transport.write(b"%d %s" % (len(frame), frame))
        self.sent += 1

    def done_sending(self):
        self.transport.loseConnection()

    def connectionLost(self, reason):
        if reason.check(error.ConnectionDone):
            self.finished.callback(self.sent)
        else:
            self.finished.errback(reason)


def syslog_message(message: bytes, app: str = "suite-client", pri: int = 13) -> bytes:
    """An RFC 5424 message (user.notice by default) as `logger` would send it."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + ".%06dZ" % (now % 1 * 1e6)
    header = f"<{pri}>1 {stamp} {socket.gethostname()} {app} {os.getpid()} - - "
    return header.encode() + message


async def _lines(reactor, endpoint, lines) -> list[bytes]:
    protocol = await connectProtocol(endpoint, LineExchange())
    for line in lines:
        protocol.send(line)
    protocol.done_sending()
    await protocol.finished
    return protocol.replies


def timestamp(reactor, endpoint, lines: list[bytes]) -> defer.Deferred:
    """Deferred list of `[T] line` replies, one per line."""
    return defer.ensureDeferred(_lines(reactor, endpoint, lines))


def echo(reactor, endpoint, lines: list[bytes]) -> defer.Deferred:
    """Deferred list of echo replies (`You said: …`, or the lines themselves from a raw echo)."""
    return defer.ensureDeferred(_lines(reactor, endpoint, lines))


async def open_datagram(reactor, host: str, port: int, protocol: DatagramProtocol):
    """Bind PROTOCOL to an ephemeral UDP port connected to HOST:PORT (names resolved first)."""
    if ":" in host:
        reactor.listenUDP(0, protocol, interface="::")
        protocol.transport.connect(host, port)
    else:
        address = await reactor.resolve(host)
        reactor.listenUDP(0, protocol)
        protocol.transport.connect(address, port)
    return protocol


async def _datagrams(reactor, host, port, payloads, **options) -> list[bytes]:
    protocol = DatagramExchange(**options)
    await open_datagram(reactor, host, port, protocol)
    try:
        for payload in payloads:
            protocol.send(payload)
        protocol.done_sending()
        await protocol.finished
        return protocol.replies
    finally:
        await protocol.transport.stopListening()


def exchange_datagrams(reactor, host: str, port: int, payloads: list[bytes]) -> defer.Deferred:
    """Deferred list of one reply datagram per payload (add a timeout: UDP may drop any)."""
    return defer.ensureDeferred(_datagrams(reactor, host, port, payloads))


async def _log(reactor, endpoint, messages) -> int:
    protocol = await connectProtocol(endpoint, SyslogSender())
    for message in messages:
        protocol.send(message)
    protocol.done_sending()
    return await protocol.finished


def log(reactor, endpoint, messages: list[bytes]) -> defer.Deferred:
    """Send MESSAGES to a syslog collector over a stream; Deferred count once closed cleanly."""
    return defer.ensureDeferred(_log(reactor, endpoint, messages))


def log_datagrams(reactor, host: str, port: int, messages: list[bytes]) -> defer.Deferred:
    """Send MESSAGES as syslog datagrams (RFC 5426)."""
    return defer.ensureDeferred(
        _datagrams(reactor, host, port, messages, frame=syslog_message, expect_replies=False)
    )


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
