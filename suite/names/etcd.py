"""
A small client of etcd v3's JSON gateway (`/v3/kv/…`, `/v3/watch`,
`/v3/lease/…`), over twisted.web.client.Agent: Twisted's own HTTP client,
so the name server needs no HTTP library beyond Twisted.  Keys and values
travel base64-encoded, 64-bit numbers as decimal strings, and fields equal
to their default (0, false, empty) are left out of answers.

Requests go to one endpoint of the cluster; when it cannot be reached,
does not answer within the timeout, or says it cannot serve (no leader),
the same request goes to the next, each endpoint tried once.  A watch is a
streaming POST whose answer is one JSON object per line, for as long as the
connection stays open.
"""

import base64
import json
from collections.abc import Callable
from typing import Any, cast

from twisted.internet import defer, error
from twisted.internet.interfaces import (
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    ResponseDone,
    ResponseFailed,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from suite.names.store import StoreError
from suite.net.web_client import BytesBody, QuietEndpoints

MAX_MESSAGE = 64 * 2**20  # bytes of one answer (a range of the whole registry) or watch message
UNAVAILABLE_CODES = {4, 14}  # gRPC DeadlineExceeded and Unavailable: another member may serve
HEADERS = Headers({b"content-type": [b"application/json"]})

OnMessage = Callable[[Any], object]  # what gets each JSON message (untyped) of an answer


def encode(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


def decode(value: str | None) -> str:
    return base64.b64decode(value or "").decode()


def prefix_end(prefix: str) -> str:
    """The range_end that, with PREFIX as key, covers every key starting with PREFIX."""
    raw = prefix.encode()
    return base64.b64encode(raw[:-1] + bytes([raw[-1] + 1])).decode("ascii")


def _pool(reactor: object, persistent: bool) -> HTTPConnectionPool:
    pool = HTTPConnectionPool(reactor, persistent=persistent)
    pool.retryAutomatically = False  # a request is retried on the next endpoint instead
    return pool


CONNECT_TIMEOUT = 30.0  # seconds to connect to a member (HostnameEndpoint's default)


class EtcdError(StoreError):
    """
    etcd could not be reached or refused a request; str() says which
    endpoint and why.  `retry_elsewhere`: another member might serve it (the
    endpoint was unreachable, silent, or without a leader), so etcd counts
    as unreachable, not as refusing.
    """

    retry_elsewhere = False


class _Messages(Protocol):
    """
    An answer's body as JSON messages, one per line (a plain answer is one
    message); ON_MESSAGE gets each; DONE fires when the body ends, or fails
    when it was cut short, is not JSON, or holds a message over MAX_MESSAGE
    bytes (which also ends the connection).
    """

    def __init__(self, on_message: OnMessage, done: defer.Deferred[None]) -> None:
        self.on_message = on_message
        self.done = done
        self._buffer = b""
        self._problem: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        if self._problem is not None:
            return
        self._buffer += data
        *messages, self._buffer = self._buffer.split(b"\n")
        try:
            if len(self._buffer) > MAX_MESSAGE:
                raise ValueError(f"a message over {MAX_MESSAGE} bytes")
            for message in messages:
                if message.strip():
                    self.on_message(json.loads(message))
        except ValueError as e:
            self._problem = Failure(e)
            self.stop()

    def stop(self) -> None:
        """
        Stop the body, and close its connection: the transport of a body
        being delivered is a push producer (Twisted's proxy of the connection).
        """
        cast(IPushProducer, self.transport).stopProducing()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._problem is None and self._buffer.strip():
            try:
                self.on_message(json.loads(self._buffer))
            except ValueError as e:
                self._problem = Failure(e)
        if self._problem is None and not reason.check(ResponseDone):
            self._problem = reason
        if self._problem is None:
            self.done.callback(None)
        else:
            self.done.errback(self._problem)


def _error_message(failure: Failure) -> str:
    if failure.check(defer.CancelledError, defer.TimeoutError):
        return "no answer in time"
    if failure.check(error.ConnectionRefusedError):
        return "connection refused"
    if failure.check(ResponseFailed):
        return "connection lost"
    return failure.getErrorMessage()


class EtcdClient:
    """Requests to the cluster at ENDPOINTS (`http://host:port` each), timed out after TIMEOUT."""

    def __init__(self, reactor: IReactorTime, endpoints: list[str], timeout: float) -> None:
        self.reactor = reactor
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self._current = 0
        # TCP (or TLS verified as a browser would) within Twisted's default 30 s, unlogged.
        connecting = QuietEndpoints(reactor, BrowserLikePolicyForHTTPS(), CONNECT_TIMEOUT)
        self.pool = _pool(reactor, persistent=True)
        self.agent = Agent.usingEndpointFactory(reactor, connecting, pool=self.pool)
        # A watch holds its connection as long as it lasts: a pool of its own, never reused.
        self.watch_agent = Agent.usingEndpointFactory(
            reactor, connecting, pool=_pool(reactor, persistent=False)
        )
        self._in_flight: set[defer.Deferred[dict]] = set()
        self._closed = False

    @property
    def endpoint(self) -> str:
        return self.endpoints[self._current]

    def next_endpoint(self) -> None:
        self._current = (self._current + 1) % len(self.endpoints)

    def call(self, path: str, body: dict) -> defer.Deferred[dict]:
        """Deferred answer (a dict) of POST PATH with BODY; fails with EtcdError."""
        if self._closed:
            return defer.fail(EtcdError("the etcd client is closed"))
        d = defer.ensureDeferred(self._call(path, json.dumps(body).encode()))
        self._in_flight.add(d)
        return d.addBoth(self._settled, d)

    def _settled(self, result: object, d: defer.Deferred[dict]) -> object:
        self._in_flight.discard(d)
        return result

    async def _call(self, path: str, data: bytes) -> dict:
        for attempt in range(len(self.endpoints)):
            endpoint = self.endpoint
            try:
                return await self._post(endpoint, path, data)
            except EtcdError as e:
                if attempt == len(self.endpoints) - 1 or not e.retry_elsewhere:
                    raise
                self.next_endpoint()
        raise EtcdError("no etcd endpoint to ask")  # an empty list: the loop did not run

    async def _post(self, endpoint: str, path: str, data: bytes) -> dict:
        messages: list[object] = []
        try:
            response = await self._request(self.agent, endpoint, path, data).addTimeout(
                self.timeout, self.reactor
            )
            done: defer.Deferred[None] = defer.Deferred()
            response.deliverBody(_Messages(messages.append, done))
            await done.addTimeout(self.timeout, self.reactor)
        except Exception:
            failure = Failure()
            raise self._error(endpoint, _error_message(failure), retry_elsewhere=True) from None
        answer: dict = messages[0] if len(messages) == 1 and isinstance(messages[0], dict) else {}
        if response.code != 200 or "error" in answer:
            code = answer.get("code")
            message = answer.get("message") or answer.get("error") or f"HTTP {response.code}"
            raise self._error(endpoint, message, retry_elsewhere=code in UNAVAILABLE_CODES)
        return answer

    @staticmethod
    def _error(endpoint: str, message: str, retry_elsewhere: bool) -> EtcdError:
        e = EtcdError(f"etcd {endpoint}: {message}")
        e.retry_elsewhere = retry_elsewhere
        return e

    def _request(
        self, agent: Agent, endpoint: str, path: str, data: bytes
    ) -> defer.Deferred[IResponse]:
        url = f"{endpoint}{path}".encode()
        return agent.request(b"POST", url, HEADERS, BytesBody(data))

    def watch(self, request: dict, on_message: OnMessage) -> defer.Deferred[None]:
        """
        Watch (a `create_request`) on the current endpoint: ON_MESSAGE gets
        each answer as it comes.  The Deferred fires when the stream ends,
        failing with EtcdError when it could not open or was cut; cancelling
        it closes the watch.
        """
        endpoint = self.endpoint
        streams: list[_Messages] = []

        def cancel(_: object) -> None:
            if streams:
                streams[0].stop()
            else:
                requested.cancel()

        ended: defer.Deferred[None] = defer.Deferred(cancel)

        def answered(response: IResponse) -> defer.Deferred[None]:
            done: defer.Deferred[None] = defer.Deferred()
            if response.code != 200:
                response.deliverBody(_Messages(lambda _: None, done))
                raise self._error(endpoint, f"HTTP {response.code}", retry_elsewhere=True)
            streams.append(_Messages(on_message, done))
            response.deliverBody(streams[0])
            return done

        def settled(result: Failure | None) -> None:
            if ended.called:  # cancelled: what the stream says as it closes does not matter
                return None
            if isinstance(result, Failure) and not result.check(EtcdError):
                result = Failure(self._error(endpoint, _error_message(result), True))
            ended.callback(result) if not isinstance(result, Failure) else ended.errback(result)

        body = json.dumps({"create_request": request}).encode()
        requested = self._request(self.watch_agent, endpoint, "/v3/watch", body)
        requested.addTimeout(self.timeout, self.reactor).addCallback(answered).addBoth(settled)
        return ended

    def close(self) -> defer.Deferred[None]:
        """Wait for the requests in flight, then close the idle connections."""
        self._closed = True
        waiting = defer.DeferredList(list(self._in_flight), consumeErrors=True)
        return waiting.addBoth(lambda _: self.pool.closeCachedConnections())
