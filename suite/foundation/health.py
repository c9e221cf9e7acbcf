"""
The suite's health, as `/health` answers it: each service's status and
the problems behind it.  A component of a service (a listener, the
logger's writer ...) tells its problems through `health_problems()`, a list
of (severity, text); severity is `failing` (the service cannot do its job:
a listener not bound, the logger unable to write) or `degraded` (it works,
with a loss: the name server's lookup audit cannot be written).

The suite is `ok` when no service has a problem, `degraded` when some have
only degraded ones, `failing` when any fails, and `stopping` once shutdown
began.  Load balancers and Prometheus' blackbox probes read the HTTP
status: 200 for ok and degraded, 503 for failing and stopping.
"""

FAILING, DEGRADED, OK, STOPPING = "failing", "degraded", "ok", "stopping"
RANK = {OK: 0, DEGRADED: 1, FAILING: 2}


def health_report(components, running: bool = True) -> dict:
    """
    The report over COMPONENTS, (service name, component) pairs:
    `{"status": ..., "services": {name: {"status": ..., "problems": [...]}}}`.
    """
    services: dict[str, dict] = {}
    for service, component in list(components):
        entry = services.setdefault(service, {"status": OK})
        problems = getattr(component, "health_problems", None)
        for severity, text in problems() if problems is not None else ():
            entry.setdefault("problems", []).append(text)
            if RANK[severity] > RANK[entry["status"]]:
                entry["status"] = severity
    worst = max((entry["status"] for entry in services.values()), key=RANK.get, default=OK)
    return {"status": worst if running else STOPPING, "services": services}


def http_status(report: dict) -> int:
    return 200 if report["status"] in (OK, DEGRADED) else 503
