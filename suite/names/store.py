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

import json
import os
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Attribute, implementer

from suite.contracts.names import Invalid
from suite.foundation.config import FILE_MODE
from suite.foundation.interfaces import IHealthSource, IMetricSource
from suite.names.registry import Instance

log = Logger()

SCHEMA = """
CREATE TABLE IF NOT EXISTS services (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    record TEXT NOT NULL,
    create_index INTEGER NOT NULL,
    modify_index INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS name_indexes (
    name TEXT PRIMARY KEY,
    change_index INTEGER NOT NULL
);
"""
# Version 3 keeps each instance whole (its ID, tags, metadata, weights and
# checks) as a JSON record, and the index of the last change to each name.
# Versions 1 and 2 kept (name, host, port, description[, addresses, source])
# in a table `instances`, migrated at start.
SCHEMA_VERSION = 3
OLD_COLUMNS = ("addresses", "source")  # what version 2 added to version 1's table


class StoreError(Exception):
    """
    The store cannot be used; str() says why.  `reported` is true when the
    store has logged it already (an etcd outage is logged once, not once per
    failed write).
    """

    reported = False


@dataclass
class Stored:
    """
    What a store held at start: its instances (their indexes set) in
    registration order, and the index of the last change to each name
    (deregistrations included), so that no index goes back across a restart.
    """

    instances: list[Instance] = field(default_factory=list)
    name_indexes: dict[str, int] = field(default_factory=dict)
    floor: int = 1  # the index of every name without one of its own (see Registry.floor)


class StoreConflict(StoreError):
    """
    A conditional save found the instance changed (or gone) since the
    revision its writer saw: nothing was written.
    """

    reported = True  # not an outage: nothing to log


class IRegistryStore(IMetricSource, IHealthSource):
    """
    Where the name server keeps its registrations beyond its own memory.
    Its metric samples are its own (none for local stores), its health
    problems those of reaching it (an etcd outage).
    """

    loaded = Attribute(
        "Whether the registry holds what the store holds (an etcd copy may not yet)"
    )

    def load() -> "Stored":
        """What the store holds, once, at start: its instances and the index of each name."""

    def start() -> None:
        """Begin what keeps the registry current (the etcd watch); the reactor runs now."""

    def save(instance: Instance, expected: int | None = None) -> defer.Deferred[int]:
        """
        Deferred that fires with the index of the change once INSTANCE (new
        or updated) is stored, or fails with L{StoreError} saying why it
        could not be.  EXPECTED (the instance's modify index as its writer
        saw it) makes the save conditional where other writers may come in
        between (etcd's other replicas): if the stored instance changed
        since, or is gone, nothing is written and it fails with
        L{StoreConflict}.  (The name server orders the writes of each
        instance itself, so a local store has no one to race with.)
        """

    def delete(instance: Instance) -> defer.Deferred[int]:
        """
        Deferred that fires with the index of the change once INSTANCE is
        gone from the store (or fails with L{StoreError}).
        """

    def evict(instance: Instance) -> defer.Deferred[int]:
        """
        As delete, for the health checker's eviction (on etcd: only while
        this replica leads).
        """

    def heartbeat(check_id: str) -> defer.Deferred[None]:
        """
        Tell the replica that runs the checks that the TTL check CHECK_ID was
        updated now (a local store: nothing to tell, the registry knows).
        Changes no index.
        """

    def close() -> defer.Deferred[None]:
        """
        Deferred that fires once pending writes are done and the store let
        go of its resources.
        """


class LocalStore(ABC):
    """
    A store of this process alone: read whole at start, nothing to follow,
    evictions as deletes.  It counts the changes itself: `index` is the
    last one given.
    """

    loaded = True
    index = 1  # an empty registry's (never 0): the first change is 2, which a read of 1 waits for

    def next_index(self) -> int:
        self.index += 1
        return self.index

    def start(self) -> None:  # noqa: B027  # read whole at open: nothing to start
        pass

    @abstractmethod
    def delete(self, instance: Instance) -> defer.Deferred[int]:
        """Each local store's own: see L{IRegistryStore.delete}."""

    def evict(self, instance: Instance) -> defer.Deferred[int]:
        return self.delete(instance)

    def heartbeat(self, check_id: str) -> defer.Deferred[None]:
        return defer.succeed(None)  # the checks run in this process

    def health_problems(self) -> list[tuple[str, str]]:
        return []

    def metric_samples(self) -> Iterable[tuple[str, tuple, object]]:
        return ()


