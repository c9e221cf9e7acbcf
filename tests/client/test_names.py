"""
The client API and suite-client's names commands against name servers on
real sockets: IDs, tags, metadata, status and the read token, with a name
server of this version and one of the previous contract.
"""

import io

from twisted.internet import defer, error, reactor, task, tcp
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.protocols import amp
from twisted.trial.unittest import SynchronousTestCase, TestCase

from suite.client import api, main
from suite.client.main import looked_up, parse_arguments, watched
from suite.contracts.names import NotFound, Unauthorized
from suite.names.allowed import AllowedHosts
from suite.names.protocol import NamesFactory
from suite.names.registry import Check, Instance, Registry
from suite.names.server import NameServer
from suite.names.service import NamesSettings
from suite.names.store import MemoryStore
from tests.names import previous_contract as previous


def listen(test, factory) -> TCP4ClientEndpoint:
    """FACTORY listening on 127.0.0.1, a free port, for TEST: the endpoint to reach it."""
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    test.addCleanup(port.stopListening)
    test.port = port.getHost().port
    return TCP4ClientEndpoint(reactor, "127.0.0.1", test.port)


def deferLater(seconds):
    return task.deferLater(reactor, seconds, lambda: None)


def name_server(test, token="", read_token="") -> tuple[NameServer, TCP4ClientEndpoint]:
    """
    A name server of this version (memory store) for TEST, and where it
    listens (its port: `test.port`).
    """
    clock = Clock()  # the summaries of refused tokens are left waiting on it
    server = NameServer(
        Registry(100, AllowedHosts()),
        MemoryStore(),
        token,
        cache_ttl=5,
        clock=clock,
        read_token=read_token,
    )
    factory = NamesFactory(NamesSettings(idle_timeout=0), clock, server)
    return server, listen(test, factory)


async def client_connections_closed(test):
    """Wait until no client connection is open (each closes a little after it is told to)."""
    for _ in range(200):  # at most ~2 s
        if not any(isinstance(s, tcp.Client) for s in reactor.getReaders() + reactor.getWriters()):
            return
        await deferLater(0.01)
    test.fail("a client connection is still open")


class PreviousNameServer(amp.AMP):
    """A name server of the previous contract: one instance of every name, no IDs, no tags."""

    def __init__(self, registered: list):
        super().__init__()
        self.registered = registered

    @previous.Register.responder
    def register(self, name, host, port, description=None, token=None):
        self.registered.append((name, host, port, description))
        return {}

    @previous.Deregister.responder
    def deregister(self, name, host, port, token=None):
        return {}

    @previous.Lookup.responder
    def lookup(self, name):
        return {"instances": [{"host": "127.0.0.1", "port": 1, "description": "d"}], "ttl": 5}

    @previous.Watch.responder
    def watch(self, name):
        reactor.callLater(0, self.change, name)  # once the answer is sent
        return self.lookup(name)

    def change(self, name):
        """One Changed call, then the end of the connection."""
        changed = self.callRemote(
            previous.Changed,
            name=name,
            instances=[{"host": "127.0.0.1", "port": 2, "description": ""}],
        )
        changed.addCallback(lambda _: self.transport.loseConnection())

    @previous.Services.responder
    def services(self):
        return {"names": ["web"]}


class InstanceTests(SynchronousTestCase):
    """An Instance is the (host, port, description) tuple callers had, with the rest beside."""

    def test_a_tuple_as_before_with_attributes(self):
        instance = api.Instance("::1", 80, "d", "web-1", ["a"], {"k": "v"}, "warning")
        host, port, description = instance
        self.assertEqual((host, port, description), ("::1", 80, "d"))
        self.assertEqual(instance, ("::1", 80, "d"))
        self.assertEqual({instance}, {("::1", 80, "d")})
        self.assertEqual(
            (instance.host, instance.port, instance.description, instance.id),
            ("::1", 80, "d", "web-1"),
        )
        self.assertEqual(
            (instance.tags, instance.meta, instance.status), (("a",), {"k": "v"}, "warning")
        )

    def test_fields_an_older_server_leaves_out_take_their_defaults(self):
        instance = api.Instance.from_fields(
            {"host": "h", "port": 1, "description": "", "id": None, "tags": None, "meta": None}
        )
        self.assertEqual(
            (instance.id, instance.tags, instance.meta, instance.status), ("", (), {}, "passing")
        )


