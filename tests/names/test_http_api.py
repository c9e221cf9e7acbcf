"""The registry over HTTP, on a real listener: Consul's paths, JSON, status codes and texts."""

import http.client
import json
import socket
import ssl
import time
from io import BytesIO

from twisted.internet import defer, reactor, task, threads
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, FileBodyProducer
from twisted.web.http_headers import Headers

from suite.foundation.credentials import resolve_token
from suite.names import consul_json
from suite.names.blocking import HeldReads
from suite.names.http_api import MAX_BODY, APIRoot, ConsulAPI, api_site
from suite.names.registry import Registry
from suite.names.server import NameServer
from suite.names.service import NamesSettings, ReadTokenKeys, preflight
from suite.names.silence import REPORT_GRACE, Silence
from suite.names.store import MemoryStore, StoreError
from tests.helpers import captured_log, make_pki, start_suite, tls_section, tmp_dir

TOKEN, READ_TOKEN = "write-secret", "read-secret"
MAINTENANCE = (
    "Maintenance mode is enabled for this service, but no reason was provided. "
    "This is a default message."
)


class FailingStore(MemoryStore):
    """A store whose writes fail, as a full disk's would."""

    def save(self, instance, *args, **kwargs):
        return defer.fail(StoreError("disk full"))


class HeldStore(MemoryStore):
    """A store whose writes wait until the test lets them through (`release`)."""

    def __init__(self):
        super().__init__()
        self.waiting = []

    def save(self, instance, *args, **kwargs):
        written = defer.Deferred()
        self.waiting.append(written)
        return written

    def release(self):
        for written in self.waiting:
            written.callback(self.next_index())
        self.waiting = []


class BrokenStore(MemoryStore):
    """A store whose writes fail as no store should: a bug."""

    def save(self, instance, *args, **kwargs):
        return defer.fail(RuntimeError("a bug in the store"))


class Collected(Protocol):
    """A response's body: `done` fires with it whole."""

    def __init__(self):
        self.chunks = []
        self.done = defer.Deferred()

    def dataReceived(self, data):
        self.chunks.append(data)

    def connectionLost(self, reason):
        self.done.callback(b"".join(self.chunks))


class Answer:
    def __init__(self, code, headers, body):
        self.code = code
        self.headers = headers
        self.body = body

    def header(self, name):
        values = self.headers.getRawHeaders(name)
        return None if values is None else values[0]

    @property
    def json(self):
        return json.loads(self.body)

    @property
    def text(self):
        return self.body.decode()

    @property
    def index(self):
        return int(self.header("X-Consul-Index"))


