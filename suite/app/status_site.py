"""
The [metrics] section: HTTP (twisted.web) on each `listen` / `tls_listen`
endpoint, answering

- `GET /metrics`: the Prometheus text format, from prometheus_client's
  Twisted `MetricsResource` over a registry of the suite's own collector
  (L{suite.foundation.metrics}) and prometheus_client's process, platform
  and garbage-collector collectors;
- `GET /health`: the JSON report of L{suite.foundation.health}, 200 when the
  suite is ok or degraded, 503 when it is failing or stopping;
- `GET /status`: the same report with each service's summary (the
  registry's names and instances) and the versions, what `suite status`
  prints; always 200 (it describes, it does not judge).

The listeners are under the same connection limits as every service's
(`max_connections`, `max_connections_per_source`, `idle_timeout`), with
smaller defaults: a scraper needs one connection
(L{suite.net.http_site}).  Request bodies are never read, so they are
discarded instead of being buffered.
"""

import json
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.twisted import MetricsResource
from twisted.internet.interfaces import IReactorTime
from twisted.web import pages, resource
from twisted.web.http import Request

from suite.app.lifecycle import SuiteService
from suite.app.status_page import StatusPageService
from suite.foundation.config import STRING_LIST, integer, key
from suite.foundation.health import health_report, http_status
from suite.foundation.interfaces import ISummarySource
from suite.foundation.metrics import SuiteCollector
from suite.foundation.version import describe_versions
from suite.net.connections import ConnectionLimits, idle_timeout
from suite.net.http_site import LimitedSite, QuietSite


@dataclass(frozen=True, kw_only=True)
class MetricsSettings(ConnectionLimits):
    """
    Prometheus metrics at /metrics, health at /health (200 ok or degraded,
    503 failing), and /status (what `suite status` shows).
    """

    section = "metrics"

    listen: tuple[str, ...] = key(
        STRING_LIST, (), "endpoints serving /metrics and /health over HTTP (none: no metrics)"
    )
    tls_listen: tuple[str, ...] = key(STRING_LIST, (), "the same, served through TLS ([tls])")
    reuse_port = False
    max_connections: int = key(integer(1), 64, "connections served at once; more are refused")
    max_connections_per_source: int = key(integer(1), 16, "connections from one IP address")
    idle_timeout: float = idle_timeout(60.0)

    @property
    def enabled(self) -> bool:
        return bool(self.listen or self.tls_listen)


class Root(resource.Resource):
    """`/`, `/live`, `/metrics`, `/health` and `/status`; any other path is 404."""

    def getChild(self, path: bytes, request: Request) -> resource.IResource:
        return pages.notFound()


class HealthResource(resource.Resource):
    """/health: the report of every service's health, 200 or 503 as load balancers read it."""

    isLeaf = True

    def __init__(self, root: SuiteService) -> None:
        super().__init__()
        self.root = root

    def report(self) -> tuple[dict[str, Any], int]:
        report = health_report(self.root.parts(), bool(self.root.running))
        return report, http_status(report)

    def render_GET(self, request: Request) -> bytes:
        report, status = self.report()
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(report, sort_keys=True).encode() + b"\n"


class StatusResource(HealthResource):
    """/status: the health report with each service's summary and the versions; always 200."""

    def report(self) -> tuple[dict[str, Any], int]:
        parts = list(self.root.parts())
        report = health_report(parts, bool(self.root.running))
        for service, part in parts:
            if ISummarySource.providedBy(part):
                report["services"][service].update(part.summary())
        report["version"] = describe_versions()
        return report, 200


def metrics_registry(collector: SuiteCollector) -> CollectorRegistry:
    registry = CollectorRegistry()
    for make in (ProcessCollector, PlatformCollector, GCCollector):
        make(registry=registry)
    registry.register(collector)
    return registry


def metrics_site(
    root: SuiteService,
    settings: MetricsSettings,
    reactor: IReactorTime,
    page: StatusPageService | None = None,
) -> LimitedSite:
    """
    The factory of the [metrics] listeners: /metrics, /health and /status
    of ROOT's parts, and PAGE's status page at / (its live stream at /live).
    """
    top = Root()
    if page is not None:
        top.putChild(b"", page.page)
        top.putChild(b"live", page.live)
    top.putChild(b"metrics", MetricsResource(metrics_registry(SuiteCollector(root.parts))))
    top.putChild(b"health", HealthResource(root))
    top.putChild(b"status", StatusResource(root))
    site = QuietSite(top, timeout=settings.idle_timeout or None, reactor=reactor)
    return LimitedSite(settings, reactor, site)