class NameServerTests(TestCase):
    """The API against a name server of this version."""

    def setUp(self):
        self.server, self.endpoint = name_server(self, token="writer", read_token="reader")

    async def test_id_tags_and_meta_registered_are_looked_up(self):
        await api.register(
            reactor,
            self.endpoint,
            "api",
            "127.0.0.1",
            8080,
            "the API",
            "writer",
            instance_id="api-1",
            tags=["v2", "blue"],
            meta={"version": "2.1", "az": "b"},
        )
        [instance], ttl = await api.lookup(reactor, self.endpoint, "api", "reader")
        self.assertEqual((instance, ttl), (("127.0.0.1", 8080, "the API"), 5))
        self.assertEqual(
            (instance.id, instance.tags, instance.meta, instance.status),
            ("api-1", ("v2", "blue"), {"az": "b", "version": "2.1"}, "passing"),
        )
        await api.deregister_id(reactor, self.endpoint, "api-1", "writer")
        with self.assertRaises(NotFound):
            await api.lookup(reactor, self.endpoint, "api", "reader")

    async def test_reads_need_the_read_token(self):
        await api.register(reactor, self.endpoint, "web", "127.0.0.1", 1, token="writer")
        for read in (
            lambda token: api.lookup(reactor, self.endpoint, "web", token),
            lambda token: api.services(reactor, self.endpoint, token),
            lambda token: api.watch(reactor, self.endpoint, "web", lambda *_: None, token),
        ):
            for token in (None, "wrong"):
                with self.assertRaises(Unauthorized):
                    await read(token)
        await client_connections_closed(self)  # the refused watch's too
        self.assertEqual(await api.services(reactor, self.endpoint, "reader"), ["web"])
        self.assertEqual(await api.services(reactor, self.endpoint, "writer"), ["web"])

    async def test_name_client_sends_its_token(self):
        await api.register(reactor, self.endpoint, "web", "127.0.0.1", 1, token="writer")
        refused = api.NameClient(reactor, self.endpoint)
        self.addCleanup(refused.close)
        with self.assertRaises(Unauthorized):
            await refused.lookup("web")
        names = api.NameClient(reactor, self.endpoint, token="reader")
        self.addCleanup(names.close)
        self.assertEqual(await names.lookup("web"), [("127.0.0.1", 1, "")])

    async def test_watch_and_name_client_follow_status(self):
        changes = []
        watching = api.watch(
            reactor, self.endpoint, "web", lambda name, found: changes.append(found), "reader"
        )
        names = api.NameClient(reactor, self.endpoint, token="reader")
        self.addCleanup(names.close)
        with self.assertRaises(NotFound):
            await names.lookup("web")
        instance = Instance("web", "127.0.0.1", 1, tags=("v1",), checks=[Check("c", "ttl")])
        instance.checks[0].status = "warning"
        self.server.registry.put(instance, self.server.registry.index + 1)
        for _ in range(200):  # the push: within 2 s
            if len(changes) == 2 and names._watched.get("web"):
                break
            await deferLater(0.01)
        [before, [now]] = changes
        self.assertEqual(
            (before, now, now.tags, now.status), ([], ("127.0.0.1", 1, ""), ("v1",), "warning")
        )
        [cached] = await names.lookup("web")
        self.assertEqual(cached.status, "warning")
        watching.cancel()  # closes the watch's connection
        with self.assertRaises(defer.CancelledError):
            await watching
        await names.close()
        await client_connections_closed(self)


