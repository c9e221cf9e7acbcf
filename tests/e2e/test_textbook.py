"""
The textbook chapter's four timestamp clients, each played exactly as it
behaves, against a real `suite-timestamp`:

- tsTclnt: one plain socket; sends what was typed with no line end, reads up
  to 1024 bytes, prints it, and goes on;
- tsTclntTW: a Twisted Protocol that writes without a line end on
  connectionMade and again on each dataReceived, and closes on empty input;
- tsTclntSS: a new connection for each message, sending `data\\r\\n` and
  reading once;
- tsUclnt: UDP datagrams with no line end.
"""

import re
import socket
import subprocess
import sys
import textwrap

from tests.e2e.process import ProcessTestCase

BUFSIZ = 1024
STAMP = r"\[\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\]"

TWISTED_CLIENT = textwrap.dedent("""
    import sys
    from twisted.internet import protocol, reactor

    typed = ["hello", "hi", ""]

    class TSClntProtocol(protocol.Protocol):
        def sendData(self):
            data = typed.pop(0)
            if data:
                self.transport.write(data.encode())
            else:
                self.transport.loseConnection()

        def connectionMade(self):
            self.sendData()

        def dataReceived(self, data):
            print(data.decode(), flush=True)
            self.sendData()

    class TSClntFactory(protocol.ClientFactory):
        protocol = TSClntProtocol
        def clientConnectionLost(self, connector, reason):
            reactor.stop()

        clientConnectionFailed = clientConnectionLost

    reactor.connectTCP("127.0.0.1", int(sys.argv[1]), TSClntFactory())
    reactor.callLater(10, reactor.stop)
    reactor.run()
""")


def plain_socket_client(port, typed=("hello", "hi")) -> list[bytes]:
    """tsTclnt: one connection, data sent as typed, one recv(BUFSIZ) per message."""
    answers = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for data in typed:
            sock.send(data.encode())
            answers.append(sock.recv(BUFSIZ))
    return answers


def socketserver_client(port, typed=("hello", "hi")) -> list[bytes]:
    """tsTclntSS: a new connection per message, `data\\r\\n`, one recv(BUFSIZ)."""
    answers = []
    for data in typed:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.send(f"{data}\r\n".encode())
            answers.append(sock.recv(BUFSIZ))
    return answers


def udp_client(port, typed=("hello", "hi")) -> list[bytes]:
    """tsUclnt: one datagram per message, no line end, one recvfrom(BUFSIZ)."""
    answers = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        for data in typed:
            sock.sendto(data.encode(), ("127.0.0.1", port))
            answers.append(sock.recvfrom(BUFSIZ)[0])
    return answers


class TextbookClients(ProcessTestCase):
    def start(self, framing):
        suite = self.start_suite(
            "",
            listeners=2,
            plugin="suite-timestamp",
            args=(
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--listen",
                "udp:0:interface=127.0.0.1",
                *(("--framing", framing) if framing else ()),
            ),
        )
        return (
            suite.port("timestamp tcp:0:interface=127.0.0.1"),
            suite.port("timestamp udp:0:interface=127.0.0.1"),
        )

    def assert_stamped(self, answers, end=""):
        self.assertEqual(len(answers), 2, answers)
        for answer, data in zip(answers, ("hello", "hi"), strict=True):
            answer = answer.decode() if isinstance(answer, bytes) else answer
            self.assertRegex(answer, f"^{STAMP} {data}{re.escape(end)}$")

    def test_every_textbook_client_against_read_framing(self):
        tcp, udp = self.start("read")
        self.assert_stamped(plain_socket_client(tcp))
        result = subprocess.run(
            [sys.executable, "-c", TWISTED_CLIENT, str(tcp)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        self.assert_stamped(result.stdout.splitlines())
        self.assert_stamped(socketserver_client(tcp), end="\r\n")
        self.assert_stamped(udp_client(udp))

    def test_the_socketserver_and_udp_clients_against_the_default(self):
        tcp, udp = self.start(None)
        self.assert_stamped(socketserver_client(tcp), end="\r\n")
        self.assert_stamped(udp_client(udp))
