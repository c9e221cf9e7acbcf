"""[announce]: the suite registers its listeners with name servers, keeps them there, and leaves."""

import shutil
import socket
import tempfile

from twisted.internet import reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial.unittest import TestCase

from suite.client import api
from suite.names.commands import NotFound
from tests.helpers import captured_log, make_pki, start_suite, tls_section, tmp_dir

LOCAL = "tcp:0:interface=127.0.0.1"


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AnnounceTests(TestCase):
    def name_server(self, extra="", port=0):
        listen = f"tcp:{port}:interface=127.0.0.1"
        ports = start_suite(self, tmp_dir(self), f"""
            [names]
            listen = ["{listen}"]
            store = "memory"
            lookup_audit = ""
            {extra}
        """)
        number = ports[f"names {listen}"]
        self.names = TCP4ClientEndpoint(reactor, "127.0.0.1", number)
        return f"127.0.0.1:{number}"

    def announcing_suite(self, name_servers, extra=""):
        directory = tmp_dir(self)
        pki = make_pki(directory)
        servers = ", ".join(f'"{n}"' for n in name_servers)
        short = tempfile.mkdtemp(prefix="announce")  # a Unix socket path has 108 bytes at most
        self.addCleanup(shutil.rmtree, short)
        ports = start_suite(self, directory, tls_section(pki) + f"""
            [echo]
            listen = ["{LOCAL}", "udp:0:interface=127.0.0.1", "unix:{short}/echo.sock"]
            tls_listen = ["{LOCAL}"]
            [announce]
            name_server = [{servers}]
            interval = 0.25
            {extra}
        """)
        self.root = self.suite_root
        return ports[f"echo {LOCAL}"], ports[f"echo tls_listen {LOCAL}"]

    async def wait_for(self, predicate, timeout=10.0):
        for _ in range(int(timeout / 0.05)):
            try:
                if await predicate():
                    return True
            except NotFound:
                pass
            await task.deferLater(reactor, 0.05, lambda: None)
        return False

    async def instances(self, name="echo"):
        try:
            found, _ = await api.lookup(reactor, self.names, name)
        except NotFound:
            return set()
        return set(found)

    async def test_tcp_and_tls_listeners_registered_and_removed_at_stop(self):
        name_server = self.name_server()
        plain, tls = self.announcing_suite([name_server])
        expected = {("127.0.0.1", plain, "tcp"), ("127.0.0.1", tls, "tls")}
        self.assertTrue(await self.wait_for(lambda: self._equal(expected)))
        await self.root.stopService()
        self.assertEqual(await self.instances(), set())  # gone once the stop is done

    async def _equal(self, expected):
        return await self.instances() == expected

    async def test_registered_again_every_interval(self):
        name_server = self.name_server()
        plain, _ = self.announcing_suite([name_server])
        self.assertTrue(await self.wait_for(lambda: self._has(plain)))
        await api.deregister(reactor, self.names, "echo", "127.0.0.1", plain)
        self.assertTrue(await self.wait_for(lambda: self._has(plain), timeout=2))

    async def _has(self, port):
        return any(p == port for _, p, _ in await self.instances())

    async def test_an_unreachable_name_server_is_logged_once_and_never_delays_the_start(self):
        lines = captured_log(self)
        dead_port = unused_port()
        dead = f"127.0.0.1:{dead_port}"
        alive = self.name_server()
        plain, _ = self.announcing_suite([dead, alive])
        # The other name server is served at once, and the suite is up.
        self.assertTrue(await self.wait_for(lambda: self._has(plain)))
        await task.deferLater(reactor, 1.0, lambda: None)  # four intervals
        outages = [line for line in lines if dead in line]
        self.assertEqual(len(outages), 1, outages)
        self.assertIn(f"announce: cannot register with {dead}: ", outages[0])
        self.assertIn("trying again every 0.25 s", outages[0])
        self.name_server(port=dead_port)  # the name server comes up
        self.assertTrue(await self.wait_for(lambda: self._has(plain)))
        self.assertTrue(await self.wait_for(
            lambda: _true(any(f"announce: {dead} reached again" in line for line in lines))))

    async def test_the_token_is_sent(self):
        lines = captured_log(self)
        name_server = self.name_server('token = "s3cret"')
        plain, _ = self.announcing_suite([name_server], 'token = "s3cret"')
        self.assertTrue(await self.wait_for(lambda: self._has(plain)))
        self.announcing_suite([name_server], 'token = "b4d-t0ken"')
        self.assertTrue(await self.wait_for(lambda: _true(any(
            "announce: cannot register with" in line and "UNAUTHORIZED" in line for line in lines
        ))))
        self.assertFalse(any("b4d-t0ken" in line for line in lines))


async def _true(value):
    return value
