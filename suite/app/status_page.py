"""
The status page: `GET /` answers one HTML page, server-rendered with
`twisted.web.template` from a L{suite.app.status_view.StatusView}, that a
person reads without JavaScript (a reload shows the state now).  With
JavaScript it stays live: the page opens `GET /live`, a stream of
server-sent events, and replaces its `<main>` with each event's HTML.
The stream sends only when the page would change (L{StatusSource.digest}
is looked at every TICK seconds), and one render serves every open stream,
so a hundred people watching cost what one does.

Every text the page prints passes through L{printable} (control
characters, bidi overrides spelled out) and the template's escaping (no
HTML is built from strings), so a hostile service name or check output is
shown, never obeyed.  The page is read-only (GET and HEAD), sends a
Content-Security-Policy that allows its own inline style and script only
(by a nonce drawn per response) and nothing from elsewhere, and when a
name server in the suite has a `read_token` it asks for it: HTTP Basic
(any user name, the token as password), `X-Consul-Token`,
`Authorization: Bearer` or `?token=`.
"""

import hmac
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any

from twisted.application import service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web import resource
from twisted.web.http import Request
from twisted.web.server import NOT_DONE_YET
from twisted.web.template import Comment, Tag, flattenString, tags

from suite.app.lifecycle import SuiteService
from suite.app.status_view import (
    PAGE_INSTANCES,
    CollectorView,
    InstanceRow,
    RegistryView,
    ServiceRow,
    StatusHistory,
    StatusSource,
    StatusView,
)
from suite.foundation.printable import printable

log = Logger()

TICK = 1.0  # how often the live streams look for a change
KEEPALIVE = 15.0  # a comment on a quiet stream, so that no proxy or timeout takes it for dead
RETRY_MS = 2000  # the browser reconnects this long after a stream is lost
SPARK_WIDTH, SPARK_HEIGHT = 300, 48

STYLE = """
:root { color-scheme: light; --fg: #1f2328; --muted: #4d5560; --line: #d0d7de; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
  color: var(--fg); background: #fff; }
header, main { padding: 0 16px; max-width: 1200px; margin: 0 auto; }
header { border-bottom: 1px solid var(--line); padding-bottom: 8px; }
h1 { font-size: 1.4rem; margin: 12px 0 4px; }
h2 { font-size: 1.15rem; margin: 24px 0 8px; }
h3 { font-size: 1rem; margin: 16px 0 6px; }
p.facts, p.note { color: var(--muted); margin: 4px 0; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 0.92rem; }
caption { text-align: left; color: var(--muted); padding: 4px 0; }
th, td { text-align: left; vertical-align: top; padding: 4px 8px;
  border-bottom: 1px solid var(--line); overflow-wrap: anywhere; }
td.number, th.number { text-align: right; font-variant-numeric: tabular-nums; }
ul.plain { list-style: none; padding: 0; margin: 0; }
code { font-size: 0.9em; overflow-wrap: anywhere; }
.status { display: inline-block; padding: 0 6px; border-radius: 4px; font-weight: 600;
  white-space: nowrap; }
.passing, .ok { background: #dafbe1; color: #0f5323; }
.warning, .degraded { background: #fff1b8; color: #6b4400; }
.critical, .failing, .stopping { background: #ffe3e0; color: #8f0c1f; }
@media (max-width: 640px) {
  thead { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); }
  table, caption, tbody, tr, th, td { display: block; width: 100%; }
  tr { border-bottom: 1px solid var(--line); padding: 6px 0; }
  th, td, td.number { border: 0; padding: 2px 0; text-align: left; }
  td[data-label]::before { content: attr(data-label) ": "; color: var(--muted); }
  table.instances td::before { color: var(--muted); }
  table.instances td:nth-of-type(1)::before { content: "Instance: "; }
  table.instances td:nth-of-type(2)::before { content: "Tags: "; }
  table.instances td:nth-of-type(3)::before { content: "Status: "; }
  table.instances td:nth-of-type(4)::before { content: "Checks: "; }
}
svg.spark { width: 100%; max-width: 300px; height: 48px; border: 1px solid var(--line); }
svg.spark polyline { fill: none; stroke: #0550ae; stroke-width: 2; }
"""