class PreviousNameServerTests(TestCase):
    """The API against a name server of the previous contract: what it knows works as before."""

    def setUp(self):
        self.registered = []
        self.endpoint = listen(
            self, Factory.forProtocol(lambda: PreviousNameServer(self.registered))
        )

    async def test_lookups_and_services_with_a_token_it_does_not_know(self):
        [instance], ttl = await api.lookup(reactor, self.endpoint, "web", "reader")
        self.assertEqual((instance, ttl), (("127.0.0.1", 1, "d"), 5))
        self.assertEqual(
            (instance.id, instance.tags, instance.meta, instance.status), ("", (), {}, "passing")
        )
        self.assertEqual(await api.services(reactor, self.endpoint, "reader"), ["web"])
        names = api.NameClient(reactor, self.endpoint, token="reader")
        self.addCleanup(names.close)
        self.assertEqual(await names.lookup("web"), [("127.0.0.1", 1, "d")])

    async def test_register_with_what_it_does_not_know(self):
        answer = await api.register(
            reactor,
            self.endpoint,
            "web",
            "127.0.0.1",
            1,
            "d",
            instance_id="web-1",
            tags=["v1"],
            meta={"k": "v"},
            logs_app="web",
            max_silence=30,
        )
        self.assertEqual(answer, {})
        self.assertEqual(self.registered, [("web", "127.0.0.1", 1, "d")])
        self.assertEqual(await api.deregister(reactor, self.endpoint, "web", "127.0.0.1", 1), {})

    async def test_a_deregistration_by_id_is_an_error_there(self):
        with self.assertRaises(amp.UnknownRemoteError):
            await api.deregister_id(reactor, self.endpoint, "web-1")
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)  # its own log: no name

    async def test_watch_and_its_changes(self):
        changes = []
        with self.assertRaises(error.ConnectionDone):
            await api.watch(
                reactor, self.endpoint, "web", lambda name, found: changes.append(found)
            )
        self.assertEqual(changes, [[("127.0.0.1", 1, "d")], [("127.0.0.1", 2, "")]])
        self.assertEqual(changes[1][0].status, "passing")


class ArgumentTests(SynchronousTestCase):
    """suite-client names: the options of IDs, tags, metadata and tokens."""

    def refused(self, *argv) -> str:
        with self.assertRaises(SystemExit):
            parse_arguments(list(argv))
        return self.stderr.getvalue()

    def setUp(self):
        self.stderr = io.StringIO()
        self.patch(main.sys, "stderr", self.stderr)

    def test_register_with_id_tags_and_meta(self):
        args = parse_arguments(
            "names 127.0.0.1:5300 register api 127.0.0.1 8080 --id api-1 --tag v2 "
            "--tag blue --meta version=2.1 --meta url=http://x/?a=b --meta version=2.2".split()
        )
        self.assertEqual(
            (args.id, args.tags, args.meta),
            ("api-1", ["v2", "blue"], {"version": "2.2", "url": "http://x/?a=b"}),
        )

    def test_a_logs_check(self):
        args = parse_arguments(
            "names 127.0.0.1:5300 register api h 1 --logs-app api --max-silence 2.5".split()
        )
        self.assertEqual((args.logs_app, args.max_silence), ("api", 2.5))
        args = parse_arguments("names 127.0.0.1:5300 register api h 1".split())
        self.assertEqual((args.logs_app, args.max_silence), (None, None))

    def test_logs_check_mistakes_are_refused(self):
        register = ["names", "127.0.0.1:5300", "register", "a", "h", "1"]
        for options, expected in [
            (
                ["--logs-app", "my app"],
                "argument --logs-app: expected 1-255 printable characters without spaces, "
                "not 'my app'",
            ),
            (["--logs-app", ""], "argument --logs-app: expected 1-255 printable characters"),
            (["--logs-app", "a" * 256], "argument --logs-app: expected 1-255 printable"),
            (
                ["--logs-app", "a", "--max-silence", "0"],
                "argument --max-silence: expected seconds above 0, not '0'",
            ),
            (["--logs-app", "a", "--max-silence", "nan"], "expected seconds above 0, not 'nan'"),
            (["--logs-app", "a", "--max-silence", "1m"], "expected seconds above 0, not '1m'"),
            (["--max-silence", "60"], "--max-silence goes with --logs-app"),
        ]:
            self.stderr.seek(0)
            self.stderr.truncate()
            self.assertIn(expected, self.refused(*register, *options), options)

    def test_a_meta_without_key_or_equals_is_refused(self):
        for value in ("novalue", "=v"):
            message = self.refused(
                "names", "127.0.0.1:5300", "register", "a", "h", "1", "--meta", value
            )
            self.assertIn(f"argument --meta: expected KEY=VALUE, not {value!r}", message)

    def test_deregister_by_address_or_by_id(self):
        by_id = parse_arguments("names 127.0.0.1:5300 deregister --id api-1".split())
        self.assertEqual((by_id.id, by_id.parameters), ("api-1", []))
        message = self.refused(*"names 127.0.0.1:5300 deregister web h 1 --id api-1".split())
        self.assertIn("deregister: expected NAME HOST PORT, or --id ID", message)
        message = self.refused(*"names 127.0.0.1:5300 deregister web h".split())
        self.assertIn("deregister: expected NAME HOST PORT, or --id ID", message)

    def test_a_token_for_reads_and_for_lookup(self):
        args = parse_arguments("names 127.0.0.1:5300 lookup web --token reader".split())
        self.assertEqual(args.token, "reader")
        args = parse_arguments("echo --lookup 127.0.0.1:5300 hi --token reader".split())
        self.assertEqual(args.token, "reader")
        self.patch(main.os, "environ", {"SUITE_TOKEN": "from-env"})
        self.assertEqual(
            parse_arguments("names 127.0.0.1:5300 services".split()).token, "from-env"
        )