@implementer(IRegistryStore)
class MemoryStore(LocalStore):
    """Nothing beyond memory: registrations end with the process."""

    def load(self) -> Stored:
        return Stored()

    def save(self, instance: Instance, expected: int | None = None) -> defer.Deferred[int]:
        return defer.succeed(self.next_index())

    def delete(self, instance: Instance) -> defer.Deferred[int]:
        return defer.succeed(self.next_index())

    def close(self) -> defer.Deferred[None]:
        return defer.succeed(None)


UPSERT = (
    "INSERT INTO services (id, name, record, create_index, modify_index) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
    "name = excluded.name, record = excluded.record, modify_index = excluded.modify_index"
)
DELETE = "DELETE FROM services WHERE id = ?"
NAME_CHANGED = (
    "INSERT INTO name_indexes (name, change_index) VALUES (?, ?) "
    "ON CONFLICT (name) DO UPDATE SET change_index = excluded.change_index"
)


# Names without instances keep their index in name_indexes; beyond
# max_tombstones of them the oldest go, the floor (the row named '', which
# no name can be) rising to theirs first, as the registry does in memory.
_OLDEST_TOMBSTONES = (
    "SELECT name, change_index FROM name_indexes WHERE name != '' "
    "AND name NOT IN (SELECT name FROM services) ORDER BY change_index DESC LIMIT -1 OFFSET ?"
)
RAISE_FLOOR = (
    "INSERT INTO name_indexes (name, change_index) "
    f"SELECT '', highest FROM (SELECT max(change_index) AS highest FROM ({_OLDEST_TOMBSTONES})) "
    "WHERE highest IS NOT NULL "
    "ON CONFLICT (name) DO UPDATE SET change_index = max(change_index, excluded.change_index)"
)
REAP_TOMBSTONES = (
    f"DELETE FROM name_indexes WHERE name IN (SELECT name FROM ({_OLDEST_TOMBSTONES}))"
)


def _run_batch(cursor: sqlite3.Cursor, writes: list[list[tuple[str, tuple]]]) -> None:
    """One transaction (adbapi commits it, or rolls it back if any statement fails)."""
    for statements in writes:
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
    """
    One SQLite file; writes go through adbapi on one thread, in order, in
    batches.  Each write also records the index of its change for the
    instance's name, so a restart finds every name's index where it was.
    """

    def __init__(
        self, path: str, reactor: IReactorTime, max_tombstones: int | None = None
    ) -> None:
        self.path = path
        self.max_tombstones = max_tombstones
        self.writes = BatchedWrites(reactor, self._transaction, failure=self._failure)
        self._stored = self._check_and_read(path)
        self.index = max(
            [i.modify_index for i in self._stored.instances]
            + list(self._stored.name_indexes.values())
            + [self._stored.floor]
        )
        self.pool = adbapi.ConnectionPool(
            "sqlite3", path, check_same_thread=False, cp_min=1, cp_max=1, cp_reactor=reactor
        )

    @staticmethod
    def _check_and_read(path: str) -> Stored:
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
            connection.executescript(SCHEMA)
            migrated = _migrate(connection)
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")  # proves it is writable
            connection.commit()
            if migrated is not None:
                version, count = migrated
                log.info(
                    "names: {path} migrated from version {version} to {current}: "
                    "{count} instances",
                    path=path,
                    version=version,
                    current=SCHEMA_VERSION,
                    count=count,
                )
            return _stored(connection)
        except sqlite3.Error as e:
            raise StoreError(f"not a usable SQLite database: {e}") from None
        finally:
            connection.close()

    def load(self) -> Stored:
        stored, self._stored = self._stored, Stored()
        return stored

    def _write(
        self, instance: Instance, statement: tuple[str, tuple], index: int
    ) -> defer.Deferred[int]:
        """
        STATEMENT, and INDEX as the last change of INSTANCE's name (in the
        same transaction, whose failure the caller hears of); fires with INDEX.
        """
        name_written = self.writes.queue(
            ("name", instance.name), [(NAME_CHANGED, (instance.name, index))]
        )
        name_written.addErrback(lambda _: None)
        written = self.writes.queue(instance.key, [statement])
        return written.addCallback(lambda _: index)

    def save(self, instance: Instance, expected: int | None = None) -> defer.Deferred[int]:
        index = self.next_index()
        record = json.dumps(instance.record(), separators=(",", ":"))
        row = (instance.id, instance.name, record, instance.create_index or index, index)
        return self._write(instance, (UPSERT, row), index)

    def delete(self, instance: Instance) -> defer.Deferred[int]:
        written = self._write(instance, (DELETE, (instance.id,)), self.next_index())
        if self.max_tombstones is not None:
            kept = self.max_tombstones * 9 // 10
            reap = self.writes.queue(
                "tombstones", [(RAISE_FLOOR, (kept,)), (REAP_TOMBSTONES, (kept,))]
            )
            reap.addErrback(lambda _: None)  # its transaction's callers hear of a failure
        return written

    def _transaction(self, writes: list[list[tuple[str, tuple]]]) -> defer.Deferred[None]:
        committed: defer.Deferred[None] = self.pool.runInteraction(_run_batch, writes)
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


