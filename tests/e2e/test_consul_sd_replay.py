"""
Prometheus' Consul service discovery, replayed: the exact requests its
`consul_sd_configs` makes (Debian's Prometheus is built without it), the
answers decoded as strictly as Go's encoding/json decodes them into the
consul api structs, and turned into targets as
prometheus/discovery/consul/consul.go does.
"""

import json
import threading
import urllib.request
from urllib.parse import quote

from tests.e2e.process import ProcessTestCase

# A distinct endpoint string, so that the HTTP listener's line names it alone.
HTTP = "tcp:0:interface=127.0.0.1:backlog=49"
WAIT = "120000ms"  # what Prometheus asks (its watchTimeout of 2 minutes)


class GoTypeError(AssertionError):
    """A value Go's encoding/json would refuse to decode into the consul api struct."""


def expect(value, kind, where):
    """VALUE decoded into a Go field of KIND: str, int (uint64/int), bool, dict, list."""
    ok = isinstance(value, kind) and not (isinstance(value, bool) and kind is int)
    if not ok:
        raise GoTypeError(f"{where}: {value!r} is not a {kind.__name__}")
    return value


def string_map(value, where):
    """A Go map[string]string: null decodes to nil, anything else must be strings."""
    if value is None:
        return {}
    for key, item in expect(value, dict, where).items():
        expect(item, str, f"{where}[{key}]")
    return value


def string_list(value, where):
    if value is None:
        return []
    for number, item in enumerate(expect(value, list, where)):
        expect(item, str, f"{where}[{number}]")
    return value


def decode_health_entry(entry, where):
    """api.ServiceEntry: Node, Service, Checks, each field of the type Go expects."""
    node, service = expect(entry["Node"], dict, where), expect(entry["Service"], dict, where)
    for key in ("ID", "Node", "Address", "Datacenter"):
        expect(node.get(key, ""), str, f"{where}.Node.{key}")
    string_map(node.get("TaggedAddresses"), f"{where}.Node.TaggedAddresses")
    string_map(node.get("Meta"), f"{where}.Node.Meta")
    for key in ("ID", "Service", "Address"):
        expect(service.get(key, ""), str, f"{where}.Service.{key}")
    expect(service.get("Port", 0), int, f"{where}.Service.Port")
    string_list(service.get("Tags"), f"{where}.Service.Tags")
    string_map(service.get("Meta"), f"{where}.Service.Meta")
    for key, address in (service.get("TaggedAddresses") or {}).items():
        expect(address, dict, f"{where}.Service.TaggedAddresses[{key}]")
        expect(address.get("Address", ""), str, f"{where}.Service.TaggedAddresses.Address")
        expect(address.get("Port", 0), int, f"{where}.Service.TaggedAddresses.Port")
    weights = expect(service.get("Weights", {}), dict, f"{where}.Service.Weights")
    for key in ("Passing", "Warning"):
        expect(weights.get(key, 0), int, f"{where}.Service.Weights.{key}")
    expect(service.get("EnableTagOverride", False), bool, f"{where}.Service.EnableTagOverride")
    checks = expect(entry.get("Checks") or [], list, f"{where}.Checks")
    for number, check in enumerate(checks):
        for key in ("Node", "CheckID", "Name", "Status", "Notes", "Output", "ServiceID"):
            expect(check.get(key, ""), str, f"{where}.Checks[{number}].{key}")
        expect(check.get("ServiceName", ""), str, f"{where}.Checks[{number}].ServiceName")
        string_list(check.get("ServiceTags"), f"{where}.Checks[{number}].ServiceTags")
    return node, service, checks


def aggregated_status(checks):
    """api.HealthChecks.AggregatedStatus of hashicorp/consul's api/health.go."""
    passing = warning = critical = maintenance = False
    for check in checks:
        if check["CheckID"] == "_node_maintenance" or check["CheckID"].startswith(
            "_service_maintenance:"
        ):
            maintenance = True
            continue
        status = check["Status"]
        passing |= status == "passing"
        warning |= status == "warning"
        critical |= status == "critical"
    if maintenance:
        return "maintenance"
    if critical:
        return "critical"
    if warning:
        return "warning"
    return "passing"


