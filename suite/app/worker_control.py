"""
The control connection between the parent and each worker process: a Unix
stream socket the parent makes and the worker inherits, carrying JSON
messages, each prefixed with its length (Twisted's Int32StringReceiver).

The worker says `{"ready": LISTENERS}` once its listeners serve.  The
parent sends `{"beat": N}` every HEARTBEAT seconds and the worker answers
`{"beat": N, "report": REPORT}`: what /metrics, /health and /status of
the parent need of it (L{report_of}).  A beat left unanswered tells the
parent the worker is stuck; the connection closing tells the worker its
parent is gone.
"""

import json
from collections.abc import Iterable
from typing import Any

from twisted.protocols.basic import Int32StringReceiver

from suite.foundation.interfaces import IHealthSource, IMetricSource, ISummarySource
from suite.foundation.metrics import Histogram

HEARTBEAT = 1.0  # seconds between beats: how fresh the workers' metrics are
MAX_MESSAGE = 64 * 2**20  # a report of a very large registry's gauges fits


class ControlProtocol(Int32StringReceiver):
    """One end of the control connection: JSON objects in, JSON objects out."""

    MAX_LENGTH = MAX_MESSAGE

    def send(self, message: dict[str, Any]) -> None:
        self.sendString(json.dumps(message, separators=(",", ":")).encode())

    def stringReceived(self, data: bytes) -> None:
        self.received(json.loads(data))

    def lengthLimitExceeded(self, length: int) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    def received(self, message: dict[str, Any]) -> None:
        """One message from the other end."""


def report_of(parts: Iterable[tuple[str, object]]) -> dict[str, Any]:
    """
    A worker's metric samples, health problems and summaries, from PARTS
    ((service name, part) pairs of its service tree), as JSON:
    `{"samples": [[service, metric, labels, value]...], "problems":
    [[service, severity, text]...], "summaries": {service: summary}}`; a
    histogram's value is `{"counts": [...], "total": seconds}`.
    """
    samples: list[list[Any]] = []
    problems: list[list[str]] = []
    summaries: dict[str, object] = {}
    for service, part in list(parts):
        if IMetricSource.providedBy(part):
            for name, labels, value in part.metric_samples():
                if isinstance(value, Histogram):
                    value = {"counts": list(value.counts), "total": value.total}
                samples.append([service, name, list(labels), value])
        if IHealthSource.providedBy(part):
            for severity, text in part.health_problems():
                problems.append([service, severity, text])
        if ISummarySource.providedBy(part):
            summaries.setdefault(service, part.summary())
    return {"samples": samples, "problems": problems, "summaries": summaries}


def sample_value(value: Any) -> float | Histogram:
    """A sample's value as L{report_of} wrote it, back as a number or a Histogram."""
    if isinstance(value, dict):
        histogram = Histogram()
        histogram.counts = list(value["counts"])
        histogram.total = float(value["total"])
        return histogram
    return value  # type: ignore[no-any-return]
