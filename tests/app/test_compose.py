"""The suite's plan: every listener and the one TLS decision, from the config alone, no reactor."""

import dataclasses
import textwrap

from twisted.internet import ssl
from twisted.trial.unittest import SynchronousTestCase

from suite.app import tap as services
from suite.app.compose import PLAN_SECTIONS, SuitePlan, load, plan
from suite.foundation import config
from suite.foundation.config import ConfigError
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
