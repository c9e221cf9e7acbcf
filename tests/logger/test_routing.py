"""[[logger.route]]: which messages go to which files and forward targets."""

import json
import os
import textwrap
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.app import compose
from suite.app.lifecycle import walk
from suite.foundation.config import ConfigError, load
from suite.foundation.jsonlines import BatchWriter, open_output
from suite.logger.delivery import Delivery
from suite.logger.records import RecordSink
from suite.logger.routing import MAX_DECISIONS, open_routes, peer_host, route_writers
from suite.logger.service import SERVICE, LoggerSettings, build
from tests.helpers import tmp_dir

PEER = "192.0.2.7:40000"


def syslog(facility, severity, text, app="app", hostname="host"):
    """An RFC 5424 message."""
    return b"<%d>1 - %s %s - - - %s" % (
        facility * 8 + severity,
        hostname.encode(),
        app.encode(),
        text.encode(),
    )


class FakeOutlet:
    """A forward target's queue: what was put, and a `full` that can be switched."""

    full = False

    def __init__(self, name):
        self.name = name
        self.messages = []
        self.pressure = []

    def put(self, messages):
        self.messages += messages

    def stored(self):
        return None

    def on_pressure(self, callback):
        self.pressure.append(callback)


class RoutingTestCase(SynchronousTestCase):
    def setUp(self):
        self.directory = tmp_dir(self)
        self.clock = Clock()
        self.clock.advance(1763681971.25)

    def settings(self, body):
        path = self.directory / "suite.toml"
        path.write_text(f'[logger]\noutput = "main.jsonl"\n{textwrap.dedent(body)}')
        return load(str(path), [LoggerSettings], only_listed=True)["logger"]

    def delivery(self, body, outlets=()):
        """A Delivery with the routes of BODY ([[logger.route]] tables) and OUTLETS."""
        settings = self.settings(body)
        self.writer = self.open_writer(settings.output, settings)
        self.routes = open_routes(settings, self.clock)
        for writer in route_writers(self.routes):
            self.addCleanup(writer.output.close)
        return Delivery(
            RecordSink(self.writer, self.clock),
            {outlet.name: outlet for outlet in outlets},
            routes=self.routes,
        )

    def open_writer(self, path, settings):
        output = open_output(path, settings.rotate_bytes, settings.keep)
        writer = BatchWriter(output, self.clock, settings.flush_interval, settings.max_batch)
        self.addCleanup(output.close)
        return writer

    def messages(self, name):
        """The `message` of each record in the file NAME of the test's directory."""
        path = self.directory / name
        if not path.exists():
            return []
        return [json.loads(line)["message"] for line in path.read_text().splitlines()]