class OutputTests(SynchronousTestCase):
    """`lookup` and `watch` lines: as before for a plain instance, the rest appended."""

    def test_a_plain_instance_is_shown_as_before(self):
        plain = api.Instance("127.0.0.1", 5001, "the echo", "web@127.0.0.1:5001")
        self.assertEqual(looked_up("web", plain), "127.0.0.1:5001\tthe echo")
        bare = api.Instance("::1", 5999, "", "web@[::1]:5999")
        self.assertEqual(looked_up("web", bare), "[::1]:5999")
        self.assertEqual(looked_up("web", api.Instance("::1", 1)), "[::1]:1")  # an older server
        self.assertEqual((watched(plain), watched(bare)), ("127.0.0.1:5001", "[::1]:5999"))

    def test_id_tags_meta_and_status_are_appended(self):
        instance = api.Instance(
            "127.0.0.1", 8080, "", "api-1", ["v2", "blue"], {"z": "1", "a": "x=y"}, "warning"
        )
        self.assertEqual(
            looked_up("api", instance),
            "127.0.0.1:8080\t\tid=api-1\ttags=v2,blue\tmeta.a=x=y\tmeta.z=1\tstatus=warning",
        )
        self.assertEqual(watched(instance), "127.0.0.1:8080{v2,blue}(warning)")

    def test_what_a_client_chose_is_escaped(self):
        instance = api.Instance("127.0.0.1", 1, "d\tx", "id\x1b", ["t\n"], {"k": "v\x00"})
        self.assertEqual(
            looked_up("web", instance),
            "127.0.0.1:1\td\\tx\tid=id\\x1b\ttags=t\\n\tmeta.k=v\\x00",
        )
        self.assertEqual(watched(instance), "127.0.0.1:1{t\\n}")


class CommandTests(TestCase):
    """`suite-client names` against a name server of this version, its lines captured."""

    def setUp(self):
        self.server, _ = name_server(self, read_token="reader")
        self.address = f"127.0.0.1:{self.port}"
        self.lines = []
        self.patch(main, "write_reply", lambda line: self.lines.append(line.decode()))

    async def command(self, *words):
        args = parse_arguments(["names", self.address, *words])
        await defer.ensureDeferred(main.names(reactor, args))

    async def test_register_lookup_and_deregister_by_id(self):
        await self.command(
            "register", "api", "127.0.0.1", "8080", "--id", "api-1", "--tag", "v2", "--meta", "a=b"
        )
        await self.command("register", "api", "127.0.0.1", "8081")
        await self.command("lookup", "api", "--token", "reader")
        await self.command("services", "--token", "reader")
        await self.command("deregister", "--id", "api-1")
        await self.command("lookup", "api", "--token", "reader")
        self.assertEqual(
            self.lines,
            [
                "127.0.0.1:8080\t\tid=api-1\ttags=v2\tmeta.a=b",
                "127.0.0.1:8081",
                "api",
                "127.0.0.1:8081",
            ],
        )
        with self.assertRaises(Unauthorized):
            await self.command("lookup", "api")

    async def test_register_with_a_logs_check(self):
        await self.command("register", "api", "127.0.0.1", "8080", "--logs-app", "api")
        await self.command(
            "register",
            "api",
            "127.0.0.1",
            "8081",
            "--logs-app",
            "api-worker",
            "--max-silence",
            "90",
        )
        [first] = self.server.registry.by_id("api@127.0.0.1:8080").checks
        [second] = self.server.registry.by_id("api@127.0.0.1:8081").checks
        self.assertEqual(
            [(c.kind, c.app, c.max_silence, c.status) for c in (first, second)],
            [("logs", "api", 60.0, "passing"), ("logs", "api-worker", 90.0, "passing")],
        )
