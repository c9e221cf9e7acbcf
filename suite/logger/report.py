"""
Telling name servers in other processes who this collector heard
(`report_to`), for their logs checks: a check turns silent when no message
from its app on its host arrived for a while, and a name server that is
not in the collector's suite learns of messages only from these reports.

The reporter is told of every read's messages (L{Hearing}) and keeps, per
(app, hostname, sender address), when it was last heard: one dict lookup
per identity of a read, however many messages the read held.  Once a
second it sends what it heard since the last report to every target, as
`PUT /v1/suite/heard` with the JSON array
`[{"app": A, "hostname": H or null, "address": IP, "last": UNIX_SECONDS}]`
and the write token in `X-Consul-Token`; a large report is split so that
no request body exceeds MAX_REPORT_BODY (the name server takes 64 KiB).
Messages without an app are left out: a logs check names one.

A sender can invent any number of identities, so the table holds at most
`max_reported_sources` of them between two reports; a new identity beyond
that waits for the next report (an identity still heard then is reported
then) and is counted in `log_report_skipped`.

A target still busy with the previous report when the next second comes is
not sent another one alongside: what it missed is kept for its next report
(within the same bound), and so is what a request could not deliver (no
answer, a 5xx): the name server then learns when each source was last
heard, not only that it logged after the outage.  What a name server
refused (any other 4xx, a wrong token) is dropped: it would be refused again.

An outage of a target is logged once when it begins, with the reason, and
once when it ends; meanwhile /health says the logger is degraded.  A stop
sends one last report, bounded by the request timeout.
"""

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from twisted.application import service
from twisted.internet import error
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    TimeoutError,
    ensureDeferred,
    succeed,
)
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IResponse
from zope.interface import implementer

from suite.foundation.config import ConfigError
from suite.foundation.credentials import resolve_token
from suite.foundation.health import DEGRADED
from suite.foundation.heard import HeardFields
from suite.foundation.interfaces import IHealthSource, IMetricSource
from suite.foundation.printable import printable
from suite.foundation.stamps import utc_second
from suite.net.client_endpoints import tls_failure
from suite.net.tls import trust_root
from suite.net.web_client import BytesBody, QuietEndpoints

if TYPE_CHECKING:
    from suite.logger.service import LoggerSettings
    from suite.net.twisted_internals.types import IOpenSSLTrustRoot

log = Logger()

REPORT_PATH = "/v1/suite/heard"
INTERVAL = 1.0  # seconds between two reports
TIMEOUT = 5.0  # seconds a request (connecting, sending, the whole answer) may take
MAX_REPORT_BODY = 48 * 1024  # bytes of one request's body
MAX_ANSWER = 1024  # bytes of an answer kept, for the log line of a refusal
IDLE_CONNECTION = 30  # seconds a connection to a target is kept between reports

# (app, hostname or None, sender address) of what was heard
Identity = tuple[str, str | None, str]

_quote = json.encoder.encode_basestring_ascii


@dataclass(frozen=True)
class ReportTokenKeys:
    """`report_token` and `report_token_file` as the token keys resolve_token reads."""

    settings: "LoggerSettings"

    @property
    def token(self) -> str:
        return self.settings.report_token

    @property
    def token_file(self) -> str:
        return self.settings.report_token_file

    def error(self, name: str, problem: str, value: Any = None) -> ConfigError:
        return self.settings.error(f"report_{name}", problem, value)


def report_mistakes(settings: "LoggerSettings") -> Iterator[ConfigError]:
    """
    What the report_* keys get wrong (read, never written): a token file
    that cannot be read, a token or a CA that no report_to URL would use.
    """
    if not settings.report_to:
        for name in ("report_token", "report_token_file", "report_ca"):
            if getattr(settings, name):
                yield settings.error(name, "set report_to too: it is only sent to report_to URLs")
        return
    try:
        resolve_token(ReportTokenKeys(settings))
    except ConfigError as e:
        yield e
    if settings.report_ca:
        if not any(urlsplit(url).scheme == "https" for url in settings.report_to):
            yield settings.error("report_ca", "no report_to URL is https:// to verify with it")
        else:
            try:
                trust_root(settings, "report_ca")
            except ConfigError as e:
                yield e


