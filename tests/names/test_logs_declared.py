"""
Logs checks declared over HTTP (Consul's registration body) and over AMP
(Register's logs_app and max_silence): what is registered, what is refused,
how a silent one is shown, and that older clients and servers still talk.
"""

from twisted.internet.protocol import Factory
from twisted.protocols import amp
from twisted.trial.unittest import SynchronousTestCase

from suite.contracts.names import Invalid, Lookup, Register
from tests.helpers import AMPPair
from tests.names import previous_contract as previous
from tests.names.test_http_api import APITestCase
from tests.names.test_protocol import names_pair

SILENT = "no message from web on h1 for 61 s"
LOGS = {"Logs": {"App": "web", "Hostname": "h1"}, "MaxSilence": "60s"}
WEB = {"Name": "web", "ID": "web-1", "Address": "10.0.0.5", "Port": 8080, "Check": LOGS}


def silenced(server, instance_id, check_id, status="warning"):
    """Turn the logs check CHECK_ID of INSTANCE_ID to STATUS through SERVER, as its runner does."""

    def mutate(instance):
        check = instance.check(check_id)
        check.status, check.output = status, SILENT

    return server.change(server.registry.by_id(instance_id), mutate, SILENT)


class HTTPTests(APITestCase):
    async def test_shown_as_consul_shows_a_check_of_type_logs(self):
        await self.register(WEB)
        [entry] = (await self.get("/v1/health/service/web")).json
        [check] = entry["Checks"]
        self.assertEqual(
            {key: check[key] for key in ("CheckID", "Name", "Status", "Output", "Type")},
            {
                "CheckID": "service:web-1",
                "Name": "Service 'web' logs",
                "Status": "passing",  # until it had MaxSilence to log
                "Output": "",
                "Type": "logs",
            },
        )
        passing = (await self.get("/v1/health/state/passing")).json
        self.assertEqual([c["CheckID"] for c in passing], ["service:web-1"])
        self.assertEqual((await self.get("/v1/health/state/warning")).json, [])

    async def test_a_silent_check_is_listed_in_its_state_and_kept_when_registered_again(self):
        await self.register(WEB)
        await self.register(dict(WEB, ID="web-2", Check=dict(LOGS, SilenceStatus="critical")))
        self.assertTrue(await silenced(self.server, "web-1", "service:web-1"))
        self.assertTrue(await silenced(self.server, "web-2", "service:web-2", "critical"))
        [warning] = (await self.get("/v1/health/state/warning")).json
        self.assertEqual(
            (warning["CheckID"], warning["ServiceID"], warning["Type"], warning["Output"]),
            ("service:web-1", "web-1", "logs", SILENT),
        )
        [critical] = (await self.get("/v1/health/state/critical")).json
        self.assertEqual((critical["ServiceID"], critical["Type"]), ("web-2", "logs"))
        self.assertEqual((await self.get("/v1/health/service/web?passing")).json, [])
        await self.register(dict(WEB, Tags=["v2"]))  # a re-registration does not make it heard
        check = self.registry.by_id("web-1").check("service:web-1")
        self.assertEqual((check.status, check.output), ("warning", SILENT))

    async def test_refusals_are_400_with_the_reason(self):
        for check, text in [
            (
                {"Logs": {"Hostname": "h1"}, "MaxSilence": "60s"},
                "Invalid check: Logs needs App, the syslog app name the service logs as",
            ),
            (
                dict(LOGS, SilenceStatus="loud"),
                "Invalid check: SilenceStatus must be 'warning' or 'critical'",
            ),
            (
                dict(LOGS, TTL="10s"),
                "Invalid check: a check is Logs, or one of TCP, HTTP and TTL, not both",
            ),
            (
                {"Args": ["true"]},
                "Invalid check: only TCP, HTTP, TTL and Logs checks are run here",
            ),
            (
                {"Logs": {"App": "my web"}, "MaxSilence": "60s"},
                "logs check app 'my web': without spaces",
            ),
        ]:
            answer = await self.put("/v1/agent/service/register", dict(WEB, Check=check))
            self.assertEqual((answer.code, answer.text), (400, text), check)
        self.assertIsNone(self.registry.by_id("web-1"))


