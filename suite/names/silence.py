"""
Who the logs checks listen for, and when each was last heard: the name
server's side of L{suite.foundation.heard.Hearing}.

The check runner says which (app, host) each logs check watches; a
collector in the same suite calls L{Silence.heard} with every read's
messages, and a collector elsewhere reports over HTTP (L{Silence.reported}).
A message is heard by a watched identity when its app is the check's and
its hostname (whatever its case) or the address it came from is the
check's host.  Only watched identities are remembered: a sender can make
no entry of its own, so the table is as large as the registry's logs
checks, whatever is sent.

Hearing is on the collector's path once per read: a read costs one call,
the clock once, one lookup of the sender's address and one of each
hostname that differs from the message before's; then each message one
lookup of its app in its host's table (and in its address's, when that
address is watched at all).  With nothing watched, a call returns at once.
Only an identity whose check is not passing asks for more: the runner is
told, so that it turns passing at once, and nothing at all is written
while a passing check keeps hearing.
"""

import ipaddress
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from suite.foundation.heard import HeardFields

# Seconds a check heard through a report has beyond its max_silence: a
# collector elsewhere reports at most once a second, and its report takes
# time to arrive, so a source logging just within max_silence would seem
# silent for a moment between two reports.
REPORT_GRACE = 2.0

Key = tuple[str, str]  # (instance ID, check ID), as the runner tells checks
_NOTHING: dict = {}  # the apps watched on a host nobody watches (never written)
Identity = tuple[str, str]  # (app, host as matched)


def watched_host(host: str) -> str:
    """
    HOST as messages are matched against it: a host name in lower case
    (without a final dot), an IP address in its compressed form (as a
    collector gives the sender's).
    """
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host.lower().removesuffix(".")


class Watched:
    """
    One identity watched by logs checks: their KEYS; WAITING, those of them
    not passing (a message then tells the runner); LAST, when it was last
    heard (None: not since it was first watched); GRACE, the seconds its
    checks' silence counts from after LAST (REPORT_GRACE when a report said
    so, else 0).
    """

    __slots__ = ("grace", "identity", "keys", "last", "waiting")

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.keys: set[Key] = set()
        self.waiting: set[Key] = set()
        self.last: float | None = None
        self.grace = 0.0

    @property
    def since(self) -> float | None:
        """When its checks' silence counts from: LAST plus its grace (None: never heard)."""
        return None if self.last is None else self.last + self.grace


@dataclass(frozen=True)
class Report:
    """One entry of a report from a collector elsewhere: who it heard, and when last."""

    app: str
    hostname: str | None
    address: str
    last: float


