"""
[announce]: the suite registers its listeners with name servers, keeps them
there, and leaves.
"""

import os
import shutil
import socket
import tempfile
import textwrap

from twisted.internet import reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.testing import MemoryReactor
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from suite.app import tap as services
from suite.app.announce import Announcer, AnnounceSettings
from suite.app.compose import build
from suite.client import api
from suite.contracts.names import Invalid, NotFound, Register
from suite.foundation.config import ConfigError
from suite.names.server import NameServer
from tests.helpers import captured_log, make_pki, start_suite, tls_section, tmp_dir

LOCAL = "tcp:0:interface=127.0.0.1"


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AnnounceTestCase(TestCase):
    def setUp(self):
        self.pki = make_pki(tmp_dir(self))

    def name_server(self, extra="", port=0, tls=""):
        """
        A name server on 127.0.0.1; the test looks up through its plain
        listener.  Given a [tls] section TLS, it also serves a tls_listen,
        whose address (for the announcer) is returned.
        """
        listen = f"tcp:{port}:interface=127.0.0.1"
        tls_listen = f'"{LOCAL}"' if tls else ""
        ports = start_suite(
            self,
            tmp_dir(self),
            tls
            + f"""
            [names]
            listen = ["{listen}"]
            tls_listen = [{tls_listen}]
            store = "memory"
            lookup_audit = ""
            {extra}
        """,
        )
        number = ports[f"names {listen}"]
        self.names = TCP4ClientEndpoint(reactor, "127.0.0.1", number)
        self.name_server_factories = [
            factory
            for factory in self.suite_root.root.getServiceNamed("names").factories
            if hasattr(factory, "connections")
        ]
        if tls:
            return f"127.0.0.1:{ports[f'names tls_listen {LOCAL}']}"
        return f"127.0.0.1:{number}"

    def announcing_suite(self, name_servers, extra=""):
        directory = tmp_dir(self)
        servers = ", ".join(f'"{n}"' for n in name_servers)
        short = tempfile.mkdtemp(prefix="announce")  # a Unix socket path has 108 bytes at most
        self.addCleanup(shutil.rmtree, short)
        ports = start_suite(
            self,
            directory,
            tls_section(self.pki)
            + f"""
            [echo]
            listen = ["{LOCAL}", "udp:0:interface=127.0.0.1", "unix:{short}/echo.sock"]
            tls_listen = ["{LOCAL}"]
            [announce]
            name_server = [{servers}]
            interval = 0.25
            {extra}
        """,
        )
        self.root = self.suite_root
        self.announcing_roots = [*getattr(self, "announcing_roots", ()), self.root]
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

    async def _equal(self, expected):
        return await self.instances() == expected

    async def _has(self, port):
        return any(p == port for _, p, _ in await self.instances())

    async def stop_announcing(self):
        """
        Stop every announcing suite, then wait until the name server has
        closed their last connection: a TLS failure it saw after its own stop
        would leave a log summary scheduled past the test.
        """
        for root in self.announcing_roots:
            await root.stopService()
        self.assertTrue(
            await self.wait_for(
                lambda: _true(all(f.connections == 0 for f in self.name_server_factories))
            )
        )

    async def logged(self, lines, *parts):
        """Whether a line holding every one of PARTS is logged (within the wait_for bound)."""
        return await self.wait_for(
            lambda: _true(any(all(part in line for part in parts) for line in lines))
        )


class AnnounceTests(AnnounceTestCase):
    async def test_tcp_and_tls_listeners_registered_and_removed_at_stop(self):
        name_server = self.name_server()
        plain, tls = self.announcing_suite([name_server])
        expected = {("127.0.0.1", plain, "tcp"), ("127.0.0.1", tls, "tls")}
        self.assertTrue(await self.wait_for(lambda: self._equal(expected)))
        await self.root.stopService()
        self.assertEqual(await self.instances(), set())  # gone once the stop is done

    async def test_registered_again_every_interval(self):
        name_server = self.name_server()
        plain, _ = self.announcing_suite([name_server])
        self.assertTrue(await self.wait_for(lambda: self._has(plain)))
        await api.deregister(reactor, self.names, "echo", "127.0.0.1", plain)
        self.assertTrue(await self.wait_for(lambda: self._has(plain), timeout=2))

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
        self.assertTrue(
            await self.wait_for(
                lambda: _true(any(f"announce: {dead} reached again" in line for line in lines))
            )
        )

    async def test_the_token_is_sent(self):
        lines = captured_log(self)
        name_server = self.name_server('token = "s3cret"')
        plain, _ = self.announcing_suite([name_server], 'token = "s3cret"')
        self.assertTrue(await self.wait_for(lambda: self._has(plain)))
        self.announcing_suite([name_server], 'token = "b4d-t0ken"')
        self.assertTrue(
            await self.wait_for(
                lambda: _true(
                    any(
                        "announce: cannot register with" in line and "UNAUTHORIZED" in line
                        for line in lines
                    )
                )
            )
        )
        self.assertFalse(any("b4d-t0ken" in line for line in lines))


