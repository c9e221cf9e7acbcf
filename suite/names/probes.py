"""
How one declared check of an instance is carried out, Consul's way: `tcp`
opens a connection to HOST:PORT, `http` sends one request (GET unless the
check names another method, with its headers, no body, following no
redirect) and reads at most BODY_LIMIT bytes of the answer: 2xx is passing,
429 (Too Many Requests: alive, but shedding load) warning, anything else
critical.  The outcome is a (status, output) pair whose output reads like
Consul's ("dial tcp 10.0.0.5:80: connect: connection refused"), so the
texts operators search for are the ones they know; a probe never fails.

A check runs within the timeout it is given (L{suite.names.checks} caps
the check's own), and an HTTP check reads at most RESPONSE_LIMIT bytes of
its connection (the status line, the headers, the body and its framing),
then aborts it and is critical: Twisted's HTTP client bounds neither the
number nor the size of a response's headers, so a hostile server could
otherwise feed the name server without end at every interval.

Where a check may connect is the rule of instance hosts
(L{suite.names.allowed}): a check is declared by whoever registers, and
without that rule it would make the name server a port scanner and
request forger aimed at any address.  The target's host is resolved at
every run, every address it stands for must be allowed, and the
connection goes to those addresses, never to the name again: a name
re-pointed between the check and the connect (DNS rebinding) reaches
nothing else.  The HTTP request still names the URL's host (Host header,
TLS server name and certificate check).
"""

from collections.abc import Callable, Sequence
from typing import cast

from OpenSSL import SSL
from twisted.internet import defer, error
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    IStreamClientEndpoint,
    ITCPTransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.ssl import CertificateOptions, TLSVersion, optionsForClientTLS
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.web.client import URI, Agent, ResponseFailed, ResponseNeverReceived
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IResponse
from zope.interface import implementer

from suite.contracts.names import Invalid
from suite.names.health import IConnectingClock, tcp_ping
from suite.names.registry import CRITICAL, MAX_TEXT, PASSING, WARNING, Check
from suite.net.addresses import host_port
from suite.net.web_client import QuietEndpoint

BODY_LIMIT = 4096  # bytes of an HTTP check's answer kept as its output (Consul's)
RESPONSE_LIMIT = 64 * 1024  # bytes an HTTP check reads (headers, body and its framing)
TOO_LARGE = f"server response exceeded {RESPONSE_LIMIT} bytes; aborted"  # Go's words, nearly
USER_AGENT = b"Consul Health Check"  # what services written for Consul's checker expect

Outcome = tuple[str, str]  # (status, output)
Resolve = Callable[[str], defer.Deferred[list[str]]]  # a host name -> its addresses
Allowed = Callable[[str, Sequence[str]], tuple[str, ...]]  # (host, resolved) -> allowed addresses


class Refused(Exception):
    """A check that cannot run as declared: its output says why."""


def split_target(target: str) -> tuple[str, int]:
    """A TCP check's HOST:PORT ([V6]:PORT for IPv6) as (host, port); Refused when malformed."""
    host, colon, port = target.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not colon or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise Refused("not HOST:PORT")
    return host, int(port)


def cut(output: str) -> str:
    """OUTPUT as a check keeps it: at most MAX_TEXT characters."""
    return output[:MAX_TEXT]


def connect_error(failure: Failure) -> str:
    """How Go's dialer words a failed connect, as Consul's outputs show it."""
    if failure.check(error.ConnectionRefusedError):
        return "connect: connection refused"
    if failure.check(error.TimeoutError, defer.TimeoutError, defer.CancelledError):
        return "i/o timeout"
    if failure.check(error.NoRouteError):
        return "connect: no route to host"
    return failure.getErrorMessage()


class _Budget:
    """The bytes an HTTP check's connection may still bring; `spent` once it brought more."""

    def __init__(self, limit: int) -> None:
        self.left = limit
        self.spent = False


class _Metered(ProtocolWrapper):
    """Passes on the bytes its factory's budget allows, then aborts the connection."""

    factory: "_MeteredFactory"

    def dataReceived(self, data: bytes) -> None:
        budget = self.factory.budget
        if budget.spent:
            return  # aborted: what was already in flight is dropped
        if len(data) <= budget.left:
            budget.left -= len(data)
            self.wrappedProtocol.dataReceived(data)
            return
        allowed, budget.left = data[: budget.left], 0
        if allowed:  # whatever the answer completes within the budget stands
            self.wrappedProtocol.dataReceived(allowed)
        budget.spent = True
        cast(ITCPTransport, self.transport).abortConnection()


