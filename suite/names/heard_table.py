"""
The heard table: when each watched (host form, app) was last heard, the
one structure a collector's every message touches.

L{suite.names.silence.Silence} keeps which checks watch what; this keeps
only what a message is matched against, so that hearing costs each
message one lookup and nothing else.  Two implementations do the same:

- L{HeardDicts}, in Python: a dict of hosts, each a dict of apps.  A
  message costs a lookup of its app (its hostname is looked up once per
  run of messages from one host), about 0.1 us in a table of 10,000.
- C{HeardTable} from suite/names/_heard_table.c, an optional extension
  built at install: one open-addressed array of 8-byte slots (the top 40
  bits of the identity's hash, and the sixteenth of a second it was last
  heard in), probed for a whole read at once, each slot fetched ahead of
  its probe, and written only when that sixteenth changed.  A table of
  10,000 identities is 256 KiB; a message costs 13-17 ns.  When each was
  last heard is kept beside it, to the first message of its latest
  sixteenth of a second (at most 62.5 ms before its last message).  It
  matches a message by those 40 bits (the hash seeded per process): two
  identities sharing them would hear each other, about once in 2**40
  messages, which a sender can do anyway by naming the other identity in
  its messages.

Hostnames are matched whatever their case (their `str.lower()`), apps
exactly.  A message's sender address matches too, when some identity's
host form is that address.
"""

import os
from collections.abc import Sequence
from typing import Protocol, cast

from suite.foundation.compiled import load_compiled
from suite.foundation.heard import IDENTITY_SEED, HeardFields

HostApp = tuple[str, str]  # (host form, app)
_NOTHING: dict = {}  # the apps of a host nobody watches (never written)


class HeardTableLike(Protocol):
    """What L{HeardDicts} and suite/names/_heard_table.c's HeardTable offer."""

    def __len__(self) -> int:
        """How many (host form, app) are watched."""

    def add(self, host: str, app: str) -> None:
        """Watch APP on the host form HOST (not heard yet, even if it was before)."""

    def remove(self, host: str, app: str) -> None:
        """No longer watch APP on HOST (nothing if it was not)."""

    def clear(self) -> None:
        """Watch nothing."""

    def keys(self) -> list[HostApp]:
        """Every (host form, app) watched, in no order."""

    def last(self, host: str, app: str) -> float | None:
        """When APP on HOST was last heard (None: never, or not watched)."""

    def wait(self, host: str, app: str, waits: bool) -> None:
        """Whether hearing APP on HOST is to be told (L{heard} returns it)."""

    def report(self, host: str, app: str, last: float) -> bool:
        """APP on HOST was heard at LAST, unless later already; False when not watched."""

    def heard(
        self,
        messages: Sequence[HeardFields | None] | None,
        address: str,
        now: float,
        hashes: bytes | None = None,
    ) -> list[HostApp]:
        """
        The messages of one read from ADDRESS, heard at NOW: the (host form,
        app) of those heard that wait (L{wait}), in no order, each maybe
        more than once.  HASHES: the messages' identity hashes, when the
        collector made them (L{suite.foundation.heard.Hearing}), which the
        compiled table reads instead of the messages.
        """


class HeardDicts:
    """The heard table in Python: host form -> app -> when last heard (None: not yet)."""

    def __init__(self) -> None:
        self._by_host: dict[str, dict[str, float | None]] = {}
        self._waiting: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return sum(len(apps) for apps in self._by_host.values())

    def __bool__(self) -> bool:
        return bool(self._by_host)

    def add(self, host: str, app: str) -> None:
        self._by_host.setdefault(host, {})[app] = None

    def remove(self, host: str, app: str) -> None:
        apps = self._by_host.get(host)
        if apps is None or app not in apps:
            return
        del apps[app]
        if not apps:
            del self._by_host[host]
        self.wait(host, app, False)

    def clear(self) -> None:
        self._by_host.clear()
        self._waiting.clear()

    def keys(self) -> list[HostApp]:
        return [(host, app) for host, apps in self._by_host.items() for app in apps]

    def last(self, host: str, app: str) -> float | None:
        return self._by_host.get(host, _NOTHING).get(app)

    def wait(self, host: str, app: str, waits: bool) -> None:
        if waits:
            if app in self._by_host.get(host, _NOTHING):
                self._waiting.setdefault(host, set()).add(app)
        elif host in self._waiting:
            apps = self._waiting[host]
            apps.discard(app)
            if not apps:
                del self._waiting[host]

    def report(self, host: str, app: str, last: float) -> bool:
        apps = self._by_host.get(host, _NOTHING)
        if app not in apps:
            return False
        before = apps[app]
        apps[app] = last if before is None else max(before, last)
        return True

    def heard(
        self,
        messages: Sequence[HeardFields | None] | None,
        address: str,
        now: float,
        hashes: bytes | None = None,
    ) -> list[HostApp]:
        by_host = self._by_host
        woken: list[HostApp] = []
        if not by_host or messages is None:  # no hashes here: it does not want them
            return woken
        at_address = by_host.get(address)
        waiting = self._waiting
        hostname: str | None = None
        host = ""
        apps: dict[str, float | None] = _NOTHING
        for fields in messages:
            if fields is None:
                continue
            _, this_hostname, app = fields
            if this_hostname != hostname:  # a read mostly holds one host's messages
                hostname = this_hostname
                host, apps = self._apps_of(hostname)
            if app in apps:
                apps[app] = now
                if waiting and app in waiting.get(host, ()):
                    woken.append((host, app))
            if at_address is not None and app in at_address:
                at_address[app] = now
                if waiting and app in waiting.get(address, ()):
                    woken.append((address, app))
        return woken

    def _apps_of(self, hostname: str | None) -> tuple[str, dict[str, float | None]]:
        """HOSTNAME as watched (lower case) and its apps' table (an empty one if none)."""
        if hostname is None:
            return "", _NOTHING
        apps = self._by_host.get(hostname)
        if apps is None and not hostname.islower():
            hostname = hostname.lower()
            apps = self._by_host.get(hostname)
        return hostname, _NOTHING if apps is None else apps


class _Compiled(Protocol):
    def HeardTable(self, seed: int) -> HeardTableLike: ...  # a type


def load_heard_table(environ: "os._Environ[str] | dict[str, str]") -> _Compiled | None:
    """suite/names/_heard_table.c, or None (L{suite.foundation.compiled.load_compiled})."""
    return cast(
        _Compiled | None, load_compiled("suite.names._heard_table", ("HeardTable",), environ)
    )


_compiled = load_heard_table(os.environ)


def new_heard_table() -> HeardTableLike:
    """The compiled table when it is built (with a seed of its own), else L{HeardDicts}."""
    if _compiled is None:
        return HeardDicts()
    return _compiled.HeardTable(IDENTITY_SEED)
