"""The suite's plan: every listener and the one TLS decision, from the config alone, no reactor."""

import dataclasses
import textwrap

from twisted.internet import ssl
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from suite.app import tap as services
from suite.app.compose import PLAN_SECTIONS, SuitePlan, load, materialise, plan
from suite.app.lifecycle import walk
from suite.foundation import config
from suite.foundation.config import ConfigError
from suite.foundation.jsonlines import BatchWriter
from suite.logger.protocol import SyslogFactory
from suite.timestamp import tap as timestamp_tap
from tests.helpers import make_pki, tls_section, tmp_dir


class PlanTestCase(SynchronousTestCase):
    def setUp(self):
        self.directory = tmp_dir(self)
        self.pki = make_pki(self.directory)

    def plan(self, body: str) -> SuitePlan:
        path = self.directory / "suite.toml"
        path.write_text(textwrap.dedent(body))
        kinds = [*PLAN_SECTIONS, *(d.settings for d in services.SERVICES)]
        return plan(services.SERVICES, config.load(str(path), kinds), str(path))

    def listeners(self, planned: SuitePlan) -> dict[str, list[tuple[str, bool]]]:
        """{section: [(listener, served through TLS)]} of every section that listens."""
        found = {
            s.name: [(str(listener), listener.tls) for listener in s.listeners]
            for s in planned.services
        }
        if planned.metrics is not None:
            found["metrics"] = [
                (str(listener), listener.tls) for listener in planned.metrics.listeners
            ]
        return found


class TLSDecisionTests(PlanTestCase):
    def test_no_tls(self):
        planned = self.plan("""
            [echo]
            listen = ["tcp:7", "udp:7"]
            [metrics]
            listen = ["tcp:9100"]
        """)
        self.assertIsNone(planned.tls)
        self.assertEqual(
            self.listeners(planned),
            {
                "echo": [("tcp:7", False), ("udp:7", False)],
                "metrics": [("tcp:9100", False)],
            },
        )
        self.assertIsNone(planned.announce)

    def test_tls_on_a_service_listener_only(self):
        planned = self.plan(
            tls_section(self.pki)
            + """
            [echo]
            listen = ["tcp:7"]
            tls_listen = ["tcp:8"]
            [metrics]
            listen = ["tcp:9100"]
        """
        )
        self.assertIsInstance(planned.tls, ssl.CertificateOptions)
        self.assertEqual(
            self.listeners(planned),
            {
                "echo": [("tcp:7", False), ("tls_listen tcp:8", True)],
                "metrics": [("tcp:9100", False)],
            },
        )

    def test_tls_on_the_metrics_listener_only(self):
        planned = self.plan(
            tls_section(self.pki)
            + """
            [echo]
            listen = ["tcp:7"]
            [metrics]
            tls_listen = ["tcp:9100"]
        """
        )
        self.assertIsInstance(planned.tls, ssl.CertificateOptions)
        self.assertEqual(
            self.listeners(planned),
            {
                "echo": [("tcp:7", False)],
                "metrics": [("tls_listen tcp:9100", True)],
            },
        )

    def test_a_tls_section_with_files_is_loaded_though_nothing_serves_tls_yet(self):
        planned = self.plan(
            tls_section(self.pki)
            + """
            [echo]
            listen = ["tcp:7"]
        """
        )
        self.assertIsInstance(planned.tls, ssl.CertificateOptions)
        self.assertEqual(self.listeners(planned), {"echo": [("tcp:7", False)]})

    def test_a_tls_section_with_a_missing_file_is_refused_though_nothing_serves_tls(self):
        message = str(
            self.assertRaises(
                ConfigError,
                self.plan,
                """
            [tls]
            certificate = "/nonexistent.crt"
            private_key = "/nonexistent.key"
            [echo]
            listen = ["tcp:7"]
        """,
            )
        )
        self.assertTrue(
            message.endswith(
                '[tls] certificate = "/nonexistent.crt": cannot read: No such file or directory'
            ),
            message,
        )

    def test_the_first_section_serving_tls_without_tls_files_is_the_one_named(self):
        message = str(
            self.assertRaises(
                ConfigError,
                self.plan,
                """
            [echo]
            tls_listen = ["tcp:8"]
            [sleep]
            tls_listen = ["tcp:9"]
            [metrics]
            tls_listen = ["tcp:9100"]
        """,
            )
        )
        self.assertTrue(
            message.endswith('[echo] tls_listen = ["tcp:8"]: needs [tls] certificate'), message
        )

    def test_the_metrics_listener_serving_tls_without_tls_files_is_named(self):
        message = str(
            self.assertRaises(
                ConfigError,
                self.plan,
                """
            [echo]
            listen = ["tcp:7"]
            [metrics]
            tls_listen = ["tcp:9100"]
        """,
            )
        )
        self.assertTrue(
            message.endswith('[metrics] tls_listen = ["tcp:9100"]: needs [tls] certificate'),
            message,
        )


