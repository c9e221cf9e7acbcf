"""suite-client --lookup: which of the instances a name server gives are tried."""

from twisted.internet import defer, reactor, task, tcp
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial.unittest import TestCase

from suite.client import api
from suite.client.main import addresses, parse_arguments
from suite.contracts.names import NotFound
from tests.helpers import make_pki, start_suite, tls_section, tmp_dir

LOCAL = "tcp:0:interface=127.0.0.1"


class TransportOfInstancesTests(TestCase):
    """[announce] describes each instance `tcp` or `tls`: the client tries those it speaks."""

    async def name_server_with(self, *instances) -> tuple[str, str]:
        """A name server holding INSTANCES of echo: its plain and its TLS address."""
        directory = tmp_dir(self)
        self.pki = make_pki(directory)
        ports = start_suite(
            self,
            directory,
            tls_section(self.pki)
            + f"""
            [names]
            listen = ["{LOCAL}"]
            tls_listen = ["{LOCAL}"]
            store = "memory"
            lookup_audit = ""
            ping_interval = 60
        """,
        )
        port = ports[f"names {LOCAL}"]
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        for instance_port, description in instances:
            await api.register(reactor, endpoint, "echo", "127.0.0.1", instance_port, description)
        return f"127.0.0.1:{port}", f"127.0.0.1:{ports[f'names tls_listen {LOCAL}']}"

    async def ports_tried(self, *argv) -> set:
        found = await defer.ensureDeferred(addresses(reactor, parse_arguments(["echo", *argv])))
        await self.lookups_closed()
        return {address.port for address in found}

    async def lookups_closed(self):
        """
        Wait until the lookup's connection is gone: a TLS one closes after its
        shutdown exchange, after the answer came (suite-client exits anyway).
        """
        for _ in range(200):  # at most ~2 s
            selectables = reactor.getReaders() + reactor.getWriters()
            if not any(isinstance(s, tcp.Client) for s in selectables):
                return
            await task.deferLater(reactor, 0.01, lambda: None)
        self.fail("the lookup's connection is still open")

    async def test_tls_instances_under_tls_plain_ones_otherwise(self):
        plain, tls = await self.name_server_with((1001, "tcp"), (1002, "tls"), (1003, "line echo"))
        self.assertEqual(await self.ports_tried("--lookup", plain), {1001, 1003})
        self.assertEqual(await self.ports_tried("--lookup", plain, "--udp"), {1001, 1003})
        with_tls = ("--lookup", tls, "--tls", "--ca", self.pki["ca"])
        self.assertEqual(await self.ports_tried(*with_tls), {1002, 1003})
        self.assertEqual(await self.ports_tried(*with_tls, "--udp"), {1001, 1003})

    async def test_none_of_the_transport_spoken_is_not_found(self):
        plain, _ = await self.name_server_with((1002, "tls"))
        with self.assertRaises(NotFound) as caught:
            await self.ports_tried("--lookup", plain)
        self.assertEqual(str(caught.exception), "no live instance of echo over plain TCP")


class NoNameServerTests(TestCase):
    """A --lookup that names no name server (only commas) says so, rather than crash."""

    async def test_only_commas_is_a_value_error(self):
        with self.assertRaises(ValueError) as caught:
            await defer.ensureDeferred(
                addresses(reactor, parse_arguments(["echo", "--lookup", " , "]))
            )
        self.assertEqual(str(caught.exception), "--lookup ' , ': no name server given")
