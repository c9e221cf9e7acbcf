"""
Where registrations survive a restart: `memory` (they do not) or
`sqlite:PATH`.  The database is checked and read synchronously at start,
before the reactor runs, so a corrupt or unwritable file is a clear error
then; afterwards every write goes through twisted.enterprise.adbapi on one
thread, in order, and the reactor never waits on the disk.

A write's Deferred fires only once its transaction is committed, so the name
server can acknowledge a registration that will survive a crash.  Writes
asked for in the same reactor turn, or while a transaction is in flight, are
grouped into one transaction: a commit (an fsync) per batch, not per call.
"""

import os
import sqlite3

from zope.interface import Attribute, Interface, implementer

from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.python.failure import Failure

SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    name TEXT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (name, host, port)
)
"""
SCHEMA_VERSION = 1


class StoreError(Exception):
    """
    The store cannot be used; str() says why.  `reported` is true when the
    store has logged it already (an etcd outage is logged once, not once per
    failed write).
    """

    reported = False


class IRegistryStore(Interface):
    """Where the name server keeps its registrations beyond its own memory."""

    loaded = Attribute("Whether the registry holds what the store holds (an etcd copy may not yet)")

    def load():
        """The stored rows (name, host, port, description), once, at start."""

    def start():
        """Begin what keeps the registry current (the etcd watch); the reactor runs now."""

    def save(instance):
        """
        Deferred that fires once INSTANCE (new or updated) is stored, or fails
        with L{StoreError} saying why it could not be.
        """

    def delete(instance):
        """Deferred that fires once INSTANCE is gone from the store (or fails with L{StoreError})."""

    def evict(instance):
        """As delete, for the health checker's eviction (on etcd: only while this replica leads)."""

    def health_problems():
        """The store's problems now: a list of (severity, text) for /health."""

    def close():
        """Deferred that fires once pending writes are done and the store let go of its resources."""


class LocalStore:
    """A store of this process alone: read whole at start, nothing to follow, evictions as deletes."""

    loaded = True

    def start(self) -> None:
        pass

    def evict(self, instance) -> defer.Deferred:
        return self.delete(instance)

    def health_problems(self) -> list[tuple[str, str]]:
        return []


@implementer(IRegistryStore)
class MemoryStore(LocalStore):
    """Nothing beyond memory: registrations end with the process."""

    def load(self) -> list[tuple]:
        return []

    def save(self, instance) -> defer.Deferred:
        return defer.succeed(None)

    def delete(self, instance) -> defer.Deferred:
        return defer.succeed(None)

    def close(self) -> defer.Deferred:
        return defer.succeed(None)


UPSERT = (
    "INSERT INTO instances (name, host, port, description) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (name, host, port) DO UPDATE SET description = excluded.description"
)
DELETE = "DELETE FROM instances WHERE name = ? AND host = ? AND port = ?"


def _run_batch(cursor, statements):
    """One transaction (adbapi commits it, or rolls it back if any statement fails)."""
    for sql, parameters in statements:
        cursor.execute(sql, parameters)


@implementer(IRegistryStore)
class SqliteStore(LocalStore):
    """One SQLite file; writes go through adbapi on one thread, in order, in batches."""

    def __init__(self, path: str, reactor):
        self.path = path
        self.reactor = reactor
        self._rows = self._check_and_read(path)
        self.pool = adbapi.ConnectionPool(
            "sqlite3", path, check_same_thread=False, cp_min=1, cp_max=1, cp_reactor=reactor
        )
        self._waiting: list[tuple[str, tuple, defer.Deferred]] = []
        self._in_flight: defer.Deferred | None = None
        self._flush_call = None

    @staticmethod
    def _check_and_read(path) -> list[tuple]:
        directory = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(directory, exist_ok=True)
            connection = sqlite3.connect(path)
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open: {getattr(e, 'strerror', None) or e}") from None
        try:
            check = connection.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise StoreError(f"database is damaged: {check}")
            connection.execute(SCHEMA)
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")  # proves it is writable
            connection.commit()
            return connection.execute(
                "SELECT name, host, port, description FROM instances ORDER BY rowid"
            ).fetchall()
        except sqlite3.Error as e:
            raise StoreError(f"not a usable SQLite database: {e}") from None
        finally:
            connection.close()

    def load(self) -> list[tuple]:
        rows, self._rows = self._rows, []
        return rows

    def save(self, instance) -> defer.Deferred:
        row = (instance.name, instance.host, instance.port, instance.description)
        return self._queue(UPSERT, row)

    def delete(self, instance) -> defer.Deferred:
        return self._queue(DELETE, instance.key)

    def _queue(self, sql: str, parameters: tuple) -> defer.Deferred:
        written = defer.Deferred()
        self._waiting.append((sql, parameters, written))
        if self._in_flight is None and self._flush_call is None:
            self._flush_call = self.reactor.callLater(0, self._flush)
        return written

    def _flush(self):
        """Start one transaction with every write waiting; more gather meanwhile."""
        self._flush_call = None
        batch, self._waiting = self._waiting, []
        in_flight = self._in_flight = self.pool.runInteraction(
            _run_batch, [(sql, parameters) for sql, parameters, _ in batch]
        )
        in_flight.addBoth(self._flushed, batch)
        return in_flight

    def _flushed(self, result, batch):
        self._in_flight = None
        failed = isinstance(result, Failure)
        if failed:
            error = StoreError(f"cannot write {self.path}: {result.getErrorMessage()}")
        for _, _, written in batch:
            if failed:
                written.errback(error)
            else:
                written.callback(None)
        if self._waiting and self._flush_call is None:
            self._flush()

    def close(self) -> defer.Deferred:
        """Write what waits, then close the pool."""
        if self._flush_call is not None:
            self._flush_call.cancel()
            self._flush()
        if self._in_flight is not None:
            return self._in_flight.addBoth(lambda _: self.close())
        self.pool.close()
        return defer.succeed(None)


def open_store(setting: str, reactor):
    """`memory` or `sqlite:PATH` (validated by the config) -> a store; StoreError if unusable."""
    if setting == "memory":
        return MemoryStore()
    return SqliteStore(setting.removeprefix("sqlite:"), reactor)
