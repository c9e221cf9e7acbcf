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
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure
from zope.interface import Attribute, implementer

from suite.foundation.config import FILE_MODE
from suite.foundation.interfaces import IHealthSource, IMetricSource
from suite.names.registry import Instance

SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    name TEXT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    addresses TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (name, host, port)
)
"""
# Columns added since version 1: what the checks connect to (space-separated)
# and who registered the instance (see suite.names.allowed).
ADDED_COLUMNS = {
    "addresses": "ALTER TABLE instances ADD COLUMN addresses TEXT NOT NULL DEFAULT ''",
    "source": "ALTER TABLE instances ADD COLUMN source TEXT NOT NULL DEFAULT ''",
}
SCHEMA_VERSION = 2


class StoreError(Exception):
    """
    The store cannot be used; str() says why.  `reported` is true when the
    store has logged it already (an etcd outage is logged once, not once per
    failed write).
    """

    reported = False


class IRegistryStore(IMetricSource, IHealthSource):
    """
    Where the name server keeps its registrations beyond its own memory.
    Its metric samples are its own (none for local stores), its health
    problems those of reaching it (an etcd outage).
    """

    loaded = Attribute(
        "Whether the registry holds what the store holds (an etcd copy may not yet)"
    )

    def load() -> list[tuple]:
        """The stored rows (name, host, port, description, addresses, source), once, at start."""

    def start() -> None:
        """Begin what keeps the registry current (the etcd watch); the reactor runs now."""

    def save(instance: Instance) -> defer.Deferred[None]:
        """
        Deferred that fires once INSTANCE (new or updated) is stored, or fails
        with L{StoreError} saying why it could not be.
        """

    def delete(instance: Instance) -> defer.Deferred[None]:
        """
        Deferred that fires once INSTANCE is gone from the store (or fails
        with L{StoreError}).
        """

    def evict(instance: Instance) -> defer.Deferred[None]:
        """
        As delete, for the health checker's eviction (on etcd: only while
        this replica leads).
        """

    def close() -> defer.Deferred[None]:
        """
        Deferred that fires once pending writes are done and the store let
        go of its resources.
        """


class LocalStore(ABC):
    """
    A store of this process alone: read whole at start, nothing to follow,
    evictions as deletes.
    """

    loaded = True

    def start(self) -> None:  # noqa: B027  # read whole at open: nothing to start
        pass

    @abstractmethod
    def delete(self, instance: Instance) -> defer.Deferred[None]:
        """Each local store's own: see L{IRegistryStore.delete}."""

    def evict(self, instance: Instance) -> defer.Deferred[None]:
        return self.delete(instance)

    def health_problems(self) -> list[tuple[str, str]]:
        return []

    def metric_samples(self) -> Iterable[tuple[str, tuple, object]]:
        return ()


@implementer(IRegistryStore)
class MemoryStore(LocalStore):
    """Nothing beyond memory: registrations end with the process."""

    def load(self) -> list[tuple]:
        return []

    def save(self, instance: Instance) -> defer.Deferred[None]:
        return defer.succeed(None)

    def delete(self, instance: Instance) -> defer.Deferred[None]:
        return defer.succeed(None)

    def close(self) -> defer.Deferred[None]:
        return defer.succeed(None)


UPSERT = (
    "INSERT INTO instances (name, host, port, description, addresses, source) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name, host, port) DO UPDATE SET "
    "description = excluded.description, addresses = excluded.addresses, source = excluded.source"
)
DELETE = "DELETE FROM instances WHERE name = ? AND host = ? AND port = ?"


def _run_batch(cursor: sqlite3.Cursor, statements: list[tuple[str, tuple]]) -> None:
    """One transaction (adbapi commits it, or rolls it back if any statement fails)."""
    for sql, parameters in statements:
        cursor.execute(sql, parameters)


def _exception_of(failure: Failure) -> BaseException | Failure:
    """
    What the callers of a failed transaction get, unless the store says
    otherwise: its exception (a Failure always holds one).
    """
    return failure if failure.value is None else failure.value


def _nothing_more(result: object) -> defer.Deferred[None]:
    """A committed write is done, unless the store waits for more (etcd: its copy)."""
    return defer.succeed(None)