def merge(into: dict[Identity, float], heard: Mapping[Identity, float], bound: int) -> int:
    """
    HEARD's identities into INTO, the later time kept for those in both,
    INTO holding at most BOUND: how many of HEARD did not fit.
    """
    left_out = 0
    for identity, last in heard.items():
        known = into.get(identity)
        if known is not None:
            if last > known:
                into[identity] = last
        elif len(into) < bound:
            into[identity] = last
        else:
            left_out += 1
    return left_out


def entry_json(identity: Identity, last: float) -> bytes:
    app, hostname, address = identity
    host = "null" if hostname is None else _quote(hostname)
    return (
        f'{{"app": {_quote(app)}, "hostname": {host}, "address": {_quote(address)}, '
        f'"last": {last:.3f}}}'
    ).encode("ascii")


def report_bodies(
    entries: Iterable[tuple[Identity, float]], limit: int = MAX_REPORT_BODY
) -> Iterator[tuple[bytes, list[tuple[Identity, float]]]]:
    """
    ENTRIES as JSON arrays of at most LIMIT bytes each, with the entries
    each holds.  An entry that alone would not fit (an app of kilobytes of
    escapes) is left out: no name server would take it.
    """
    parts: list[bytes] = []
    held: list[tuple[Identity, float]] = []
    size = 2  # []
    for identity, last in entries:
        encoded = entry_json(identity, last)
        if len(encoded) + 2 > limit:
            continue
        if parts and size + 2 + len(encoded) > limit:  # 2: the ", " before it
            yield b"[" + b", ".join(parts) + b"]", held
            parts, held, size = [], [], 2
        size += len(encoded) + (2 if parts else 0)
        parts.append(encoded)
        held.append((identity, last))
    if parts:
        yield b"[" + b", ".join(parts) + b"]", held


class Refused(Exception):
    """A report not delivered: WHY in one line; KEEP: its entries are worth sending again."""

    def __init__(self, why: str, keep: bool, forbidden: bool = False) -> None:
        super().__init__(why)
        self.why = why
        self.keep = keep
        self.forbidden = forbidden


class _AnswerStart(Protocol):
    """Reads an answer's body to its end, keeping its first MAX_ANSWER bytes."""

    def __init__(self, done: Deferred[bytes]) -> None:
        self.done = done
        self.kept = b""

    def dataReceived(self, data: bytes) -> None:
        if len(self.kept) < MAX_ANSWER:
            self.kept += data[: MAX_ANSWER - len(self.kept)]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.done.callback(self.kept)


def first_line(answer: bytes) -> str:
    """The first line of an answer's body, decoded and made printable."""
    line = answer.decode("utf-8", "replace").strip().split("\n", 1)[0].strip()
    return printable(line)


def why_failed(failure: Failure, timeout: float) -> str:
    """Why a request got no answer, in a few words."""
    wrapped = failure.value
    if isinstance(wrapped, ResponseNeverReceived | ResponseFailed | RequestTransmissionFailed):
        if wrapped.reasons:
            return why_failed(wrapped.reasons[0], timeout)
    if failure.check(CancelledError, TimeoutError):
        return f"no answer within {timeout:g} s"
    if failure.check(error.ConnectionRefusedError):
        return "connection refused"
    if failure.check(error.DNSLookupError):
        return "the host name does not resolve"
    if failure.check(error.TCPTimedOutError, error.TimeoutError):
        return "connecting timed out"
    return tls_failure(wrapped) or failure.getErrorMessage() or type(wrapped).__name__


