"""
A service declared once: its settings section, how it builds its parts and
what it is.  The application layer composes declarations into the running
suite; the declaration itself knows nothing of listeners or twistd.
"""

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.application.service import IService
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.web.resource import IResource

from suite.foundation.config import ConfigError, ServiceSettings
from suite.foundation.heard import Hearing


def nothing_to_check(settings: Any) -> Iterable[ConfigError]:
    return ()


def never(settings: Any) -> bool:
    return False


@dataclass(frozen=True)
class Parts:
    """
    What a service serves with: the factory for its stream listeners, a maker
    of datagram protocols (one per datagram listener), services of its own
    (such as the logger's writer), started before and stopped after its
    listeners, and for each of its other listener keys (the name server's
    `dns_listen`) a Parts of that key's own.

    Services of one suite that hear logs and services that watch for
    silent sources meet here: `log_watcher` (the name server's) wants to be
    told of every message heard; `on_logs_heard` (the collector's) takes
    each such watcher and tells it from then on.

    A service with an HTTP site of its own (the name server's API) shows
    the suite's status page there too: `show_page(page, live)` puts the
    page at `/` and its live stream at `/live`.
    """

    stream_factory: Factory
    make_datagram_protocol: Callable[[], DatagramProtocol] | None = None
    services: tuple[IService, ...] = ()
    other_listeners: Mapping[str, "Parts"] = field(default_factory=dict)
    log_watcher: Hearing | None = None
    on_logs_heard: Callable[[Hearing], object] | None = None
    show_page: Callable[[IResource, IResource], object] | None = None


@dataclass(frozen=True)
class ServiceDeclaration:
    """A service: its settings section, how it builds its Parts, what it is."""

    settings: type[ServiceSettings]
    build: Callable[[Any, Any], Parts]  # (its settings, the reactor) -> Parts
    description: str
    datagram_side: bool = True
    # Keys of listeners served by other parts (datagram-capable unless stream-only).
    other_listener_keys: tuple[str, ...] = ()
    # Those of them that take stream endpoints only (the name server's HTTP API).
    stream_only_keys: tuple[str, ...] = ()
    # Keys naming the files it writes (created with their directories).
    writes: tuple[str, ...] = ()
    # Mistakes build would meet beyond those files (a token it cannot read),
    # found without opening or creating anything: for `suite check`.
    preflight: Callable[[Any], Iterable[ConfigError]] = nothing_to_check
    # With `workers` above 1 a service runs in every worker process, on the
    # listeners the parent bound, unless it holds state that must exist once:
    # RUNS_ONCE(settings) true (the name server on a memory or sqlite store)
    # runs it whole in the parent.  A service with BUILD_SHARED splits: the
    # parent runs BUILD_SHARED(settings, reactor)'s parts once (the logger's
    # writer and forward queues) and serves, with their `stream_factory`,
    # one Unix stream connection per worker; each worker builds its
    # listeners' parts with BUILD_WORKER(settings, reactor, fd), FD being its
    # end of that connection.
    runs_once: Callable[[Any], bool] = never
    build_shared: Callable[[Any, Any], Parts] | None = None
    build_worker: Callable[[Any, Any, int], Parts] | None = None

    def written_files(self, settings: ServiceSettings) -> list[tuple[str, str]]:
        """(key, path) of each file SETTINGS has this service write."""
        found = []
        for name in self.writes:
            named = type(settings).kind_of(name).path_in(getattr(settings, name))
            if named is not None:
                found.append((name, named))
        return found

    @property
    def name(self) -> str:
        return self.settings.section