# No "<", ">" or "&" here: the template escapes text, script text included.
SCRIPT = """
(function () {
  if (!window.EventSource) { return; }
  var live = document.getElementById("live");
  var stream = new EventSource("live" + window.location.search);
  stream.addEventListener("page", function (event) {
    live.innerHTML = event.data;
    document.documentElement.setAttribute("data-updated", String(Date.now()));
  });
})();
"""


# --- formatting -----------------------------------------------------------------------------


def shown(text: str) -> str:
    """Text a client supplied, as the page prints it (the template escapes it further)."""
    return printable(text)


def per_second(rate: float | None) -> str:
    if rate is None:
        return "–"
    return f"{rate:,.1f}/s" if rate < 100 else f"{rate:,.0f}/s"


def size(count: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:,.1f} {unit}"
    return f"{int(count):,} B"


def duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {seconds} s"
    return f"{seconds} s"


def utc(when: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(when))


def status_badge(status: str) -> Tag:
    return tags.span(status, class_=f"status {status}")


def cell(label: str, *content: Any, number: bool = False) -> Tag:
    """A table cell that names its column itself where the page is too narrow for a header row."""
    if number:
        return tags.td(*content, class_="number", **{"data-label": label})
    return tags.td(*content, **{"data-label": label})


# --- the page -------------------------------------------------------------------------------


def services_section(rows: Iterable[ServiceRow]) -> Tag:
    body = [
        tags.tr(
            tags.th(row.name, scope="row"),
            cell(
                "Health",
                status_badge(row.status),
                [tags.div(shown(problem)) for problem in row.problems],
            ),
            cell(
                "Listeners",
                tags.ul([tags.li(tags.code(text)) for text in row.listeners], class_="plain"),
            ),
            cell("Open connections", f"{row.connections:,}", number=True),
            cell("Requests", per_second(row.rate), number=True),
        )
        for row in rows
    ]
    return tags.section(
        tags.h2("Services", id="services"),
        tags.div(
            tags.table(
                tags.thead(
                    tags.tr(
                        tags.th("Service", scope="col"),
                        tags.th("Health", scope="col"),
                        tags.th("Listeners", scope="col"),
                        tags.th("Open connections", scope="col", class_="number"),
                        tags.th("Requests", scope="col", class_="number"),
                    )
                ),
                tags.tbody(body),
            ),
            class_="scroll",
        ),
        **{"aria-labelledby": "services"},
    )


def instance_row(row: InstanceRow) -> Tag:
    """
    One instance's table row.  Kept to few elements (a page of 1,000 rows
    is 1,000 of these, and flattening costs per element): text joined into
    one node where it reads the same, the column names of a narrow screen
    from the stylesheet (`table.instances`) instead of an attribute per cell.
    """
    state = [status_badge(row.status), f" weight {row.weight}"]
    if row.silent:
        state.append("; silent: no logs heard")
    if row.maintenance is not None:
        state.append(f"; maintenance: {shown(row.maintenance)}")
    checks: list[Tag | str] = []
    for check in row.checks:
        if checks:
            checks.append(tags.br())
        output = f": {shown(check.output)}" if check.output else ""
        checks += [status_badge(check.status), f" {shown(check.name)} ({check.kind}){output}"]
    return tags.tr(
        tags.th(shown(row.name)),
        tags.td(f"{shown(row.instance_id)} at {shown(row.address)}"),
        tags.td(" · ".join(shown(tag) for tag in row.tags)),
        tags.td(state),
        tags.td(checks or "no checks"),
        **{"data-status": row.status, "data-name": row.name},
    )


class RowCache:
    """
    Each instance row flattened once and kept while it is unchanged (an
    L{InstanceRow} is its own key): a page re-rendered every few seconds
    flattens only the rows that changed.  At most LIMIT rows are kept;
    beyond, the cache starts again (rows of instances long gone go too).
    """

    def __init__(self, limit: int = 2 * PAGE_INSTANCES + 100) -> None:
        self.limit = limit
        self._rows: dict[InstanceRow, bytes] = {}

    def __call__(self, row: InstanceRow) -> bytes:
        found = self._rows.get(row)
        if found is None:
            if len(self._rows) >= self.limit:
                self._rows.clear()
            found = self._rows[row] = rendered(instance_row(row))
        return found


