"""Consul's service definition read into an instance and its checks, as Consul's agent reads it."""

import json

from twisted.trial.unittest import SynchronousTestCase

from suite.contracts.names import Invalid
from suite.names.registration import parse_registration

CALLER = "192.0.2.9"


def parsed(body):
    """The instance of BODY (JSON text or a value), registered from CALLER."""
    return parse_registration(json.loads(body) if isinstance(body, str) else body, CALLER)


class DefinitionTests(SynchronousTestCase):
    def test_what_consul_fills_in(self):
        instance = parsed({"Name": "web", "Port": 80})
        self.assertEqual(instance.id, "web")
        self.assertEqual(instance.host, CALLER)
        self.assertEqual(instance.weights, (1, 1))
        self.assertEqual(instance.tags, ())
        self.assertEqual(instance.meta, {})
        self.assertEqual(instance.checks, [])
        self.assertIs(instance.pinged, False)
        instance.validate()

    def test_every_field(self):
        instance = parsed(
            {
                "ID": "web-1",
                "Name": "web",
                "Address": "10.0.0.5",
                "Port": 8080,
                "Tags": ["v1", "prom"],
                "Meta": {"version": "1.2", "description": "the front"},
                "Weights": {"Passing": 10, "Warning": 2},
                "EnableTagOverride": True,
                "TaggedAddresses": {"lan": {"Address": "10.0.0.5", "Port": 8080}},
            }
        )
        self.assertEqual(
            (instance.id, instance.name, instance.host, instance.port),
            ("web-1", "web", "10.0.0.5", 8080),
        )
        self.assertEqual(instance.tags, ("v1", "prom"))
        self.assertEqual(instance.meta, {"version": "1.2"})
        self.assertEqual(instance.description, "the front")
        self.assertEqual(instance.weights, (10, 2))

    def test_keys_match_whatever_their_case_and_underscores(self):
        """py-consul sends snake_case, Go's client CamelCase; both mean the same."""
        snake = parsed(
            {
                "name": "web",
                "id": "w",
                "port": 1,
                "enable_tag_override": True,
                "check": {
                    "ttl": "5s",
                    "check_id": "beat",
                    "deregister_critical_service_after": "1m",
                },
            }
        )
        camel = parsed(
            {
                "NAME": "web",
                "Id": "w",
                "Port": 1,
                "EnableTagOverride": True,
                "Check": {"TTL": "5s", "CheckID": "beat", "DeregisterCriticalServiceAfter": "1m"},
            }
        )
        self.assertEqual(snake.record(), camel.record())
        self.assertEqual(snake.checks[0].check_id, "beat")
        self.assertEqual(snake.checks[0].deregister_after, 60.0)

    def test_missing_name(self):
        for body in [{}, {"Name": ""}, {"Name": None, "Port": 1}]:
            with self.assertRaisesRegex(Invalid, "^Missing service name$"):
                parsed(body)

    def test_weights_given_take_go_zero_for_what_is_missing(self):
        self.assertEqual(parsed({"Name": "a", "Weights": {"Passing": 3}}).weights, (3, 0))

    def test_wrong_types_fail_the_decode(self):
        for body, where in [
            ({"Name": 5}, "Name"),
            ({"Name": "a", "Port": "80"}, "Port"),
            ({"Name": "a", "Port": 80.5}, "Port"),
            ({"Name": "a", "Port": True}, "Port"),
            ({"Name": "a", "Tags": "v1"}, "Tags"),
            ({"Name": "a", "Tags": [1]}, "Tags"),
            ({"Name": "a", "Meta": {"k": 1}}, "Meta"),
            ({"Name": "a", "Weights": {"Passing": "1"}}, "Weights.Passing"),
            ({"Name": "a", "EnableTagOverride": "yes"}, "EnableTagOverride"),
            ({"Name": "a", "Checks": {"TTL": "1s"}}, "Checks"),
            ({"Name": "a", "Check": {"TTL": True}}, "Check.TTL"),
            ({"Name": "a", "Check": {"TTL": "1s", "Header": {"a": "b"}}}, "Check.Header"),
            ([], "ServiceDefinition"),
        ]:
            with self.assertRaisesRegex(Invalid, f"^Request decode failed: {where}", msg=body):
                parsed(body)

    def test_a_bad_duration_is_go_s_error(self):
        with self.assertRaisesRegex(
            Invalid, r'^Request decode failed: time: invalid duration "ten"$'
        ):
            parsed({"Name": "a", "Check": {"TTL": "ten"}})

    def test_a_duration_beyond_an_int64_of_nanoseconds_is_go_s_error(self):
        """Too large for a float (value * 1e-9 would overflow): refused as a duration."""
        for number in [10**400, 2**63, -(2**63)]:
            with self.assertRaisesRegex(
                Invalid, r'^Request decode failed: time: invalid duration "-?\d{1,64}"$'
            ):
                parsed({"Name": "a", "Check": {"TTL": number}})
            with self.assertRaisesRegex(Invalid, "^Request decode failed: time: invalid duration"):
                parsed(
                    {
                        "Name": "a",
                        "Check": {"TCP": "10.0.0.1:1", "Interval": "1s", "Timeout": number},
                    }
                )