class MatchTests(RoutingTestCase):
    def routed(self, match, messages, peer=PEER):
        """Which of MESSAGES a route with MATCH takes (the rest reach the main output)."""
        delivery = self.delivery(
            f"""
            [[logger.route]]
            match = {match}
            output = "routed.jsonl"
            stop = true
            """
        )
        delivery.messages([(m, False) for m in messages], peer, "tcp")
        routed, kept = self.messages("routed.jsonl"), self.messages("main.jsonl")
        self.assertEqual(len(routed) + len(kept), len(messages))
        return routed

    def test_facility_one_of_a_list(self):
        messages = [syslog(4, 6, "auth"), syslog(10, 6, "authpriv"), syslog(1, 6, "user")]
        self.assertEqual(
            self.routed('{ facility = ["auth", "authpriv"] }', messages), ["auth", "authpriv"]
        )

    def test_severity_that_and_more_severe(self):
        messages = [syslog(1, 0, "emerg"), syslog(1, 3, "err"), syslog(1, 4, "warning")]
        messages += [syslog(1, 5, "notice"), syslog(1, 7, "debug")]
        self.assertEqual(
            self.routed('{ severity = "warning" }', messages), ["emerg", "err", "warning"]
        )

    def test_app_glob_is_case_sensitive_and_needs_an_app(self):
        messages = [
            syslog(4, 6, "sshd", app="sshd"),
            syslog(4, 6, "sshd-session", app="sshd-session"),
            syslog(4, 6, "SSHD", app="SSHD"),
            syslog(4, 6, "nil", app="-"),
            b"<38>Nov 20 23:39:31 gw sshd[42]: bsd",
        ]
        self.assertEqual(
            self.routed('{ app = "sshd*" }', messages), ["sshd", "sshd-session", "bsd"]
        )

    def test_hostname_glob(self):
        messages = [
            syslog(1, 6, "web1", hostname="web1.example"),
            syslog(1, 6, "db1", hostname="db1.example"),
            syslog(1, 6, "web2", hostname="web2.example.org"),
            syslog(1, 6, "nil", hostname="-"),
        ]
        self.assertEqual(self.routed('{ hostname = "web?.example" }', messages), ["web1"])

    def test_source_network_of_the_sender(self):
        match = '{ source = ["10.0.0.0/8", "2001:db8::/32"] }'
        for peer, taken in [
            ("10.1.2.3:514", True),
            ("192.0.2.7:514", False),
            ("[2001:db8::7]:514", True),
            ("[2001:db9::7]:514", False),
            ("/run/app.sock", False),  # a Unix peer has no address
        ]:
            for name in ("main.jsonl", "routed.jsonl"):
                (self.directory / name).unlink(missing_ok=True)
            routed = self.routed(match, [b"<13>hello", b"not syslog"], peer)
            self.assertEqual(routed, ["hello", "not syslog"] if taken else [], peer)

    def test_a_message_that_is_not_syslog_is_taken_only_without_syslog_conditions(self):
        delivery = self.delivery(
            """
            [[logger.route]]
            match = { severity = "debug" }
            output = "syslog.jsonl"
            stop = true
            [[logger.route]]
            match = { source = "192.0.2.0/24" }
            output = "any.jsonl"
            stop = true
            """
        )
        delivery.messages([(b"plain text", False), (b"<13>syslog", False)], PEER, "udp")
        self.assertEqual(self.messages("syslog.jsonl"), ["syslog"])
        self.assertEqual(self.messages("any.jsonl"), ["plain text"])

    def test_every_condition_must_hold(self):
        match = '{ facility = "auth", severity = "err", app = "su", hostname = "gw*" }'
        messages = [
            syslog(4, 3, "all", app="su", hostname="gw1"),
            syslog(4, 3, "host", app="su", hostname="db1"),
            syslog(4, 6, "severity", app="su", hostname="gw1"),
            syslog(1, 3, "facility", app="su", hostname="gw1"),
            syslog(4, 3, "app", app="sudo", hostname="gw1"),
        ]
        self.assertEqual(self.routed(match, messages), ["all"])


