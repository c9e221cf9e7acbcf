"""
Where registrations survive a restart: `memory` (they do not) or
`sqlite:PATH`.  The database is checked and read synchronously at start,
before the reactor runs, so a corrupt or unwritable file is a clear error
then; afterwards every write goes through twisted.enterprise.adbapi on one
thread, in order, and the reactor never waits on the disk.
"""

import os
import sqlite3

from zope.interface import Interface, implementer

from twisted.enterprise import adbapi
from twisted.internet import defer

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
    """The store cannot be used; str() says why."""


class IRegistryStore(Interface):
    """Where the name server keeps its registrations beyond its own memory."""

    def load():
        """The stored rows (name, host, port, description), once, at start."""

    def save(instance):
        """Deferred that fires once INSTANCE (new or updated) is stored."""

    def delete(instance):
        """Deferred that fires once INSTANCE is gone from the store."""

    def close():
        """Deferred that fires once the store has finished and let go of its resources."""


@implementer(IRegistryStore)
class MemoryStore:
    """Nothing beyond memory: registrations end with the process."""

    def load(self) -> list[tuple]:
        return []

    def save(self, instance) -> defer.Deferred:
        return defer.succeed(None)

    def delete(self, instance) -> defer.Deferred:
        return defer.succeed(None)

    def close(self) -> defer.Deferred:
        return defer.succeed(None)


@implementer(IRegistryStore)
class SqliteStore:
    """One SQLite file; writes go through adbapi on one thread, in order."""

    def __init__(self, path: str, reactor):
        self.path = path
        self._rows = self._check_and_read(path)
        self.pool = adbapi.ConnectionPool(
            "sqlite3", path, check_same_thread=False, cp_min=1, cp_max=1, cp_reactor=reactor
        )

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
        return self.pool.runOperation(
            "INSERT INTO instances (name, host, port, description) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (name, host, port) DO UPDATE SET description = excluded.description",
            (instance.name, instance.host, instance.port, instance.description),
        )

    def delete(self, instance) -> defer.Deferred:
        return self.pool.runOperation(
            "DELETE FROM instances WHERE name = ? AND host = ? AND port = ?", instance.key
        )

    def close(self) -> defer.Deferred:
        self.pool.close()
        return defer.succeed(None)


def open_store(setting: str, reactor):
    """`memory` or `sqlite:PATH` (validated by the config) -> a store; StoreError if unusable."""
    if setting == "memory":
        return MemoryStore()
    return SqliteStore(setting.removeprefix("sqlite:"), reactor)