class CheckTests(SynchronousTestCase):
    def test_one_check_of_each_kind(self):
        instance = parsed(
            {
                "Name": "web",
                "ID": "web-1",
                "Port": 80,
                "Checks": [
                    {"TCP": "10.0.0.5:80", "Interval": "10s"},
                    {
                        "HTTP": "https://10.0.0.5/health",
                        "Interval": "15s",
                        "Timeout": "2s",
                        "Method": "HEAD",
                        "Header": {"X-Probe": ["1"]},
                        "TLSSkipVerify": True,
                    },
                    {"TTL": "30s", "Status": "passing", "Notes": "heartbeat", "Name": "beat"},
                ],
            }
        )
        tcp, http, ttl = instance.checks
        self.assertEqual(
            [c.check_id for c in instance.checks],
            ["service:web-1:1", "service:web-1:2", "service:web-1:3"],
        )
        self.assertEqual(
            (tcp.kind, tcp.target, tcp.interval, tcp.timeout), ("tcp", "10.0.0.5:80", 10.0, 10.0)
        )
        self.assertEqual(tcp.name, "Service 'web' check")
        self.assertEqual(tcp.status, "critical")
        self.assertEqual(
            (http.kind, http.target, http.timeout), ("http", "https://10.0.0.5/health", 2.0)
        )
        self.assertEqual(
            (http.method, http.header, http.tls_skip_verify), ("HEAD", {"X-Probe": ["1"]}, True)
        )
        self.assertEqual(
            (ttl.kind, ttl.ttl, ttl.status, ttl.notes, ttl.name),
            ("ttl", 30.0, "passing", "heartbeat", "beat"),
        )
        instance.validate()

    def test_a_single_check_is_service_id(self):
        instance = parsed({"Name": "web", "Check": {"TTL": "5s"}})
        self.assertEqual(instance.checks[0].check_id, "service:web")

    def test_check_and_checks_count_together(self):
        instance = parsed({"Name": "web", "Check": {"TTL": "5s"}, "Checks": [{"TTL": "6s"}]})
        self.assertEqual([c.check_id for c in instance.checks], ["service:web:1", "service:web:2"])

    def test_an_empty_check_is_ignored_as_consul_does(self):
        self.assertEqual(parsed({"Name": "web", "Check": {}}).checks, [])

    def test_durations_as_nanoseconds(self):
        (check,) = parsed({"Name": "a", "Check": {"TCP": "h:1", "Interval": 5_000_000_000}}).checks
        self.assertEqual(check.interval, 5.0)

    def test_an_interval_under_a_second_is_a_second(self):
        (check,) = parsed({"Name": "a", "Check": {"TCP": "h:1", "Interval": "100ms"}}).checks
        self.assertEqual(check.interval, 1.0)

    def test_consul_s_refusals(self):
        for check, text in [
            (
                {"TTL": "5s", "Interval": "5s"},
                "Invalid check: Interval and TTL cannot both be specified",
            ),
            (
                {"TCP": "h:1"},
                "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or GRPC",
            ),
            (
                {"Notes": "nothing to run"},
                "Invalid check: one of TCP, HTTP, TTL or Logs must be specified",
            ),
            (
                {"TTL": "5s", "Status": "ok"},
                "Status for checks must 'passing', 'warning', 'critical'",
            ),
            (
                {"Args": ["/bin/true"], "Interval": "5s"},
                "Invalid check: only TCP, HTTP, TTL and Logs checks are run here",
            ),
            (
                {"GRPC": "h:1", "Interval": "5s"},
                "Invalid check: only TCP, HTTP, TTL and Logs checks are run here",
            ),
            ({"TCP": "h", "Interval": "5s"}, "Invalid check: TCP needs HOST:PORT"),
            ({"TCP": "h:99999", "Interval": "5s"}, "Invalid check: TCP needs HOST:PORT"),
            (
                {"HTTP": "ftp://h/", "Interval": "5s"},
                "Invalid check: HTTP needs an http:// or https:// URL",
            ),
            (
                {"HTTP": "http://h:99999/", "Interval": "5s"},
                "Invalid check: HTTP needs an http:// or https:// URL",
            ),
            ({"TTL": "5s", "CheckID": "_service_maintenance:web"}, "maintenance mode's"),
        ]:
            with self.assertRaises(Invalid, msg=check) as caught:
                parsed({"Name": "web", "Check": check})
            self.assertIn(text, str(caught.exception))


