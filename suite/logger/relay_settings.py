"""
The collector's relay tables: `[[logger.forward]]` (where messages are
passed on, each through its own queue) and `[[logger.route]]` (which
messages go where), read and checked like every section, before anything
starts.  What they do lives in L{suite.logger.forward}, L{suite.logger.queue}
and L{suite.logger.routing}; here, only what an operator may write.
"""

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from suite.foundation.config import (
    BOOLEAN,
    ConfigError,
    Kind,
    Settings,
    choice,
    integer,
    key,
    path,
    string_list,
    text,
)
from suite.logger.syslog import FACILITIES, SEVERITIES
from suite.net.client_endpoints import parse_address

MiB = 2**20
GiB = 2**30

SCHEMES = ("tcp", "tls", "relp", "relp+tls")


@dataclass(frozen=True)
class Target:
    """A forward target: SCHEME (one of SCHEMES), HOST and PORT."""

    scheme: str
    host: str
    port: int

    @property
    def relp(self) -> bool:
        return self.scheme.startswith("relp")

    @property
    def tls(self) -> bool:
        return self.scheme.endswith("tls")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}:{host}:{self.port}"


def parse_target(value: str) -> Target:
    """`tcp:H:P`, `tls:H:P`, `relp:H:P`, `relp+tls:H:P` (H a name, an address or [v6])."""
    scheme, _, rest = value.partition(":")
    if scheme not in SCHEMES or not rest:
        raise ValueError(
            "must be tcp:HOST:PORT (RFC 6587 octet-counted), tls:HOST:PORT (RFC 5425), "
            "relp:HOST:PORT or relp+tls:HOST:PORT"
        )
    try:
        address = parse_address(rest)
    except ValueError as e:
        raise ValueError(f"must end in HOST:PORT ({e})") from None
    if address.host is None or address.port is None:
        raise ValueError("must end in HOST:PORT, not an endpoint string")
    return Target(scheme, address.host, address.port)


def _check_target(value: str) -> None:
    parse_target(value)


def _check_name(value: str) -> None:
    if not value or not value.replace("-", "").replace("_", "").isalnum() or not value.isascii():
        raise ValueError("must be a name of letters, digits, - and _")


@dataclass(frozen=True, kw_only=True)
class ForwardSettings(Settings):
    """
    One target messages are passed on to, as they were received, framed for
    it; each has its own queue: in memory up to `memory_bytes`, then on disk
    under `queue_dir` up to `queue_bytes`.
    """

    section = "logger.forward"

    name: str = key(text(_check_name), "", "the target's name, in routes, logs and metrics")
    target: str = key(
        text(_check_target),
        "",
        "tcp:HOST:PORT (RFC 6587 octet-counted), tls:HOST:PORT (RFC 5425), relp:HOST:PORT, "
        "relp+tls:HOST:PORT",
    )
    memory_bytes: int = key(
        integer(0),
        16 * MiB,
        "bytes of messages queued in memory before they spill to disk (0: straight to disk; "
        "what is in memory is written to disk when the suite stops, lost if it is killed)",
    )
    queue_dir: str = key(
        path(),
        "",
        "directory of the disk queue (created; one queue per directory); empty: memory only",
    )
    queue_bytes: int = key(integer(0), GiB, "bytes of messages the disk queue holds at most")
    when_full: str = key(
        choice("block", "drop"),
        "block",
        "the queue is full: block (stream senders are not read, datagrams are dropped and "
        "counted) or drop (new messages are dropped and counted)",
    )
    window: int = key(
        integer(1, 65536), 128, "RELP messages sent and not yet acknowledged, at most"
    )
    ca: str = key(
        path(),
        "",
        "tls:, relp+tls: PEM CA certificate(s) the target's certificate is verified against, "
        "or credential:NAME; default: the system's CAs",
    )
    certificate: str = key(
        path(),
        "",
        "tls:, relp+tls: PEM client certificate (chain) for a target that asks for one, or "
        "credential:NAME",
    )
    private_key: str = key(path(), "", "PEM private key of certificate, or credential:NAME")

    @property
    def parsed_target(self) -> Target:
        return parse_target(self.target)