class ActionTests(RoutingTestCase):
    def test_routes_in_order_stop_ends_the_search_and_keeps_it_from_the_output(self):
        delivery = self.delivery(
            """
            [[logger.route]]
            match = { facility = "auth" }
            output = "auth.jsonl"
            stop = true
            [[logger.route]]
            match = { severity = "err" }
            output = "errors.jsonl"
            [[logger.route]]
            output = "everything.jsonl"
            """
        )
        frames = [syslog(4, 3, "auth err"), syslog(1, 3, "user err"), syslog(1, 6, "user info")]
        delivery.messages([(f, False) for f in frames], PEER, "tcp")
        self.assertEqual(self.messages("auth.jsonl"), ["auth err"])
        self.assertEqual(self.messages("errors.jsonl"), ["user err"])
        self.assertEqual(self.messages("everything.jsonl"), ["user err", "user info"])
        self.assertEqual(self.messages("main.jsonl"), ["user err", "user info"])

    def test_route_records_are_the_main_outputs_records_and_without_routes_todays(self):
        frames = [
            (syslog(4, 3, "caf\u00e9 \u202e"), False),
            (b"<13>Nov 20 23:39:31 gw su[1]: bsd", False),
            (b"\xff not utf-8", False),
            (b"x" * 20, True),
        ]
        delivery = self.delivery('[[logger.route]]\noutput = "copy.jsonl"\n')
        delivery.messages(frames, "[2001:db8::1]:514", "tls", "CN=client")
        delivery.event("disconnected", "[2001:db8::1]:514", "tls")
        main = (self.directory / "main.jsonl").read_bytes()
        copy = (self.directory / "copy.jsonl").read_bytes()
        self.assertEqual(main.splitlines()[:4], copy.splitlines())  # events: the output only
        self.assertEqual(len(main.splitlines()), 5)
        os.unlink(self.directory / "main.jsonl")
        unrouted = self.delivery("")
        self.assertIsNone(unrouted.router)
        unrouted.messages(frames, "[2001:db8::1]:514", "tls", "CN=client")
        today = []
        RecordSink(
            type("Lines", (), {"write_lines": lambda _, lines, records: today.extend(lines)})(),
            self.clock,
        ).messages(frames, "[2001:db8::1]:514", "tls", "CN=client")
        self.assertEqual((self.directory / "main.jsonl").read_bytes(), b"".join(today))
        self.assertEqual(b"".join(today), b"\n".join(copy.splitlines()) + b"\n")

    def test_a_route_output_is_rotated_like_the_output(self):
        body = '[[logger.route]]\noutput = "auth.jsonl"\nstop = true\n'
        settings = self.settings('rotate_bytes = 600\nkeep = 2\nfile_mode = "0600"\n' + body)
        self.assertEqual((settings.rotate_bytes, settings.keep), (600, 2))
        delivery = Delivery(
            RecordSink(self.open_writer(settings.output, settings), self.clock),
            routes=open_routes(settings, self.clock),
        )
        for n in range(12):
            delivery.messages([(syslog(4, 6, f"message {n:02d}"), False)], PEER, "tcp")
        names = sorted(os.listdir(self.directory))
        self.assertEqual(
            names, ["auth.jsonl", "auth.jsonl.1", "auth.jsonl.2", "main.jsonl", "suite.toml"]
        )
        for name in ("auth.jsonl", "auth.jsonl.1", "auth.jsonl.2"):
            self.assertLessEqual(os.path.getsize(self.directory / name), 600)
            self.assertEqual(os.stat(self.directory / name).st_mode & 0o777, 0o600)
        kept = self.messages("auth.jsonl.2") + self.messages("auth.jsonl.1")
        kept += self.messages("auth.jsonl")
        self.assertEqual(kept, [f"message {n:02d}" for n in range(12 - len(kept), 12)])

    def test_forward_to_named_targets_and_the_others_get_what_reaches_the_output(self):
        central, security, archive = FakeOutlet("central"), FakeOutlet("security"), FakeOutlet("a")
        delivery = self.delivery(
            """
            [[logger.forward]]
            name = "central"
            target = "relp:127.0.0.1:2514"
            [[logger.forward]]
            name = "security"
            target = "tcp:127.0.0.1:514"
            [[logger.forward]]
            name = "a"
            target = "tcp:127.0.0.1:515"
            [[logger.route]]
            match = { facility = "auth" }
            forward = ["security", "central"]
            stop = true
            [[logger.route]]
            match = { severity = "err" }
            forward = ["central"]
            [[logger.route]]
            match = { severity = "crit" }
            forward = ["central"]
            """,
            outlets=[central, security, archive],
        )
        frames = [syslog(4, 6, "auth"), syslog(1, 2, "crit"), syslog(1, 6, "info"), b"raw"]
        delivery.messages([(f, False) for f in frames], PEER, "tcp")
        self.assertEqual(security.messages, [frames[0]])
        self.assertEqual(central.messages, [frames[0], frames[1]])  # crit once, not twice
        self.assertEqual(archive.messages, frames[1:])
        self.assertEqual(self.messages("main.jsonl"), ["crit", "info", "raw"])

    def test_two_routes_naming_one_file_share_its_writer_and_write_a_message_once(self):
        delivery = self.delivery(
            """
            [[logger.route]]
            match = { facility = "auth" }
            output = "security.jsonl"
            [[logger.route]]
            match = { severity = "err" }
            output = "./security.jsonl"
            """
        )
        self.assertIs(self.routes[0].writer, self.routes[1].writer)
        self.assertEqual(len(delivery.router.writers), 1)
        frames = [syslog(4, 3, "both"), syslog(4, 6, "auth"), syslog(1, 3, "err")]
        delivery.messages([(f, False) for f in frames], PEER, "tcp")
        self.assertEqual(self.messages("security.jsonl"), ["both", "auth", "err"])

    def test_decisions_kept_for_repeated_headers_are_bounded(self):
        delivery = self.delivery(
            '[[logger.route]]\nmatch = { app = "a1*" }\noutput = "a1.jsonl"\n'
        )
        apps = [f"a{n}" for n in range(MAX_DECISIONS + 500)]
        for chunk in range(0, len(apps), 1000):
            frames = [(syslog(1, 6, app, app=app), False) for app in apps[chunk : chunk + 1000]]
            delivery.messages(frames, PEER, "udp")
        self.assertLessEqual(len(delivery.router._decisions), MAX_DECISIONS)
        self.assertEqual(self.messages("a1.jsonl"), [app for app in apps if app.startswith("a1")])
        self.assertEqual(self.messages("main.jsonl"), apps)