def _has_table(connection: sqlite3.Connection, table: str) -> bool:
    found = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    return found is not None


def _old_instances(connection: sqlite3.Connection) -> list[Instance]:
    """The instances of a version 1 or 2 database (columns it lacks read empty)."""
    columns = {row[1] for row in connection.execute("PRAGMA table_info(instances)")}
    added = ", ".join(column if column in columns else "''" for column in OLD_COLUMNS)
    return [
        Instance(name, host, port, description, addresses=tuple(addresses.split()), source=source)
        for name, host, port, description, addresses, source in connection.execute(
            f"SELECT name, host, port, description, {added} FROM instances ORDER BY rowid"
        )
    ]


def _migrate(connection: sqlite3.Connection) -> tuple[int, int] | None:
    """
    Move the instances of an earlier version's table into this version's,
    at index 1, and drop it: (the version found, instances moved), or
    None when there was nothing to migrate.
    """
    if not _has_table(connection, "instances"):
        return None
    version = (
        2 if "source" in {r[1] for r in connection.execute("PRAGMA table_info(instances)")} else 1
    )
    instances = _old_instances(connection)
    for instance in instances:
        record = json.dumps(instance.record(), separators=(",", ":"))
        connection.execute(
            "INSERT OR REPLACE INTO services (id, name, record, create_index, modify_index) "
            "VALUES (?, ?, ?, 1, 1)",
            (instance.id, instance.name, record),
        )
    connection.execute("DROP TABLE instances")
    return version, len(instances)


def _stored(connection: sqlite3.Connection) -> Stored:
    """What a version 3 database holds; StoreError naming a record that does not load."""
    instances = []
    for number, (record, create_index, modify_index) in enumerate(
        connection.execute(
            "SELECT record, create_index, modify_index FROM services ORDER BY rowid"
        ),
        1,
    ):
        try:
            instances.append(
                Instance.from_record(
                    json.loads(record), create_index, modify_index, validate=False
                )
            )
        except (Invalid, ValueError, TypeError, AttributeError) as e:
            raise StoreError(f"stored instance {number} is invalid: {e}") from None
    name_indexes = dict(connection.execute("SELECT name, change_index FROM name_indexes"))
    floor = name_indexes.pop("", 1)
    return Stored(instances, name_indexes, floor)


def read_stored(path: str) -> Stored:
    """
    What the SQLite store at PATH holds, read without writing anything (for
    `suite check`): nothing when it does not exist yet; StoreError if
    unusable.  An earlier version's database reads as it will migrate.
    """
    if not os.path.exists(path):
        return Stored()
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise StoreError(f"cannot open: {e}") from None
    try:
        check_intact(connection)
        if _has_table(connection, "services"):
            return _stored(connection)
        if _has_table(connection, "instances"):
            old = _old_instances(connection)
            for instance in old:
                instance.create_index = instance.modify_index = 1
            return Stored(old)
        return Stored()
    except sqlite3.Error as e:
        raise StoreError(f"not a usable SQLite database: {e}") from None
    finally:
        connection.close()


def open_store(
    setting: str, reactor: IReactorTime, max_tombstones: int | None = None
) -> "MemoryStore | SqliteStore":
    """
    `memory` or `sqlite:PATH` (validated by the config) -> a store keeping
    at most MAX_TOMBSTONES indexes of names without instances; StoreError
    if unusable.
    """
    if setting == "memory":
        return MemoryStore()
    return SqliteStore(setting.removeprefix("sqlite:"), reactor, max_tombstones)
