"""
The collector's routing rules (`[[logger.route]]`), tried in order for
each message: a route whose `match` takes it sends it to the route's own
`output` file and to its `forward` targets, and with `stop` no later route
sees it, nor does the logger's own output.  A message no route stops goes
to the logger's output and to every forward target no route names (a
target some route names gets only what routes send it).

A route's match takes a message when every condition it has holds: the
facility is one of those listed; the severity is the one given or more
severe; the app and the hostname match their shell globs (`sshd*`),
case-sensitively, as rsyslog's property filters compare; the sender's
address is within one of the networks.  A message without the field a
condition asks about (a nil app or hostname, or a message that is not
syslog at all) is not taken by it, so a message that is not syslog is
taken only by routes without facility, severity, app or hostname.

Each message is parsed once: its record and the fields routes match come
from the same parse (L{suite.logger.records.RecordSink.message_lines}),
and a record written to several files is formatted once.
"""

import os
import re
from collections.abc import Callable, Mapping, Sequence
from fnmatch import translate
from functools import partial
from typing import TYPE_CHECKING, Protocol

from twisted.internet.interfaces import IReactorTime

from suite.foundation.config import ConfigError
from suite.foundation.jsonlines import BatchWriter, Output, open_output
from suite.foundation.preflight import cannot_write
from suite.foundation.shared_output import SharedRotatingFile
from suite.logger.records import RoutingFields, encode_lines
from suite.logger.relay_settings import Match, RouteSettings
from suite.logger.sources import NetworkSet

if TYPE_CHECKING:
    from suite.logger.service import LoggerSettings


MAX_DECISIONS = 4096
Decision = tuple[tuple[int, ...], tuple[int, ...], bool]


class Outlet(Protocol):
    """A forward target's queue, as routes see it (L{suite.logger.delivery.Outlet})."""

    def put(self, messages: list[bytes]) -> None: ...


def _glob(pattern: str | None) -> Callable[[str], object] | None:
    return None if pattern is None else re.compile(translate(pattern)).match


def peer_host(peer: str) -> str | None:
    """The address of a record's PEER (`HOST:PORT`, `[v6]:PORT`); None for a Unix peer."""
    if peer.startswith("["):
        end = peer.find("]")
        return peer[1:end] if end > 0 else None
    host, colon, port = peer.rpartition(":")
    return host if colon and host and port.isdigit() and ":" not in host else None


class Route:
    """
    One route, ready to match: MATCH, its WRITER (None: no file of its own),
    the OUTLETS it forwards to, whether it STOPs the search.
    """

    def __init__(
        self,
        match: Match,
        writer: BatchWriter | None = None,
        outlets: Sequence[str] = (),
        stop: bool = False,
    ) -> None:
        self.facilities = match.facilities
        self.severity = match.severity
        self.app = _glob(match.app)
        self.hostname = _glob(match.hostname)
        self.networks = None if match.networks is None else NetworkSet(match.networks)
        self.syslog_only = not (
            self.facilities is None
            and self.severity is None
            and self.app is None
            and self.hostname is None
        )
        self.writer = writer
        self.outlets = tuple(outlets)
        self.stop = stop

    def takes(self, fields: RoutingFields | None, host: str | None) -> bool:
        """Whether the message of FIELDS (None: not syslog), sent from HOST, is taken."""
        if self.networks is not None and (host is None or host not in self.networks):
            return False
        if fields is None:
            return not self.syslog_only
        pri, hostname, app = fields
        if self.facilities is not None and pri >> 3 not in self.facilities:
            return False
        if self.severity is not None and pri & 7 > self.severity:
            return False
        if self.app is not None and (app is None or not self.app(app)):
            return False
        return self.hostname is None or (hostname is not None and bool(self.hostname(hostname)))