class BatchedWrites:
    """
    Writes grouped into transactions: those asked for in one reactor turn,
    or while a transaction is in flight, go together (at most MAX_BATCH),
    one transaction in flight at a time, in order.  Each write sets the
    whole state of its key (an upsert or a delete), so a key written twice
    before its transaction starts is written once, as last asked, and each
    caller hears when it is done.

    A store owns one and hands it what differs between stores: TRANSACTION
    (operations -> Deferred), FAILURE (the exception every caller of a
    failed transaction gets) and WRITTEN (what each caller of a committed
    one waits for next).
    """

    def __init__(
        self,
        clock: IReactorTime,
        transaction: Callable[[list[Any]], defer.Deferred[Any]],
        *,
        failure: Callable[[Failure], BaseException | Failure] = _exception_of,
        written: Callable[[Any], defer.Deferred[None]] = _nothing_more,
        max_batch: int | None = None,
    ) -> None:
        self.clock = clock
        self.transaction = transaction
        self.failure = failure
        self.written = written
        self.max_batch = max_batch
        # key -> (operation, callers)
        self._waiting: dict[Hashable, tuple[object, list[defer.Deferred[None]]]] = {}
        self._in_flight: defer.Deferred[Any] | None = None
        self._flush_call: IDelayedCall | None = None

    def queue(self, key: Hashable, operation: object) -> defer.Deferred[None]:
        """Deferred that fires once OPERATION, the whole new state of KEY, is done."""
        written: defer.Deferred[None] = defer.Deferred()
        _, callers = self._waiting.pop(key, (None, []))
        self._waiting[key] = (operation, [*callers, written])
        if self._in_flight is None and self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self._flush)
        return written

    def _flush(self) -> None:
        """Start one transaction with the writes waiting; more gather meanwhile."""
        self._flush_call = None
        keys = list(self._waiting)[: self.max_batch]
        batch = [self._waiting.pop(key) for key in keys]
        in_flight = self._in_flight = self.transaction([operation for operation, _ in batch])
        in_flight.addBoth(self._flushed, batch)

    def _flushed(
        self, result: object, batch: list[tuple[object, list[defer.Deferred[None]]]]
    ) -> None:
        self._in_flight = None
        callers = [written for _, waiting in batch for written in waiting]
        if isinstance(result, Failure):
            error = self.failure(result)
            for written in callers:
                written.errback(error)
        else:
            for written in callers:
                defer.maybeDeferred(self.written, result).chainDeferred(written)
        if self._waiting and self._flush_call is None:
            self._flush()

    def drained(self) -> defer.Deferred[None]:
        """Fires once every write asked for is done (started now if it was to wait a turn)."""
        if self._flush_call is not None:
            self._flush_call.cancel()
            self._flush()
        if self._in_flight is not None:
            return self._in_flight.addBoth(lambda _: self.drained())
        return defer.succeed(None)


@implementer(IRegistryStore)
class SqliteStore(LocalStore):
    """One SQLite file; writes go through adbapi on one thread, in order, in batches."""

    def __init__(self, path: str, reactor: IReactorTime) -> None:
        self.path = path
        self.writes = BatchedWrites(reactor, self._transaction, failure=self._failure)
        self._rows = self._check_and_read(path)
        self.pool = adbapi.ConnectionPool(
            "sqlite3", path, check_same_thread=False, cp_min=1, cp_max=1, cp_reactor=reactor
        )

    @staticmethod
    def _check_and_read(path: str) -> list[tuple]:
        directory = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(directory, exist_ok=True)
            # Created here, so it gets the output files' mode rather than SQLite's 0644
            # (its journal files take the database's mode).
            os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE))
            connection = sqlite3.connect(path)
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open: {getattr(e, 'strerror', None) or e}") from None
        try:
            check_intact(connection)
            connection.execute(SCHEMA)
            columns = {row[1] for row in connection.execute("PRAGMA table_info(instances)")}
            for column, alter in ADDED_COLUMNS.items():
                if column not in columns:  # a database of an earlier version
                    connection.execute(alter)
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")  # proves it is writable
            connection.commit()
            return _stored_rows(connection)
        except sqlite3.Error as e:
            raise StoreError(f"not a usable SQLite database: {e}") from None
        finally:
            connection.close()

    def load(self) -> list[tuple]:
        rows, self._rows = self._rows, []
        return rows

    def save(self, instance: Instance) -> defer.Deferred[None]:
        row = (
            instance.name,
            instance.host,
            instance.port,
            instance.description,
            " ".join(instance.addresses),
            instance.source,
        )
        return self.writes.queue(instance.key, (UPSERT, row))

    def delete(self, instance: Instance) -> defer.Deferred[None]:
        return self.writes.queue(instance.key, (DELETE, instance.key))

    def _transaction(self, statements: list[tuple[str, tuple]]) -> defer.Deferred[None]:
        committed: defer.Deferred[None] = self.pool.runInteraction(_run_batch, statements)
        return committed

    def _failure(self, failure: Failure) -> StoreError:
        return StoreError(f"cannot write {self.path}: {failure.getErrorMessage()}")

    def close(self) -> defer.Deferred[None]:
        """Write what waits, then close the pool."""
        return self.writes.drained().addCallback(lambda _: self.pool.close())


def check_intact(connection: sqlite3.Connection) -> None:
    """SQLite's own check of the file; StoreError naming what it found damaged."""
    check = connection.execute("PRAGMA quick_check").fetchone()[0]
    if check != "ok":
        raise StoreError(f"database is damaged: {check}")


def _stored_rows(connection: sqlite3.Connection) -> list[tuple]:
    """The instances a database holds; columns it lacks (an earlier version's) read empty."""
    columns = {row[1] for row in connection.execute("PRAGMA table_info(instances)")}
    added = ", ".join(column if column in columns else "''" for column in ADDED_COLUMNS)
    return [
        (name, host, port, description, tuple(addresses.split()), source)
        for name, host, port, description, addresses, source in connection.execute(
            f"SELECT name, host, port, description, {added} FROM instances ORDER BY rowid"
        )
    ]


def read_stored_rows(path: str) -> list[tuple]:
    """
    The rows of the SQLite store at PATH, read without writing anything (for
    `suite check`): none when it does not exist yet; StoreError if unusable.
    """
    if not os.path.exists(path):
        return []
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise StoreError(f"cannot open: {e}") from None
    try:
        check_intact(connection)
        if not connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'instances'"
        ).fetchone():
            return []
        return _stored_rows(connection)
    except sqlite3.Error as e:
        raise StoreError(f"not a usable SQLite database: {e}") from None
    finally:
        connection.close()


def open_store(setting: str, reactor: IReactorTime) -> "MemoryStore | SqliteStore":
    """`memory` or `sqlite:PATH` (validated by the config) -> a store; StoreError if unusable."""
    if setting == "memory":
        return MemoryStore()
    return SqliteStore(setting.removeprefix("sqlite:"), reactor)