class _MeteredFactory(WrappingFactory):
    protocol = _Metered
    noisy = False  # a line at each connection's start and end otherwise

    def __init__(self, wrapped: IProtocolFactory, budget: _Budget) -> None:
        super().__init__(wrapped)
        self.budget = budget


@implementer(IStreamClientEndpoint)
class _MeteredEndpoint:
    """ENDPOINT's connections, each reading at most what BUDGET allows (one connection)."""

    def __init__(self, endpoint: IStreamClientEndpoint, budget: _Budget) -> None:
        self.endpoint = endpoint
        self.budget = budget

    def connect(self, protocolFactory: IProtocolFactory) -> defer.Deferred[IProtocol]:
        connected = self.endpoint.connect(_MeteredFactory(protocolFactory, self.budget))
        return connected.addCallback(_unwrapped)


def _unwrapped(metered: IProtocol) -> IProtocol:
    """The protocol a _Metered connection carries: what the Agent's factory built."""
    wrapped: IProtocol = cast(_Metered, metered).wrappedProtocol
    return wrapped


class _Capped(Protocol):
    """
    Receives an answer's body, keeping the first BODY_LIMIT bytes, then hangs
    up; `cut` when the connection's BUDGET ran out before the body was read.
    """

    def __init__(self, budget: _Budget) -> None:
        self.budget = budget
        self.kept: list[bytes] = []
        self.size = 0
        self.cut = False
        self.done: defer.Deferred[bytes] = defer.Deferred(lambda _: self._stop())

    def dataReceived(self, data: bytes) -> None:
        room = BODY_LIMIT - self.size
        if room > 0:
            self.kept.append(data[:room])
            self.size += min(len(data), room)
        if self.size >= BODY_LIMIT:
            self._stop()

    def _stop(self) -> None:
        if self.transport is not None:  # a response's body: a producer
            cast(IPushProducer, self.transport).stopProducing()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.cut = self.size < BODY_LIMIT and self.budget.spent
        if not self.done.called:  # else cancelled: timed out
            self.done.callback(b"".join(self.kept))


@implementer(IOpenSSLClientConnectionCreator)
class _Unverified:
    """TLS that takes any certificate (TLSSkipVerify), still naming HOSTNAME (SNI)."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self.options = CertificateOptions(raiseMinimumTo=TLSVersion.TLSv1_2)

    def clientConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        connection = self.options.clientConnectionForTLS(tlsProtocol)
        if not (isIPAddress(self.hostname) or isIPv6Address(self.hostname)):
            connection.set_tlsext_host_name(self.hostname.encode("idna"))
        return connection


@implementer(IAgentEndpointFactory)
class _Pinned:
    """
    The Agent's connection to ADDRESS, whatever the URL's host (TLS over it
    for https), reading at most what BUDGET allows once decrypted.
    """

    def __init__(
        self,
        reactor: IConnectingClock,
        address: str,
        timeout: float,
        verify: bool,
        budget: _Budget,
    ) -> None:
        self.reactor = reactor
        self.address = address
        self.timeout = timeout
        self.verify = verify
        self.budget = budget

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        endpoint_type = TCP4ClientEndpoint if isIPAddress(self.address) else TCP6ClientEndpoint
        endpoint: IStreamClientEndpoint = endpoint_type(
            self.reactor, self.address, uri.port, timeout=self.timeout
        )
        if uri.scheme == b"https":
            hostname = uri.host.decode("ascii")
            creator = optionsForClientTLS(hostname) if self.verify else _Unverified(hostname)
            endpoint = wrapClientTLS(creator, endpoint)
        return QuietEndpoint(_MeteredEndpoint(endpoint, self.budget))


def _first_reason(failure: Failure) -> Failure:
    """The failure behind an Agent's ResponseNeverReceived or ResponseFailed (its first)."""
    if failure.check(ResponseNeverReceived, ResponseFailed):
        reasons = getattr(failure.value, "reasons", None)
        if reasons and isinstance(reasons[0], Failure):
            return reasons[0]
    return failure


def _request(check: Check) -> tuple[bytes, URI, bytes, Headers]:
    """The URL, its parts, the method and the headers of an HTTP check; Refused if malformed."""
    try:
        url = check.target.encode("ascii")
        uri = URI.fromBytes(url)
        method = check.method.encode("ascii")
        headers = Headers({b"user-agent": [USER_AGENT], b"accept": [b"text/plain, text/*, */*"]})
        for name, values in check.header.items():
            headers.setRawHeaders(name.encode("latin-1"), [v.encode("latin-1") for v in values])
    except (UnicodeError, ValueError) as e:
        raise Refused(f"cannot be sent: {e}") from None
    if uri.scheme not in (b"http", b"https") or not uri.host:
        raise Refused("not an http or https URL")
    if not method.isalpha():
        raise Refused("not an HTTP method")
    return url, uri, method, headers


