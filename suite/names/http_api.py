"""
The registry over HTTP: the subset of Consul's agent API that Consul's
clients use to register, read health and discover (py-consul, Go's
`api`, consul-template, Prometheus' Consul discovery), and Prometheus'
`http_sd_configs` format at `/v1/suite/prometheus`.  Paths, parameters,
JSON fields, status codes and error texts are Consul's, so that those
clients work unchanged:

    GET /v1/agent/self                      GET /v1/suite/prometheus
    GET /v1/catalog/services                PUT /v1/agent/service/register
    GET /v1/catalog/service/NAME            PUT /v1/agent/service/deregister/ID
    GET /v1/health/service/NAME             PUT /v1/agent/check/pass|warn|fail|update/ID
    GET /v1/health/state/STATE              PUT /v1/agent/service/maintenance/ID
                                            PUT /v1/suite/heard

Every read answers `X-Consul-Index` (the index of the name it reads, or
of the whole registry), `X-Consul-KnownLeader: true` and
`X-Consul-LastContact: 0`, and may block (L{suite.names.blocking}), all
but `/v1/agent/self`, as Consul's.  Reads held by the same query share one
rendered answer per change.  Writes go through the L{NameServer} as AMP's
do: validated, stored, then served, and audited.  The write token guards
writes, the read token (when set) reads, taken from `?token=`, else
`X-Consul-Token`, else `Authorization: Bearer`; a refusal is 403
`Permission denied`, or `ACL not found` when the token given is neither.
A request body is kept up to 64 KiB (413 beyond), and decoded as strictly
as Go decodes JSON (no `NaN`, no `Infinity`, no number beyond a float64).
Errors are plain text, as Consul's are; an unexpected one (a bug) is a 500
`internal error` and one log line, flood-controlled, never a traceback per
request.
"""

import hmac
import json
import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, cast
from urllib.parse import parse_qs

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime, ISSLTransport
from twisted.python.failure import Failure
from twisted.web import resource
from twisted.web.server import NOT_DONE_YET, Request

from suite.contracts.errors import Overloaded
from suite.contracts.names import Invalid, NotFound, Unauthorized, Unavailable
from suite.names import consul_json
from suite.names.blocking import (
    WHOLE_REGISTRY,
    BadQuery,
    Blocking,
    HeldReads,
    Renders,
    parse_blocking,
)
from suite.names.go_values import parse_bool
from suite.names.registration import keyed, parse_registration, text_of
from suite.names.registry import MAX_TEXT, STATUSES, Instance
from suite.names.server import CheckTaken, NameServer
from suite.names.silence import Silence, parse_report
from suite.names.unexpected import log_unexpected
from suite.net.addresses import PeerAddress, describe_peer, source_of
from suite.net.connections import ConnectionLimits
from suite.net.handshake_deadline import certificate_subject
from suite.net.http_site import LimitedSite, QuietSite

MAX_BODY = 64 * 1024  # bytes of a request body (a registration with 16 checks fits many times)
JSON = b"application/json"
PROMETHEUS_JSON = b"application/json; charset=utf-8"
TEXT = b"text/plain; charset=utf-8"
STATES = {"any": None, **{state: state for state in STATUSES}}
TTL_UPDATES = {"pass": "passing", "warn": "warning", "fail": "critical"}


def go_quoted(text: str) -> str:
    """TEXT in double quotes with escapes, as Go's %q shows a client's text in an error."""
    return json.dumps(text, ensure_ascii=False)


