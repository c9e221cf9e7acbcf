"""The name server says at every start which of its listeners expose registrations or the token."""

import socket

from twisted.internet import endpoints
from twisted.internet.testing import MemoryReactor
from twisted.python.systemd import ListenFDs
from twisted.trial.unittest import SynchronousTestCase

from suite.names import service as names_service
from suite.names.exposure import token_in_clear
from suite.names.service import NamesSettings
from tests.helpers import captured_log

IN_CLEAR = "the token crosses the network in clear"


class TokenInClearTests(SynchronousTestCase):
    def passed_by_systemd(self, **bound):
        """Listening sockets bound as BOUND (name -> address), passed as systemd passes them."""
        sockets = []
        for address in bound.values():
            sock = socket.socket()
            self.addCleanup(sock.close)
            sock.bind((address, 0))
            sock.listen()
            sockets.append(sock)
        # Twisted reads $LISTEN_FDS once, on import: hand its systemd: parser these instead.
        self.patch(
            endpoints._SystemdParser,
            "_sddaemon",
            ListenFDs([s.fileno() for s in sockets], tuple(bound)),
        )

    def test_which_listeners_carry_a_token_in_clear(self):
        self.passed_by_systemd(local="127.0.0.1", anywhere="0.0.0.0")
        reactor = MemoryReactor()
        for description, in_clear in (
            ("tcp:5300", True),
            ("tcp:5300:interface=0.0.0.0", True),
            ("tcp:5300:interface=192.0.2.1", True),
            ("tcp:5300:interface=names.example", True),  # a name may resolve anywhere
            ("tcp6:5300", True),
            ("tcp6:5300:interface=\\:\\:", True),
            ("tcp:5300:interface=127.0.0.1", False),
            ("tcp:5300:interface=localhost", False),
            ("tcp6:5300:interface=\\:\\:1", False),
            ("unix:/run/names.sock", False),
            ("ssl:5300:privateKey=names.key:certKey=names.crt", False),
            ("systemd:domain=INET:name=local", False),
            ("systemd:domain=INET:name=anywhere", True),
        ):
            self.assertEqual(token_in_clear(description, reactor), in_clear, description)


class WarningTests(SynchronousTestCase):
    def warnings(self, **settings):
        lines = captured_log(self)
        names_service.build(
            NamesSettings(store="memory", lookup_audit="", **settings), MemoryReactor()
        )
        return [line for line in lines if line.startswith("names: ")]

    def test_one_line_per_plain_listener_other_hosts_reach(self):
        lines = self.warnings(
            listen=("tcp:0", "tcp:0:interface=127.0.0.1", "tcp6:0"), token="s3cret-token"
        )
        self.assertEqual(
            lines,
            [
                f"names: {listener} accepts connections from other hosts without TLS: {IN_CLEAR}, "
                "for anyone on the path to read (serve it through tls_listen, or bind it to "
                "loopback)"
                for listener in ("tcp:0", "tcp6:0")
            ],
        )
        self.assertFalse(any("s3cret-token" in line for line in lines))

    def test_quiet_when_the_token_never_leaves_tls_or_this_machine(self):
        for listen, tls_listen in (
            (("tcp:0:interface=127.0.0.1",), ("tcp:0",)),
            (("unix:/run/names.sock",), ()),
        ):
            self.assertEqual(
                self.warnings(listen=listen, tls_listen=tls_listen, token="s3cret-token"), []
            )

    def test_the_http_api_counts_as_the_amp_listeners_do(self):
        lines = self.warnings(
            http_listen=("tcp:0", "tcp:0:interface=127.0.0.1"),
            http_tls_listen=("tcp:0",),
            token="s3cret-token",
            tls_listen=(),
        )
        self.assertEqual(len(lines), 1)
        self.assertTrue(lines[0].startswith("names: tcp:0 accepts connections from other hosts"))
        self.assertIn(IN_CLEAR, lines[0])
        (line,) = self.warnings(listen=(), http_listen=("tcp:0",))
        self.assertIn("no token is set", line)

    def test_without_a_token_the_open_registry_is_the_warning(self):
        (line,) = self.warnings(listen=("tcp:0",))
        self.assertIn("no token is set", line)
        self.assertNotIn(IN_CLEAR, line)