class AnnounceLogsCheckTests(AnnounceTestCase):
    """`logs_app`: each instance announced says it logs, and a silence outlives the rounds."""

    async def test_every_registration_carries_the_logs_check(self):
        name_server = self.name_server()
        (server,) = (part for part in self.suite_root if isinstance(part, NameServer))
        registrations = []
        register = server.register
        server.register = lambda *a, **kw: registrations.append(kw) or register(*a, **kw)
        plain, tls = self.announcing_suite([name_server], 'logs_app = "suite"\nmax_silence = 30')
        expected = {("127.0.0.1", plain, "tcp"), ("127.0.0.1", tls, "tls")}
        self.assertTrue(await self.wait_for(lambda: self._equal(expected)))
        for port in (plain, tls):
            instance_id = f"echo@127.0.0.1:{port}"
            (check,) = server.registry.by_id(instance_id).checks
            self.assertEqual(
                (check.check_id, check.kind, check.app, check.target, check.max_silence),
                (f"service:{instance_id}", "logs", "suite", "", 30.0),
            )
            self.assertEqual((check.status, check.silence_status), ("passing", "warning"))

        def silent(instance):
            instance.checks[0].status = "warning"

        silenced = server.registry.by_id(f"echo@127.0.0.1:{plain}")
        self.assertTrue(await server.change(silenced, silent, "no message"))
        rounds = len(registrations)
        self.assertTrue(await self.wait_for(lambda: _true(len(registrations) >= rounds + 4)))
        self.assertEqual(
            {(kw["logs_app"], kw["max_silence"]) for kw in registrations}, {("suite", 30.0)}
        )
        found = {(i.port, i.status) for i in await self.instances()}
        self.assertEqual(found, {(plain, "warning"), (tls, "passing")})

    async def test_without_logs_app_no_logs_check(self):
        name_server = self.name_server()
        (server,) = (part for part in self.suite_root if isinstance(part, NameServer))
        plain, _ = self.announcing_suite([name_server])
        self.assertTrue(await self.wait_for(lambda: self._has(plain)))
        self.assertEqual(server.registry.by_id(f"echo@127.0.0.1:{plain}").checks, [])


class AnnounceOverTLSTests(AnnounceTestCase):
    """`tls = true`: the token and the registrations never cross the network in clear."""

    def tls_keys(self, ca="ca", client=None):
        keys = f'tls = true\nca = "{self.pki[ca]}"\ntoken = "s3cret-token"\n'
        if client is not None:
            keys += (
                f'certificate = "{self.pki[client + "_crt"]}"\n'
                f'private_key = "{self.pki[client + "_key"]}"\n'
            )
        return keys

    async def test_registered_through_tls_and_removed_at_stop(self):
        name_server = self.name_server('token = "s3cret-token"', tls=tls_section(self.pki))
        plain, tls = self.announcing_suite([name_server], self.tls_keys())
        expected = {("127.0.0.1", plain, "tcp"), ("127.0.0.1", tls, "tls")}
        self.assertTrue(await self.wait_for(lambda: self._equal(expected)))
        await self.root.stopService()
        self.assertEqual(await self.instances(), set())

    async def test_mutual_tls_with_the_client_certificate_and_refused_without(self):
        lines = captured_log(self)
        name_server = self.name_server(
            'token = "s3cret-token"', tls=tls_section(self.pki, client_ca=self.pki["ca"])
        )
        plain, _ = self.announcing_suite([name_server], self.tls_keys(client="client"))
        self.assertTrue(await self.wait_for(lambda: self._has(plain)))
        anonymous, _ = self.announcing_suite([name_server], self.tls_keys())
        self.assertTrue(
            await self.logged(
                lines,
                f"announce: cannot register with {name_server}: TLS failed: ",
                "certificate required",
            )
        )
        self.assertFalse(await self._has(anonymous))
        await self.stop_announcing()

    async def test_a_name_server_the_ca_did_not_sign_is_refused_and_logged_once_per_outage(self):
        lines = captured_log(self)
        name_server = self.name_server('token = "s3cret-token"', tls=tls_section(self.pki))
        plain, _ = self.announcing_suite([name_server], self.tls_keys(ca="stranger_crt"))
        self.assertTrue(
            await self.logged(
                lines,
                f"announce: cannot register with {name_server}: TLS failed: ",
                "certificate verify failed",
                "trying again every 0.25 s",
            )
        )
        await task.deferLater(reactor, 1.0, lambda: None)  # four intervals
        outages = [
            line for line in lines if f"announce: cannot register with {name_server}" in line
        ]
        self.assertEqual(len(outages), 1, outages)
        self.assertEqual(await self.instances(), set())
        self.assertFalse(any("s3cret-token" in line for line in lines))
        await self.stop_announcing()

    async def test_the_name_servers_host_name_is_verified(self):
        lines = captured_log(self)
        name_server = self.name_server(tls=tls_section(self.pki, "elsewhere"))
        self.announcing_suite([name_server], self.tls_keys())
        self.assertTrue(
            await self.logged(
                lines,
                f"announce: cannot register with {name_server}: "
                "TLS failed: certificate does not match the host name",
            )
        )
        self.assertEqual(await self.instances(), set())
        await self.stop_announcing()


