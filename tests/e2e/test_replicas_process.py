"""
End to end: several `twistd … suite` name servers sharing one registry on
a real etcd (one member, or a three-member cluster), driven by
`suite-client`, `dig` and `curl`-like HTTP reads of /health.
"""

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request

from tests.e2e.process import ProcessTestCase, SuiteProcess
from tests.e2e.test_client_process import CLIENT, client
from tests.e2e.test_names_process import dig, free_udp_port
from tests.etcd import EtcdCluster

LOCAL = "tcp:0:interface=127.0.0.1"
LEADER_TTL = 3


def wait_until(predicate, timeout: float, what: str) -> float:
    """Seconds until PREDICATE() held (polled every 20 ms), or fail saying WHAT."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, f"{what}: not within {timeout} s"
        time.sleep(0.02)
    return time.monotonic() - started


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

    def replica(self, name, dns_port=None):
        """A name server on the shared etcd store, with /health, in a directory of its own."""
        (self.directory / name).mkdir()
        dns = f'dns_listen = ["udp:{dns_port}:interface=127.0.0.1"]' if dns_port else ""
        process = SuiteProcess(self.directory / name, f"""
            [names]
            listen = ["{LOCAL}"]
            {dns}
            store = "{self.etcd.store}"
            leader_ttl = {LEADER_TTL}
            etcd_timeout = 1
            ping_interval = 0.5
            ping_timeout = 0.5
            max_failures = 2
            lookup_audit = ""
            [metrics]
            listen = ["{LOCAL}"]
        """)
        self.addCleanup(process.stop)
        process.wait_ready(3 if dns_port else 2)
        process.address = f"127.0.0.1:{process.port(f'names {LOCAL}')}"
        assert process.wait_for(lambda: "from etcd" in process.output), process.output
        return process


class TwoReplicas(ReplicaProcessTestCase):
    def test_register_on_one_look_up_dig_and_watch_on_the_other(self):
        dns_port = free_udp_port()
        one, two = self.replica("one"), self.replica("two", dns_port)
        watcher = subprocess.Popen([CLIENT, "names", two.address, "watch", "echo"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert watcher.stdout.readline() == "echo: (no live instance)\n"
            registered = time.monotonic()
            assert client("names", one.address, "register", "echo", "127.0.0.1", 7001,
                          "--description", "line echo") == (0, "", "")
            assert watcher.stdout.readline() == "echo: 127.0.0.1:7001\n"
            assert time.monotonic() - registered < 1.0
            assert client("names", two.address, "lookup", "echo") == (
                0, "127.0.0.1:7001\tline echo\n", ""
            )
            assert dig(dns_port, "_echo._tcp.suite", "SRV", "+short") == [
                "1 1 7001 7f000001.addr.suite."
            ]
            assert client("names", two.address, "deregister", "echo", "127.0.0.1", 7001) == (
                0, "", ""
            )
            assert watcher.stdout.readline() == "echo: (no live instance)\n"
            assert client("names", one.address, "lookup", "echo")[0] == 1
        finally:
            watcher.send_signal(signal.SIGINT)
            _, err = watcher.communicate(timeout=10)
        assert "Traceback" not in err

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
        assert client("names", one.address, "register", "echo", "127.0.0.1", 7001)[0] == 0
        wait_until(lambda: client("names", two.address, "lookup", "echo")[0] == 0, 1, "copy")
        assert health(two) == (200, {"status": "ok", "services": {
            "names": {"status": "ok"}, "metrics": {"status": "ok"}}})

        self.etcd.stop("m0")
        assert client("names", two.address, "register", "web", "127.0.0.1", 7002) == (
            1, "", f"suite-client: UNAVAILABLE: registry store unavailable: etcd "
                   f"{self.etcd.endpoints[0]}: connection refused\n"
        )
        assert client("names", two.address, "lookup", "echo") == (0, "127.0.0.1:7001\n", "")
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
        assert client("names", two.address, "register", "web", "127.0.0.1", 7002)[0] == 0
        wait_until(lambda: client("names", one.address, "lookup", "web")[0] == 0, 1, "resync")
        assert two.output.count("etcd reached again") == 1, two.output


class ThreeMemberCluster(ReplicaProcessTestCase):
    members = 3

    def test_one_member_stopped_the_registry_keeps_working(self):
        one, two = self.replica("one"), self.replica("two")
        self.etcd.stop("m0")  # the member every replica talks to first
        assert client("names", one.address, "register", "echo", "127.0.0.1", 7001)[0] == 0
        wait_until(lambda: client("names", two.address, "lookup", "echo")[0] == 0, 3, "copy")
        assert client("names", two.address, "deregister", "echo", "127.0.0.1", 7001)[0] == 0
        wait_until(lambda: client("names", one.address, "lookup", "echo")[0] == 1, 3, "copy")
        self.etcd.start("m0")
        self.etcd.wait_healthy("m0")
        assert client("names", one.address, "register", "web", "127.0.0.1", 7002)[0] == 0
