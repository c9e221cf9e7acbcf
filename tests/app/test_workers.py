"""The workers key, and what the parent and a worker each build of one plan."""

import os
import socket
import textwrap

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from suite.app import tap as suite_tap
from suite.app.compose import WorkerRole, load, materialise
from suite.app.lifecycle import NamedService, walk
from suite.app.services import SERVICES
from suite.app.supervisor import WorkerReports, WorkerSupervisor
from suite.app.workers import MAX_WORKERS, cpus
from suite.echo import tap as echo_tap
from suite.foundation.config import ConfigError
from suite.foundation.options import ConfigMistake
from suite.net.listeners import ListenerService
from suite.net.twisted_internals import Decision, guard
from tests.helpers import tmp_dir

TWO_SERVICES = """
    workers = 2
    [echo]
    listen = ["tcp:0:interface=127.0.0.1", "udp:0:interface=127.0.0.1"]
    [names]
    listen = ["tcp:0:interface=127.0.0.1"]
    store = "memory"
    lookup_audit = ""
    """


class WorkersKeyTests(SynchronousTestCase):
    def setUp(self):
        self.directory = tmp_dir(self)

    def plan(self, body, overrides=None):
        path = self.directory / "suite.toml"
        path.write_text(textwrap.dedent(body))
        return load(SERVICES, str(path), overrides or {}, only_listed=False)

    def refused(self, body):
        path = self.directory / "suite.toml"
        message = str(self.assertRaises(ConfigError, self.plan, body))
        return message.replace(str(path), "FILE")

    def test_one_process_by_default(self):
        self.assertEqual(self.plan('[echo]\nlisten = ["tcp:0"]\n').workers, 1)

    def test_a_number_before_the_first_table(self):
        self.assertEqual(self.plan('workers = 3\n[echo]\nlisten = ["tcp:0"]\n').workers, 3)

    def test_auto_is_one_per_cpu_this_process_may_use(self):
        self.assertEqual(
            self.plan('workers = "auto"\n[echo]\nlisten = ["tcp:0"]\n').workers, cpus()
        )

    def test_out_of_range_or_wrong_type_is_one_line(self):
        for value, problem in (
            ("0", f'must be 1-{MAX_WORKERS}, or "auto" (one per CPU)'),
            (str(MAX_WORKERS + 1), f'must be 1-{MAX_WORKERS}, or "auto" (one per CPU)'),
            ('"many"', f'must be an integer (1-{MAX_WORKERS}) or "auto"'),
            ("true", f'must be an integer (1-{MAX_WORKERS}) or "auto"'),
        ):
            message = self.refused(f'workers = {value}\n[echo]\nlisten = ["tcp:0"]\n')
            self.assertEqual(message, f"FILE: workers = {value}: {problem}")

    def test_an_unknown_top_level_key_names_the_known_one(self):
        message = self.refused('worker = 2\n[echo]\nlisten = ["tcp:0"]\n')
        self.assertEqual(message, "FILE: worker = 2: unknown key (known: workers)")

    def test_a_section_written_as_a_value_is_still_that_mistake(self):
        self.assertEqual(self.refused("echo = 1\n"), "FILE: [echo] must be a table, not 1")

    def test_the_command_line_overrides_the_file(self):
        path = self.directory / "suite.toml"
        path.write_text('workers = 3\n[echo]\nlisten = ["tcp:0"]\n')
        options = suite_tap.Options()
        options.parseOptions(["--config", str(path), "--workers", "2"])
        self.assertEqual(options.validated.workers, 2)
        options = echo_tap.Options()
        options.parseOptions(["--workers", "auto", "--listen", "tcp:0"])
        self.assertEqual(options.validated.workers, cpus())

    def test_a_bad_option_names_the_option(self):
        options = echo_tap.Options()
        message = str(self.assertRaises(ConfigMistake, options.parseOptions, ["--workers", "0"]))
        self.assertEqual(
            message, f'command line: --workers 0: must be 1-{MAX_WORKERS}, or "auto" (one per CPU)'
        )


def by_service(root):
    return {child.name: child for child in root if isinstance(child, NamedService)}


class ParentTreeTests(SynchronousTestCase):
    """What the parent builds: held listeners, services that run once, the supervisor."""

    def setUp(self):
        path = tmp_dir(self) / "suite.toml"
        path.write_text(textwrap.dedent(TWO_SERVICES))
        self.plan = load(SERVICES, str(path), {}, only_listed=False)
        self.root = materialise(self.plan, MemoryReactorClock())
        self.services = by_service(self.root)

    def test_the_supervisor_runs_two_workers_of_the_same_plan(self):
        (supervisor,) = [p for p in walk(self.root) if isinstance(p, WorkerSupervisor)]
        self.assertEqual(supervisor.count, 2)
        self.assertEqual(supervisor.launch.services, tuple(d.name for d in SERVICES))
        self.assertIs(self.root.supervisor, supervisor)
        self.assertEqual(list(self.services)[-1], "workers")  # started last

    def test_services_of_the_workers_are_held_listeners_and_their_reports(self):
        echo = list(walk(self.services["echo"]))[1:]
        self.assertEqual(
            sorted(type(p).__name__ for p in echo),
            ["DatagramListenerService", "ListenerService", "WorkerReports"],
        )
        (supervisor,) = [p for p in walk(self.root) if isinstance(p, WorkerSupervisor)]
        self.assertEqual([name for name, _ in supervisor.held], ["echo", "echo"])

    def test_a_name_server_on_memory_runs_whole_in_the_parent(self):
        names = list(walk(self.services["names"]))
        self.assertFalse(any(isinstance(p, WorkerReports) for p in names))
        self.assertTrue(self.services["names"].factories)  # it serves its listeners


class WorkerTreeTests(SynchronousTestCase):
    """What a worker builds: the other services, on the sockets it inherited."""

    def setUp(self):
        self.patch(guard, "_decided", Decision(True))  # the suite's own port, whatever the path
        path = tmp_dir(self) / "suite.toml"
        path.write_text(textwrap.dedent(TWO_SERVICES))
        self.plan = load(SERVICES, str(path), {}, only_listed=False, inherited=True)
        self.stream = socket.create_server(("127.0.0.1", 0))
        self.datagram = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.datagram.bind(("127.0.0.1", 0))
        for sock in (self.stream, self.datagram):
            self.addCleanup(sock.close)
        (echo,) = [s for s in self.plan.services if s.name == "echo"]
        tcp, udp = echo.listeners
        self.role = WorkerRole(
            1,
            {
                # Copies: adopting closes the descriptor it was given, as a worker's are.
                ("echo", "listen", tcp.description): os.dup(self.stream.fileno()),
                ("echo", "listen", udp.description): os.dup(self.datagram.fileno()),
            },
            {},
        )
        self.reactor = MemoryReactorClock()
        self.root = materialise(self.plan, self.reactor, worker=self.role)

    def test_the_name_server_on_memory_is_left_to_the_parent(self):
        self.assertEqual(list(by_service(self.root)), ["echo"])

    def test_no_metrics_site_announcer_or_supervisor(self):
        self.assertIsNone(self.root.supervisor)
        self.assertFalse(any(isinstance(p, WorkerSupervisor) for p in walk(self.root)))

    def test_the_stream_socket_is_adopted_not_bound(self):
        listeners = [p for p in walk(self.root) if isinstance(p, ListenerService)]
        listeners[0].privilegedStartService()
        self.addCleanup(listeners[0].port.stopListening)
        self.assertEqual(listeners[0].port.getHost().port, self.stream.getsockname()[1])
        self.assertEqual(self.reactor.tcpServers, [])