class AnnounceConfigTestCase(SynchronousTestCase):
    def setUp(self):
        self.directory = tmp_dir(self)
        self.pki = make_pki(self.directory)

    def refused(self, announce):
        path = self.directory / "suite.toml"
        path.write_text(
            '[echo]\nlisten = ["tcp:0:interface=127.0.0.1"]\n[announce]\n'
            'token = "s3cret-token"\n' + textwrap.dedent(announce)
        )
        message = str(
            self.assertRaises(
                ConfigError, build, services.SERVICES, str(path), {}, MemoryReactor(), False
            )
        )
        self.assertNotIn("\n", message)
        self.assertNotIn("s3cret-token", message)
        return message.replace(str(path), "FILE")


class AnnounceLogsConfigTests(AnnounceConfigTestCase):
    def test_mistakes(self):
        ns = 'name_server = ["localhost:5300"]\n'
        for announce, expected in (
            (
                ns + 'logs_app = "my app"\n',
                'FILE: [announce] logs_app = "my app": must be 1-255 printable characters '
                "without spaces",
            ),
            (
                ns + f'logs_app = "{"a" * 256}"\n',
                "must be 1-255 printable characters without spaces",
            ),
            (
                ns + 'logs_app = "a\\u001bb"\n',
                "must be 1-255 printable characters without spaces",
            ),
            (ns + "logs_app = 5\n", "FILE: [announce] logs_app = 5: must be a string"),
            (
                ns + 'logs_app = "suite"\nmax_silence = 0\n',
                "FILE: [announce] max_silence = 0: must be at least 1",
            ),
        ):
            message = self.refused(announce)
            self.assertIn(expected, message, announce)
            self.assertTrue(message.startswith("FILE: [announce] "), message)


class AnnounceTLSConfigTests(AnnounceConfigTestCase):
    """Every TLS file of [announce] is checked at start: one config line naming the key."""

    def test_mistakes(self):
        pki = self.pki
        ns = 'name_server = ["localhost:5300"]\n'
        for announce, expected in (
            (
                ns + 'tls = true\nca = "/missing.pem"\n',
                'FILE: [announce] ca = "/missing.pem": cannot read: No such file or directory',
            ),
            (
                ns + f'tls = true\nca = "{pki["client_key"]}"\n',
                f'FILE: [announce] ca = "{pki["client_key"]}": no PEM certificate in file',
            ),
            (
                ns + f'ca = "{pki["ca"]}"\n',
                f'FILE: [announce] ca = "{pki["ca"]}": used only with tls = true',
            ),
            (
                ns + f'tls = true\ncertificate = "{pki["client_crt"]}"\n',
                f'FILE: [announce] certificate = "{pki["client_crt"]}": certificate and '
                "private_key go together",
            ),
            (
                ns + f'tls = true\ncertificate = "{pki["client_crt"]}"\n'
                f'private_key = "{pki["server_key"]}"\n',
                f'FILE: [announce] private_key = "{pki["server_key"]}": does not match the '
                "certificate",
            ),
            (
                'name_server = ["unix:path=/run/names.sock"]\ntls = true\n',
                'FILE: [announce] name_server = "unix:path=/run/names.sock": tls = true needs a '
                "host name to verify",
            ),
            (
                ns + 'tls = true\nca = "credential:names-ca"\n',
                'FILE: [announce] ca = "credential:names-ca": $CREDENTIALS_DIRECTORY is not set',
            ),
        ):
            self.assertTrue(self.refused(announce).startswith(expected), announce)

    def test_files_may_be_systemd_credentials(self):
        os.environ["CREDENTIALS_DIRECTORY"] = os.path.dirname(self.pki["ca"])
        self.addCleanup(os.environ.pop, "CREDENTIALS_DIRECTORY")
        path = self.directory / "suite.toml"
        path.write_text(
            '[echo]\nlisten = ["tcp:0:interface=127.0.0.1"]\n[announce]\n'
            'name_server = ["localhost:5300"]\ntls = true\n'
            'ca = "credential:ca.crt"\ncertificate = "credential:client.crt"\n'
            'private_key = "credential:client.key"\n'
        )
        root = build(services.SERVICES, str(path), {}, MemoryReactor(), only_listed=False)
        (announcer,) = [child for child in root if hasattr(child, "announced")]
        self.assertEqual(list(announcer.tls), ["localhost:5300"])


class AnnounceFailureLineTests(SynchronousTestCase):
    def test_a_name_servers_reason_is_logged_escaped(self):
        """What a name server answers is its text, from the network: one escaped line."""
        lines = captured_log(self)
        announcer = Announcer(
            AnnounceSettings(name_server=("ns:5300",)), None, [], MemoryReactor(), {}
        )
        announcer._failed("ns:5300", Register, Failure(Invalid("no\n\x1b[2Jforged line")))
        [line] = [line for line in lines if "announce: cannot register" in line]
        self.assertIn("INVALID: no\\n\\x1b[2Jforged line; trying again", line)


async def _true(value):
    return value