class Refused(Exception):
    """An answer other than 200: CODE and Consul's plain-text reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason

    def response(self) -> "Response":
        return Response(self.reason.encode("utf-8", "replace"), self.code)


@dataclass(frozen=True)
class Response:
    """
    An answer: BODY of CONTENT_TYPE with status CODE; a read's answer says
    the INDEX it answers (None: not a read's).
    """

    body: bytes
    code: int = 200
    content_type: bytes = TEXT
    index: int | None = None


class Query:
    """What a request asked: its query parameters (the first value of each counts) and token."""

    def __init__(self, request: Request) -> None:
        self.request = request
        # Parsed again: twisted.web drops a parameter without `=` (`?passing`), Go's keeps it.
        # As text decoded byte for byte: parse_qs of bytes refuses a %-escaped non-ASCII value.
        query = (request.uri or b"").partition(b"?")[2].decode("latin-1")
        self.args: dict[bytes, list[bytes]] = {
            name.encode("latin-1"): [value.encode("latin-1") for value in values]
            for name, values in parse_qs(query, keep_blank_values=True, encoding="latin-1").items()
        }
        peer = cast(PeerAddress, request.getClientAddress())
        self.address = peer
        self.peer = describe_peer(peer)
        self.source = source_of(peer)

    def get(self, name: str) -> str | None:
        values = self.args.get(name.encode())
        return None if not values else values[0].decode("utf-8", "replace")

    def all(self, name: str) -> list[str]:
        return [value.decode("utf-8", "replace") for value in self.args.get(name.encode(), [])]

    @property
    def token(self) -> str:
        """Consul's order: `?token=`, then `X-Consul-Token`, then `Authorization: Bearer T`."""
        given = self.get("token")
        if given:
            return given
        header = self.request.getHeader(b"x-consul-token")
        if header:
            return header.decode("utf-8", "replace")
        authorization = (self.request.getHeader(b"authorization") or b"").decode(
            "utf-8", "replace"
        )
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.split()[0]
        return ""

    @property
    def client(self) -> str | None:
        """The subject of the client's certificate under mutual TLS."""
        transport = self.request.channel.transport if self.request.channel else None
        if transport is not None and ISSLTransport.providedBy(transport):
            return certificate_subject(transport)
        return None


class ConsulAPI(resource.Resource):
    """
    Everything under /v1/: SERVER's registry, reads held by HELD, shown as
    the datacenter DATACENTER on an agent named NODE_NAME running VERSION;
    reports of who logged (`/v1/suite/heard`) go to SILENCE (none: taken
    and dropped).
    """

    isLeaf = True

    def __init__(
        self,
        server: NameServer,
        held: HeldReads,
        datacenter: str,
        node_name: str,
        version: str,
        silence: Silence | None = None,
    ) -> None:
        super().__init__()
        self.silence = silence
        self.names = server
        self.registry = server.registry
        self.held = held
        self.datacenter = datacenter
        self.node_name = node_name
        self.version = version

    def render(self, request: Request) -> bytes | int:
        parts = [part.decode("utf-8", "replace") for part in request.postpath or []]
        method = (request.method or b"").decode("ascii", "replace")
        try:
            route = self.route(parts)
            if route is None:
                raise Refused(404, "Not found")
            wanted, handler = route
            if method not in wanted:
                request.setHeader(b"allow", ", ".join(sorted(wanted)).encode())
                raise Refused(405, f"method {method} not allowed")
            return handler(request)
        except Refused as e:
            return respond(request, e.response())
        except Exception:
            return respond(request, self.unexpected(request, Failure()).response())

    def unexpected(self, request: Request, failure: Failure) -> Refused:
        """
        The answer to REQUEST that FAILURE (a bug) broke: a 500 and one line
        logged, flood-controlled per source as the name server's warnings are.
        """
        peer = cast(PeerAddress, request.getClientAddress())
        method = (request.method or b"").decode("ascii", "replace")
        path = (request.path or b"").decode("utf-8", "replace")
        log_unexpected(
            self.names.warnings,
            "failed HTTP requests",
            source_of(peer),
            f"HTTP {method} {path} from {describe_peer(peer)}",
            failure,
        )
        return Refused(500, "internal error")

    def route(
        self, parts: Sequence[str]
    ) -> tuple[tuple[str, ...], Callable[[Request], bytes | int]] | None:
        """(methods, handler) of the path PARTS under /v1/; None: no such endpoint."""
        reads: dict[tuple[str, ...], Callable[[Request], bytes | int]] = {
            ("agent", "self"): self.agent_self,
            ("catalog", "services"): self.catalog_services,
            ("suite", "prometheus"): self.prometheus,
        }
        head, rest = tuple(parts[:2]), "/".join(parts[2:])
        if head in reads and len(parts) == 2:
            return ("GET", "HEAD"), reads[head]
        named_reads: dict[tuple[str, ...], Callable[[Request, str], bytes | int]] = {
            ("catalog", "service"): self.catalog_service,
            ("health", "service"): self.health_service,
            ("health", "state"): self.health_state,
        }
        if head in named_reads and len(parts) >= 3:
            read = named_reads[head]
            return ("GET", "HEAD"), lambda request: read(request, rest)
        action, target = tuple(parts[:3]), "/".join(parts[3:])
        if action == ("agent", "service", "register") and len(parts) == 3:
            return ("PUT",), self.register
        if head == ("suite", "heard") and len(parts) == 2:
            return ("PUT",), self.heard
        writes: dict[tuple[str, ...], Callable[[Request, str], bytes | int]] = {
            ("agent", "service", "deregister"): self.deregister,
            ("agent", "service", "maintenance"): self.maintenance,
            ("agent", "check", "update"): self.check_update,
            **{
                ("agent", "check", verb): self.ttl_update(status)
                for verb, status in TTL_UPDATES.items()
            },
        }
        if action in writes and len(parts) >= 4:
            write = writes[action]
            return ("PUT",), lambda request: write(request, target)
        return None

    # Reads

    def read(
        self,
        request: Request,
        key: str,
        render: Callable[[], object],
        query: Hashable,
        content_type: bytes = JSON,
        blocks: bool = True,
        asked: Query | None = None,
    ) -> bytes | int:
        """
        A read of KEY (a name, or the whole registry) that RENDER answers
        (ASKED: the request's query, when its handler parsed it already):
        authorized, then answered now or, when it BLOCKS, held until KEY's
        index exceeds the one asked for.  QUERY says what RENDER answers:
        held reads with equal QUERY answered together share one render.
        """
        asked = asked or Query(request)
        try:
            self.names.authorize_read(asked.token, "HTTP read", asked.peer, asked.source)
        except Unauthorized:
            raise Refused(403, self.refusal(asked.token)) from None
        blocking = Blocking()
        if blocks:
            try:
                blocking = parse_blocking(asked.get("index"), asked.get("wait"))
            except BadQuery as e:
                raise Refused(400, str(e)) from None
        datacenter = asked.get("dc")
        if datacenter and datacenter != self.datacenter:
            raise Refused(500, "No path to datacenter")
        if not self.names.store.loaded:
            raise Refused(500, "the registry has not been read from etcd yet")
        if blocking.index and self.held.current(key) <= blocking.index:
            return self.hold(request, key, render, query, content_type, blocking)
        return respond(request, self.rendered(request, key, render, content_type))

    def hold(
        self,
        request: Request,
        key: str,
        render: Callable[[], object],
        query: Hashable,
        content_type: bytes,
        blocking: Blocking,
    ) -> int:
        """Hold REQUEST (see L{read}); 429 when `max_blocking_queries` are held already."""
        later = Later(request)

        def answer(renders: Renders) -> None:
            later.respond(
                renders.once(query, lambda: self.rendered(request, key, render, content_type))
            )

        held = self.held.hold(key, blocking, answer)
        if held is None:
            raise Refused(
                429,
                f"{self.held.max_held} blocking queries are held (max_blocking_queries): "
                "try again later",
            )
        later.finished.addBoth(lambda _: self.held.release(held))
        return NOT_DONE_YET

    def rendered(
        self, request: Request, key: str, render: Callable[[], object], content_type: bytes
    ) -> Response:
        """RENDER's answer now, with KEY's index; a 500 (logged once) should RENDER fail."""
        try:
            body = json.dumps(render(), separators=(",", ":")).encode()
        except Exception:
            return self.unexpected(request, Failure()).response()
        return Response(body, 200, content_type, self.held.current(key))

    def instances_of(self, name: str) -> list[Instance]:
        """NAME's instances; none for a name no instance could have (Consul: `200 []`)."""
        try:
            return self.registry.instances_of(name)
        except Invalid:
            return []

    def agent_self(self, request: Request) -> bytes | int:
        """The agent's description; it never blocks, whatever `index` says, as Consul's."""
        host = request.getHost()
        address, port = getattr(host, "host", ""), getattr(host, "port", 0)
        return self.read(
            request,
            WHOLE_REGISTRY,
            lambda: consul_json.agent_self(
                self.datacenter, self.node_name, self.version, address, port
            ),
            ("agent self", address, port),
            blocks=False,
        )

    def catalog_services(self, request: Request) -> bytes | int:
        return self.read(
            request,
            WHOLE_REGISTRY,
            lambda: consul_json.catalog_services(self.registry.instances()),
            ("catalog services",),
        )

    def catalog_service(self, request: Request, name: str) -> bytes | int:
        if not name:
            raise Refused(400, "Missing service name")
        query = Query(request)
        tags = consul_json.TagFilter(query.all("tag"))
        return self.read(
            request,
            name,
            lambda: [
                consul_json.catalog_entry(instance, self.datacenter)
                for instance in tags.select(self.instances_of(name))
            ],
            ("catalog service", name, tags.wanted),
            asked=query,
        )

    def health_service(self, request: Request, name: str) -> bytes | int:
        if not name:
            raise Refused(400, "Missing service name")
        query = Query(request)
        tags = consul_json.TagFilter(query.all("tag"))
        passing = self.passing_filter(query)

        def render() -> list[dict[str, Any]]:
            instances = tags.select(self.instances_of(name))
            if passing:
                instances = consul_json.passing_only(instances)
            return [consul_json.health_entry(i, self.datacenter) for i in instances]

        return self.read(
            request, name, render, ("health service", name, tags.wanted, passing), asked=query
        )

    @staticmethod
    def passing_filter(query: Query) -> bool:
        """Consul's `?passing`: present and empty, or a Go boolean."""
        given = query.get("passing")
        if given is None:
            return False
        if not given:
            return True
        try:
            return parse_bool(given)
        except ValueError:
            raise Refused(400, "Invalid value for ?passing") from None

    def health_state(self, request: Request, state: str) -> bytes | int:
        if not state:
            raise Refused(400, "Missing check state")
        if state not in STATES:
            raise Refused(400, f"Unsupported state: {state}")
        return self.read(
            request,
            WHOLE_REGISTRY,
            lambda: consul_json.checks_in_state(self.registry.instances(), STATES[state]),
            ("health state", state),
        )

    def prometheus(self, request: Request) -> bytes | int:
        query = Query(request)
        services = frozenset(query.all("service"))
        tags = consul_json.TagFilter(query.all("tag"))

        def render() -> list[dict[str, Any]]:
            names = self.registry.live_names()
            return [
                consul_json.prometheus_group(instance)
                for name in names
                if not services or name in services
                for instance in tags.select(self.registry.live_of(name))
            ]

        return self.read(
            request,
            WHOLE_REGISTRY,
            render,
            ("prometheus", services, tags.wanted),
            PROMETHEUS_JSON,
            asked=query,
        )

    # Writes

    def refusal(self, token: str) -> str:
        """Consul's 403 text: `ACL not found` for a token that is neither token, else denied."""
        given = token.encode()
        known = [secret for secret in (self.names.token, self.names.read_token) if secret]
        if given and not any(hmac.compare_digest(given, secret) for secret in known):
            return "ACL not found"
        return "Permission denied"

    def authorize(self, query: Query, command: str) -> None:
        try:
            self.names.authorize_write(query.token, command, query.peer, query.source)
        except Unauthorized:
            raise Refused(403, self.refusal(query.token)) from None

    def written(self, request: Request, done: defer.Deferred[Any]) -> int:
        """Answer the write DONE does: 200 with no body, or its error as Consul answers it."""
        later = Later(request)
        done.addCallbacks(
            lambda _: later.respond(Response(b"")),
            lambda failure: later.respond(self.refusal_of(request, failure).response()),
        )
        return NOT_DONE_YET

    def refusal_of(self, request: Request, failure: Failure) -> Refused:
        """A write's failure as Consul would answer it (an unexpected one: L{unexpected})."""
        error = failure.value
        if isinstance(error, Refused):
            return error
        if isinstance(error, CheckTaken):
            return Refused(
                400,
                f"Invalid check: the check ID {go_quoted(error.check_id)} is service "
                f"{go_quoted(error.owner)}'s",
            )
        for kind, code in ((Invalid, 400), (NotFound, 404), (Unavailable, 500), (Overloaded, 429)):
            if isinstance(error, kind):
                return Refused(code, str(error))
        if isinstance(error, Unauthorized):
            return Refused(403, "Permission denied")
        return self.unexpected(request, failure)

    def register(self, request: Request) -> bytes | int:
        query = Query(request)
        caller = "" if query.source == "unix" else query.source
        try:
            instance = parse_registration(read_body(request), caller)
        except Invalid as e:
            raise Refused(400, str(e)) from None
        self.authorize(query, "HTTP register")
        replace = query.args.get(b"replace-existing-checks") or []
        return self.written(
            request,
            defer.maybeDeferred(
                self.names.put,
                instance,
                query.token,
                query.peer,
                query.source,
                query.client,
                command="HTTP register",
                replace_checks=bool(replace) and replace[0] in (b"", b"true"),
            ),
        )

    def heard(self, request: Request) -> bytes:
        """
        A collector in another process reports who it heard (see
        L{suite.names.silence.parse_report}), with the write token: it can
        turn a silent check passing.
        """
        query = Query(request)
        self.authorize(query, "HTTP heard")
        try:
            reports = parse_report(read_body(request))
        except ValueError as e:
            raise Refused(400, f"Invalid report: {e}") from None
        if self.silence is not None:
            self.silence.reported(reports)
        return respond(request, Response(b""))

    def deregister(self, request: Request, instance_id: str) -> bytes | int:
        query = Query(request)
        self.authorize(query, "HTTP deregister")
        if self.registry.by_id(instance_id) is None:
            raise Refused(
                404,
                f"Unknown service ID {go_quoted(instance_id)}. Ensure that the service ID is "
                "passed, not the service name.",
            )
        return self.written(
            request,
            defer.maybeDeferred(
                self.names.deregister_id,
                instance_id,
                query.token,
                query.peer,
                query.source,
                query.client,
            ),
        )

    def ttl_update(self, status: str) -> Callable[[Request, str], bytes | int]:
        """The handler of pass, warn or fail: the check's STATUS, its output `?note=`."""

        def update(request: Request, check_id: str) -> bytes | int:
            return self.update_check(request, check_id, status, Query(request).get("note") or "")

        return update

    def check_update(self, request: Request, check_id: str) -> bytes | int:
        """`update`: the status and output a JSON body gives (Consul's checkUpdate)."""
        try:
            fields = keyed(read_body(request), "checkUpdate")
            status = text_of(fields, "status", "Status")
            output = text_of(fields, "output", "Output")
        except Invalid as e:
            raise Refused(400, str(e)) from None
        if status not in STATUSES:
            raise Refused(400, f"Invalid check status: '{status}'")
        return self.update_check(request, check_id, status, output)

    def update_check(self, request: Request, check_id: str, status: str, output: str) -> int:
        """A TTL check passed, warned or failed from outside: its status, and its TTL restarts."""
        query = Query(request)
        self.authorize(query, "HTTP check update")
        owner = self.registry.owner_of_check(check_id)
        check = None if owner is None else owner.check(check_id)
        if owner is None or check is None:
            raise Refused(
                404,
                f"Unknown check ID {go_quoted(check_id)}. Ensure that the check ID is passed, "
                "not the check name.",
            )
        if check.kind != "ttl":
            raise Refused(500, f"CheckID {go_quoted(check_id)} does not have associated TTL")

        def mutate(instance: Instance) -> None:
            changed = instance.check(check_id)
            if changed is not None:
                changed.status, changed.output = status, output[:MAX_TEXT]

        why = f"TTL check {check_id} {status}"
        changed = defer.maybeDeferred(self.names.change, owner, mutate, why, query.peer)
        changed.addCallback(lambda _: self.names.ttl_updated(check_id))
        return self.written(request, changed)

    def maintenance(self, request: Request, instance_id: str) -> bytes | int:
        query = Query(request)
        if not instance_id:
            raise Refused(400, "Missing service ID")
        given = query.get("enable")
        if given is None:
            raise Refused(400, "Missing value for enable")
        try:
            enable = parse_bool(given)
        except ValueError:
            raise Refused(400, f"Invalid value for enable: {go_quoted(given)}") from None
        self.authorize(query, "HTTP maintenance")
        instance = self.registry.by_id(instance_id)
        if instance is None:
            raise Refused(404, f"No service registered with ID {go_quoted(instance_id)}")
        reason = (query.get("reason") or "")[:MAX_TEXT]

        def mutate(changed: Instance) -> None:
            changed.maintenance = reason if enable else None

        why = f"maintenance on: {reason}" if enable else "maintenance off"
        return self.written(
            request, defer.maybeDeferred(self.names.change, instance, mutate, why, query.peer)
        )


def read_body(request: Request) -> object:
    """
    The request's body as JSON, decoded as strictly as Go decodes it;
    Refused (413, or 400 as Consul's decoder fails) otherwise.
    """
    content = request.content
    if content is None or getattr(content, "overflowed", False):
        raise Refused(413, f"Request body too large: at most {MAX_BODY} bytes")
    content.seek(0)
    raw = content.read()
    if not raw.strip():
        raise Refused(400, "Request decode failed: EOF")
    try:
        return json.loads(raw, parse_constant=go_refuses_constant, parse_float=go_float)
    except (ValueError, RecursionError) as e:
        raise Refused(400, f"Request decode failed: {e}") from None


def go_refuses_constant(name: str) -> NoReturn:
    """`NaN`, `Infinity` and `-Infinity`, which Python's JSON takes and Go's refuses."""
    if name.startswith("-"):
        raise ValueError(f"invalid character '{name[1]}' in numeric literal")
    raise ValueError(f"invalid character '{name[0]}' looking for beginning of value")


def go_float(text: str) -> float:
    """A JSON number with a fraction or exponent; beyond a float64 Go refuses it, and so here."""
    value = float(text)
    if math.isinf(value):
        raise ValueError(
            f"json: cannot unmarshal number {text[:64]} into Go value of type float64"
        )
    return value


def respond(request: Request, response: Response) -> bytes:
    """RESPONSE's status and headers set on REQUEST; its body, to send."""
    request.setResponseCode(response.code)
    request.setHeader(b"content-type", response.content_type)
    if response.index is not None:
        request.setHeader(b"x-consul-index", str(response.index).encode())
        request.setHeader(b"x-consul-knownleader", b"true")
        request.setHeader(b"x-consul-lastcontact", b"0")
    return response.body


class Later:
    """
    A request answered after render returned: once, and not at all if its
    connection was lost first (`finished` fires either way).
    """

    def __init__(self, request: Request) -> None:
        self.request = request
        self.lost = False
        self.finished: defer.Deferred[None] = request.notifyFinish()
        self.finished.addErrback(self._lost)

    def _lost(self, failure: Failure) -> None:
        self.lost = True

    def respond(self, response: Response) -> None:
        if self.lost:
            return
        body = respond(self.request, response)
        self.request.setHeader(b"content-length", str(len(body)).encode())
        self.request.write(body)
        self.request.finish()


class APIRoot(resource.Resource):
    """`/v1/…` is the API; `/` and `/live` the suite's status page once shown; else a 404."""

    def __init__(self, api: ConsulAPI) -> None:
        super().__init__()
        self.putChild(b"v1", api)

    def show_page(self, page: resource.IResource, live: resource.IResource) -> None:
        self.putChild(b"", page)
        self.putChild(b"live", live)

    def getChild(self, path: bytes, request: Request) -> resource.IResource:
        return NotFoundPage()


class NotFoundPage(resource.Resource):
    isLeaf = True

    def render(self, request: Request) -> bytes:
        return respond(request, Refused(404, "Not found").response())


class APISite(QuietSite):
    """The API's site: no access log, bodies kept up to L{MAX_BODY} bytes."""

    max_body = MAX_BODY


def api_site(api_root: APIRoot, settings: ConnectionLimits, clock: IReactorTime) -> LimitedSite:
    """The factory of the HTTP listeners: API_ROOT under SETTINGS' connection limits."""
    site = APISite(api_root, timeout=settings.idle_timeout or None, reactor=clock)
    return LimitedSite(settings, clock, site)