def rows_comment(service_name: str) -> Comment:
    """Where a registry's rows go in the flattened page (no escaped client text holds `<!--`)."""
    return Comment(f"rows of {service_name}")


def registry_section(view: RegistryView) -> Tag:
    heading = f"Registry ({view.service})"
    counts = ", ".join(f"{count:,} {status}" for status, count in view.by_status.items())
    facts: list[Tag | str] = [
        f"{view.names:,} names, {view.instances:,} instances: {counts}; "
        f"{view.silent:,} silent, {view.in_maintenance:,} in maintenance; "
        f"{view.evictions:,} evicted since start. "
    ]
    guard = view.guard
    if guard is not None:
        facts.append(
            tags.strong("Eviction guard holding: ")
            if guard.holding
            else "Eviction guard: not holding: "
        )
        facts.append(
            f"{guard.failing:,} of {guard.checked:,} checked instances failing "
            f"(holds above {guard.fraction:.0%})."
        )
    more = view.instances - len(view.rows)
    changes = [
        tags.li(
            tags.time(f"{utc(change.when)} UTC"),
            " ",
            f"{change.kind}: {shown(change.name)} ",
            tags.code(shown(change.instance_id)),
            f" {shown(change.detail)}" if change.detail else "",
        )
        for change in view.changes
    ]
    return tags.section(
        tags.h2(heading, id=f"registry-{view.service}"),
        tags.p(facts, class_="facts"),
        tags.div(
            tags.table(
                tags.caption(
                    "Instances, the unwell first"
                    + (f" (the first {len(view.rows):,}; {more:,} more not shown)" if more else "")
                ),
                tags.thead(
                    tags.tr(
                        tags.th("Name", scope="col"),
                        tags.th("Instance", scope="col"),
                        tags.th("Tags", scope="col"),
                        tags.th("Status", scope="col"),
                        tags.th("Checks (last output)", scope="col"),
                    )
                ),
                tags.tbody(rows_comment(view.service)),
                class_="instances",
            )
            if view.rows
            else tags.p("Nothing is registered.", class_="note"),
            class_="scroll",
        ),
        tags.h3("Recent changes"),
        tags.ul(changes, class_="plain") if changes else tags.p("None yet.", class_="note"),
        **{"aria-labelledby": f"registry-{view.service}"},
    )


def sparkline(series: tuple[float, ...], every: float) -> Tag:
    if len(series) < 2:
        return tags.p("The message rate appears after a few seconds.", class_="note")
    peak = max(series) or 1.0
    step = SPARK_WIDTH / (len(series) - 1)
    points = " ".join(
        f"{i * step:.1f},{SPARK_HEIGHT - 2 - (value / peak) * (SPARK_HEIGHT - 4):.1f}"
        for i, value in enumerate(series)
    )
    span = duration(every * len(series))
    label = f"Messages per second over the last {span}: peak {per_second(max(series))}"
    return Tag(
        "svg",
        attributes={
            "class": "spark",
            "viewBox": f"0 0 {SPARK_WIDTH} {SPARK_HEIGHT}",
            "preserveAspectRatio": "none",
            "role": "img",
            "aria-label": label,
        },
    )(Tag("title")(label), Tag("polyline", attributes={"points": points}))


def collector_section(view: CollectorView, every: float) -> Tag:
    targets = [
        tags.tr(
            tags.th(shown(target.name), scope="row"),
            cell(
                "Connection",
                tags.span("connected", class_="status passing")
                if target.connected
                else tags.span("not connected", class_="status critical"),
            ),
            cell("Queued in memory", size(target.memory_bytes), number=True),
            cell("Queued on disk", size(target.disk_bytes), number=True),
            cell("Dropped", f"{target.dropped:,}", number=True),
        )
        for target in view.targets
    ]
    return tags.section(
        tags.h2(f"Collector ({view.service})", id=f"collector-{view.service}"),
        tags.p(
            f"{per_second(view.rate)} now; {view.written:,} records written; "
            f"{view.write_errors:,} write errors.",
            class_="facts",
        ),
        sparkline(view.series, every),
        tags.div(
            tags.table(
                tags.caption("Forward targets"),
                tags.thead(
                    tags.tr(
                        tags.th("Target", scope="col"),
                        tags.th("Connection", scope="col"),
                        tags.th("Queued in memory", scope="col", class_="number"),
                        tags.th("Queued on disk", scope="col", class_="number"),
                        tags.th("Dropped", scope="col", class_="number"),
                    )
                ),
                tags.tbody(targets),
            ),
            class_="scroll",
        )
        if targets
        else tags.p("No forward targets.", class_="note"),
        **{"aria-labelledby": f"collector-{view.service}"},
    )