class APITestCase(TestCase):
    """An API on 127.0.0.1:0 over a memory store; held reads on a Clock the test advances."""

    token = ""
    read_token = ""
    max_held = 100
    silence = None  # where reports of who logged go (a Silence), if anywhere

    def setUp(self):
        self.start()

    def start(self, store=None):
        self.registry = Registry(100)
        self.server = NameServer(
            self.registry,
            MemoryStore() if store is None else store,
            self.token,
            cache_ttl=5,
            clock=Clock(),
            read_token=self.read_token,
        )
        self.clock = Clock()
        self.held = HeldReads(self.registry, self.clock, self.max_held, jitter=lambda: 1.0)
        api = ConsulAPI(self.server, self.held, "dc1", "node-1", "0.1.0", self.silence)
        settings = NamesSettings(idle_timeout=0)
        port = reactor.listenTCP(
            0, api_site(APIRoot(api), settings, reactor), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        self.base = f"http://127.0.0.1:{port.getHost().port}"
        self.agent = Agent(reactor)

    async def call(self, method, path, body=None, headers=None):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        producer = None if body is None else FileBodyProducer(BytesIO(body))
        response = await self.agent.request(
            method.encode(),
            (self.base + path).encode(),
            Headers({k: [v] for k, v in (headers or {}).items()}),
            producer,
        )
        collected = Collected()
        response.deliverBody(collected)
        return Answer(response.code, response.headers, await collected.done)

    async def get(self, path, **options):
        return await self.call("GET", path, **options)

    async def put(self, path, body=None, **options):
        return await self.call("PUT", path, body, **options)

    async def register(self, body, path="/v1/agent/service/register", **options):
        answer = await self.put(path, body, **options)
        self.assertEqual((answer.code, answer.body), (200, b""), answer.body)
        return answer

    def assertRefused(self, answer, code, text):
        self.assertEqual((answer.code, answer.text), (code, text))
        self.assertEqual(answer.header("Content-Type"), "text/plain; charset=utf-8")

    async def until(self, predicate, turns=500):
        """Let the reactor run until PREDICATE holds (bounded)."""
        for _ in range(turns):
            if predicate():
                return
            await task.deferLater(reactor, 0.01, lambda: None)
        self.fail("the condition never held")


WEB = {
    "name": "web",
    "id": "web-1",
    "address": "10.0.0.5",
    "port": 8080,
    "tags": ["v1", "prom"],
    "meta": {"version": "1.2", "description": "the front"},
    "check": {"ttl": "30s"},
}


class ReadTests(APITestCase):
    async def test_agent_self(self):
        answer = await self.get("/v1/agent/self")
        self.assertEqual(answer.code, 200)
        self.assertEqual(answer.header("Content-Type"), "application/json")
        found = answer.json
        self.assertEqual(found["Config"]["Datacenter"], "dc1")
        self.assertEqual(found["Config"]["NodeName"], "node-1")
        self.assertEqual(found["Config"]["Version"], "0.1.0")
        self.assertTrue(all(isinstance(value, dict) for value in found.values()))
        self.assertEqual(
            (found["Member"]["Addr"], found["Member"]["Port"]),
            ("127.0.0.1", int(self.base.rsplit(":", 1)[1])),
        )

    async def test_every_read_answers_consul_s_headers(self):
        await self.register(WEB)
        for path in [
            "/v1/agent/self",
            "/v1/catalog/services",
            "/v1/catalog/service/web",
            "/v1/health/service/web",
            "/v1/health/state/any",
            "/v1/suite/prometheus",
        ]:
            answer = await self.get(path)
            self.assertEqual(answer.code, 200, path)
            self.assertGreaterEqual(answer.index, 1, path)
            self.assertEqual(answer.header("X-Consul-KnownLeader"), "true", path)
            self.assertEqual(answer.header("X-Consul-LastContact"), "0", path)

    async def test_the_index_is_never_0(self):
        for path in [
            "/v1/catalog/services",
            "/v1/health/service/never",
            "/v1/health/service/Bad_Name",
        ]:
            self.assertEqual((await self.get(path)).index, 1, path)

    async def test_health_service_as_go_decodes_it(self):
        await self.register(WEB)
        answer = await self.get("/v1/health/service/web")
        (entry,) = answer.json
        index = self.registry.by_id("web-1").modify_index
        self.assertEqual(answer.index, index)
        self.assertEqual(
            entry,
            {
                "Node": {
                    "ID": "",
                    "Node": "10.0.0.5",
                    "Address": "10.0.0.5",
                    "Datacenter": "dc1",
                    "TaggedAddresses": {},
                    "Meta": {},
                    "CreateIndex": index,
                    "ModifyIndex": index,
                },
                "Service": {
                    "ID": "web-1",
                    "Service": "web",
                    "Tags": ["v1", "prom"],
                    "Address": "10.0.0.5",
                    "Port": 8080,
                    "Meta": {"version": "1.2", "description": "the front"},
                    "TaggedAddresses": {},
                    "Weights": {"Passing": 1, "Warning": 1},
                    "EnableTagOverride": False,
                    "CreateIndex": index,
                    "ModifyIndex": index,
                },
                "Checks": [
                    {
                        "Node": "10.0.0.5",
                        "CheckID": "service:web-1",
                        "Name": "Service 'web' check",
                        "Status": "critical",
                        "Notes": "",
                        "Output": "",
                        "ServiceID": "web-1",
                        "ServiceName": "web",
                        "ServiceTags": ["v1", "prom"],
                        "Type": "ttl",
                        "CreateIndex": index,
                        "ModifyIndex": index,
                    }
                ],
            },
        )

    async def test_catalog(self):
        await self.register(WEB)
        await self.register(
            {"name": "web", "id": "web-2", "address": "10.0.0.6", "port": 1, "tags": ["v2"]}
        )
        await self.register({"name": "db", "address": "10.0.0.7", "port": 5432})
        self.assertEqual(
            (await self.get("/v1/catalog/services")).json, {"db": [], "web": ["prom", "v1", "v2"]}
        )
        entries = (await self.get("/v1/catalog/service/web")).json
        self.assertEqual(
            [e["ServiceID"] for e in entries], ["web-1", "web-2"], "critical ones too"
        )
        first = entries[0]
        self.assertEqual(
            {
                k: first[k]
                for k in (
                    "Node",
                    "Address",
                    "Datacenter",
                    "ServiceName",
                    "ServiceAddress",
                    "ServicePort",
                )
            },
            {
                "Node": "10.0.0.5",
                "Address": "10.0.0.5",
                "Datacenter": "dc1",
                "ServiceName": "web",
                "ServiceAddress": "10.0.0.5",
                "ServicePort": 8080,
            },
        )
        self.assertEqual(first["ServiceTaggedAddresses"], {})
        self.assertEqual(first["ServiceWeights"], {"Passing": 1, "Warning": 1})
        self.assertEqual(first["ServiceMeta"], {"version": "1.2", "description": "the front"})
        tagged = (await self.get("/v1/catalog/service/web?tag=v1&tag=prom")).json
        self.assertEqual([e["ServiceID"] for e in tagged], ["web-1"])

    async def test_an_unknown_name_is_200_and_empty(self):
        for path in [
            "/v1/health/service/nothing",
            "/v1/health/service/Not_A_Name",
            "/v1/catalog/service/nothing",
        ]:
            answer = await self.get(path)
            self.assertEqual((answer.code, answer.json), (200, []), path)

    async def test_tags_must_all_match(self):
        await self.register(WEB)
        await self.register(
            {"name": "web", "id": "web-2", "address": "10.0.0.6", "port": 1, "tags": ["v1"]}
        )
        ids = lambda answer: [e["Service"]["ID"] for e in answer.json]  # noqa: E731
        self.assertEqual(ids(await self.get("/v1/health/service/web?tag=v1")), ["web-1", "web-2"])
        self.assertEqual(ids(await self.get("/v1/health/service/web?tag=v1&tag=prom")), ["web-1"])
        self.assertEqual(ids(await self.get("/v1/health/service/web?tag=v9")), [])

    async def test_passing_only(self):
        await self.register(dict(WEB, check={"ttl": "30s", "status": "passing"}))
        await self.register(
            {
                "name": "web",
                "id": "web-2",
                "address": "10.0.0.6",
                "port": 1,
                "check": {"ttl": "9s", "status": "warning"},
            }
        )
        await self.register({"name": "web", "id": "web-3", "address": "10.0.0.7", "port": 1})
        ids = lambda answer: [e["Service"]["ID"] for e in answer.json]  # noqa: E731
        everything = ["web-1", "web-2", "web-3"]
        for query, expected in [
            ("", everything),
            ("?passing", ["web-1", "web-3"]),
            ("?passing=1", ["web-1", "web-3"]),
            ("?passing=true", ["web-1", "web-3"]),
            ("?passing=false", everything),
            ("?stale=&dc=dc1&node-meta=rack:1", everything),
        ]:
            self.assertEqual(
                ids(await self.get("/v1/health/service/web" + query)), expected, query
            )
        self.assertRefused(
            await self.get("/v1/health/service/web?passing=maybe"),
            400,
            "Invalid value for ?passing",
        )

    async def test_another_datacenter(self):
        self.assertRefused(
            await self.get("/v1/health/service/web?dc=dc2"), 500, "No path to datacenter"
        )

    async def test_health_state(self):
        await self.register(dict(WEB, check={"ttl": "30s", "status": "passing"}))
        await self.register(
            {
                "name": "db",
                "address": "10.0.0.7",
                "port": 1,
                "checks": [{"ttl": "5s"}, {"ttl": "5s", "status": "warning"}],
            }
        )
        checks = lambda answer: sorted(c["CheckID"] for c in answer.json)  # noqa: E731
        self.assertEqual(
            checks(await self.get("/v1/health/state/any")),
            ["service:db:1", "service:db:2", "service:web-1"],
        )
        self.assertEqual(checks(await self.get("/v1/health/state/passing")), ["service:web-1"])
        self.assertEqual(checks(await self.get("/v1/health/state/warning")), ["service:db:2"])
        self.assertEqual(checks(await self.get("/v1/health/state/critical")), ["service:db:1"])
        self.assertRefused(await self.get("/v1/health/state/sick"), 400, "Unsupported state: sick")
        self.assertRefused(await self.get("/v1/health/state/"), 400, "Missing check state")

    async def test_prometheus_http_sd(self):
        empty = await self.get("/v1/suite/prometheus")
        self.assertEqual((empty.code, empty.body), (200, b"[]"))
        self.assertEqual(empty.header("Content-Type"), "application/json; charset=utf-8")
        await self.register(
            dict(
                WEB,
                check={"ttl": "30s", "status": "warning"},
                meta={"team-name": "x", "description": "d"},
            )
        )
        await self.register(
            {
                "name": "web",
                "id": "web-2",
                "address": "10.0.0.6",
                "port": 1,
                "check": {"ttl": "1s"},
            }
        )
        await self.register({"name": "db", "address": "fd00::7", "port": 5432})
        groups = (await self.get("/v1/suite/prometheus")).json
        self.assertEqual(
            groups,
            [
                {
                    "targets": ["[fd00::7]:5432"],
                    "labels": {
                        "__meta_suite_service": "db",
                        "__meta_suite_id": "db",
                        "__meta_suite_tags": ",,",
                        "__meta_suite_health": "passing",
                    },
                },
                {
                    "targets": ["10.0.0.5:8080"],
                    "labels": {
                        "__meta_suite_service": "web",
                        "__meta_suite_id": "web-1",
                        "__meta_suite_tags": ",v1,prom,",
                        "__meta_suite_health": "warning",
                        "__meta_suite_meta_team_name": "x",
                        "__meta_suite_meta_description": "d",
                    },
                },
            ],
            "critical web-2 left out",
        )
        services = lambda answer: [g["labels"]["__meta_suite_id"] for g in answer.json]  # noqa: E731
        self.assertEqual(services(await self.get("/v1/suite/prometheus?service=web")), ["web-1"])
        self.assertEqual(
            services(await self.get("/v1/suite/prometheus?service=web&service=db")),
            ["db", "web-1"],
        )
        self.assertEqual(services(await self.get("/v1/suite/prometheus?tag=prom")), ["web-1"])
        self.assertEqual(services(await self.get("/v1/suite/prometheus?tag=nope")), [])

    async def test_tags_match_whatever_their_case(self):
        """As Consul's serviceTagFilter and this registry's DNS compare them."""
        await self.register(
            dict(WEB, tags=["Primary", "v1"], check={"ttl": "30s", "status": "passing"})
        )
        for path in [
            "/v1/health/service/web?tag=primary",
            "/v1/catalog/service/web?tag=PRIMARY&tag=V1",
            "/v1/suite/prometheus?tag=primary&tag=primary",
        ]:
            self.assertEqual(len((await self.get(path)).json), 1, path)

    async def test_wrong_paths_and_methods(self):
        self.assertRefused(await self.get("/v1/agent/nothing"), 404, "Not found")
        self.assertRefused(await self.get("/elsewhere"), 404, "Not found")
        answer = await self.get("/v1/agent/service/register")
        self.assertRefused(answer, 405, "method GET not allowed")
        self.assertEqual(answer.header("Allow"), "PUT")
        self.assertRefused(await self.put("/v1/catalog/services"), 405, "method PUT not allowed")


class WriteTests(APITestCase):
    async def test_register_and_deregister(self):
        await self.register(WEB)
        instance = self.registry.by_id("web-1")
        self.assertEqual(
            (instance.name, instance.host, instance.port, instance.pinged),
            ("web", "10.0.0.5", 8080, False),
        )
        await self.register(dict(WEB, id="web-2"))
        answer = await self.put("/v1/agent/service/deregister/web-1")
        self.assertEqual((answer.code, answer.body), (200, b""))
        self.assertIsNone(self.registry.by_id("web-1"))
        self.assertRefused(
            await self.put("/v1/agent/service/deregister/web-1"),
            404,
            'Unknown service ID "web-1". '
            "Ensure that the service ID is passed, not the service name.",
        )

    async def test_the_address_defaults_to_the_caller_s(self):
        await self.register({"Name": "web", "Port": 80})
        self.assertEqual(self.registry.by_id("web").host, "127.0.0.1")

    async def test_registering_again_keeps_check_statuses_unless_replaced(self):
        await self.register(WEB)
        await self.put("/v1/agent/check/pass/service:web-1?note=fine")
        await self.register(dict(WEB, tags=["v2"]))
        check = self.registry.by_id("web-1").check("service:web-1")
        self.assertEqual((check.status, check.output), ("passing", "fine"))
        await self.register(
            dict(WEB, tags=["v3"]), "/v1/agent/service/register?replace-existing-checks"
        )
        check = self.registry.by_id("web-1").check("service:web-1")
        self.assertEqual((check.status, check.output), ("critical", ""))

    async def test_a_note_in_utf_8_is_kept_as_sent(self):
        # parse_qs of bytes raises on a %-escaped non-ASCII value: this was a 500.
        await self.register(WEB)
        answer = await self.put(
            "/v1/agent/check/warn/service:web-1?note=disque%20plein%20%E2%80%AE"
        )
        self.assertEqual(answer.code, 200)
        check = self.registry.by_id("web-1").check("service:web-1")
        self.assertEqual((check.status, check.output), ("warning", "disque plein \u202e"))

    async def test_what_the_registry_refuses_is_400_with_its_reason(self):
        answer = await self.put(
            "/v1/agent/service/register", {"Name": "Web", "Port": 1, "Address": "10.0.0.1"}
        )
        self.assertEqual(answer.code, 400)
        self.assertIn("name 'Web'", answer.text)
        self.assertRefused(
            await self.put("/v1/agent/service/register", {"Port": 1}), 400, "Missing service name"
        )
        self.assertRefused(
            await self.put(
                "/v1/agent/service/register",
                {"Name": "a", "Check": {"TTL": "1s", "Interval": "1s"}},
            ),
            400,
            "Invalid check: Interval and TTL cannot both be specified",
        )

    async def test_bodies(self):
        self.assertRefused(
            await self.put("/v1/agent/service/register", b""), 400, "Request decode failed: EOF"
        )
        answer = await self.put("/v1/agent/service/register", b"{not json")
        self.assertEqual(answer.code, 400)
        self.assertTrue(answer.text.startswith("Request decode failed: "), answer.text)
        deep = b"[" * 30000 + b"]" * 30000
        answer = await self.put("/v1/agent/service/register", deep)
        self.assertEqual(answer.code, 400)
        large = json.dumps({"Name": "a", "Notes": "x" * MAX_BODY}).encode()
        self.assertRefused(
            await self.put("/v1/agent/service/register", large),
            413,
            f"Request body too large: at most {MAX_BODY} bytes",
        )
        self.assertEqual(len(self.registry), 0)

    async def test_json_go_refuses(self):
        """Python's decoder takes NaN, Infinity and numbers beyond a float64; Go's refuses them."""
        for number, reason in [
            ("NaN", "invalid character 'N' looking for beginning of value"),
            ("Infinity", "invalid character 'I' looking for beginning of value"),
            ("-Infinity", "invalid character 'I' in numeric literal"),
            ("1e309", "json: cannot unmarshal number 1e309 into Go value of type float64"),
        ]:
            body = f'{{"Name": "a", "Address": "10.0.0.1", "Port": 1, "Extra": {number}}}'
            self.assertRefused(
                await self.put("/v1/agent/service/register", body.encode()),
                400,
                f"Request decode failed: {reason}",
            )
        self.assertEqual(len(self.registry), 0)

    async def test_a_duration_too_large_for_a_float_is_400(self):
        body = {"Name": "a", "Address": "10.0.0.1", "Port": 1, "Check": {"TTL": 10**400}}
        answer = await self.put("/v1/agent/service/register", body)
        self.assertRefused(
            answer, 400, f'Request decode failed: time: invalid duration "{"1" + "0" * 63}"'
        )

    async def test_a_check_id_of_another_instance(self):
        await self.register(dict(WEB, check={"ttl": "5s", "check_id": "beat"}))
        answer = await self.put(
            "/v1/agent/service/register",
            {
                "name": "db",
                "address": "10.0.0.1",
                "port": 1,
                "check": {"ttl": "5s", "check_id": "beat"},
            },
        )
        self.assertRefused(answer, 400, 'Invalid check: the check ID "beat" is service "web-1"\'s')

    async def test_a_check_id_another_instance_s_write_is_taking(self):
        """Checked at the write's turn: the first write holds the ID while it is stored."""
        store = HeldStore()
        self.start(store)
        check = {"ttl": "5s", "check_id": "beat"}
        first = defer.ensureDeferred(
            self.put("/v1/agent/service/register", dict(WEB, check=check))
        )
        await self.until(lambda: store.waiting)
        second = await self.put(
            "/v1/agent/service/register",
            {"name": "db", "address": "10.0.0.1", "port": 1, "check": check},
        )
        self.assertRefused(second, 400, 'Invalid check: the check ID "beat" is service "web-1"\'s')
        store.release()
        self.assertEqual((await first).code, 200)

    async def test_ttl_pass_warn_fail(self):
        await self.register(WEB)
        for verb, status in [("pass", "passing"), ("warn", "warning"), ("fail", "critical")]:
            answer = await self.put(f"/v1/agent/check/{verb}/service:web-1?note={verb}ed")
            self.assertEqual((answer.code, answer.body), (200, b""))
            check = self.registry.by_id("web-1").check("service:web-1")
            self.assertEqual((check.status, check.output), (status, f"{verb}ed"))
        self.assertIsNotNone(self.registry.last_heartbeat("service:web-1"))

    async def test_a_pass_that_changes_nothing_raises_no_index_but_restarts_the_ttl(self):
        await self.register(WEB)
        await self.put("/v1/agent/check/pass/service:web-1")
        index = self.registry.index
        self.server.clock.advance(5)
        await self.put("/v1/agent/check/pass/service:web-1")
        self.assertEqual(self.registry.index, index)
        self.assertEqual(
            self.registry.last_heartbeat("service:web-1"), self.server.clock.seconds()
        )

    async def test_check_update(self):
        await self.register(WEB)
        answer = await self.put(
            "/v1/agent/check/update/service:web-1", {"Status": "warning", "Output": "slow"}
        )
        self.assertEqual(answer.code, 200)
        check = self.registry.by_id("web-1").check("service:web-1")
        self.assertEqual((check.status, check.output), ("warning", "slow"))
        self.assertRefused(
            await self.put("/v1/agent/check/update/service:web-1", {"Status": "sick"}),
            400,
            "Invalid check status: 'sick'",
        )

    async def test_unknown_and_untimed_checks(self):
        await self.register(dict(WEB, check={"tcp": "10.0.0.5:8080", "interval": "10s"}))
        self.assertRefused(
            await self.put("/v1/agent/check/pass/nothing"),
            404,
            'Unknown check ID "nothing". Ensure that the check ID is passed, not the check name.',
        )
        self.assertRefused(
            await self.put("/v1/agent/check/pass/service:web-1"),
            500,
            'CheckID "service:web-1" does not have associated TTL',
        )

    async def test_maintenance(self):
        await self.register(dict(WEB, check={"ttl": "5s", "status": "passing"}))
        path = "/v1/agent/service/maintenance/web-1"
        self.assertRefused(await self.put(path), 400, "Missing value for enable")
        self.assertRefused(
            await self.put(path + "?enable=yes"), 400, 'Invalid value for enable: "yes"'
        )
        self.assertRefused(
            await self.put("/v1/agent/service/maintenance/nothing?enable=true"),
            404,
            'No service registered with ID "nothing"',
        )
        before = self.registry.index
        self.assertEqual((await self.put(path + "?enable=true&reason=deploying")).code, 200)
        self.assertGreater(self.registry.index, before)
        (entry,) = (await self.get("/v1/health/service/web")).json
        self.assertEqual(
            entry["Checks"][0],
            {
                "Node": "10.0.0.5",
                "CheckID": "_service_maintenance:web-1",
                "Name": "Service Maintenance Mode",
                "Status": "critical",
                "Notes": "deploying",
                "Output": "",
                "ServiceID": "web-1",
                "ServiceName": "web",
                "ServiceTags": ["v1", "prom"],
                "Type": "maintenance",
                "CreateIndex": entry["Service"]["CreateIndex"],
                "ModifyIndex": entry["Service"]["ModifyIndex"],
            },
        )
        self.assertEqual((await self.get("/v1/health/service/web?passing")).json, [])
        critical = [c["CheckID"] for c in (await self.get("/v1/health/state/critical")).json]
        self.assertEqual(critical, ["_service_maintenance:web-1"])
        self.assertEqual((await self.put(path + "?enable=false")).code, 200)
        self.assertEqual(
            [e["Service"]["ID"] for e in (await self.get("/v1/health/service/web?passing")).json],
            ["web-1"],
        )
        await self.put(path + "?enable=1")
        (entry,) = (await self.get("/v1/health/service/web")).json
        self.assertEqual(entry["Checks"][0]["Notes"], MAINTENANCE)

    async def test_a_store_that_cannot_write_is_500(self):
        self.start(FailingStore())
        answer = await self.put("/v1/agent/service/register", WEB)
        self.assertRefused(answer, 500, "registry store unavailable: disk full")


class WriteTokenTests(APITestCase):
    token = TOKEN

    async def test_writes_need_the_token(self):
        self.assertRefused(
            await self.put("/v1/agent/service/register", WEB), 403, "Permission denied"
        )
        self.assertRefused(
            await self.put("/v1/agent/service/register?token=guess", WEB), 403, "ACL not found"
        )
        await self.register(WEB, "/v1/agent/service/register?token=" + TOKEN)
        await self.register(dict(WEB, id="web-2"), headers={"X-Consul-Token": TOKEN})
        await self.register(dict(WEB, id="web-3"), headers={"Authorization": "Bearer " + TOKEN})
        self.assertEqual(len(self.registry), 3)
        for path in [
            "/v1/agent/service/deregister/web-1",
            "/v1/agent/check/pass/service:web-1",
            "/v1/agent/service/maintenance/web-1?enable=true",
        ]:
            self.assertRefused(await self.put(path), 403, "Permission denied")
            self.assertRefused(
                await self.put(path, headers={"X-Consul-Token": "guess"}), 403, "ACL not found"
            )
        self.assertRefused(
            await self.put("/v1/agent/service/deregister/nothing"), 403, "Permission denied"
        )
        self.assertEqual(len(self.registry), 3)

    async def test_the_query_token_comes_first(self):
        answer = await self.put(
            "/v1/agent/service/register?token=guess", WEB, headers={"X-Consul-Token": TOKEN}
        )
        self.assertRefused(answer, 403, "ACL not found")

    async def test_reads_stay_open_without_a_read_token(self):
        self.assertEqual((await self.get("/v1/catalog/services")).code, 200)


class HeardReportTests(APITestCase):
    """PUT /v1/suite/heard: a collector elsewhere tells who it heard, with the write token."""

    token = TOKEN

    def setUp(self):
        self.silence = Silence(Clock())
        self.silence.clock.advance(1000)
        self.watched = self.silence.watch(("web-1", "logs"), "web", "web1.example")
        super().setUp()

    async def report(self, body, token=TOKEN):
        return await self.put("/v1/suite/heard", body, headers={"X-Consul-Token": token})

    async def test_a_report_is_heard_and_unwatched_entries_are_dropped(self):
        answer = await self.report(
            [
                {"app": "web", "hostname": "WEB1.example", "address": "10.0.0.5", "last": 990},
                {"app": "db", "hostname": "db1", "address": "10.0.0.6", "last": 995},
                {"app": "web", "hostname": None, "address": "10.0.0.7", "last": 999.5},
            ]
        )
        self.assertEqual((answer.code, answer.body), (200, b""))
        self.assertEqual((self.watched.last, self.watched.since), (990, 990 + REPORT_GRACE))
        self.assertEqual(len(self.silence), 1)

    async def test_it_needs_the_write_token(self):
        entry = [{"app": "web", "hostname": "web1.example", "address": "10.0.0.5", "last": 990}]
        self.assertRefused(await self.put("/v1/suite/heard", entry), 403, "Permission denied")
        self.assertRefused(await self.report(entry, token="guess"), 403, "ACL not found")
        self.assertIsNone(self.watched.last)

    async def test_a_body_that_is_not_a_report_is_400_naming_what_is_wrong(self):
        good = {"app": "web", "hostname": "web1.example", "address": "10.0.0.5", "last": 990}
        for body, text in [
            (
                {"app": "web"},
                'Invalid report: a report is a JSON array of {"app", "hostname", '
                '"address", "last"}',
            ),
            (
                [good, {**good, "last": "soon"}],
                'Invalid report: entry 1: "last" must be a number (unix seconds)',
            ),
            ([{**good, "address": 5}], 'Invalid report: entry 0: "address" must be a string'),
        ]:
            self.assertRefused(await self.report(body), 400, text)
        answer = await self.put("/v1/suite/heard", b"[{", headers={"X-Consul-Token": TOKEN})
        self.assertEqual(answer.code, 400)
        self.assertIn("Request decode failed", answer.text)
        self.assertIsNone(self.watched.last)  # nothing of a refused report is taken
        self.assertEqual((await self.get("/v1/suite/heard")).code, 405)


class ReadTokenTests(APITestCase):
    token = TOKEN
    read_token = READ_TOKEN

    async def test_reads_need_a_token(self):
        for path in [
            "/v1/agent/self",
            "/v1/catalog/services",
            "/v1/health/service/web",
            "/v1/suite/prometheus",
        ]:
            self.assertRefused(await self.get(path), 403, "Permission denied")
            self.assertRefused(await self.get(path + "?token=guess"), 403, "ACL not found")
            self.assertEqual(
                (await self.get(path, headers={"Authorization": "Bearer " + READ_TOKEN})).code, 200
            )
            self.assertEqual((await self.get(path, headers={"X-Consul-Token": TOKEN})).code, 200)

    async def test_the_read_token_does_not_write(self):
        answer = await self.put(
            "/v1/agent/service/register", WEB, headers={"X-Consul-Token": READ_TOKEN}
        )
        self.assertRefused(answer, 403, "Permission denied")


class BlockingTests(APITestCase):
    max_held = 2

    async def test_held_until_a_registration(self):
        first = await self.get("/v1/health/service/web")
        held = defer.ensureDeferred(
            self.get(f"/v1/health/service/web?index={first.index}&wait=2s")
        )
        await self.until(lambda: self.held.held == 1)
        self.assertFalse(held.called)
        await self.register(WEB)
        self.clock.advance(0)
        answer = await held
        self.assertGreater(answer.index, first.index)
        self.assertEqual([e["Service"]["ID"] for e in answer.json], ["web-1"])

    async def test_answered_when_the_wait_is_over(self):
        first = await self.get("/v1/catalog/services")
        held = defer.ensureDeferred(self.get(f"/v1/catalog/services?index={first.index}&wait=16s"))
        await self.until(lambda: self.held.held == 1)
        self.clock.advance(16.9)
        self.assertFalse(held.called)
        self.clock.advance(0.1)
        answer = await held
        self.assertEqual((answer.code, answer.index, answer.json), (200, first.index, {}))

    async def test_agent_self_never_blocks(self):
        """Consul's /v1/agent/self is no blocking query: its index is not a reason to wait."""
        index = (await self.get("/v1/agent/self")).index
        answer = defer.ensureDeferred(self.get(f"/v1/agent/self?index={index}&wait=1m"))
        await self.until(lambda: answer.called)
        self.assertEqual((await answer).code, 200)
        self.assertEqual(self.held.held, 0)
        self.assertEqual((await self.get("/v1/agent/self?index=x&wait=soon")).code, 200)

    async def test_a_lower_index_answers_at_once(self):
        await self.register(WEB)
        answer = await self.get("/v1/health/service/web?index=1&wait=10m")
        self.assertEqual(len(answer.json), 1)
        self.assertEqual(self.held.held, 0)

    async def test_bad_values(self):
        self.assertRefused(await self.get("/v1/catalog/services?index=x"), 400, "Invalid index")
        self.assertRefused(
            await self.get("/v1/health/service/web?index=" + "1" * 5000), 400, "Invalid index"
        )
        self.assertRefused(
            await self.get("/v1/catalog/services?index=1&wait=soon"), 400, "Invalid wait time"
        )

    async def test_beyond_max_held_is_429_and_a_lost_connection_lets_go(self):
        sockets = []
        for _ in range(2):
            sock = await threads.deferToThread(
                self.raw_request, "/v1/catalog/services?index=1&wait=1m"
            )
            sockets.append(sock)
        await self.until(lambda: self.held.held == 2)
        answer = await self.get("/v1/catalog/services?index=1")
        self.assertEqual(answer.code, 429)
        self.assertIn("max_blocking_queries", answer.text)
        for sock in sockets:
            sock.close()
        await self.until(lambda: self.held.held == 0)

    def raw_request(self, path):
        sock = socket.create_connection(("127.0.0.1", int(self.base.rsplit(":", 1)[1])), timeout=5)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        return sock


class ServedBySuite(TestCase):
    """The [names] keys: http_listen, http_tls_listen, read_token, datacenter."""

    async def test_plain_and_tls_listeners(self):
        directory = tmp_dir(self)
        pki = make_pki(directory)
        local = "tcp:0:interface=127.0.0.1"
        ports = start_suite(
            self,
            directory,
            f"""
            [names]
            listen = ["{local}"]
            http_listen = ["{local}"]
            http_tls_listen = ["{local}"]
            store = "memory"
            lookup_audit = ""
            datacenter = "east-1"
            read_token = "{READ_TOKEN}"
            {tls_section(pki)}
            """,
        )
        plain, encrypted = (
            ports[f"names http_listen {local}"],
            ports[f"names http_tls_listen {local}"],
        )
        context = ssl.create_default_context(cafile=str(pki["ca"]))

        def fetch(port, context=None, token=READ_TOKEN):
            if context is None:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            else:
                connection = http.client.HTTPSConnection(
                    "127.0.0.1", port, timeout=5, context=context
                )
            try:
                connection.request("GET", "/v1/agent/self", headers={"X-Consul-Token": token})
                response = connection.getresponse()
                return response.status, response.read()
            finally:
                connection.close()

        status, body = await threads.deferToThread(fetch, plain)
        self.assertEqual((status, json.loads(body)["Config"]["Datacenter"]), (200, "east-1"))
        status, body = await threads.deferToThread(fetch, encrypted, context)
        self.assertEqual(status, 200)
        status, body = await threads.deferToThread(fetch, plain, None, "")
        self.assertEqual((status, body), (403, b"Permission denied"))

    async def test_no_access_log_and_the_connection_limits_of_names(self):
        directory = tmp_dir(self)
        local = "tcp:0:interface=127.0.0.1"
        ports = start_suite(
            self,
            directory,
            f"""
            [names]
            listen = ["{local}"]
            http_listen = ["{local}"]
            store = "memory"
            lookup_audit = ""
            max_connections_per_source = 2
            """,
        )
        port = ports[f"names http_listen {local}"]
        lines = captured_log(self)

        def over_the_limit():
            held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
            try:
                third = socket.create_connection(("127.0.0.1", port), timeout=5)
                try:
                    third.sendall(b"GET /v1/agent/self HTTP/1.1\r\nHost: x\r\n\r\n")
                    refused = third.recv(100)  # closed unanswered: b""
                except ConnectionError:  # or reset, the request unread
                    refused = b""
                finally:
                    third.close()
            finally:
                for connection in held:
                    connection.close()
            for _ in range(100):  # until the server has seen the two close
                answered = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                try:
                    answered.request("GET", "/v1/catalog/services?token=not-logged")
                    return refused, answered.getresponse().status
                except ConnectionError:
                    time.sleep(0.05)
                finally:
                    answered.close()
            return refused, None

        refused, status = await threads.deferToThread(over_the_limit)
        self.assertEqual((refused, status), (b"", 200))
        self.assertEqual([line for line in lines if "/v1/" in line or "not-logged" in line], [])
        self.assertTrue(any("max_connections_per_source" in line for line in lines), lines)


class ReadTokenKeyTests(SynchronousTestCase):
    def test_from_a_file(self):
        path = tmp_dir(self) / "read-token"
        path.write_text(READ_TOKEN + "\n")
        settings = NamesSettings(read_token_file=str(path), store="memory")
        self.assertEqual(resolve_token(ReadTokenKeys(settings)), READ_TOKEN)
        self.assertEqual(list(preflight(settings)), [])

    def test_a_file_it_cannot_read_is_named(self):
        settings = NamesSettings(read_token_file="/nonexistent/token", store="memory")
        (problem,) = preflight(settings)
        self.assertIn('read_token_file = "/nonexistent/token": cannot read', str(problem))


class SharedAnswerTests(APITestCase):
    """Reads held by the same query share one render per change."""

    async def test_one_render_per_distinct_query(self):
        await self.register(WEB)
        index = self.registry.name_index("web")
        rendered = []
        health_entry = consul_json.health_entry

        def counted(instance, datacenter):
            rendered.append(instance.id)
            return health_entry(instance, datacenter)

        self.patch(consul_json, "health_entry", counted)
        same = [
            defer.ensureDeferred(self.get(f"/v1/health/service/web?index={index}&wait=1m"))
            for _ in range(5)
        ]
        tagged = defer.ensureDeferred(
            self.get(f"/v1/health/service/web?index={index}&tag=prom&wait=1m")
        )
        await self.until(lambda: self.held.held == 6)
        await self.register(dict(WEB, tags=["prom", "v2"]))
        self.clock.advance(0)
        answers = [await read for read in [*same, tagged]]
        self.assertEqual(rendered, ["web-1", "web-1"], "one render for the five, one for the tag")
        self.assertEqual({answer.body for answer in answers[:5]}, {answers[0].body})
        self.assertEqual({answer.index for answer in answers}, {index + 1})
        self.assertEqual(answers[5].json[0]["Service"]["Tags"], ["prom", "v2"])


class UnexpectedErrorTests(APITestCase):
    """A bug is a 500 `internal error` and one log line, not a page and a traceback per request."""

    def setUp(self):
        super().setUp()
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def broken(self):
        """health_entry raises from now on; how many times it was called."""
        calls = []

        def health_entry(instance, datacenter):
            calls.append(instance.id)
            raise RuntimeError("a bug")

        self.patch(consul_json, "health_entry", health_entry)
        return calls

    def assertLoggedOnce(self, *texts):
        lines = [e for e in self.events if e.get("flood_kind") == "failed HTTP requests"]
        self.assertEqual(len(lines), 1)
        for text in texts:
            self.assertIn(text, formatEvent(lines[0]))
        self.assertFalse([e for e in self.events if "log_failure" in e], "no traceback")

    async def test_a_failing_read(self):
        await self.register(WEB)
        self.broken()
        for _ in range(3):
            self.assertRefused(await self.get("/v1/health/service/web"), 500, "internal error")
        self.assertLoggedOnce(
            "HTTP GET /v1/health/service/web from 127.0.0.1", "RuntimeError: a bug"
        )
        self.server.clock.advance(10)
        (summary,) = [e for e in self.events if e.get("flood_count")]
        self.assertEqual(summary["flood_count"], 2)

    async def test_a_held_read_whose_render_fails_is_answered_and_let_go(self):
        await self.register(WEB)
        index = self.registry.name_index("web")
        held = [
            defer.ensureDeferred(self.get(f"/v1/health/service/web?index={index}&wait=1m"))
            for _ in range(2)
        ]
        await self.until(lambda: self.held.held == 2)
        calls = self.broken()
        await self.register(dict(WEB, port=8081))
        self.clock.advance(0)
        await self.until(lambda: all(read.called for read in held))
        for read in held:
            self.assertRefused(await read, 500, "internal error")
        self.assertEqual((self.held.held, calls), (0, ["web-1"]))
        self.assertLoggedOnce("RuntimeError: a bug")

    async def test_a_failing_write(self):
        self.start(BrokenStore())
        self.assertRefused(
            await self.put("/v1/agent/service/register", WEB), 500, "internal error"
        )
        self.assertLoggedOnce(
            "HTTP PUT /v1/agent/service/register from 127.0.0.1",
            "RuntimeError: a bug in the store",
        )