class Router:
    """
    ROUTES in order, over OUTLETS (the forward targets by name): what each
    read's messages go to, each destination getting a message once even
    when several routes send it there.

    Senders repeat their header fields, so the decision for a message's
    (routing fields, sender) is kept, up to MAX_DECISIONS of them: a
    message costs one lookup whatever the number of routes.
    """

    def __init__(self, routes: Sequence[Route], outlets: Mapping[str, Outlet]) -> None:
        self.routes = tuple(routes)
        named = sorted({name for route in routes for name in route.outlets})
        unknown = sorted(set(named) - set(outlets))
        if unknown:
            raise ValueError(f"no forward target is named {unknown[0]!r}")
        self.unnamed = [outlet for name, outlet in outlets.items() if name not in named]
        self.writers = route_writers(routes)
        # Each destination is a slot: the writers, then the targets routes name.
        self._destinations: list[BatchWriter | Outlet] = [
            *self.writers,
            *(outlets[name] for name in named),
        ]
        self._slots = [
            (
                () if r.writer is None else (self.writers.index(r.writer),),
                tuple(len(self.writers) + named.index(name) for name in r.outlets),
            )
            for r in routes
        ]
        self._by_source = any(route.networks is not None for route in routes)
        self._decisions: dict[object, Decision] = {}  # by fields, or (fields, sender)

    def decide(self, fields: RoutingFields | None, host: str | None) -> Decision:
        """
        Where a message of FIELDS from HOST goes: (slots of the writers that
        get its record, slots of the targets that get it as received,
        whether it also reaches the output and the targets no route names).
        """
        writers: dict[int, None] = {}  # in order, each once
        outlets: dict[int, None] = {}
        for route, (writer_slots, outlet_slots) in zip(self.routes, self._slots, strict=True):
            if route.takes(fields, host):
                writers.update(dict.fromkeys(writer_slots))
                outlets.update(dict.fromkeys(outlet_slots))
                if route.stop:
                    return tuple(writers), tuple(outlets), False
        return tuple(writers), tuple(outlets), True

    def deliver(
        self,
        lines: list[str],
        routing: list[RoutingFields | None],
        frames: Sequence[tuple[bytes, bool]],
        peer: str,
    ) -> tuple[list[str], list[bytes]]:
        """
        Send the messages of one read from PEER (their record LINES, their
        ROUTING fields, the FRAMES as received) where routes take them;
        returns what no route stopped: (record lines, messages as received,
        the latter only when some target is named by no route).
        """
        host = peer_host(peer) if self._by_source else None
        bins: list[list] = [[] for _ in self._destinations]
        kept_lines: list[str] = []
        kept: list[bytes] = []
        keep_raw = bool(self.unnamed)
        decisions = self._decisions
        by_source = self._by_source
        for index, fields in enumerate(routing):
            key = (fields, host) if by_source else fields
            decision = decisions.get(key)
            if decision is None:
                if len(decisions) >= MAX_DECISIONS:
                    decisions.clear()
                decision = decisions[key] = self.decide(fields, host)
            writer_slots, outlet_slots, reaches_output = decision
            line = lines[index]
            for slot in writer_slots:
                bins[slot].append(line)
            if outlet_slots:
                raw = frames[index][0]
                for slot in outlet_slots:
                    bins[slot].append(raw)
            if reaches_output:
                kept_lines.append(line)
                if keep_raw:
                    kept.append(frames[index][0])
        for destination, got in zip(self._destinations, bins, strict=True):
            if not got:
                continue
            if isinstance(destination, BatchWriter):
                destination.write_lines([encode_lines(got)], len(got))
            else:
                destination.put(got)
        return kept_lines, kept


def open_routes(settings: "LoggerSettings", reactor: IReactorTime) -> list[Route]:
    """
    The routes of SETTINGS, their files opened (two routes naming one file
    share its writer, rotated and flushed as the logger's output is).  A
    file that cannot be opened, or that is the logger's own output, is a
    ConfigError naming the route's `output`.
    """
    writers: dict[str, BatchWriter] = {}
    main = _file_key(settings.output)
    routes = []
    for route in settings.route:
        writer = None
        if route.output:
            key = _file_key(route.output)
            if key == main:
                raise route.error("output", "is the logger's own output; name another file")
            writer = writers.get(key)
            if writer is None:
                writer = writers[key] = open_writer(settings, route, reactor)
        routes.append(Route(route.match, writer, route.forward, route.stop))
    return routes


def route_writers(routes: Sequence[Route]) -> list[BatchWriter]:
    """The writers of ROUTES, each once: services of the logger (started, stopped, reopened)."""
    return list(dict.fromkeys(route.writer for route in routes if route.writer is not None))


def _file_key(path: str) -> str:
    return path if path == "-" else os.path.abspath(path)


def open_writer(
    settings: "LoggerSettings",
    owner: "LoggerSettings | RouteSettings",
    reactor: IReactorTime,
    shared: bool = False,
    first: bool = True,
) -> BatchWriter:
    """
    The writer of OWNER's `output` (the logger's, or a route's), as SETTINGS
    (the logger's) say files are rotated, flushed and synced; a file that
    cannot be opened is a ConfigError naming OWNER's `output`.  SHARED: other
    processes (the workers) append to the file too, FIRST in the one that
    opens it before them.
    """
    opener: Callable[..., Output] = (
        partial(SharedRotatingFile, cut_tail=first) if shared else open_output
    )
    try:
        output = opener(
            owner.output,
            settings.rotate_bytes,
            settings.keep,
            file_mode=settings.file_mode,
            sync=settings.sync,
        )
    except OSError as e:
        where = f" ({e.filename})" if e.filename and e.filename != owner.output else ""
        raise owner.error("output", f"cannot open: {e.strerror}{where}") from None
    return BatchWriter(
        output,
        reactor,
        settings.flush_interval,
        settings.max_batch,
        settings.max_buffer,
        sync=settings.sync,
    )


def route_file_mistakes(settings: "LoggerSettings") -> list[ConfigError]:
    """The route outputs starting would fail to open, found without opening anything."""
    mistakes = []
    for route in settings.route:
        if route.output and route.output != "-":
            problem = cannot_write(route.output)
            if problem is not None:
                mistakes.append(route.error("output", problem))
    return mistakes
