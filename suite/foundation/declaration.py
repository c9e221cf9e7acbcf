"""
A service declared once: its settings section, how it builds its parts and
what it is.  The application layer composes declarations into the running
suite; the declaration itself knows nothing of listeners or twistd.
"""

from dataclasses import dataclass, field
from typing import Callable

from suite.foundation.config import ServiceSettings


@dataclass(frozen=True)
class Parts:
    """
    What a service serves with: the factory for its stream listeners, a maker
    of datagram protocols (one per datagram listener), services of its own
    (such as the logger's writer), started before and stopped after its
    listeners, and for each of its other listener keys (the name server's
    `dns_listen`) a Parts of that key's own.
    """

    stream_factory: object
    make_datagram_protocol: Callable[[], object] | None = None
    services: tuple = ()
    other_listeners: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ServiceDeclaration:
    """A service: its settings section, how it builds its Parts, what it is."""

    settings: type[ServiceSettings]
    build: Callable[[ServiceSettings, object], Parts]
    description: str
    datagram_side: bool = True
    other_listener_keys: tuple = ()  # keys of listeners served by other parts (always datagram-capable)

    @property
    def name(self) -> str:
        return self.settings.section
