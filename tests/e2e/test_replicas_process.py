"""
End to end: several `twistd … suite` name servers sharing one registry on
a real etcd (one member, or a three-member cluster), driven by
`suite-client`, raw AMP calls, `dig` and `curl`-like HTTP reads of /health.
"""

import json
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import quote

from twisted.protocols import amp

from suite.contracts.names import Lookup, Register
from suite.names.etcd import decode, encode
from tests.e2e.process import ProcessTestCase, SuiteProcess, busy_port, popen
from tests.e2e.test_client_process import CLIENT, client
from tests.e2e.test_names_process import dig, free_udp_port
from tests.etcd import EtcdCluster

LOCAL = "tcp:0:interface=127.0.0.1"
LEADER_TTL = 3


HTTP = "tcp:0:interface=127.0.0.1:backlog=49"  # its own text: its listening line names it


def http_get(base: str, path: str) -> tuple[object, int]:
    """The JSON answer to GET PATH and its X-Consul-Index."""
    with urllib.request.urlopen(base + path, timeout=30) as answer:
        return json.load(answer), int(answer.headers["X-Consul-Index"])


def http_put(base: str, path: str, body: object = None) -> None:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method="PUT")
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200, answer.status


def wait_until(predicate, timeout: float, what: str) -> float:
    """Seconds until PREDICATE() held (polled every 20 ms), or fail saying WHAT."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, f"{what}: not within {timeout} s"
        time.sleep(0.02)
    return time.monotonic() - started


def amp_call(address: str, command: type[amp.Command], **arguments) -> dict:
    """
    COMMAND with ARGUMENTS over a connection of its own to ADDRESS, as any
    AMP client sends it: the answer as the contract reads it, or the error
    box ({"_error_code": …, …}).
    """
    host, port = address.rsplit(":", 1)
    box = command.makeArguments(arguments, None)
    box[b"_command"], box[b"_ask"] = command.commandName, b"1"
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(box.serialize())
        data, boxes = b"", []
        for _ in range(100):  # one box, in as many reads as it takes
            data += sock.recv(65536)
            boxes = amp.parseString(data)
            if boxes:
                break
    [answer] = boxes
    if b"_error" in answer:
        return {key.decode(): value.decode() for key, value in answer.items()}
    return command.parseResponse(answer, None)


def etcd_key(etcd: EtcdCluster, key: str) -> dict | None:
    """A key under the replicas' prefix (`/suite/names/`) as etcd holds it now, None if absent."""
    found = etcd.call("/v3/kv/range", {"key": encode("/suite/names/" + key)}).get("kvs", [])
    return found[0] if found else None


def health(process) -> tuple[int, dict]:
    url = f"http://127.0.0.1:{process.port(f'metrics {LOCAL}')}/health"
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as answer:
        return answer.code, json.load(answer)


class ReplicaProcessTestCase(ProcessTestCase):
    members = 1

    def setUp(self):
        super().setUp()
        self.etcd = EtcdCluster(self.directory, self.members)
        self.addCleanup(self.etcd.stop_all)

    def replica(self, name, dns_port=None, store=None, echo=False):
        """
        A name server on the shared etcd store (or STORE), with /health, in a
        directory of its own; once it read the registry, unless given a STORE.
        """
        (self.directory / name).mkdir()
        dns = f'dns_listen = ["udp:{dns_port}:interface=127.0.0.1"]' if dns_port else ""
        process = SuiteProcess(
            self.directory / name,
            f"""
            [names]
            listen = ["{LOCAL}"]
            http_listen = ["{HTTP}"]
            {dns}
            store = "{store or self.etcd.store}"
            leader_ttl = {LEADER_TTL}
            etcd_timeout = 1
            ping_interval = 0.5
            ping_timeout = 0.5
            max_failures = 2
            lookup_audit = ""
            [metrics]
            listen = ["{LOCAL}"]
            {f'[echo]{chr(10)}listen = ["{LOCAL}"]' if echo else ""}
        """,
        )
        self.addCleanup(process.stop)
        process.wait_ready(3 + bool(dns_port) + echo)
        process.address = f"127.0.0.1:{process.port(f'names {LOCAL}')}"
        process.http = f"http://127.0.0.1:{process.port(f'names http_listen {HTTP}')}"
        if store is None:
            assert process.wait_for(lambda: "from etcd" in process.output), process.output
        return process