def join_host_port(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ReplayedConsulSD:
    """What one consul_sd_configs job does, request by request."""

    def __init__(self, base):
        self.base = base

    def get(self, path):
        """(decoded JSON, X-Consul-Index as Go's api parses it: uint64)."""
        with urllib.request.urlopen(self.base + path, timeout=150) as answer:
            index = answer.headers["X-Consul-Index"]
            assert answer.headers["X-Consul-KnownLeader"] == "true"
            assert int(answer.headers["X-Consul-LastContact"]) >= 0
            body = json.load(answer)
        parsed = int(index)
        assert 0 < parsed < 2**64, index
        return body, parsed

    def datacenter(self):
        info, _ = self.get("/v1/agent/self")
        for key, value in info.items():  # map[string]map[string]interface{}
            expect(value, dict, f"agent/self {key}")
        return expect(info["Config"]["Datacenter"], str, "Config.Datacenter")

    def services(self, index):
        query = f"index={index}&stale=&wait={WAIT}" if index else f"stale=&wait={WAIT}"
        services, new_index = self.get(f"/v1/catalog/services?{query}")
        for name, tags in expect(services, dict, "catalog/services").items():
            string_list(tags, f"catalog/services[{name}]")
        return services, new_index

    def service(self, name, tags, index):
        params = ([f"index={index}"] if index else []) + ["stale="]
        params += [f"tag={quote(tag)}" for tag in tags] + [f"wait={WAIT}"]
        entries, new_index = self.get(f"/v1/health/service/{name}?{'&'.join(params)}")
        targets = []
        for number, entry in enumerate(expect(entries, list, "health/service")):
            node, service, checks = decode_health_entry(entry, f"[{number}]")
            host = service["Address"] or node["Address"]
            labels = {
                "__address__": join_host_port(host, service["Port"]),
                "__meta_consul_address": node["Address"],
                "__meta_consul_node": node["Node"],
                "__meta_consul_tags": "," + ",".join(service.get("Tags") or []) + ",",
                "__meta_consul_service_address": service["Address"],
                "__meta_consul_service_port": str(service["Port"]),
                "__meta_consul_service_id": service["ID"],
                "__meta_consul_health": aggregated_status(checks),
            }
            for key, value in (service.get("Meta") or {}).items():
                labels[f"__meta_consul_service_metadata_{key}"] = value
            targets.append(labels)
        return targets, new_index


class ConsulSDReplayTests(ProcessTestCase):
    def setUp(self):
        super().setUp()
        self.suite = self.start_suite(
            f"""
            [names]
            listen = ["tcp:0:interface=127.0.0.1"]
            http_listen = ["{HTTP}"]
            store = "memory"
            lookup_audit = ""
            """,
            listeners=2,
        )
        port = self.suite.port(f"names http_listen {HTTP}")
        self.base = f"http://127.0.0.1:{port}"
        self.consul = ReplayedConsulSD(self.base)

    def put(self, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method="PUT")
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200, answer.status

    def register(self, service_id, port, tags, **more):
        body = {"ID": service_id, "Name": "web", "Address": "127.0.0.1", "Port": port}
        self.put("/v1/agent/service/register", {**body, "Tags": tags, **more})

    def test_targets_as_prometheus_makes_them(self):
        self.register("web-1", 8001, ["a", "b"], Meta={"version": "1.2"})
        self.register("web-2", 8002, ["a"])
        self.register(
            "web-3", 8003, ["b", "a", "canary"], Check={"TTL": "30s", "Status": "warning"}
        )
        self.assertEqual(self.consul.datacenter(), "dc1")
        services, index = self.consul.services(0)
        self.assertEqual(sorted(services), ["web"])
        self.assertEqual(sorted(services["web"]), ["a", "b", "canary"])
        targets, service_index = self.consul.service("web", ["a", "b"], 0)
        self.assertEqual(
            targets,
            [
                {
                    "__address__": "127.0.0.1:8001",
                    "__meta_consul_address": "127.0.0.1",
                    "__meta_consul_node": "127.0.0.1",
                    "__meta_consul_tags": ",a,b,",
                    "__meta_consul_service_address": "127.0.0.1",
                    "__meta_consul_service_port": "8001",
                    "__meta_consul_service_id": "web-1",
                    "__meta_consul_health": "passing",
                    "__meta_consul_service_metadata_version": "1.2",
                },
                {
                    "__address__": "127.0.0.1:8003",
                    "__meta_consul_address": "127.0.0.1",
                    "__meta_consul_node": "127.0.0.1",
                    "__meta_consul_tags": ",b,a,canary,",
                    "__meta_consul_service_address": "127.0.0.1",
                    "__meta_consul_service_port": "8003",
                    "__meta_consul_service_id": "web-3",
                    "__meta_consul_health": "warning",
                },
            ],
        )
        self.put("/v1/agent/service/maintenance/web-1?enable=true&reason=upgrade")
        targets, later = self.consul.service("web", ["a", "b"], service_index)
        self.assertGreater(later, service_index)
        self.assertEqual([t["__meta_consul_health"] for t in targets], ["maintenance", "warning"])
        self.assertGreaterEqual(self.consul.services(0)[1], index)

    def test_a_held_watch_wakes_on_a_change_with_a_higher_index(self):
        self.register("web-1", 8001, ["a"])
        services, index = self.consul.services(0)
        _, service_index = self.consul.service("web", ["a"], 0)
        answers = {}

        def watch(what, call):
            answers[what] = call()

        watchers = [
            threading.Thread(target=watch, args=("services", lambda: self.consul.services(index))),
            threading.Thread(
                target=watch,
                args=("service", lambda: self.consul.service("web", ["a"], service_index)),
            ),
        ]
        for thread in watchers:
            thread.start()
        self.register("db-1", 5432, [], Name="db")  # another name: the service watch sleeps on
        self.register("web-2", 8002, ["a"])
        for thread in watchers:
            thread.join(30)
            self.assertFalse(thread.is_alive(), "a held request was not woken by a change")
        services, new_index = answers["services"]
        self.assertEqual((sorted(services), new_index > index), (["db", "web"], True))
        targets, new_service_index = answers["service"]
        self.assertGreater(new_service_index, service_index)
        self.assertEqual([t["__meta_consul_service_id"] for t in targets], ["web-1", "web-2"])
