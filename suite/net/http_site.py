"""
twisted.web sites served under the connection limits of every stream
service (`max_connections`, `max_connections_per_source`, `idle_timeout`):
the [metrics] site and the name server's HTTP API.

A L{QuietSite} writes no access log line per request (a scraper or a
blocking query would fill the log) and keeps at most `max_body` bytes of
a request's body in memory: the rest is counted, not kept, so a client
cannot make the site buffer more than that, and the resource sees that the
body was too large.  Request heads are bounded by twisted.web (16 KiB, 500
headers).  twisted.web's channel keeps its own idle timeout (paused while
a request is being answered) and its own flow control, so
L{LimitedSite} wraps the site's channels rather than being their factory.
"""

from io import BytesIO
from typing import cast

from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.protocols.policies import ProtocolWrapper
from twisted.web import server
from twisted.web.http import Request
from zope.interface import implementer

from suite.foundation.interfaces import IMetricSource
from suite.foundation.metrics import Counts
from suite.net.addresses import PeerAddress, describe_peer, source_of
from suite.net.connections import ConnectionLimits, StreamFactory, transport_kind


class DiscardedBody:
    """Where a request's body goes when no resource reads one: nowhere."""

    overflowed = False

    def write(self, data: bytes) -> None:
        pass

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def tell(self) -> int:
        return 0

    def read(self, size: int = -1) -> bytes:
        return b""

    def close(self) -> None:
        pass


class BoundedBody(BytesIO):
    """
    A request's body, kept while it is at most LIMIT bytes; beyond, nothing
    more is kept and `overflowed` says so.
    """

    def __init__(self, limit: int, length: int | None) -> None:
        super().__init__()
        self.limit = limit
        self.overflowed = length is not None and length > limit

    def write(self, data: bytes) -> int:  # type: ignore[override]  # BytesIO's takes any buffer
        if self.overflowed or self.tell() + len(data) > self.limit:
            self.overflowed = True
            return len(data)
        return super().write(data)


class QuietSite(server.Site):
    """
    twisted.web's Site without an access log line per request, keeping at
    most `max_body` bytes of a request's body (0: none is read).
    """

    noisy = False
    max_body = 0

    def getContentFile(self, length: int | None) -> DiscardedBody | BoundedBody:
        if not self.max_body:
            return DiscardedBody()
        return BoundedBody(self.max_body, length)

    def log(self, request: Request) -> None:
        pass


@implementer(IMetricSource)
class LimitedSite(StreamFactory):
    """
    SITE's connections under SETTINGS' connection limits: over a limit a
    connection is closed at once (and counted, and logged); admitted ones
    are counted like every service's.
    """

    def __init__(self, settings: ConnectionLimits, clock: IReactorTime, site: server.Site) -> None:
        super().__init__(settings, clock)
        self.site = site

    def startFactory(self) -> None:
        self.site.doStart()

    def stopFactory(self) -> None:
        super().stopFactory()
        self.site.doStop()

    def buildProtocol(self, addr: IAddress | None) -> "AdmittedHTTP | None":
        peer = cast(PeerAddress, addr)  # a stream listener's: TCP or Unix, never None
        source = source_of(peer)
        reason = self.refusal_reason(source)
        if reason is not None:
            self.warn_refused(source, describe_peer(peer), reason)
            return None
        self.admit(source)
        return AdmittedHTTP(self, self.site.buildProtocol(addr), source)

    def registerProtocol(self, protocol: "AdmittedHTTP") -> None:
        protocol.counts = self.count_bytes_of(
            protocol.transport, transport_kind(protocol.transport, protocol.source)
        )
        protocol.counts.opened += 1

    def unregisterProtocol(self, protocol: "AdmittedHTTP") -> None:
        protocol.counts.closed += 1
        self.release(protocol.source)


class AdmittedHTTP(ProtocolWrapper):
    """One admitted HTTP connection; it counts as its SOURCE's until it is lost."""

    counts: Counts  # set when the factory registers it

    def __init__(self, factory: LimitedSite, wrapped: Protocol, source: str) -> None:
        # LimitedSite registers and unregisters it as a WrappingFactory would.
        super().__init__(factory, wrapped)  # type: ignore[arg-type]
        self.source = source
