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

Hearing is on the collector's path once per read: a call, the clock once,
and the heard table's lookups (L{suite.names.heard_table}: one per
message, by the hash the collector's parser made when it is compiled).
With nothing watched, a call returns at once.  Only an identity whose
check is not passing asks for more: the runner is told, so that it turns
passing at once, and nothing at all is written while a passing check
keeps hearing.
"""

import ipaddress
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from twisted.internet.interfaces import IReactorTime

from suite.foundation.heard import HeardFields
from suite.names.heard_table import HeardDicts, HeardTableLike, HostApp, new_heard_table

# Seconds a check heard through a report has beyond its max_silence: a
# collector elsewhere reports at most once a second, and its report takes
# time to arrive, so a source logging just within max_silence would seem
# silent for a moment between two reports.
REPORT_GRACE = 2.0

Key = tuple[str, str]  # (instance ID, check ID), as the runner tells checks
Identity = tuple[str, str]  # (app, host as matched)


@lru_cache(maxsize=4096)  # the runner asks again for every check of a name it looks at
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
    not passing (L{wait}: a message then tells the runner).  When it was
    last heard is kept in the Silence's tables (what a message touches),
    read here as L{last} and L{since}.
    """

    __slots__ = ("_silence", "identity", "keys", "reported_since", "waiting")

    def __init__(self, silence: "Silence", identity: Identity) -> None:
        self._silence = silence
        self.identity = identity
        self.keys: set[Key] = set()
        self.waiting: set[Key] = set()
        self.reported_since: float | None = None  # a report's last message + REPORT_GRACE

    @property
    def last(self) -> float | None:
        """When it was last heard (None: not since it was first watched)."""
        return self._silence.last_heard(self.identity)

    @property
    def since(self) -> float | None:
        """
        When its checks' silence counts from: its last message, or a
        reported one plus REPORT_GRACE if later (None: never heard).
        """
        last, reported = self.last, self.reported_since
        if last is None or reported is None:
            return last if reported is None else reported
        return max(last, reported)

    def wait(self, key: Key) -> None:
        """The check KEY is not passing: the next message from this identity tells the runner."""
        if not self.waiting:
            self._silence.waiting(self, True)
        self.waiting.add(key)

    def passed(self, key: Key) -> None:
        """The check KEY passes (or is gone): messages need not tell the runner of it."""
        if key in self.waiting:
            self.waiting.discard(key)
            if not self.waiting:
                self._silence.waiting(self, False)


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
        # (host form, app) -> when last heard: what a message touches, and only that; an
        # IPv4 host is also under its IPv4-mapped IPv6 form
        self._table: HeardTableLike = new_heard_table()
        # The compiled table looks up the hashes a compiled collector makes
        self.wants_hashes = not isinstance(self._table, HeardDicts)
        self._identities: dict[Identity, Watched] = {}
        self._of_key: dict[Key, Watched] = {}

    def __len__(self) -> int:
        """Identities watched (an identity is kept only while a check watches it)."""
        return len(self._identities)

    def identities(self) -> list[Identity]:
        """Every (app, host form) a message is matched against, sorted."""
        return sorted((app, host) for host, app in self._table.keys())

    # The runner's side: which checks watch what.

    def watch(self, key: Key, app: str, host: str) -> Watched:
        """The check KEY listens for APP on HOST from now on (instead of what it did before)."""
        identity = (app, watched_host(host))
        current = self._of_key.get(key)
        if current is not None:
            if current.identity == identity:
                return current
            self.unwatch(key)
        watched = self._identities.get(identity)
        if watched is None:
            watched = self._identities[identity] = Watched(self, identity)
            for form in _forms(identity[1]):
                self._table.add(form, app)
        watched.keys.add(key)
        self._of_key[key] = watched
        return watched

    def unwatch(self, key: Key) -> None:
        """The check KEY is gone (or no longer a logs check): its identity too, if its last."""
        watched = self._of_key.pop(key, None)
        if watched is None:
            return
        watched.keys.discard(key)
        watched.passed(key)
        if watched.keys:
            return
        del self._identities[watched.identity]
        app, host = watched.identity
        for form in _forms(host):
            self._table.remove(form, app)

    def clear(self) -> None:
        """Nothing is watched any longer (the runner stopped): what was heard is forgotten."""
        self._table.clear()
        self._identities.clear()
        self._of_key.clear()

    def waiting(self, watched: Watched, waits: bool) -> None:
        """Whether a message from WATCHED tells the runner (see L{Watched.wait})."""
        app, host = watched.identity
        for form in _forms(host):
            self._table.wait(form, app, waits)

    def last_heard(self, identity: Identity) -> float | None:
        """When IDENTITY was last heard, under any form of its host (None: never)."""
        app, host = identity
        heard = [
            last for form in _forms(host) if (last := self._table.last(form, app)) is not None
        ]
        return max(heard) if heard else None

    # The collectors' side.

    def heard(
        self,
        messages: Sequence[HeardFields | None] | None,
        address: str,
        hashes: bytes | None = None,
    ) -> None:
        """The messages of one read from ADDRESS (see L{suite.foundation.heard.Hearing})."""
        table = self._table
        if not table:
            return
        woken = table.heard(messages, address, self.clock.seconds(), hashes)
        if woken and self.woken is not None:
            self.woken(self._watched(woken))

    def _watched(self, heard: list[HostApp]) -> list[Watched]:
        """The identities of HEARD (host form, app) pairs, each once."""
        found: list[Watched] = []
        for form, app in heard:
            watched = self._identity_of(form, app)
            if watched is not None and watched not in found:
                found.append(watched)
        return found

    def reported(self, entries: Iterable[Report]) -> None:
        """
        What a collector elsewhere heard: each entry's LAST (a time in the
        future is taken as now) counts with REPORT_GRACE more.  Entries
        nobody watches are dropped.
        """
        table = self._table
        if not table:
            return
        now = self.clock.seconds()
        woken: list[Watched] = []
        for entry in entries:
            last = min(entry.last, now)
            hosts = [entry.address]
            if entry.hostname is not None:
                hosts.append(entry.hostname.lower())
            for host in hosts:
                if not table.report(host, entry.app, last):
                    continue
                watched = self._identity_of(host, entry.app)
                if watched is None:
                    continue
                since = last + REPORT_GRACE
                if watched.reported_since is None or since > watched.reported_since:
                    watched.reported_since = since
                if watched.waiting and watched not in woken:
                    woken.append(watched)
        if woken and self.woken is not None:
            self.woken(woken)

    def _identity_of(self, form: str, app: str) -> Watched | None:
        """The identity watched as APP on the host form FORM."""
        watched = self._identities.get((app, form))
        if watched is None and form.startswith("::ffff:"):
            watched = self._identities.get((app, form.removeprefix("::ffff:")))
        return watched


@lru_cache(maxsize=4096)
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