class AMPTests(SynchronousTestCase):
    def setUp(self):
        self.pair = names_pair()
        self.server = self.pair.server.factory.server

    def test_register_with_logs_app_has_a_logs_check(self):
        self.pair.answer(Register, name="web", host="127.0.0.1", port=1, logs_app="web")
        self.pair.answer(
            Register,
            name="web",
            host="127.0.0.1",
            port=2,
            id="web-2",
            logs_app="web",
            max_silence=5.0,
        )
        (first,) = self.server.registry.by_id("web@127.0.0.1:1").checks
        self.assertEqual(
            (first.check_id, first.kind, first.app, first.target, first.status),
            ("service:web@127.0.0.1:1", "logs", "web", "", "passing"),
        )
        self.assertEqual((first.max_silence, first.silence_status), (60.0, "warning"))
        (second,) = self.server.registry.by_id("web-2").checks
        self.assertEqual((second.check_id, second.max_silence), ("service:web-2", 5.0))
        instances = self.pair.answer(Lookup, name="web")["instances"]
        self.assertEqual([i["status"] for i in instances], ["passing", "passing"])

    def test_without_logs_app_no_check(self):
        self.pair.answer(Register, name="web", host="127.0.0.1", port=1, max_silence=5.0)
        self.assertEqual(self.server.registry.by_id("web@127.0.0.1:1").checks, [])

    def test_invalid_values_answer_invalid_with_the_reason(self):
        for arguments, reason in [
            ({"logs_app": ""}, "logs check app '': 1-255 printable characters"),
            ({"logs_app": "my app"}, "logs check app 'my app': without spaces"),
            ({"logs_app": "a\x1b[2J"}, "logs check app 'a\\x1b[2J': 1-255 printable characters"),
            ({"logs_app": "web", "max_silence": 0.0}, "logs check max_silence 0.0: out of range"),
            (
                {"logs_app": "web", "max_silence": -1.0},
                "logs check max_silence -1.0: out of range",
            ),
            (
                {"logs_app": "web", "max_silence": float("nan")},
                "logs check max_silence nan: out of range",
            ),
        ]:
            [failure] = self.pair.call(Register, name="web", host="h", port=1, **arguments)
            failure.trap(Invalid)
            self.assertEqual(failure.value.args[0], reason)
        self.assertEqual(self.server.registry.instances(), [])

    def test_registering_again_keeps_the_status(self):
        """The announcer registers every interval: that does not hide a silence."""
        arguments = {"name": "web", "host": "127.0.0.1", "port": 1, "logs_app": "web"}
        self.pair.answer(Register, **arguments)
        self.assertTrue(
            self.successResultOf(
                silenced(self.server, "web@127.0.0.1:1", "service:web@127.0.0.1:1")
            )
        )
        self.pair.answer(Register, **arguments)
        [instance] = self.pair.answer(Lookup, name="web")["instances"]
        self.assertEqual(instance["status"], "warning")
        (check,) = self.server.registry.by_id("web@127.0.0.1:1").checks
        self.assertEqual((check.status, check.output), ("warning", SILENT))

    def test_a_client_of_the_previous_contract_still_registers(self):
        old = AMPPair(self.pair.server.factory)
        self.assertEqual(
            old.answer(previous.Register, name="web", host="127.0.0.1", port=1, description="d"),
            {},
        )
        self.assertEqual(self.server.registry.by_id("web@127.0.0.1:1").checks, [])


class PreviousNameServer(amp.AMP):
    """A name server of the contract before logs checks: Register without them."""

    registered: list

    @previous.Register.responder
    def register(self, name, host, port, description=None, token=None):
        self.registered.append((name, host, port))
        return {}


class OlderServerTests(SynchronousTestCase):
    def test_a_new_client_s_logs_arguments_are_ignored_by_an_older_server(self):
        PreviousNameServer.registered = []
        pair = AMPPair(Factory.forProtocol(PreviousNameServer))
        answer = pair.answer(
            Register, name="web", host="127.0.0.1", port=1, logs_app="web", max_silence=30.0
        )
        self.assertEqual(answer, {})
        self.assertEqual(PreviousNameServer.registered, [("web", "127.0.0.1", 1)])
