"""The sleep RPC service: its [sleep] section and how it is built."""

from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from suite.foundation.config import ServiceSettings, integer, key, listen, number
from suite.foundation.declaration import Parts, ServiceDeclaration
from suite.net.amp import AMPLimits
from suite.sleep.protocol import SleepFactory


@dataclass(frozen=True, kw_only=True)
class SleepSettings(AMPLimits, ServiceSettings):
    section = "sleep"

    listen: tuple[str, ...] = listen("tcp:5200")
    max_seconds: float = key(
        number(0), 60.0, "longest sleep a client may ask for; longer or negative: INVALID_DURATION"
    )
    max_total: int = key(integer(1), 10000, "sleeps pending on the whole server; more: OVERLOADED")


def build(settings: SleepSettings, clock: IReactorTime) -> Parts:
    return Parts(SleepFactory(settings, clock))


SERVICE = ServiceDeclaration(
    SleepSettings,
    build,
    "Sleep RPC over AMP: 'sleep N seconds, then answer'.",
    datagram_side=False,
)