class LogsCheckTests(SynchronousTestCase):
    """The suite's own check: silent once the app named stops logging."""

    def test_every_field(self):
        (check,) = parsed(
            {
                "Name": "web",
                "ID": "web-1",
                "Check": {
                    "Logs": {"App": "web", "Hostname": "h1"},
                    "MaxSilence": "1m30s",
                    "SilenceStatus": "critical",
                    "Notes": "the front's access log",
                },
            }
        ).checks
        self.assertEqual(
            (check.check_id, check.kind, check.app, check.target),
            ("service:web-1", "logs", "web", "h1"),
        )
        self.assertEqual((check.max_silence, check.silence_status), (90.0, "critical"))
        self.assertEqual(
            (check.name, check.notes), ("Service 'web' logs", "the front's access log")
        )

    def test_passing_at_first_warning_when_silent_and_the_instance_s_host_by_default(self):
        """A new instance stays in DNS until it had max_silence to log."""
        instance = parsed({"Name": "web", "Check": {"Logs": {"App": "web"}, "MaxSilence": "60s"}})
        (check,) = instance.checks
        self.assertEqual(
            (check.status, check.silence_status, check.target), ("passing", "warning", "")
        )
        self.assertEqual(instance.status, "passing")
        instance.validate()
        (given,) = parsed(
            {
                "Name": "web",
                "Check": {"Logs": {"App": "web"}, "MaxSilence": "60s", "Status": "critical"},
            }
        ).checks
        self.assertEqual(given.status, "critical")

    def test_keys_as_py_consul_and_go_send_them(self):
        snake = parsed(
            {
                "name": "web",
                "checks": [
                    {
                        "logs": {"app": "web", "hostname": "h1"},
                        "max_silence": 60_000_000_000,  # nanoseconds, as any duration
                        "silence_status": "critical",
                    }
                ],
            }
        )
        pascal = parsed(
            {
                "Name": "web",
                "Checks": [
                    {
                        "Logs": {"App": "web", "Hostname": "h1"},
                        "MaxSilence": "60s",
                        "SilenceStatus": "critical",
                    }
                ],
            }
        )
        self.assertEqual(snake.record(), pascal.record())
        self.assertEqual(snake.checks[0].max_silence, 60.0)

    def test_with_other_checks_each_numbered(self):
        instance = parsed(
            {
                "Name": "web",
                "Checks": [{"TTL": "5s"}, {"Logs": {"App": "web"}, "MaxSilence": "60s"}],
            }
        )
        self.assertEqual(
            [(c.check_id, c.kind) for c in instance.checks],
            [("service:web:1", "ttl"), ("service:web:2", "logs")],
        )

    def test_refusals(self):
        logs = {"Logs": {"App": "web"}, "MaxSilence": "60s"}
        for check, text in [
            (
                {"Logs": {}, "MaxSilence": "60s"},
                "Invalid check: Logs needs App, the syslog app name the service logs as",
            ),
            (
                {"Logs": {"App": ""}, "MaxSilence": "60s"},
                "Invalid check: Logs needs App, the syslog app name the service logs as",
            ),
            (
                {"Logs": {"App": "web"}},
                'Invalid check: MaxSilence must be at least 1s for Logs checks ("60s", or a '
                "number of nanoseconds)",
            ),
            (
                {"Logs": {"App": "web"}, "MaxSilence": 60},  # 60 ns
                "Invalid check: MaxSilence must be at least 1s",
            ),
            ({"Logs": {"App": "web"}, "MaxSilence": "-1m"}, "MaxSilence must be at least 1s"),
            (
                dict(logs, SilenceStatus="passing"),
                "Invalid check: SilenceStatus must be 'warning' or 'critical'",
            ),
            (dict(logs, SilenceStatus="Warning"), "SilenceStatus must be 'warning' or 'critical'"),
            (
                dict(logs, TTL="5s"),
                "Invalid check: a check is Logs, or one of TCP, HTTP and TTL, not both",
            ),
            (dict(logs, TCP="h:1"), "a check is Logs, or one of TCP, HTTP and TTL, not both"),
            (dict(logs, HTTP="http://h/"), "a check is Logs, or one of TCP, HTTP and TTL"),
            (
                dict(logs, Interval="10s"),
                "Invalid check: a Logs check takes no Interval (its messages tell)",
            ),
            (
                {"Logs": {"App": "web", "Hostname": "h 1"}, "MaxSilence": "60s"},
                "Invalid check: Logs.Hostname 'h 1' must be a syslog hostname or an address",
            ),
            (
                {"TTL": "5s", "MaxSilence": "60s"},
                "Invalid check: MaxSilence is a Logs check's, given without Logs",
            ),
            (
                {"TTL": "5s", "SilenceStatus": "critical"},
                "Invalid check: SilenceStatus is a Logs check's, given without Logs",
            ),
            (dict(logs, Status="silent"), "Status for checks must 'passing', 'warning'"),
        ]:
            with self.assertRaises(Invalid, msg=check) as caught:
                parsed({"Name": "web", "Check": check})
            self.assertIn(text, str(caught.exception), check)

    def test_wrong_types_fail_the_decode(self):
        for check, where in [
            ({"Logs": "web", "MaxSilence": "60s"}, "Check.Logs"),
            ({"Logs": {"App": 5}, "MaxSilence": "60s"}, "Check.Logs.App"),
            (
                {"Logs": {"App": "web", "Hostname": ["h"]}, "MaxSilence": "60s"},
                "Check.Logs.Hostname",
            ),
            ({"Logs": {"App": "web"}, "MaxSilence": True}, "Check.MaxSilence"),
            (
                {"Logs": {"App": "web"}, "MaxSilence": "60s", "SilenceStatus": 2},
                "Check.SilenceStatus",
            ),
        ]:
            with self.assertRaisesRegex(Invalid, f"^Request decode failed: {where}:", msg=check):
                parsed({"Name": "web", "Check": check})

    def test_what_the_registry_refuses_of_the_app(self):
        """A name the collector could never hear: refused when the instance is checked."""
        for app, reason in [
            ("my app", "without spaces"),
            ("a" * 256, "1-255 printable"),
            ("a\nb", "1-255 printable"),
        ]:
            instance = parsed(
                {"Name": "web", "Check": {"Logs": {"App": app}, "MaxSilence": "60s"}}
            )
            with self.assertRaisesRegex(Invalid, reason, msg=app):
                instance.validate()
