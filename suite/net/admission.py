"""
Which connections a stream service takes: at most `max_connections` at
once, and at most `max_connections_per_source` from one source (one IP
address; every Unix-socket peer is the source `unix`).  Refusals are
counted by the limit they met, those the accept loop makes when the
process is out of file descriptors included.
"""

from collections.abc import Iterator

from zope.interface import implementer

from suite.foundation.interfaces import IMetricSource

DESCRIPTOR_LIMIT = "file_descriptors"  # the refusals' label when no descriptor was left


@implementer(IMetricSource)
class Admission:
    """The connections open now, by source, under MAX_CONNECTIONS and MAX_PER_SOURCE."""

    def __init__(self, max_connections: int, max_per_source: int):
        self.max_connections = max_connections
        self.max_per_source = max_per_source
        self.connections = 0
        self.per_source: dict[str, int] = {}
        self.refusals: dict[str, int] = {}

    def refusal_reason(self, source: str) -> str | None:
        """
        Why one more connection from SOURCE is refused (counted by the limit
        it meets), or None when it may be admitted.
        """
        if self.connections >= self.max_connections:
            limit, reason = "max_connections", f"max_connections ({self.max_connections}) reached"
        elif self.per_source.get(source, 0) >= self.max_per_source:
            limit, reason = (
                "max_connections_per_source",
                (f"max_connections_per_source ({self.max_per_source}) reached for {source}"),
            )
        else:
            return None
        self.count_refusal(limit)
        return reason

    def count_refusal(self, limit: str) -> None:
        """One more connection refused by LIMIT (a setting's name, or L{DESCRIPTOR_LIMIT})."""
        self.refusals[limit] = self.refusals.get(limit, 0) + 1

    def admit(self, source: str) -> None:
        self.connections += 1
        self.per_source[source] = self.per_source.get(source, 0) + 1

    def release(self, source: str) -> None:
        """A connection admitted from SOURCE is gone: its place is free again."""
        self.connections -= 1
        remaining = self.per_source[source] - 1
        if remaining:
            self.per_source[source] = remaining
        else:
            del self.per_source[source]

    def metric_samples(self) -> Iterator[tuple[str, tuple, object]]:
        for limit, count in list(self.refusals.items()):
            yield "connections_refused", (limit,), count
