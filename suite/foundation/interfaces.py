"""
What the application layer asks of the parts it runs.  Services and their
parts provide these; the collector, /health, SIGHUP and shutdown find them
by walking the service tree (and each listener's factory or protocol) with
C{providedBy}, never by looking for attributes.
"""

from collections.abc import Iterable

from zope.interface import Attribute, Interface


class IMetricSource(Interface):
    """Something that counts what it does, for /metrics."""

    def metric_samples() -> Iterable[tuple[str, tuple, object]]:
        """
        (metric name, label values after the service's, value) for each
        sample; the value is a number or a L{suite.foundation.metrics.Histogram}.
        """


class IRegistryMetrics(IMetricSource):
    """
    A metric source whose samples cost time in proportion to what it holds
    (every instance of a registry looked at): read by /metrics, not by
    samplers that want only the counters of work done every few seconds.
    """


class IHealthSource(Interface):
    """Something that can be unwell, for /health and the status line."""

    def health_problems() -> list[tuple[str, str]]:
        """(state, reason) for each problem now; empty when healthy."""


class IStopsFirst(Interface):
    """
    A service stopped, and waited for, before every other one: it still
    needs the listeners and the network (deregistering, draining).
    """


class IReopenable(Interface):
    """A service that keeps files open and reopens them on SIGHUP."""

    def reopen() -> None:
        """Close and reopen every file at its configured path."""


class IBatchedDatagramProtocol(Interface):
    """
    A datagram protocol that takes every datagram of one read of its port
    in one call, answering through C{send}.  One with an int attribute
    `batch_size` is handed at most that many per call (the port still reads
    up to its own batch per event), so the first answers leave while later
    datagrams wait.
    """

    send = Attribute("Callable (data, address): the port's reply path, set at start.")

    def datagramsReceived(datagrams: list[tuple[bytes, tuple]]) -> None:
        """Handle DATAGRAMS, (payload, address) pairs read in one go."""


class ISummarySource(Interface):
    """Something with a state worth a glance (`suite status`): the registry's names."""

    def summary() -> dict[str, object]:
        """A small JSON-able picture of its state now, bounded whatever the load."""