def live_part(view: StatusView) -> list[Tag]:
    """What `<main>` holds: the part of the page the live stream replaces."""
    workers = (
        f"{view.workers_running} of {view.workers} workers running"
        if view.workers_running is not None
        else "one process"
    )
    return [
        tags.p(
            "Suite ",
            status_badge(view.status),
            f" · up {duration(view.uptime)}" if view.uptime is not None else "",
            f" · {workers} · as of {utc(view.at)} UTC",
            class_="facts",
            id="summary",
        ),
        services_section(view.services),
        *(registry_section(registry) for registry in view.registries),
        *(collector_section(collector, view.sample_seconds) for collector in view.collectors),
    ]


def page(view: StatusView, nonce: str) -> Tag:
    return tags.html(
        tags.head(
            tags.meta(charset="utf-8"),
            tags.meta(name="viewport", content="width=device-width, initial-scale=1"),
            tags.title("suite status"),
            tags.style(STYLE, nonce=nonce),
        ),
        tags.body(
            tags.header(tags.h1("suite status"), tags.p(view.version, class_="facts")),
            Tag("main")(live_part(view), id="live"),
            tags.script(SCRIPT, nonce=nonce),
        ),
        lang="en",
    )


def with_rows(flattened: bytes, view: StatusView, rows: Callable[[InstanceRow], bytes]) -> bytes:
    """FLATTENED (the page, or its main part) with each registry's rows in their place."""
    for registry in view.registries:
        marker = rendered(rows_comment(registry.service))
        flattened = flattened.replace(marker, b"".join(map(rows, registry.rows)), 1)
    return flattened


def rendered(tag: Any) -> bytes:
    """TAG as bytes: the page's tags hold no Deferreds, so flattening is done on return."""
    done: list[bytes] = []
    failed: list[Any] = []
    flattenString(None, tag).addCallbacks(done.append, failed.append)
    if failed:
        failed[0].raiseException()
    return done[0]


# --- access ---------------------------------------------------------------------------------


class PageGuard:
    """
    Whether a request may read the page: always when TOKENS() is empty,
    else when it brings one of them.  Tokens are the name servers' read
    and write tokens, asked at each request (a reload may change them).
    """

    def __init__(self, tokens: Callable[[], list[bytes]]) -> None:
        self.tokens = tokens

    @staticmethod
    def given(request: Request) -> list[bytes]:
        found = list(request.args.get(b"token", [])[:1])
        header = request.getHeader(b"x-consul-token")
        if header:
            found.append(header)
        scheme, _, value = (request.getHeader(b"authorization") or b"").partition(b" ")
        if scheme.lower() == b"bearer" and value.strip():
            found.append(value.strip())
        password = request.getPassword()
        if password:
            found.append(password)
        return found

    def allows(self, request: Request) -> bool:
        wanted = self.tokens()
        if not wanted:
            return True
        return any(
            hmac.compare_digest(given, token) for given in self.given(request) for token in wanted
        )

    @staticmethod
    def refuse(request: Request) -> bytes:
        request.setResponseCode(401)
        request.setHeader(b"www-authenticate", b'Basic realm="suite status", charset="UTF-8"')
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return (
            b"This page needs the name server's read token: give it as the password "
            b"(any user name), in X-Consul-Token, or as ?token=.\n"
        )


def _private(request: Request, content_type: bytes) -> None:
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"referrer-policy", b"no-referrer")


class StatusPage(resource.Resource):
    """`GET /`: the whole page, rendered now."""

    isLeaf = True

    def __init__(self, source: StatusSource, guard: PageGuard, rows: RowCache) -> None:
        super().__init__()
        self.source = source
        self.guard = guard
        self.rows = rows

    def render_GET(self, request: Request) -> bytes:
        if not self.guard.allows(request):
            return self.guard.refuse(request)
        nonce = secrets.token_urlsafe(18)
        _private(request, b"text/html; charset=utf-8")
        request.setHeader(
            b"content-security-policy",
            (
                f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
                "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
                "frame-ancestors 'none'"
            ).encode(),
        )
        request.setHeader(b"x-frame-options", b"DENY")
        view = self.source.view()
        return b"<!DOCTYPE html>\n" + with_rows(rendered(page(view, nonce)), view, self.rows)


