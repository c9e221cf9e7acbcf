"""
End to end: the real `dig` asks `twistd … suite` Consul's DNS forms
(`NAME.service`, `TAG.NAME.service`, `_NAME._TAG`) and sees the tags,
the weights and the statuses of the instances.  The instances are written
into the SQLite store before the start, with the store's own code (AMP
registrations carry no weights nor checks): what a name server finds in
its store at start is what it serves.
"""

import shutil
import subprocess
import tempfile
from pathlib import Path

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from suite.names.registry import WARNING, Check, Instance
from suite.names.store import SqliteStore
from tests.e2e.process import SuiteProcess, free_ports, require
from tests.e2e.test_client_process import client

LOCAL = "tcp:0:interface=127.0.0.1"

INSTANCES = [
    # (ID, host, port, tags, weights, status of its one TTL check, or None: no check)
    ("web-1", "127.0.0.1", 8001, ("primary", "v1"), (10, 1), None),
    ("web-2", "127.0.0.2", 8002, ("V1",), (20, 1), None),
    ("web-3", "127.0.0.3", 8003, ("canary", "v2"), (10, 2), WARNING),
    ("web-4", "127.0.0.4", 8004, ("primary",), (10, 1), "critical"),
]


def dig(port: int, *arguments: str) -> list[str]:
    result = subprocess.run(
        ["dig", "@127.0.0.1", "-p", str(port), "+time=5", "+tries=1", *arguments],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result
    return result.stdout.splitlines()


def status(lines: list[str]) -> str:
    """dig's rcode: `NOERROR`, `NXDOMAIN` ..."""
    (header,) = [line for line in lines if "status: " in line]
    return header.split("status: ")[1].split(",")[0]


class DNSFormsProcessTests(TestCase):
    async def test_dig_asks_the_tag_forms_and_sees_weights(self):
        require("dig")
        directory = Path(tempfile.mkdtemp(prefix="suite-"))
        self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
        store = SqliteStore(str(directory / "names.sqlite"), reactor)
        for id_, host, port, tags, weights, check in INSTANCES:
            checks = [] if check is None else [Check(f"{id_}:ttl", "ttl", ttl=3600, status=check)]
            instance = Instance(
                "web", host, port, id=id_, tags=tags, weights=weights, checks=checks, pinged=False
            )
            await store.save(instance)
        await store.close()

        dns_port = free_ports({53})[53]
        udp, tcp = (f"{kind}:{dns_port}:interface=127.0.0.1" for kind in ("udp", "tcp"))
        suite = SuiteProcess(
            directory,
            f"""
            [names]
            listen = ["{LOCAL}"]
            dns_listen = ["{udp}", "{tcp}"]
            store = "sqlite:names.sqlite"
            ping_interval = 60
            """,
        )
        self.addCleanup(suite.stop)
        suite.wait_ready(3)

        # The tag forms: the instances with the tag, whatever its case, weights their own.
        self.assertEqual(
            sorted(dig(dns_port, "v1.web.service.suite", "SRV", "+short")),
            ["1 10 8001 7f000001.addr.suite.", "1 20 8002 7f000002.addr.suite."],
        )
        self.assertEqual(
            dig(dns_port, "_web._canary.suite", "SRV", "+short"),
            ["1 2 8003 7f000003.addr.suite."],  # warning: served with its warning weight
        )
        self.assertEqual(
            dig(dns_port, "primary.web.service.suite", "SRV", "+short", "+tcp"),
            ["1 10 8001 7f000001.addr.suite."],  # web-4 is critical: left out
        )
        self.assertEqual(dig(dns_port, "canary.web.service.suite", "A", "+short"), ["127.0.0.3"])
        lines = dig(dns_port, "v1.web.service.suite", "SRV", "+noall", "+additional")
        self.assertEqual(
            sorted(line.split() for line in lines),
            [
                ["7f000001.addr.suite.", "5", "IN", "A", "127.0.0.1"],
                ["7f000002.addr.suite.", "5", "IN", "A", "127.0.0.2"],
            ],
        )
        # Every live instance, untagged forms.
        every = sorted(
            [
                "1 10 8001 7f000001.addr.suite.",
                "1 20 8002 7f000002.addr.suite.",
                "1 2 8003 7f000003.addr.suite.",
            ]
        )
        self.assertEqual(sorted(dig(dns_port, "web.service.suite", "SRV", "+short")), every)
        self.assertEqual(sorted(dig(dns_port, "_web._tcp.suite", "SRV", "+short")), every)
        # A tag nothing live has: NXDOMAIN, as Consul.
        self.assertEqual(status(dig(dns_port, "v3.web.service.suite", "SRV")), "NXDOMAIN")
        self.assertEqual(status(dig(dns_port, "_web._v3.suite", "SRV")), "NXDOMAIN")

        # A deregistration over AMP is seen at once by the tag form asked before.
        names = f"127.0.0.1:{suite.port(f'names {LOCAL}')}"
        self.assertEqual(
            client("names", names, "deregister", "web", "127.0.0.1", "8001")[0], 0, suite.output
        )
        self.assertEqual(status(dig(dns_port, "primary.web.service.suite", "SRV")), "NXDOMAIN")
        self.assertEqual(
            dig(dns_port, "v1.web.service.suite", "SRV", "+short"),
            ["1 20 8002 7f000002.addr.suite."],
        )