class ServicesPlanTests(PlanTestCase):
    def test_services_in_declaration_order_with_their_other_listeners(self):
        planned = self.plan("""
            [names]
            listen = ["tcp:5300"]
            dns_listen = ["udp:5353"]
            store = "memory"
            [echo]
            listen = ["tcp:7"]
            udp_receive_buffer = 65536
            [sleep]
            listen = ["tcp:5200"]
        """)
        self.assertEqual([s.name for s in planned.services], ["echo", "sleep", "names"])
        echo, sleep, names = planned.services
        self.assertEqual(echo.receive_buffer, 65536)
        self.assertIsNone(sleep.receive_buffer)
        self.assertEqual(echo.other_listeners, ())
        self.assertEqual(
            [(key, [str(listener) for listener in group]) for key, group in names.other_listeners],
            [
                ("dns_listen", ["dns_listen udp:5353"]),
                ("http_listen", []),
                ("http_tls_listen", []),
            ],
        )

    def test_the_http_api_listens_on_streams_plain_and_through_tls(self):
        planned = self.plan(
            tls_section(self.pki)
            + """
            [names]
            listen = ["tcp:5300"]
            http_listen = ["tcp:8500"]
            http_tls_listen = ["tcp:8501"]
            store = "memory"
        """
        )
        (names,) = planned.services
        found = {
            key: [(str(listener), listener.tls) for listener in group]
            for key, group in names.other_listeners
        }
        self.assertEqual(found["http_listen"], [("http_listen tcp:8500", False)])
        self.assertEqual(found["http_tls_listen"], [("http_tls_listen tcp:8501", True)])
        for key in ("http_listen", "http_tls_listen"):
            body = f'[names]\nlisten = ["tcp:5300"]\nstore = "memory"\n{key} = ["udp:8500"]\n'
            message = str(self.assertRaises(ConfigError, self.plan, body))
            self.assertIn(f'[names] {key} = "udp:8500"', message)
        alone = (
            '[names]\nlisten = ["tcp:5300"]\nstore = "memory"\nhttp_tls_listen = ["tcp:8501"]\n'
        )
        message = str(self.assertRaises(ConfigError, self.plan, alone))
        self.assertIn("needs [tls] certificate", message)

    def test_the_announcer_is_planned_with_its_token(self):
        planned = self.plan("""
            [echo]
            listen = ["tcp:7"]
            [announce]
            name_server = ["127.0.0.1:5300"]
            token = "s3cret"
        """)
        self.assertEqual((planned.announce.token, dict(planned.announce.tls)), ("s3cret", {}))

    def test_a_plan_is_frozen(self):
        planned = self.plan('[echo]\nlisten = ["tcp:7"]\n')
        self.assertRaises(dataclasses.FrozenInstanceError, setattr, planned, "tls", None)

    def test_no_service_enabled(self):
        path = self.directory / "suite.toml"
        path.write_text("[echo]\nenabled = false\n")
        caught = self.assertRaises(ConfigError, load, services.SERVICES, str(path), {}, False)
        message = str(caught)
        self.assertEqual(message, f"{path}: no service enabled")

    def test_a_plugins_options_hold_the_plan_once_parsed(self):
        options = timestamp_tap.Options()
        options.parseOptions(["--listen", "tcp:2"])
        self.assertIsInstance(options.validated, SuitePlan)
        (timestamp,) = options.validated.services
        self.assertEqual([str(listener) for listener in timestamp.listeners], ["tcp:2"])


class RecordingWatcher:
    """A name server's log watcher as the collector sees it: what it was told."""

    wants_hashes = False

    def __init__(self) -> None:
        self.calls: list[tuple[list, str]] = []

    def heard(self, messages, address, hashes=None) -> None:
        self.calls.append((list(messages), address))


class LogWatcherWiringTests(PlanTestCase):
    """A collector and a name server in one suite: the collector tells the name server directly."""

    def materialise_with_watcher(self, body: str) -> tuple[list, RecordingWatcher]:
        """The suite of BODY, its name server's log watcher a recording one: (hearers, watcher)."""
        watcher = RecordingWatcher()

        def watched(declaration):
            def build(settings, reactor):
                return dataclasses.replace(
                    declaration.build(settings, reactor), log_watcher=watcher
                )

            return dataclasses.replace(declaration, build=build)

        planned = self.plan(body)
        services = tuple(
            dataclasses.replace(s, declaration=watched(s.declaration)) if s.name == "names" else s
            for s in planned.services
        )
        root = materialise(dataclasses.replace(planned, services=services), MemoryReactorClock())
        logger = root.getServiceNamed("logger")
        for part in walk(logger):
            if isinstance(part, BatchWriter):
                self.addCleanup(part.output.close)
        factory = logger.factories[0]  # syslog's; RELP's shares its delivery
        self.assertIsInstance(factory, SyslogFactory)
        delivery = factory.delivery
        delivery.messages([(b"<13>1 - h1 web - - - hi", False)], "192.0.2.7:40000", "tcp")
        return delivery.hearers, watcher

    def test_the_collectors_messages_reach_the_name_servers_log_watcher(self):
        hearers, watcher = self.materialise_with_watcher(f"""
            [logger]
            listen = ["tcp:5140"]
            output = "{self.directory / "messages.jsonl"}"
            [names]
            listen = ["tcp:5300:interface=127.0.0.1"]
            store = "memory"
        """)
        self.assertEqual(hearers, [watcher])
        self.assertEqual(watcher.calls, [([(13, "h1", "web")], "192.0.2.7")])

    def test_a_collector_reporting_elsewhere_tells_its_own_suites_name_server_too(self):
        hearers, watcher = self.materialise_with_watcher(f"""
            [logger]
            listen = ["tcp:5140"]
            output = "{self.directory / "messages.jsonl"}"
            report_to = ["http://192.0.2.53:8500"]
            [names]
            listen = ["tcp:5300:interface=127.0.0.1"]
            store = "memory"
        """)
        self.assertEqual(
            [type(h).__name__ for h in hearers], ["HeardReporter", "RecordingWatcher"]
        )
        self.assertEqual(len(watcher.calls), 1)