class LiveStreams(resource.Resource):
    """
    `GET /live`: server-sent events, each (`event: page`) the new HTML of
    the page's `<main>`.  A stream gets the page as it is when it opens
    (a reconnecting browser catches up), then each change.  Open streams
    are connections of their listener, under its connection limits.
    """

    isLeaf = True

    def __init__(
        self,
        source: StatusSource,
        guard: PageGuard,
        rows: RowCache,
        clock: IReactorTime,
        tick: float = TICK,
    ) -> None:
        super().__init__()
        self.source = source
        self.guard = guard
        self.rows = rows
        self.clock = clock
        self.streams: set[Request] = set()
        self._digest: tuple | None = None
        self._event = b""
        self._quiet_since = 0.0
        self._loop = LoopingCall(self._look)
        self._loop.clock = clock
        self._tick = tick

    def render_GET(self, request: Request) -> bytes | int:
        if not self.guard.allows(request):
            return self.guard.refuse(request)
        _private(request, b"text/event-stream; charset=utf-8")
        request.write(b"retry: %d\n\n" % RETRY_MS)
        self._send(request, self._render())
        self.streams.add(request)
        request.notifyFinish().addBoth(lambda _: self.streams.discard(request))
        if not self._loop.running:
            self._quiet_since = self.clock.seconds()
            self._loop.start(self._tick, now=False)
        return NOT_DONE_YET

    def _render(self) -> bytes:
        self._digest = self.source.digest()
        view = self.source.view()
        html = with_rows(rendered(live_part(view)), view, self.rows)
        self._event = (
            b"event: page\n"
            + b"".join(b"data: " + line + b"\n" for line in html.split(b"\n"))
            + b"\n"
        )
        return self._event

    @staticmethod
    def _send(request: Request, data: bytes) -> None:
        request.write(data)
        channel = request.channel
        if channel is not None:
            # The listener's idle_timeout counts what it reads: a stream only writes.
            channel.resetTimeout()

    def _look(self) -> None:
        if not self.streams:
            self._loop.stop()
            self._digest = None
            return
        now = self.clock.seconds()
        if self.source.digest() != self._digest:
            event = self._render()
            self._quiet_since = now
        elif now - self._quiet_since >= KEEPALIVE:
            event = b": still here\n\n"
            self._quiet_since = now
        else:
            return
        for request in list(self.streams):
            self._send(request, event)

    def stop(self) -> None:
        """Ends every stream (the suite stops): the browsers reconnect to whoever serves next."""
        if self._loop.running:
            self._loop.stop()
        for request in list(self.streams):
            request.finish()
        self.streams.clear()


class StatusPageService(service.MultiService):
    """
    The status page of ROOT (a suite of WORKERS processes): the history its
    rates come from, and the page and live stream resources the [metrics]
    site and the name server's HTTP API show.  Its stop ends the open
    streams, so that no browser holds a connection the suite waits for.
    """

    def __init__(self, root: SuiteService, clock: IReactorTime, workers: int = 1) -> None:
        super().__init__()
        self.setName("status page")
        self.history = StatusHistory(root, clock)
        self.history.setServiceParent(self)
        self.source = StatusSource(root, self.history, workers)
        guard, rows = PageGuard(self.tokens), RowCache()
        self.page = StatusPage(self.source, guard, rows)
        self.live = LiveStreams(self.source, guard, rows, clock)

    def tokens(self) -> list[bytes]:
        """With a read token set on a name server: its read and write tokens.  Else none."""
        servers = [server for _, server in self.source.name_servers()]
        if not any(server.read_token for server in servers):
            return []
        return [
            token for server in servers for token in (server.read_token, server.token) if token
        ]

    def startService(self) -> None:
        self.source.started_at = self.history.clock.seconds()
        super().startService()

    def stopService(self) -> Any:
        self.live.stop()
        return super().stopService()