@dataclass(frozen=True)
class Match:
    """
    What a route takes: each field None takes every message.  FACILITIES are
    numbers; SEVERITY the least severe number taken (`warning` is 4: 0-4);
    APP and HOSTNAME fnmatch globs; NETWORKS the source's.
    """

    facilities: frozenset[int] | None = None
    severity: int | None = None
    app: str | None = None
    hostname: str | None = None
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None = None


MATCH_KEYS = ("facility", "severity", "app", "hostname", "source")


def _words(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    raise ValueError(f"{what} must be a string or a non-empty list of strings")


def parse_network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an address or network (CIDR)") from None


def _check_match(value: object) -> Match:
    if isinstance(value, Match):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"must be an inline table of {', '.join(MATCH_KEYS)}")
    unknown = sorted(set(value) - set(MATCH_KEYS))
    if unknown:
        raise ValueError(f"unknown match key {unknown[0]!r} (known: {', '.join(MATCH_KEYS)})")
    facilities = None
    if "facility" in value:
        names = _words(value["facility"], "facility")
        for name in names:
            if name not in FACILITIES:
                raise ValueError(f"facility {name!r} is not one of {', '.join(FACILITIES)}")
        facilities = frozenset(FACILITIES.index(name) for name in names)
    severity = None
    if "severity" in value:
        word = value["severity"]
        if word not in SEVERITIES:
            raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}")
        severity = SEVERITIES.index(word)
    globs = {}
    for name in ("app", "hostname"):
        if name in value:
            if not isinstance(value[name], str) or not value[name]:
                raise ValueError(f"{name} must be a glob (a non-empty string)")
            globs[name] = value[name]
    networks = None
    if "source" in value:
        networks = tuple(parse_network(v) for v in _words(value["source"], "source"))
    return Match(facilities, severity, globs.get("app"), globs.get("hostname"), networks)


MATCH = Kind(_check_match)


@dataclass(frozen=True, kw_only=True)
class RouteSettings(Settings):
    """
    A rule, tried in order: the messages its `match` takes go to its own
    `output` and `forward` targets; `stop` keeps later routes (and the
    logger's `output`) from seeing them.
    """

    section = "logger.route"

    match: Match = key(
        MATCH,
        Match(),
        "inline table: facility (a name or a list), severity (that and more severe), app and "
        "hostname (globs), source (CIDR or a list); each left out takes every message",
    )
    output: str = key(
        path(), "", "JSON lines file of these messages, rotated like output; empty: none"
    )
    forward: tuple[str, ...] = key(
        string_list(_check_name), (), "names of [[logger.forward]] targets these messages go to"
    )
    stop: bool = key(BOOLEAN, False, "later routes and the logger's output do not see them")


def relay_mistakes(
    forwards: Iterable[ForwardSettings], routes: Iterable[RouteSettings], output: str
) -> Iterator[ConfigError]:
    """
    What the tables get wrong together: names missing, repeated or unknown;
    a queue directory shared; a route writing the logger's own OUTPUT.
    """
    names: set[str] = set()
    queues: set[str] = set()
    for forward in forwards:
        if not forward.name:
            yield forward.error("name", "every [[logger.forward]] needs a name")
        elif forward.name in names:
            yield forward.error("name", "another [[logger.forward]] has this name")
        names.add(forward.name)
        if not forward.target:
            yield forward.error("target", "every [[logger.forward]] needs a target")
        if forward.queue_dir:
            if forward.queue_dir in queues:
                yield forward.error("queue_dir", "another [[logger.forward]] queues here")
            queues.add(forward.queue_dir)
        if not (forward.target and forward.parsed_target.tls):
            for name in ("ca", "certificate", "private_key"):
                if getattr(forward, name):
                    yield forward.error(name, "used only with tls: and relp+tls: targets")
        if bool(forward.certificate) != bool(forward.private_key):
            named = "certificate" if forward.certificate else "private_key"
            yield forward.error(named, "certificate and private_key go together")
    for route in routes:
        for name in route.forward:
            if name not in names:
                yield route.error(
                    "forward",
                    f"no [[logger.forward]] is named {name!r}",
                )
        if route.output and route.output == output:
            yield route.error("output", "is the logger's own output; name another file")
        if not (route.output or route.forward or route.stop):
            yield route.error("stop", "a route needs an output, forward targets or stop = true")