class Target:
    """One `report_to` name server, and how reporting to it goes."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.endpoint = (url.rstrip("/") + REPORT_PATH).encode("ascii")
        self.sending: Deferred[None] | None = None  # the report in flight
        self.backlog: dict[Identity, float] = {}  # what it missed or must be sent again
        self.sent = 0
        self.failed = 0
        self.down_since: float | None = None
        self.down_reason = ""


@implementer(IMetricSource, IHealthSource)
class HeardReporter(service.Service):
    """
    Reports who was heard to the name servers at URLS (their HTTP APIs) with
    TOKEN, through AGENT, every INTERVAL seconds of CLOCK, holding at most
    MAX_SOURCES identities between two reports.
    """

    def __init__(
        self,
        urls: Sequence[str],
        token: str,
        max_sources: int,
        clock: IReactorTime,
        agent: IAgent,
        timeout: float = TIMEOUT,
    ) -> None:
        self.targets = [Target(url) for url in urls]
        self.max_sources = max_sources
        self.clock = clock
        self.agent = agent
        self.timeout = timeout
        headers = {b"content-type": [b"application/json"]}
        if token:
            headers[b"x-consul-token"] = [token.encode("utf-8")]
        self.headers = Headers(headers)
        self.skipped = 0
        self._heard: dict[Identity, float] = {}
        # New identities left out since the last report, so each counts once (bounded too).
        self._left_out: set[Identity] = set()
        self._loop = LoopingCall(self.report)
        self._loop.clock = clock
        self._pools: list[HTTPConnectionPool] = []  # closed by a stop after the last report

    def close_after_stop(self, pool: HTTPConnectionPool) -> None:
        """POOL's cached connections are closed once a stop's last report is done."""
        self._pools.append(pool)

    # Hearing (on the collector's path: once per read).

    wants_hashes = False  # it reports names, not hashes

    def heard(
        self,
        messages: Sequence[HeardFields | None] | None,
        address: str,
        hashes: bytes | None = None,
    ) -> None:
        if messages is None:  # never: it does not want hashes, so it gets the fields
            return
        now = self.clock.seconds()
        table = self._heard
        room = self.max_sources
        # Each distinct one once: a read's messages mostly share a few headers.
        for fields in set(messages):
            if fields is None:
                continue
            app = fields[2]
            if not app:  # none, or empty: no logs check names it, and a name server refuses it
                continue
            identity = (app, fields[1], address)
            if len(table) < room or identity in table:
                table[identity] = now
            elif identity not in self._left_out:
                self.skipped += 1
                if len(self._left_out) < self.max_sources:
                    self._left_out.add(identity)

    # Reporting.

    def startService(self) -> None:
        service.Service.startService(self)
        self._loop.start(INTERVAL, now=False)

    def report(self) -> None:
        """Send what was heard since the last report to every target not still busy."""
        heard, self._heard = self._heard, {}
        self._left_out.clear()
        for target in self.targets:
            if target.sending is not None:
                self.skipped += merge(target.backlog, heard, self.max_sources)
                continue
            pending = heard
            if target.backlog:
                pending, target.backlog = target.backlog, {}
                self.skipped += merge(pending, heard, self.max_sources)
            if pending:
                target.sending = ensureDeferred(self._send(target, pending))
                target.sending.addBoth(self._sent, target)

    def _sent(self, result: object, target: Target) -> object:
        target.sending = None
        if isinstance(result, Failure) and result.check(CancelledError):
            return None  # a stop gave up on it
        return result

    async def _send(self, target: Target, pending: Mapping[Identity, float]) -> None:
        bodies = list(report_bodies(pending.items()))
        for index, (body, _) in enumerate(bodies):
            try:
                await self._put(target, body)
            except Refused as refused:
                target.failed += 1
                if refused.keep:
                    for _, entries in bodies[index:]:
                        self.skipped += merge(target.backlog, dict(entries), self.max_sources)
                self._outage(target, refused)
                return
            target.sent += 1
        self._reached(target)

    async def _put(self, target: Target, body: bytes) -> None:
        requested = self.agent.request(b"PUT", target.endpoint, self.headers, BytesBody(body))
        try:
            response: IResponse = await requested.addTimeout(self.timeout, self.clock)
            done: Deferred[bytes] = Deferred()
            response.deliverBody(_AnswerStart(done))
            answer = await done.addTimeout(self.timeout, self.clock)
        except CancelledError:
            raise  # a stop gave up on it (a timeout is a TimeoutError)
        except Exception:
            raise Refused(why_failed(Failure(), self.timeout), keep=True) from None
        code = response.code
        if 200 <= code < 300:
            return
        why = f"HTTP {code}" + (f": {first_line(answer)}" if answer.strip() else "")
        raise Refused(why, keep=code >= 500 or code in (408, 429), forbidden=code == 403)

    def _outage(self, target: Target, refused: Refused) -> None:
        if target.down_since is not None:
            return
        target.down_since = self.clock.seconds()
        target.down_reason = refused.why
        if refused.forbidden:
            log.error(
                "report_to {target}: the name server refused report_token ({why}): no report "
                "is taken until report_token is its write token",
                target=target.url,
                why=refused.why,
            )
        else:
            log.warn(
                "report_to {target}: cannot report who was heard: {why}; trying again every "
                "{interval:g} s",
                target=target.url,
                why=refused.why,
                interval=INTERVAL,
            )

    def _reached(self, target: Target) -> None:
        if target.down_since is None:
            return
        log.info(
            "report_to {target}: reporting again after {seconds:.1f} s",
            target=target.url,
            seconds=self.clock.seconds() - target.down_since,
        )
        target.down_since = None
        target.down_reason = ""

    # Stopping.

    def stopService(self) -> Deferred[None]:
        """One last report (bounded by the timeout), then the connections close."""
        service.Service.stopService(self)
        if self._loop.running:
            self._loop.stop()
        self.report()
        sending = [t.sending for t in self.targets if t.sending is not None]
        last: Deferred[object] = succeed(None)
        if sending:
            waiting = DeferredList(sending, consumeErrors=True)
            last = waiting.addTimeout(self.timeout, self.clock).addErrback(lambda _: None)
        return last.addCallback(self._close)

    def _close(self, _: object) -> Deferred[None]:
        closing = [pool.closeCachedConnections() for pool in self._pools]
        return DeferredList(closing).addCallback(lambda _: None)

    # What /metrics and /health read (from a thread: nothing here is walked while it changes).

    def metric_samples(self) -> Iterator[tuple[str, tuple, object]]:
        for target in self.targets:
            yield "log_reports", (target.url, "sent"), target.sent
            yield "log_reports", (target.url, "failed"), target.failed
        yield "log_report_skipped", (), self.skipped

    def health_problems(self) -> list[tuple[str, str]]:
        return [
            (
                DEGRADED,
                f"report_to {target.url} failing since {utc_second(target.down_since)}: "
                f"{target.down_reason}",
            )
            for target in self.targets
            if target.down_since is not None
        ]


def report_agent(
    reactor: IReactorTime, trust: "IOpenSSLTrustRoot | None" = None
) -> tuple[Agent, HTTPConnectionPool]:
    """
    The HTTP client of the reports and its connection pool: one connection
    kept per target between reports, https verified against TRUST (default:
    the system's CAs) and the host name, no log line per connection.
    """
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.retryAutomatically = False  # the next report sends it again
    pool.maxPersistentPerHost = 1  # one report at a time per target
    pool.cachedConnectionTimeout = IDLE_CONNECTION
    endpoints = QuietEndpoints(reactor, BrowserLikePolicyForHTTPS(trust), TIMEOUT)
    return Agent.usingEndpointFactory(reactor, endpoints, pool=pool), pool


def open_reporter(settings: "LoggerSettings", reactor: IReactorTime) -> HeardReporter | None:
    """
    The reporter of SETTINGS' report_to (None when there is none), its
    token and CA read now: a file that cannot be used is a config error
    naming its key, before anything starts.
    """
    if not settings.report_to:
        return None
    token = resolve_token(ReportTokenKeys(settings))
    agent, pool = report_agent(
        reactor, trust_root(settings, "report_ca") if settings.report_ca else None
    )
    reporter = HeardReporter(
        settings.report_to, token, settings.max_reported_sources, reactor, agent
    )
    reporter.close_after_stop(pool)
    return reporter
