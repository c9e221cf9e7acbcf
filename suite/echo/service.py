"""The echo service: its [echo] section and how it is built."""

from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from suite.echo.protocol import LineEchoFactory, RawEchoFactory, echo_datagram
from suite.foundation.config import ServiceSettings, choice, key, listen
from suite.foundation.declaration import Parts, ServiceDeclaration
from suite.net.datagrams import ReplyLimits, rate_limited_replier
from suite.net.lines import LineLimits


@dataclass(frozen=True, kw_only=True)
class EchoSettings(ReplyLimits, LineLimits, ServiceSettings):
    section = "echo"

    # The datagram side on loopback only: a forged request makes it answer whomever the
    # forger names (reflection), so reaching it from the network is a deliberate choice.
    listen: tuple[str, ...] = listen("tcp:5001", "udp:5001:interface=127.0.0.1")
    mode: str = key(choice("line", "raw"), "line", "line ('You said: ...') or raw (RFC 862)")


def build(settings: EchoSettings, clock: IReactorTime) -> Parts:
    factory_class = RawEchoFactory if settings.mode == "raw" else LineEchoFactory
    return Parts(
        factory_class(settings, clock), rate_limited_replier(settings, echo_datagram, clock)
    )


SERVICE = ServiceDeclaration(
    EchoSettings, build, "Echo server: line echo ('You said: ...') or RFC 862 raw echo."
)