def _tls_error(failure: Failure) -> str:
    """OpenSSL's reasons (its error queue: (library, function, reason) each), the reasons only."""
    args = getattr(failure.value, "args", ())
    queue = args[0] if args else None
    if isinstance(queue, list) and queue and all(isinstance(e, tuple) and e for e in queue):
        return "; ".join(str(entry[-1]) for entry in queue)
    return failure.getErrorMessage()


def _status(code: int) -> str:
    if 200 <= code < 300:
        return PASSING
    return WARNING if code == 429 else CRITICAL


class Prober:
    """
    Runs TCP and HTTP checks from REACTOR: RESOLVE(host name) finds a
    target's addresses, ALLOWED(host, resolved) keeps those a check may
    reach (L{suite.names.registry.Registry.addresses}: Invalid otherwise).
    """

    def __init__(self, reactor: IConnectingClock, resolve: Resolve, allowed: Allowed) -> None:
        self.reactor = reactor
        self.resolve = resolve
        self.allowed = allowed

    def probe(self, check: Check, timeout: float) -> defer.Deferred[Outcome]:
        """CHECK run once, within TIMEOUT seconds: its (status, output)."""
        if check.kind == "tcp":
            where = f"dial tcp {check.target}"
            run = self._tcp(check, timeout)
        else:
            where = f'{check.method.capitalize()} "{check.target}"'
            run = self._http(check, timeout)
        d = defer.Deferred.fromCoroutine(run)
        d.addTimeout(
            timeout,
            self.reactor,
            onTimeoutCancel=lambda result, timeout: (CRITICAL, f"{where}: i/o timeout"),
        )
        return d.addErrback(self._failed, where)

    @staticmethod
    def _failed(failure: Failure, where: str) -> Outcome:
        if failure.check(Refused, Invalid):
            return CRITICAL, cut(f"{where}: {failure.getErrorMessage()}")
        reason = _first_reason(failure)
        if reason.check(SSL.Error):
            return CRITICAL, cut(f"{where}: tls: {_tls_error(reason)}")
        if reason.check(error.ConnectionDone, error.ConnectionLost):
            return CRITICAL, f"{where}: EOF"  # closed without an answer, as Go says it
        return CRITICAL, cut(f"{where}: {connect_error(reason)}")

    async def _addresses(self, host: str) -> tuple[str, ...]:
        """The addresses HOST stands for now, every one of them allowed (Invalid otherwise)."""
        if isIPAddress(host) or isIPv6Address(host):
            return self.allowed(host, ())
        return self.allowed(host, await self.resolve(host))

    async def _tcp(self, check: Check, timeout: float) -> Outcome:
        host, port = split_target(check.target)
        addresses = await self._addresses(host)
        ping = tcp_ping(self.reactor, timeout)
        refused = ""
        for address in addresses:  # in turn, until one accepts
            try:
                await ping(address, port)
            except error.ConnectError as e:
                refused = f"dial tcp {host_port(address, port)}: {connect_error(Failure(e))}"
            else:
                return PASSING, f"TCP connect {host_port(address, port)}: Success"
        return CRITICAL, refused

    async def _http(self, check: Check, timeout: float) -> Outcome:
        url, uri, method, headers = _request(check)
        [address, *_] = await self._addresses(uri.host.decode("ascii"))
        budget = _Budget(RESPONSE_LIMIT)
        pinned = _Pinned(self.reactor, address, timeout, not check.tls_skip_verify, budget)
        agent = Agent.usingEndpointFactory(self.reactor, pinned)
        try:
            response: IResponse = await agent.request(method, url, headers)
        except error.ConnectError as e:
            raise Refused(
                f"dial tcp {host_port(address, uri.port)}: {connect_error(Failure(e))}"
            ) from None
        except (ResponseNeverReceived, ResponseFailed):
            if budget.spent:
                raise Refused(TOO_LARGE) from None
            raise
        body = _Capped(budget)
        response.deliverBody(body)
        kept = await body.done
        if body.cut:
            raise Refused(TOO_LARGE)
        phrase = response.phrase.decode("latin-1")
        output = f"HTTP {check.method} {check.target}: {response.code} {phrase} Output: "
        return _status(response.code), cut(output + kept.decode("utf-8", "replace"))
