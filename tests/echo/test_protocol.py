from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.echo.protocol import LineEchoFactory, RawEchoFactory, echo_datagram
from suite.echo.service import EchoSettings
from tests.helpers import connect


class LineEchoTests(SynchronousTestCase):
    def setUp(self):
        self.protocol, self.transport = connect(
            LineEchoFactory(EchoSettings(idle_timeout=0), Clock())
        )

    def test_you_said(self):
        self.protocol.dataReceived(b"hello there\n")
        self.assertEqual(self.transport.value(), b"You said: hello there\r\n")

    def test_empty_line(self):
        self.protocol.dataReceived(b"\n")
        self.assertEqual(self.transport.value(), b"You said: \r\n")

    def test_quit_says_goodbye_closes_and_ignores_the_rest(self):
        self.protocol.dataReceived(b"a\nquit\nb\n")
        self.assertEqual(self.transport.value(), b"You said: a\r\nGoodbye.\r\n")
        self.assertTrue(self.transport.disconnecting)

    def test_quit_with_crlf(self):
        self.protocol.dataReceived(b"quit\r\n")
        self.assertEqual(self.transport.value(), b"Goodbye.\r\n")

    def test_only_exact_quit_quits(self):
        self.protocol.dataReceived(b"quit now\nQUIT\n")
        self.assertEqual(self.transport.value(), b"You said: quit now\r\nYou said: QUIT\r\n")
        self.assertFalse(self.transport.disconnecting)


class RawEchoTests(SynchronousTestCase):
    def setUp(self):
        self.protocol, self.transport = connect(
            RawEchoFactory(EchoSettings(mode="raw", idle_timeout=0), Clock())
        )

    def test_every_byte_back_unchanged(self):
        payload = bytes(range(256)) + b"\r\n\n\r\x00"
        self.protocol.dataReceived(payload)
        self.protocol.dataReceived(b"quit\n")
        self.assertEqual(self.transport.value(), payload + b"quit\n")
        self.assertFalse(self.transport.disconnecting)

    def test_half_close_flushes_then_closes(self):
        self.protocol.dataReceived(b"tail")
        self.protocol.readConnectionLost()
        self.assertEqual(self.transport.value(), b"tail")
        self.assertTrue(self.transport.disconnecting)


class EchoDatagramTests(SynchronousTestCase):
    def test_datagram_sent_back_unchanged(self):
        payload = b"\x00binary\r\n"
        self.assertEqual(echo_datagram(payload), payload)
