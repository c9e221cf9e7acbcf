"""
The policy every stream connection of the suite shares: `max_connections`
(refusal beyond it), `idle_timeout`, flow control and half-close.  The
service protocols only say what to answer.
"""

from dataclasses import dataclass
from typing import Any

from zope.interface import implementer

from twisted.internet import protocol
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin

from suite.net.addresses import describe_peer
from suite.runtime.config import Settings, integer, key, number

log = Logger()


def idle_timeout(default: float) -> Any:
    """The `idle_timeout` key, with a service's own default."""
    return key(number(0), default, "seconds without data before closing; 0 = never")


@dataclass(frozen=True, kw_only=True)
class ConnectionLimits(Settings):
    """The keys of every stream service."""

    max_connections: int = key(integer(1), 1000, "connections served at once; more are refused")
    idle_timeout: float = idle_timeout(300.0)


class StreamFactory(protocol.Factory):
    """
    Builds the connections of every stream listener of one service, so its
    SETTINGS' limits cover them all; CLOCK is the reactor (or a test Clock).
    """

    noisy = False

    def __init__(self, settings: ConnectionLimits, clock):
        self.settings = settings
        self.clock = clock
        self.connections = 0

    @property
    def service_name(self) -> str:
        return self.settings.section


@implementer(IHalfCloseableProtocol)
class ConnectionPolicy(TimeoutMixin, protocol.Protocol):
    """
    Cooperative base of every stream protocol built by a L{StreamFactory};
    list it before the wire protocol's class (`class P(ConnectionPolicy,
    LineReceiver)`), and call super() in overrides.

    A connection over `max_connections` is sent REFUSAL and closed; the wire
    protocol's connectionMade does not run for it.  The transport is
    registered as its own streaming producer: when a client stops reading
    and the transport's write buffer fills, Twisted pauses the transport,
    which stops reading from that client, so memory per connection stays
    bounded by the buffer plus one read, whatever the client sends.
    """

    refusal = b""
    admitted = False

    def connectionMade(self):
        factory = self.factory
        limit = factory.settings.max_connections
        if factory.connections >= limit:
            log.warn(
                "{service}: refused connection from {peer}: max_connections ({limit}) reached",
                service=factory.service_name,
                peer=describe_peer(self.transport.getPeer()),
                limit=limit,
            )
            self.refused()
            self.transport.write(self.refusal)
            self.transport.loseConnection()
            return
        factory.connections += 1
        self.admitted = True
        self.transport.registerProducer(self.transport, True)
        self.setTimeout(factory.settings.idle_timeout or None)
        super().connectionMade()

    def refused(self):
        """Called when max_connections turns this connection away; a hook for subclasses."""

    def dataReceived(self, data):
        self.resetTimeout()
        super().dataReceived(data)

    def connectionLost(self, reason=protocol.connectionDone):
        if self.admitted:
            self.admitted = False
            self.factory.connections -= 1
            self.setTimeout(None)
        super().connectionLost(reason)

    def callLater(self, period, func):
        """TimeoutMixin's timer, on the factory's clock."""
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
        seconds = self.factory.settings.idle_timeout
        log.info(
            "{service}: closing {peer}: idle for {seconds}s (idle_timeout)",
            service=self.factory.service_name,
            peer=describe_peer(self.transport.getPeer()),
            seconds=seconds,
        )
        if self.transport.disconnecting:
            self.transport.abortConnection()
        else:
            self.close()
            self.setTimeout(seconds)

    # Half-close: without IHalfCloseableProtocol Twisted drops the unsent
    # replies when a client shuts down its sending side (`nc -N`).
    def readConnectionLost(self):
        self.close()

    def writeConnectionLost(self):
        self.close()
