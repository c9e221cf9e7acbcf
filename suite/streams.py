"""
What every stream connection of the suite shares: a connection limit, an idle
timeout, flow control and half-close handling.  The service protocols only say
what to answer.
"""

from twisted.internet import protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin

from suite.config import Key, integer, number

log = Logger()



def stream_keys(idle_timeout: float = 300.0) -> tuple[Key, ...]:
    """The connection limits every stream service has, with its idle_timeout default."""
    return (
        Key("max_connections", integer(1), 1000, "connections served at once; more are refused"),
        Key("idle_timeout", number(0), idle_timeout, "seconds without data before closing; 0 = never"),
    )


def host_port(host: str, port: int) -> str:
    """`host:port`, with IPv6 hosts in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def describe_peer(address) -> str:
    """`host:port` for IP peers, the socket path (or `unix`) for Unix ones."""
    if hasattr(address, "port"):
        return host_port(address.host, address.port)
    name = getattr(address, "name", None)
    return name.decode(errors="replace") if isinstance(name, bytes) else name or "unix"


class StreamFactory(protocol.Factory):
    """The limits shared by all stream listeners of one service."""

    noisy = False

    def __init__(self, service_name: str, clock, max_connections: int, idle_timeout: float):
        self.service_name = service_name
        self.clock = clock
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.connections = 0


class StreamProtocol(TimeoutMixin):
    """
    Mixin for a Protocol built by a L{StreamFactory}.

    The transport is registered as its own streaming producer: when a client
    stops reading and the transport's write buffer fills, Twisted pauses the
    transport, which stops reading from that client.  Memory per connection
    stays bounded by the buffer plus one read, whatever the client sends.
    """

    refusal = b""
    admitted = False

    def connectionMade(self):
        factory = self.factory
        if factory.connections >= factory.max_connections:
            log.warn(
                "{service}: refused connection from {peer}: max_connections ({limit}) reached",
                service=factory.service_name,
                peer=describe_peer(self.transport.getPeer()),
                limit=factory.max_connections,
            )
            self.refused()
            self.transport.write(self.refusal)
            self.transport.loseConnection()
            return
        factory.connections += 1
        self.admitted = True
        self.transport.registerProducer(self.transport, True)
        self.setTimeout(factory.idle_timeout or None)

    def refused(self):
        """Called when max_connections turns this connection away; a hook for subclasses."""

    def connectionLost(self, reason=protocol.connectionDone):
        if self.admitted:
            self.admitted = False
            self.factory.connections -= 1
            self.setTimeout(None)

    def callLater(self, period, func):
        return self.factory.clock.callLater(period, func)

    def close(self):
        """
        Send what was written, then close.  The self-registration as producer
        is undone first: a transport whose producer is paused would otherwise
        wait for it forever instead of closing.
        """
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def timeoutConnection(self):
        log.info(
            "{service}: closing {peer}: idle for {seconds}s (idle_timeout)",
            service=self.factory.service_name,
            peer=describe_peer(self.transport.getPeer()),
            seconds=self.factory.idle_timeout,
        )
        if self.transport.disconnecting:
            self.transport.abortConnection()
        else:
            self.close()
            self.setTimeout(self.factory.idle_timeout)

    # IHalfCloseableProtocol: without it Twisted drops the unsent replies when
    # a client shuts down its sending side (`nc -N`, `printf | nc -q`).
    def readConnectionLost(self):
        self.close()

    def writeConnectionLost(self):
        self.close()