class WaitAndPressureTests(RoutingTestCase):
    def test_written_waits_for_the_route_writers_that_got_messages(self):
        delivery = self.delivery('[[logger.route]]\noutput = "routed.jsonl"\nstop = true\n')
        for writer in (self.writer, *delivery.router.writers):
            writer.startService()
            self.addCleanup(writer.stopService)
        delivery.messages([(b"<13>routed", False)], PEER, "relp")
        written = delivery.written()
        self.assertNoResult(written)
        self.assertEqual(self.messages("routed.jsonl"), [])
        self.clock.advance(0)
        self.successResultOf(written)
        self.assertEqual(self.messages("routed.jsonl"), ["routed"])

    def test_a_full_route_writer_holds_every_listener(self):
        if not os.path.exists("/dev/full"):
            self.skipTest("no /dev/full to play a full disk")
        delivery = self.delivery('max_buffer = 100\n[[logger.route]]\noutput = "/dev/full"\n')
        told = []
        delivery.on_pressure(told.append)
        delivery.messages([(b"<13>held back", False)], PEER, "tcp")
        self.assertEqual((delivery.full, told), (True, [True]))
        self.assertEqual(self.messages("main.jsonl"), ["held back"])


class ConfigTests(RoutingTestCase):
    def test_a_route_writing_the_logger_output_is_refused_however_spelt(self):
        settings = self.settings('[[logger.route]]\noutput = "./main.jsonl"\nstop = true\n')
        with self.assertRaises(ConfigError) as raised:
            open_routes(settings, self.clock)
        self.assertIn('[logger.route] output = "./main.jsonl"', str(raised.exception))
        self.assertIn("is the logger's own output", str(raised.exception))

    def test_an_unwritable_route_output_is_a_mistake_found_by_check_and_at_start(self):
        (self.directory / "file").write_text("")
        settings = self.settings('[[logger.route]]\noutput = "file/auth.jsonl"\nstop = true\n')
        (mistake,) = SERVICE.preflight(settings)
        self.assertIn('[logger.route] output = "file/auth.jsonl"', str(mistake))
        self.assertIn("is not a directory", str(mistake))
        with self.assertRaises(ConfigError) as raised:
            build(settings, self.clock)
        self.assertIn("[logger.route] output", str(raised.exception))

    def test_build_makes_each_route_writer_a_service_of_the_logger(self):
        settings = self.settings(
            """
            [[logger.route]]
            match = { facility = "auth" }
            output = "auth.jsonl"
            [[logger.route]]
            match = { facility = "mail" }
            output = "auth.jsonl"
            [[logger.route]]
            match = { facility = "cron" }
            output = "cron.jsonl"
            """
        )
        parts = build(settings, self.clock)
        writers = [s for s in parts.services if isinstance(s, BatchWriter)]
        self.assertEqual(
            [os.path.basename(w.name) for w in writers], ["main.jsonl", "auth.jsonl", "cron.jsonl"]
        )
        for writer in writers:
            self.addCleanup(writer.output.close)


class ReopenTests(RoutingTestCase):
    def test_sighup_reopens_the_route_files_too(self):
        """logrotate renamed them all: each writer goes on in a new file at its path."""
        path = self.directory / "suite.toml"
        path.write_text(
            '[logger]\nlisten = ["tcp:0:interface=127.0.0.1"]\noutput = "main.jsonl"\n'
            '[[logger.route]]\noutput = "auth.jsonl"\n'
        )
        # The logger alone: every service would build the name server too, whose SQLite
        # store's thread pool (started with the reactor, never stopped here) outlives pytest.
        root = compose.build([SERVICE], str(path), {}, reactor, only_listed=True)
        logger = root.getServiceNamed("logger")
        writers = [part for part in walk(logger) if isinstance(part, BatchWriter)]
        self.assertEqual([os.path.basename(w.name) for w in writers], ["main.jsonl", "auth.jsonl"])
        for writer in writers:
            self.addCleanup(writer.output.close)
            writer.write_lines([b"before\n"], 1)
            os.rename(writer.name, writer.name + ".1")
        root.reload()
        for writer in writers:
            writer.write_lines([b"after\n"], 1)
            self.assertEqual(Path(writer.name).read_bytes(), b"after\n")
            self.assertEqual(Path(writer.name + ".1").read_bytes(), b"before\n")


class PeerHostTests(SynchronousTestCase):
    def test_the_address_of_a_records_peer(self):
        for peer, host in [
            ("192.0.2.7:514", "192.0.2.7"),
            ("[2001:db8::1]:514", "2001:db8::1"),
            ("unix", None),
            ("/run/a:b.sock", None),
            ("/run/log.sock", None),
        ]:
            self.assertEqual(peer_host(peer), host, peer)
