"""The sqlite store: writes go through adbapi; what was written is read back at start."""

from pathlib import Path

from zope.interface.verify import verifyObject

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from suite.names.registry import Registry
from suite.names.server import NameServer
from suite.names.store import IRegistryStore, MemoryStore, SqliteStore, StoreError


class SqliteStoreTests(TestCase):
    def setUp(self):
        self.directory = Path(self.mktemp())
        self.path = str(self.directory / "sub" / "names.sqlite")

    async def test_registrations_survive_a_new_store(self):
        server = NameServer(Registry(10), SqliteStore(self.path, reactor), "", 5)
        server.startService()
        server.register("echo", "127.0.0.1", 5001, "first", None, "test")
        server.register("echo", "127.0.0.1", 5002, "", None, "test")
        server.register("echo", "127.0.0.1", 5001, "updated", None, "test")
        server.register("gone", "h", 1, "", None, "test")
        server.deregister("gone", "h", 1, None, "test")
        await server.stopService()
        reopened = NameServer(Registry(10), SqliteStore(self.path, reactor), "", 5)
        self.addCleanup(reopened.stopService)
        instances = [(i.name, i.host, i.port, i.description)
                     for i in reopened.registry.instances()]
        self.assertEqual(instances, [("echo", "127.0.0.1", 5001, "updated"),
                                     ("echo", "127.0.0.1", 5002, "")])

    def test_a_file_that_is_not_a_database(self):
        Path(self.path).parent.mkdir(parents=True)
        Path(self.path).write_bytes(b"this is not sqlite" * 100)
        with self.assertRaises(StoreError) as caught:
            SqliteStore(self.path, reactor)
        self.assertEqual(str(caught.exception),
                         "not a usable SQLite database: file is not a database")

    def test_a_directory_that_cannot_be_made(self):
        self.directory.mkdir()
        (self.directory / "sub").write_text("a file where the directory should be")
        with self.assertRaises(StoreError) as caught:
            SqliteStore(self.path, reactor)
        self.assertTrue(str(caught.exception).startswith("cannot open: "))

    def test_both_stores_keep_the_store_contract(self):
        store = SqliteStore(self.path, reactor)
        self.addCleanup(store.close)
        for candidate in (MemoryStore(), store):
            self.assertTrue(verifyObject(IRegistryStore, candidate))