class TwoReplicas(ReplicaProcessTestCase):
    def test_register_on_one_look_up_dig_and_watch_on_the_other(self):
        dns_port = free_udp_port()
        one, two = self.replica("one"), self.replica("two", dns_port)
        live = one.port(f"names {LOCAL}")  # health-checked instances must answer
        watcher = popen(
            [CLIENT, "names", two.address, "watch", "echo"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert watcher.stdout.readline() == "echo: (no live instance)\n"
            registered = time.monotonic()
            assert client(
                "names",
                one.address,
                "register",
                "echo",
                "127.0.0.1",
                live,
                "--description",
                "line echo",
            ) == (0, "", "")
            assert watcher.stdout.readline() == f"echo: 127.0.0.1:{live}\n"
            seen = time.monotonic() - registered
            print(f"suite-client register on one to Changed from the other: {seen:.3f} s")
            assert seen < 1.0
            assert client("names", two.address, "lookup", "echo") == (
                0,
                f"127.0.0.1:{live}\tline echo\n",
                "",
            )
            assert dig(dns_port, "_echo._tcp.suite", "SRV", "+short") == [
                f"1 1 {live} 7f000001.addr.suite."
            ]
            assert client("names", two.address, "deregister", "echo", "127.0.0.1", live) == (
                0,
                "",
                "",
            )
            assert watcher.stdout.readline() == "echo: (no live instance)\n"
            assert client("names", one.address, "lookup", "echo")[0] == 1
        finally:
            watcher.send_signal(signal.SIGINT)
            _, err = watcher.communicate(timeout=10)
        assert (watcher.returncode, err) == (130, "suite-client: interrupted\n")

    def test_an_amp_registration_is_the_same_on_every_replica_and_in_etcd(self):
        one, two = self.replica("one"), self.replica("two")
        live = one.port(f"names {LOCAL}")  # health-checked instances must answer
        meta = [{"key": "team", "value": "core"}, {"key": "version", "value": "1.2"}]
        registered = amp_call(
            two.address,
            Register,
            name="web",
            host="127.0.0.1",
            port=live,
            description="front door",
            id="web/1",
            tags=["v1", "prom"],
            meta=meta,
        )
        assert registered == {}, registered
        served = {
            "host": "127.0.0.1",
            "port": live,
            "description": "front door",
            "id": "web/1",
            "tags": ["v1", "prom"],
            "meta": meta,
            "status": "passing",
        }
        for replica in (two, one):
            wait_until(
                lambda replica=replica: (
                    amp_call(replica.address, Lookup, name="web").get("instances") == [served]
                ),
                1,
                f"the instance on {replica.directory.name}",
            )
        stored = etcd_key(self.etcd, "services/" + quote("web/1", safe=""))
        assert json.loads(decode(stored["value"])) == {
            "id": "web/1",
            "name": "web",
            "host": "127.0.0.1",
            "port": live,
            "description": "front door",
            "addresses": ["127.0.0.1"],
            "source": "127.0.0.1",
            "tags": ["v1", "prom"],
            "meta": {"team": "core", "version": "1.2"},
            "weights": [1, 1],
            "checks": [],
            "maintenance": None,
            "pinged": True,
        }
        assert stored["version"] == "1"  # written once: pinged and passing, nothing changed
        assert etcd_key(self.etcd, "names/web")["mod_revision"] == stored["mod_revision"]

    def test_replicas_agree_on_every_field_and_index_over_http(self):
        one, two = self.replica("one"), self.replica("two")
        body = {
            "Name": "web",
            "ID": "web-1",
            "Address": "127.0.0.1",
            "Port": 8080,
            "Tags": ["v1"],
            "Meta": {"team": "core"},
            "Weights": {"Passing": 10, "Warning": 2},
            "Check": {"TTL": "60s", "Status": "warning"},
        }
        held = {}
        _, index = http_get(two.http, "/v1/health/service/web")
        waiter = threading.Thread(
            target=lambda: held.update(
                answer=http_get(two.http, f"/v1/health/service/web?index={index}&wait=20s")
            )
        )
        waiter.start()
        http_put(one.http, "/v1/agent/service/register", body)
        waiter.join(15)
        self.assertFalse(waiter.is_alive(), "the held read on the other replica was not woken")
        http_put(two.http, "/v1/agent/check/pass/service:web-1?note=ready")
        http_put(one.http, "/v1/agent/service/maintenance/web-1?enable=true&reason=deploy")
        stored = etcd_key(self.etcd, "services/web-1")
        name_key = etcd_key(self.etcd, "names/web")

        def agree():
            answers = [http_get(r.http, "/v1/health/service/web") for r in (one, two)]
            return answers[0] == answers[1] and answers[0][1] == int(name_key["mod_revision"])

        wait_until(agree, 5, "both replicas serving etcd's record and index")
        (entry,), index = http_get(one.http, "/v1/health/service/web")
        service = entry["Service"]
        self.assertEqual(
            (service["CreateIndex"], service["ModifyIndex"]),
            (int(stored["create_revision"]), int(stored["mod_revision"])),
        )
        self.assertEqual(
            [(c["CheckID"], c["Status"], c["Output"], c["Notes"]) for c in entry["Checks"]],
            [
                ("_service_maintenance:web-1", "critical", "", "deploy"),
                ("service:web-1", "passing", "ready", ""),
            ],
        )
        self.assertEqual(
            (service["Tags"], service["Meta"], service["Weights"]),
            (["v1"], {"team": "core"}, {"Passing": 10, "Warning": 2}),
        )
        self.assertEqual(
            held["answer"][1], int(etcd_key(self.etcd, "names/web")["create_revision"])
        )

    def test_keys_of_the_previous_layout_move_once_when_replicas_start_together(self):
        listening = []  # the instances answer the leader's pings: none is evicted meanwhile
        for number in range(60):
            sock = socket.create_server(("127.0.0.1", 0))
            self.addCleanup(sock.close)
            port = sock.getsockname()[1]
            listening.append(port)
            value = {"description": f"old {number}"}
            if number % 2:  # the later of the previous version's values
                value.update(addresses=["127.0.0.1"], source="192.0.2.7")
            key = f"/suite/names/instances/old/127.0.0.1/{port}"
            self.etcd.call("/v3/kv/put", {"key": encode(key), "value": encode(json.dumps(value))})
        one, two = self.replica("one"), self.replica("two")

        def moved() -> list[int]:
            lines = one.output.splitlines() + two.output.splitlines()
            found = (re.search(r"migrated (\d+) instances in etcd", line) for line in lines)
            return [int(match[1]) for match in found if match]

        wait_until(lambda: sum(moved()) == 60, 5, "the move")
        assert len(moved()) <= 2, moved()
        for number, port in enumerate(listening):
            assert etcd_key(self.etcd, f"instances/old/127.0.0.1/{port}") is None
            stored = etcd_key(self.etcd, "services/" + quote(f"old@127.0.0.1:{port}", safe=""))
            record = json.loads(decode(stored["value"]))
            assert stored["version"] == "1", stored  # moved once
            assert (record["description"], record["source"]) == (
                f"old {number}",
                "192.0.2.7" if number % 2 else "",
            )
        for replica in (one, two):
            answer = amp_call(replica.address, Lookup, name="old")
            assert sorted(i["port"] for i in answer["instances"]) == sorted(listening), answer

    def test_a_name_server_that_never_reached_etcd_passes_clients_on(self):
        good = self.replica("good", echo=True)
        echo_port = good.port(f"echo {LOCAL}")
        assert client("names", good.address, "register", "echo", "127.0.0.1", echo_port)[0] == 0
        with busy_port() as dead:  # listening, never answering HTTP: etcd_timeout runs out
            lonely = self.replica("lonely", store=f"etcd:http://127.0.0.1:{dead}")
            assert client("names", lonely.address, "lookup", "echo") == (
                1,
                "",
                "suite-client: UNAVAILABLE: the registry has not been read from etcd yet\n",
            )
            assert client("echo", "--lookup", f"{lonely.address},{good.address}", "hi") == (
                0,
                "You said: hi\n",
                "",
            )
            status, report = health(lonely)
            assert (status, report["status"]) == (200, "degraded"), report

    def test_the_leader_killed_another_takes_over_and_evicts(self):
        one, two = self.replica("one"), self.replica("two")
        leads = "now leads the health checks"
        wait_until(lambda: leads in one.output + two.output, 10, "a leader")
        leader, follower = (one, two) if leads in one.output else (two, one)
        assert leads not in follower.output
        leader.process.send_signal(signal.SIGKILL)  # no lease revoked: etcd must time it out
        killed = time.monotonic()
        leader.process.wait(10)
        takeover = wait_until(lambda: leads in follower.output, LEADER_TTL + 2, "takeover")
        print(f"takeover after the leader was killed: {takeover:.2f} s")
        assert takeover < LEADER_TTL
        # a dead instance registered now is evicted by the new leader
        assert client("names", follower.address, "register", "gone", "127.0.0.1", 9)[0] == 0
        wait_until(lambda: "evict gone 127.0.0.1:9" in follower.output, 5, "eviction")
        assert client("names", follower.address, "lookup", "gone")[0] == 1
        print(f"kill to eviction by the new leader: {time.monotonic() - killed:.2f} s")

    def test_etcd_stopped_registrations_unavailable_lookups_answered_then_recovery(self):
        one, two = self.replica("one"), self.replica("two")
        live, other_live = one.port(f"names {LOCAL}"), two.port(f"names {LOCAL}")
        assert client("names", one.address, "register", "echo", "127.0.0.1", live)[0] == 0
        wait_until(lambda: client("names", two.address, "lookup", "echo")[0] == 0, 1, "copy")
        assert health(two) == (
            200,
            {"status": "ok", "services": {"names": {"status": "ok"}, "metrics": {"status": "ok"}}},
        )

        self.etcd.stop("m0")
        assert client("names", two.address, "register", "web", "127.0.0.1", other_live) == (
            1,
            "",
            f"suite-client: UNAVAILABLE: registry store unavailable: etcd "
            f"{self.etcd.endpoints[0]}: connection refused\n",
        )
        assert client("names", two.address, "lookup", "echo") == (0, f"127.0.0.1:{live}\n", "")
        status, report = health(two)
        assert (status, report["status"]) == (200, "degraded"), report
        assert "etcd unreachable" in report["services"]["names"]["problems"][0]
        time.sleep(2)  # reconnection attempts meanwhile: still one line for the outage
        assert two.output.count("etcd unreachable") == 1, two.output

        restarted = time.monotonic()
        self.etcd.start("m0")
        self.etcd.wait_healthy("m0")
        wait_until(lambda: health(two)[1]["status"] == "ok", 10, "recovery")
        print(f"etcd started to replica recovered: {time.monotonic() - restarted:.2f} s")
        assert client("names", two.address, "register", "web", "127.0.0.1", other_live)[0] == 0
        wait_until(lambda: client("names", one.address, "lookup", "web")[0] == 0, 1, "resync")
        assert two.output.count("etcd reached again") == 1, two.output


class ThreeMemberCluster(ReplicaProcessTestCase):
    members = 3

    def test_one_member_stopped_the_registry_keeps_working(self):
        one, two = self.replica("one"), self.replica("two")
        live = one.port(f"names {LOCAL}")
        self.etcd.stop("m0")  # the member every replica talks to first
        assert client("names", one.address, "register", "echo", "127.0.0.1", live)[0] == 0
        wait_until(lambda: client("names", two.address, "lookup", "echo")[0] == 0, 3, "copy")
        assert client("names", two.address, "deregister", "echo", "127.0.0.1", live)[0] == 0
        wait_until(lambda: client("names", one.address, "lookup", "echo")[0] == 1, 3, "copy")
        self.etcd.start("m0")
        self.etcd.wait_healthy("m0")
        assert client("names", one.address, "register", "web", "127.0.0.1", live)[0] == 0
