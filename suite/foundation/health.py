"""
The suite's health, as `/health` answers it: each service's status and
the problems behind it.  A part of a service (a listener, the logger's
writer ...) that provides L{IHealthSource} tells its problems through
`health_problems()`, a list of (severity, text); severity is `failing`
(the service cannot do its job: a listener not bound, the logger unable to
write) or `degraded` (it works, with a loss: the name server's lookup
audit cannot be written).

The suite is `ok` when no service has a problem, `degraded` when some have
only degraded ones, `failing` when any fails, and `stopping` once shutdown
began.  Load balancers and Prometheus' blackbox probes read the HTTP
status: 200 for ok and degraded, 503 for failing and stopping.
"""

from collections.abc import Iterable
from typing import Any

from suite.foundation.interfaces import IHealthSource

FAILING, DEGRADED, OK, STOPPING = "failing", "degraded", "ok", "stopping"
RANK = {OK: 0, DEGRADED: 1, FAILING: 2}


def health_report(parts: Iterable[tuple[str, object]], running: bool = True) -> dict[str, Any]:
    """
    The report over PARTS, (service name, part) pairs; every service named
    is reported, ok when none of its parts has a problem:
    `{"status": ..., "services": {name: {"status": ..., "problems": [...]}}}`.
    """
    services: dict[str, dict[str, Any]] = {}
    for service, part in list(parts):
        entry = services.setdefault(service, {"status": OK})
        if not IHealthSource.providedBy(part):
            continue
        for severity, text in part.health_problems():
            entry.setdefault("problems", []).append(text)
            if RANK[severity] > RANK[entry["status"]]:
                entry["status"] = severity
    worst = max((entry["status"] for entry in services.values()), key=RANK.__getitem__, default=OK)
    return {"status": worst if running else STOPPING, "services": services}


def http_status(report: dict[str, Any]) -> int:
    return 200 if report["status"] in (OK, DEGRADED) else 503