class Silence:
    """
    The watch index and the heard table of the logs checks, on CLOCK (the
    one the runner uses).  WOKEN, once set by the runner, is called with
    the identities heard whose checks are waiting (not passing).
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.woken: Callable[[list[Watched]], object] | None = None
        # host -> app -> its Watched; an IPv4 host is also under its IPv4-mapped IPv6 form
        self._by_host: dict[str, dict[str, Watched]] = {}
        self._of_key: dict[Key, Watched] = {}

    def __len__(self) -> int:
        """Identities watched (an identity is kept only while a check watches it)."""
        return len({watched.identity for watched in list(self._of_key.values())})

    def identities(self) -> list[Identity]:
        """Every (app, host form) a message is matched against, sorted."""
        return sorted((app, host) for host, apps in self._by_host.items() for app in apps)

    # The runner's side: which checks watch what.

    def watch(self, key: Key, app: str, host: str) -> Watched:
        """The check KEY listens for APP on HOST from now on (instead of what it did before)."""
        identity = (app, watched_host(host))
        current = self._of_key.get(key)
        if current is not None:
            if current.identity == identity:
                return current
            self.unwatch(key)
        watched = self._by_host.get(identity[1], {}).get(app)
        if watched is None:
            watched = Watched(identity)
            for form in _forms(identity[1]):
                self._by_host.setdefault(form, {})[app] = watched
        watched.keys.add(key)
        self._of_key[key] = watched
        return watched

    def unwatch(self, key: Key) -> None:
        """The check KEY is gone (or no longer a logs check): its identity too, if its last."""
        watched = self._of_key.pop(key, None)
        if watched is None:
            return
        watched.keys.discard(key)
        watched.waiting.discard(key)
        if watched.keys:
            return
        app, host = watched.identity
        for form in _forms(host):
            apps = self._by_host[form]
            del apps[app]
            if not apps:
                del self._by_host[form]

    def clear(self) -> None:
        """Nothing is watched any longer (the runner stopped): what was heard is forgotten."""
        self._by_host.clear()
        self._of_key.clear()

    # The collectors' side.

    def heard(self, messages: Sequence[HeardFields | None], address: str) -> None:
        """The messages of one read from ADDRESS (see L{suite.foundation.heard.Hearing})."""
        by_host = self._by_host
        if not by_host:
            return
        now = self.clock.seconds()
        by_address = by_host.get(address)
        found: list[Watched] = []
        hostname: str | None = None
        apps: dict[str, Watched] = {}
        for fields in messages:
            if fields is None:
                continue
            _, this_hostname, app = fields
            if this_hostname != hostname:  # a read mostly holds one host's messages
                hostname = this_hostname
                apps = _NOTHING if hostname is None else self._apps_of(hostname)
            watched = apps.get(app)  # type: ignore[arg-type]  # None (no app): never a key
            if watched is not None:
                found.append(watched)
            if by_address is not None:
                watched = by_address.get(app)  # type: ignore[arg-type]
                if watched is not None:
                    found.append(watched)
        if found:
            self._note(found, now)

    def _apps_of(self, hostname: str) -> dict[str, "Watched"]:
        """The apps watched on HOSTNAME (in any case), by app."""
        apps = self._by_host.get(hostname)
        if apps is None and not hostname.islower():
            apps = self._by_host.get(hostname.lower())
        return _NOTHING if apps is None else apps

    def _note(self, found: list["Watched"], now: float) -> None:
        """FOUND were heard at NOW: the runner is told of those whose checks wait."""
        woken = []
        for watched in found:
            if watched.last != now:
                if watched.grace:  # a report's grace may reach beyond now
                    watched.grace = max(0.0, watched.last + watched.grace - now)
                watched.last = now
            if watched.waiting:
                woken.append(watched)
        if woken and self.woken is not None:
            self.woken(woken)

    def reported(self, entries: Iterable[Report]) -> None:
        """
        What a collector elsewhere heard: each entry's LAST (a time in the
        future is taken as now) counts with REPORT_GRACE more.  Entries
        nobody watches are dropped.
        """
        by_host = self._by_host
        if not by_host:
            return
        now = self.clock.seconds()
        woken: list[Watched] = []
        for entry in entries:
            last = min(entry.last, now)
            hosts = [entry.address]
            if entry.hostname is not None:
                hosts.append(entry.hostname.lower())
            for host in hosts:
                watched = by_host.get(host, {}).get(entry.app)
                if watched is None:
                    continue
                if watched.last is None:
                    watched.last, watched.grace = last, REPORT_GRACE
                else:  # the latest message heard, and the latest its silence counts from
                    since = max(watched.last + watched.grace, last + REPORT_GRACE)
                    watched.last = max(watched.last, last)
                    watched.grace = since - watched.last
                if watched.waiting:
                    woken.append(watched)
        if woken and self.woken is not None:
            self.woken(woken)


def _forms(host: str) -> tuple[str, ...]:
    """
    The forms a sender's address may take for HOST: an IPv4 address also as
    IPv4-mapped IPv6, as a dual-stack socket gives it.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return (host,)
    if address.version == 4:
        return (host, f"::ffff:{host}")
    return (host,)


def parse_report(body: object) -> list[Report]:
    """
    A report's JSON body: `[{"app": A, "hostname": H or null, "address":
    IP, "last": UNIX_SECONDS}, ...]`.  ValueError naming the first entry
    that is not such an object, and its field.
    """
    if not isinstance(body, list):
        raise ValueError('a report is a JSON array of {"app", "hostname", "address", "last"}')
    reports = []
    for number, entry in enumerate(body):
        if not isinstance(entry, dict):
            raise ValueError(f"entry {number}: not an object")
        app, hostname, address = entry.get("app"), entry.get("hostname"), entry.get("address")
        last = entry.get("last")
        if not isinstance(app, str) or not app:
            raise ValueError(f'entry {number}: "app" must be a non-empty string')
        if hostname is not None and not isinstance(hostname, str):
            raise ValueError(f'entry {number}: "hostname" must be a string or null')
        if not isinstance(address, str):
            raise ValueError(f'entry {number}: "address" must be a string')
        if not isinstance(last, (int, float)) or isinstance(last, bool) or not math.isfinite(last):
            raise ValueError(f'entry {number}: "last" must be a number (unix seconds)')
        reports.append(Report(app, hostname, address, float(last)))
    return reports


def silent_output(app: str, host: str, seconds: float) -> str:
    """The output of a logs check turned silent SECONDS after it last heard APP on HOST."""
    return f"no message from {app} on {host} for {math.floor(seconds + 1e-6)} s"


def heard_output(app: str, host: str) -> str:
    """
    The output of a logs check passing: the same whatever the message, so
    that hearing again changes nothing (no write, no index raised).
    """
    return f"messages from {app} on {host}"
