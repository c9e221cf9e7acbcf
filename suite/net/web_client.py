"""
What a service needs to speak HTTP to another one with Twisted's own
client (twisted.web.client.Agent) and nothing else: connections that log no
line each, and a request body already in memory.
"""

from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IConsumer,
    IOpenSSLClientConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.web.client import URI
from twisted.web.error import SchemeNotSupported
from twisted.web.iweb import IAgentEndpointFactory, IBodyProducer, IPolicyForHTTPS
from zope.interface import implementer


@implementer(IStreamClientEndpoint)
class QuietEndpoint:
    """
    Connects through ENDPOINT with the factory made quiet first: the
    connection pool's factory, like every Twisted factory, logs a line at
    each connection's start and end unless its public `noisy` is False
    (and its class is private, so it is not subclassed here).
    """

    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        self.endpoint = endpoint

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        if isinstance(protocolFactory, Factory):
            protocolFactory.noisy = False
        return self.endpoint.connect(protocolFactory)


@implementer(IAgentEndpointFactory)
class QuietEndpoints:
    """
    The endpoints of an Agent's requests as Twisted's Agent makes them: TCP
    to the URL's host and port within CONNECT_TIMEOUT seconds, for https TLS
    over it as POLICY says (verifying the host name), and no log line per
    connection.
    """

    def __init__(self, reactor: object, policy: IPolicyForHTTPS, connect_timeout: float) -> None:
        self.reactor = reactor
        self.policy = policy
        self.connect_timeout = connect_timeout

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        if uri.scheme not in (b"http", b"https"):
            raise SchemeNotSupported(f"Unsupported scheme: {uri.scheme!r}")
        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            self.reactor, uri.host.decode("ascii"), uri.port, timeout=self.connect_timeout
        )
        if uri.scheme == b"https":
            creator: IOpenSSLClientConnectionCreator = self.policy.creatorForNetloc(
                uri.host, uri.port
            )
            endpoint = wrapClientTLS(creator, endpoint)
        return QuietEndpoint(endpoint)


@implementer(IBodyProducer)
class BytesBody:
    """A request body already in memory (FileBodyProducer would add a cooperator per request)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.length = len(data)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self.data)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass
