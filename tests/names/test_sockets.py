"""The name server on real sockets: eviction by real pings, pipelining, client caching."""

import time
from pathlib import Path

from twisted.internet import defer, reactor, ssl, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.protocols import amp
from twisted.trial.unittest import TestCase

from suite.client import api
from suite.contracts.names import Lookup, NotFound, Register
from tests.helpers import (
    captured_events,
    flush_writers,
    json_lines,
    make_pki,
    start_suite,
    tls_section,
    tmp_dir,
)

LOCAL = "tcp:0:interface=127.0.0.1"


class CountingFactory(Factory):
    protocol = Protocol

    def __init__(self):
        self.connections = []

    def buildProtocol(self, address):
        self.connections.append(time.monotonic())
        return Factory.buildProtocol(self, address)


class NamesOnSockets(TestCase):
    def start(self, **keys):
        settings = "".join(f"{key} = {value}\n" for key, value in keys.items())
        directory = tmp_dir(self)
        self.audit = directory / "lookups.jsonl"
        ports = start_suite(
            self,
            directory,
            f'[names]\nlisten = ["{LOCAL}"]\nstore = "memory"\n'
            f'lookup_audit = "{self.audit}"\n{settings}',
        )
        self.endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", ports[f"names {LOCAL}"])
        self.events = []
        observer = lambda e: "names_event" in e and self.events.append(e)  # noqa: E731
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def listen(self):
        factory = CountingFactory()
        port = reactor.listenTCP(0, factory, interface="127.0.0.1", backlog=1024)
        self.addCleanup(port.stopListening)
        return port, factory

    def lookups(self, name=None) -> list[dict]:
        flush_writers(self)
        return [r for r in json_lines(self.audit) if name is None or r["name"] == name]

    async def wait_for(self, predicate, timeout=10):
        for _ in range(int(timeout / 0.02)):
            if predicate():
                return True
            await task.deferLater(reactor, 0.02, lambda: None)
        return predicate()

    async def test_closed_listener_evicted_after_exactly_max_failures_pings(self):
        self.start(ping_interval=0.2, ping_timeout=1, max_failures=3)
        port, factory = self.listen()
        number = port.getHost().port
        await api.register(reactor, self.endpoint, "victim", "127.0.0.1", number)
        self.assertTrue(await self.wait_for(lambda: factory.connections))  # a ping got through
        await port.stopListening()
        self.assertTrue(
            await self.wait_for(lambda: any(e["names_event"] == "evict" for e in self.events))
        )
        mine = [e for e in self.events if e.get("port") == number]
        failed = [e["failures"] for e in mine if e["names_event"] == "ping_failed"]
        self.assertEqual(failed, [1])  # the first from this source; the others are counted
        evict = [e for e in mine if e["names_event"] == "evict"][0]
        self.assertEqual((evict["failures"], evict["reason"]), (3, "connection refused"))
        with self.assertRaises(NotFound):
            await api.lookup(reactor, self.endpoint, "victim")

    async def test_a_thousand_instances_checked_once_per_interval_spread_over_it(self):
        # Two seconds: 500 connects a second, which a busy CI machine keeps up with.
        self.start(ping_interval=2.0)
        port, factory = self.listen()
        client = await connectProtocol(self.endpoint, amp.AMP())
        self.addCleanup(client.transport.loseConnection)
        await defer.gatherResults(
            [
                client.callRemote(
                    Register, name=f"svc{n}", host="127.0.0.1", port=port.getHost().port
                )
                for n in range(1000)
            ]
        )
        factory.connections.clear()
        self.assertTrue(await self.wait_for(lambda: len(factory.connections) >= 2500, timeout=20))
        moments = sorted(factory.connections)
        # Checks per interval, from the time 2,000 checks took (about two intervals, after
        # the first round's start).  Counting the checks inside one interval's window
        # depended on when the window began and ended: a reactor running late moved every
        # check near an edge across it (1,104 in a window of 1,000 on a loaded machine).
        # Here lateness only moves the two ends, by a fraction of the four seconds between
        # them: 0.4 s late at one end is 10%, so ±20% holds under load, while checking every
        # instance twice an interval gives 2,000 and checking half of them 500.
        per_interval = 2.0 * 2000 / (moments[2250] - moments[250])
        self.assertTrue(800 <= per_interval <= 1250, per_interval)
        start = moments[0] + 2.0  # a whole interval after the first check seen
        window = [m - start for m in moments if start <= m < start + 2.0]
        tenths = [0] * 20
        for moment in window:
            tenths[int(moment * 10)] += 1
        # Evenly about 50 each; a slot the reactor ran late adds to the next one, so allow
        # a quarter of the interval's checks in one tenth: a burst would put all 1,000 there.
        self.assertLessEqual(max(tenths), 250, tenths)

    async def test_five_thousand_pipelined_lookups_on_one_connection(self):
        self.start()
        for port in (1, 2, 3):
            await api.register(reactor, self.endpoint, "busy", "127.0.0.1", port)
        client = await connectProtocol(self.endpoint, amp.AMP())
        self.addCleanup(client.transport.loseConnection)
        answers = await defer.gatherResults(
            [client.callRemote(Lookup, name="busy") for _ in range(5000)]
        )
        firsts = [answer["instances"][0]["port"] for answer in answers]
        self.assertEqual(len(answers), 5000)
        self.assertEqual(firsts[:6], [1, 2, 3, 1, 2, 3])
        self.assertEqual(sorted(set(firsts)), [1, 2, 3])
        audit = self.lookups("busy")
        self.assertEqual(len(audit), 5000)
        self.assertEqual(
            {(r["event"], r["answers"], r["peer"].split(":")[0]) for r in audit},
            {("lookup", 3, "127.0.0.1")},
        )

    async def test_client_cache_follows_changes_the_moment_they_happen(self):
        self.start(cache_ttl=3600)
        await api.register(reactor, self.endpoint, "web", "127.0.0.1", 9)
        names = api.NameClient(reactor, self.endpoint)
        self.addCleanup(names.close)
        self.assertEqual(await names.lookup("web"), [("127.0.0.1", 9, "")])
        with self.assertRaises(NotFound):
            await names.lookup("later")
        await api.register(reactor, self.endpoint, "web", "127.0.0.1", 10)
        await api.register(reactor, self.endpoint, "later", "::1", 11)
        self.assertTrue(await self.wait_for(lambda: names._watched["later"]))
        self.assertEqual(await names.lookup("later"), [("::1", 11, "")])
        answers = [await names.lookup("web") for _ in range(3)]  # rotated here
        self.assertEqual([a[0][1] for a in answers], [10, 9, 10])
        await api.deregister(reactor, self.endpoint, "web", "127.0.0.1", 9)
        self.assertTrue(await self.wait_for(lambda: len(names._watched["web"]) == 1))
        # An hour of cache_ttl, yet the instance that left is gone at once.
        self.assertEqual(await names.lookup("web"), [("127.0.0.1", 10, "")])
        self.assertEqual(self.lookups(), [])  # all of it from Watch and its pushes

    async def test_client_reconnects_and_fails_over(self):
        self.start()
        await api.register(reactor, self.endpoint, "web", "127.0.0.1", 9)
        dead = TCP4ClientEndpoint(reactor, "127.0.0.1", 1)
        names = api.NameClient(reactor, [dead, self.endpoint])
        self.addCleanup(names.close)
        self.assertEqual(await names.lookup("web"), [("127.0.0.1", 9, "")])
        await names.close()
        await api.register(reactor, self.endpoint, "web", "127.0.0.1", 8)
        self.assertEqual(len(await names.lookup("web")), 2)  # watched anew

    async def test_over_max_watches_the_client_caches_lookups_for_ttl(self):
        self.start(cache_ttl=5, max_watches=1)
        await api.register(reactor, self.endpoint, "cached", "127.0.0.1", 9)
        clock = Clock()
        names = api.NameClient(reactor, self.endpoint, negative_ttl=1, clock=clock)
        self.addCleanup(names.close)
        with self.assertRaises(NotFound):
            await names.lookup("first")  # watched: the one watch allowed
        self.assertEqual(await names.lookup("cached"), [("127.0.0.1", 9, "")])
        await names.lookup("cached")
        self.assertEqual(len(self.lookups("cached")), 1)
        clock.advance(5)
        await names.lookup("cached")
        self.assertEqual(len(self.lookups("cached")), 2)
        for _ in range(2):
            with self.assertRaises(NotFound):
                await names.lookup("missing")
        self.assertEqual(len(self.lookups("missing")), 1)
        clock.advance(1)
        with self.assertRaises(NotFound):
            await names.lookup("missing")
        self.assertEqual(len(self.lookups("missing")), 2)


class ClosingAMP(amp.AMP):
    """An AMP client whose `closed` fires once its connection is gone."""

    def __init__(self):
        super().__init__()
        self.closed = defer.Deferred()

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.closed.callback(None)


class MutualTLSAudit(TestCase):
    async def test_audit_events_name_the_client_certificate(self):
        directory = tmp_dir(self)
        pki = make_pki(directory)
        ports = start_suite(
            self,
            directory,
            tls_section(pki, client_ca=pki["ca"])
            + f"""
            [names]
            listen = []
            tls_listen = ["{LOCAL}"]
            store = "memory"
            lookup_audit = "{directory}/lookups.jsonl"
        """,
        )
        events = captured_events(self)
        read = lambda name: Path(pki[name]).read_text()  # noqa: E731
        options = ssl.optionsForClientTLS(
            "localhost",
            trustRoot=ssl.Certificate.loadPEM(read("ca")),
            clientCertificate=ssl.PrivateCertificate.loadPEM(
                read("client_crt") + read("client_key")
            ),
        )
        endpoint = wrapClientTLS(
            options, TCP4ClientEndpoint(reactor, "127.0.0.1", ports[f"names tls_listen {LOCAL}"])
        )
        client = await connectProtocol(endpoint, ClosingAMP())
        await client.callRemote(Register, name="svc", host="127.0.0.1", port=1)
        await client.callRemote(Lookup, name="svc")
        client.transport.loseConnection()
        await client.closed
        audit = [(e["names_event"], e["client"]) for e in events if "names_event" in e]
        self.assertEqual(audit, [("register", "CN=client")])
        flush_writers(self)
        lookups = [
            (r["event"], r["name"], r["client"]) for r in json_lines(directory / "lookups.jsonl")
        ]
        self.assertEqual(lookups, [("lookup", "svc", "CN=client")])
