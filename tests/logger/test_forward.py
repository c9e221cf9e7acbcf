"""
Forwarding to a target: reconnection with backoff, one log line per outage
and per recovery, /health, octet-counted framing, the transport's pauses,
RELP through the forwarder (resent after a lost connection, serverclose,
refused messages), stopping, and client TLS (files checked at start, the
target's certificate verified over a real loopback connection).
"""

import contextlib
import re
import socket
from pathlib import Path

from twisted.internet import defer, reactor
from twisted.internet.error import ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from suite.foundation.config import ConfigError
from suite.logger.forward import (
    ANSWER_TIMEOUT,
    CLOSE_WAIT,
    CONNECT_TIMEOUT,
    GRACE,
    HELD_BYTES,
    PROBATION_MESSAGES,
    SETTLE,
    STABLE,
    Forwarder,
    forward_mistakes,
    octet_counted,
    open_forwarders,
    target_tls,
)
from suite.logger.queue import ForwardQueue
from suite.logger.relay_settings import ForwardSettings
from suite.logger.relp_client import frame
from suite.net.tls import TLSSettings, tls_options
from tests.helpers import captured_log, make_pki

OPENED = frame(1, b"rsp", b"200 OK\nrelp_version=0\nrelp_software=librelp\ncommands=syslog")


def memory_queue(clock):
    """A forward queue in memory only, as large as the default."""
    return ForwardQueue("central", "", 16 * 2**20, 2**30, "drop", clock)


class FakeEndpoint:
    """Connection attempts the test answers: accept() or refuse()."""

    def __init__(self):
        self.attempts = []

    def connect(self, factory):
        connecting = defer.Deferred()
        self.attempts.append((factory, connecting))
        return connecting

    def accept(self):
        factory, connecting = self.attempts[-1]
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        connecting.callback(protocol)
        return protocol, transport

    def refuse(self):
        self.attempts[-1][1].errback(Failure(ConnectionRefusedError("Connection refused")))


def lose(protocol, why=ConnectionLost):
    protocol.connectionLost(Failure(why()))


def drained(transport):
    """Twisted paused the session (its buffer filled), then resumed it: the buffer was written."""
    transport.producer.pauseProducing()
    transport.producer.resumeProducing()


class ForwarderTestCase(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.queue = memory_queue(self.clock)
        self.endpoint = FakeEndpoint()
        self.log = captured_log(self)

    def start(self, target="tcp:192.0.2.1:514", tls=None, **keys):
        settings = ForwardSettings(name="central", target=target, **keys)
        self.forwarder = Forwarder(settings, self.queue, self.clock, tls, self.endpoint)
        self.forwarder.startService()
        return self.forwarder

    def retry_delay(self):
        """The delay of the one timer set for later (the reconnection)."""
        now = self.clock.seconds()
        (call,) = [c for c in self.clock.getDelayedCalls() if c.active() and c.getTime() > now]
        return call.getTime() - now

    def samples(self):
        return {name: value for name, _, value in self.forwarder.metric_samples()}


class ReconnectionTests(ForwarderTestCase):
    def test_backoff_doubles_from_1_to_60_seconds(self):
        self.start()
        delays = []
        for _ in range(9):
            self.endpoint.refuse()
            delays.append(self.retry_delay())
            self.clock.advance(delays[-1])
        assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]
        assert len(self.endpoint.attempts) == 10

    def test_a_connection_that_lasted_resets_the_delay(self):
        self.start()
        for _ in range(4):
            self.endpoint.refuse()
            self.clock.advance(self.retry_delay())
        protocol, _ = self.endpoint.accept()
        self.clock.advance(STABLE)
        lose(protocol)
        assert self.retry_delay() == 1

    def test_a_target_that_accepts_and_closes_at_once_is_not_hammered(self):
        self.start()
        delays = []
        for _ in range(4):
            protocol, _ = self.endpoint.accept()
            lose(protocol)
            delays.append(self.retry_delay())
            self.clock.advance(delays[-1])
        assert delays == [1, 2, 4, 8]

    def test_an_attempt_that_never_completes_is_given_up(self):
        self.start()
        self.clock.advance(CONNECT_TIMEOUT)
        assert self.retry_delay() == 1
        assert any("unreachable" in line for line in self.log)

    def test_one_line_per_outage_and_one_on_recovery(self):
        self.start()
        self.queue.put([b"a", b"b"])
        for _ in range(5):
            self.endpoint.refuse()
            self.clock.advance(self.retry_delay())
        down = [line for line in self.log if "unreachable" in line]
        assert down == [
            "forward central: tcp:192.0.2.1:514 unreachable: Connection was refused by other "
            "side: Connection refused.; 2 messages wait in its queue; trying again from "
            "1 s to every 60 s"
        ]
        _, transport = self.endpoint.accept()
        back = [line for line in self.log if "connected" in line]
        assert back == [
            "forward central: connected to tcp:192.0.2.1:514 after 31.0 s unreachable; "
            "messages waiting: 2"
        ]
        self.clock.advance(SETTLE)
        drained(transport)
        assert len(self.queue) == 0

    def test_health_is_degraded_while_the_target_is_down(self):
        self.start()
        assert self.forwarder.health_problems() == []  # the first attempt goes on
        self.clock.advance(100)
        self.endpoint.refuse()
        ((state, text),) = self.forwarder.health_problems()
        assert state == "degraded"
        assert text.startswith(
            "forward target central (tcp:192.0.2.1:514) unreachable since 1970-01-01T00:01:40Z: "
        )
        self.clock.advance(self.retry_delay())
        self.endpoint.accept()
        assert self.forwarder.health_problems() == []

    def test_metrics_count_per_target(self):
        self.start(target="relp:192.0.2.1:2514")
        protocol, transport = self.endpoint.accept()
        assert self.samples()["forward_connected"] == 0  # RELP's open is not answered yet
        protocol.dataReceived(OPENED)
        assert self.samples()["forward_connected"] == 1
        self.queue.put([b"a", b"b", b"c"])
        protocol.dataReceived(frame(2, b"rsp", b"200 OK"))
        lose(protocol)
        samples = self.samples()
        assert (samples["forward_sent"], samples["forward_retried"]) == (1, 2)
        assert samples["forward_connected"] == 0
        assert samples["forward_queued"] == 3  # the queue's own, through its forwarder
        labels = {name: labels for name, labels, _ in self.forwarder.metric_samples()}
        assert labels["forward_sent"] == ("central",)


class OctetCountedTests(ForwarderTestCase):
    def test_messages_go_octet_counted_as_received(self):
        assert octet_counted([(1, b"<13>a b"), (2, b"x\ny\xff")]) == b"7 <13>a b4 x\ny\xff"
        self.start()
        self.queue.put([b"<13>waiting"])
        _, transport = self.endpoint.accept()
        self.queue.put([b"<13>a b", b"x\ny"])
        assert transport.value() == b"11 <13>waiting7 <13>a b3 x\ny"
        self.clock.advance(SETTLE)  # the connection lasted
        assert len(self.queue) == 3  # but Twisted may still hold it
        drained(transport)
        assert len(self.queue) == 0
        assert self.samples()["forward_sent"] == 3
        self.queue.put([b"<13>now"])
        assert transport.value().endswith(b"7 <13>now")
        assert len(self.queue) == 1
        drained(transport)
        assert len(self.queue) == 0  # done once Twisted's buffer was written

    def test_what_a_new_connection_took_goes_again_if_it_does_not_last(self):
        self.start()
        total = PROBATION_MESSAGES + 5
        self.queue.put([b"%06d" % n for n in range(total)])
        protocol, transport = self.endpoint.accept()
        first = b"".join(b"6 %06d" % n for n in range(PROBATION_MESSAGES))
        assert transport.value() == first  # what a connection on probation may take
        lose(protocol)  # refused after the handshake, or a balancer without a backend
        assert len(self.queue) == total
        assert self.samples()["forward_retried"] == PROBATION_MESSAGES
        self.clock.advance(self.retry_delay())
        _, transport = self.endpoint.accept()
        self.clock.advance(0)
        assert transport.value() == first
        self.clock.advance(SETTLE)
        assert transport.value() == first + b"".join(
            b"6 %06d" % n for n in range(PROBATION_MESSAGES, total)
        )
        drained(transport)
        assert len(self.queue) == 0

    def test_the_transports_pause_is_respected(self):
        self.start()
        _, transport = self.endpoint.accept()
        transport.producer.pauseProducing()
        self.queue.put([b"held"])
        assert transport.value() == b""
        assert len(self.queue) == 1
        transport.producer.resumeProducing()
        assert transport.value() == b"4 held"

    def test_a_large_queue_goes_in_batches_over_several_turns(self):
        self.start()
        _, transport = self.endpoint.accept()
        self.clock.advance(SETTLE)
        self.queue.put([b"%06d" % n for n in range(40_000)])
        written = len(transport.value())
        assert 0 < written < 40_000 * 8  # the reactor gets a turn between rounds
        self.clock.advance(0)
        self.clock.advance(0)
        assert transport.value() == b"".join(b"6 %06d" % n for n in range(40_000))

    def test_over_tls_nothing_is_sent_before_the_handshake(self):
        self.start(target="tls:localhost:6514", tls=object())
        self.queue.put([b"secret"])
        protocol, transport = self.endpoint.accept()
        assert transport.value() == b""
        assert self.samples()["forward_connected"] == 0
        protocol.handshakeCompleted()
        assert transport.value() == b"6 secret"

    def test_what_twisted_may_still_hold_stays_queued_when_a_stop_aborts(self):
        # A target that stopped reading: the kernel's buffer is full, Twisted's fills and
        # pauses the session, the stop's close never completes and is aborted.
        self.start()
        _, transport = self.endpoint.accept()
        self.clock.advance(SETTLE)
        self.queue.put([b"%06d" % n for n in range(5000)])
        transport.producer.pauseProducing()
        stopped = self.forwarder.stopService()
        self.clock.advance(GRACE)
        assert transport.disconnecting and transport.producer is None
        self.clock.advance(CLOSE_WAIT)
        assert stopped.called
        assert len(self.queue) == 5000  # kept for the next start
        assert self.samples()["forward_sent"] == 0
        assert self.samples()["forward_retried"] == 5000

    def test_a_lost_connection_gives_back_what_was_not_known_written(self):
        self.start()
        protocol, transport = self.endpoint.accept()
        self.clock.advance(SETTLE)
        self.queue.put([b"early"])
        drained(transport)
        self.queue.put([b"late"])
        lose(protocol)
        assert self.samples()["forward_sent"] == 1
        assert self.samples()["forward_retried"] == 1
        assert len(self.queue) == 1

    def test_batches_far_behind_the_newest_write_are_done_with(self):
        # Twisted pauses the session once it holds 64 KiB: what came long before is written.
        self.start()
        _, transport = self.endpoint.accept()
        self.clock.advance(SETTLE)
        self.queue.put([b"x" * 1000 for _ in range(HELD_BYTES // 1000 + 3 * 256)])
        self.clock.advance(0)
        sent = self.samples()["forward_sent"]
        assert 0 < sent < self.queue.queued
        assert len(self.queue) == self.queue.queued - sent
        assert len(self.queue) * 1005 >= HELD_BYTES

    def test_a_queue_full_of_what_was_written_is_not_held_for_ever(self):
        # A queue smaller than what Twisted might hold: no pause will ever come.
        self.queue = ForwardQueue("central", "", 4096, 0, "block", self.clock)
        self.start()
        _, transport = self.endpoint.accept()
        self.clock.advance(SETTLE)
        while not self.queue.full:
            self.queue.put([b"x" * 100])
        assert self.samples()["forward_sent"] == 0
        self.clock.advance(SETTLE)  # unpaused, nothing else to send: the kernel took it
        assert not self.queue.full
        assert len(self.queue) == 0
        assert self.samples()["forward_sent"] == len(transport.value()) // 104

    def test_a_clean_stop_is_done_with_everything_written(self):
        self.start()
        protocol, transport = self.endpoint.accept()
        self.clock.advance(SETTLE)
        self.queue.put([b"last"])
        stopped = self.forwarder.stopService()
        assert transport.disconnecting  # nothing else to send: closing at once
        lose(protocol, ConnectionDone)  # Twisted closes once its buffer is written
        assert stopped.called
        assert self.samples()["forward_sent"] == 1
        assert self.samples()["forward_retried"] == 0
        assert len(self.queue) == 0


class RelpForwardingTests(ForwarderTestCase):
    def connected(self):
        """The next attempt connects and its session opens; the open frame is cleared."""
        protocol, transport = self.endpoint.accept()
        transport.clear()
        protocol.dataReceived(OPENED)
        return protocol, transport

    def test_unanswered_messages_are_sent_again_after_a_lost_connection(self):
        self.start(target="relp:192.0.2.1:2514", window=2)
        protocol, transport = self.connected()
        self.queue.put([b"one", b"two", b"three"])
        assert transport.value() == b"2 syslog 3 one\n3 syslog 3 two\n"  # the window: 2
        protocol.dataReceived(frame(2, b"rsp", b"200 OK"))
        assert transport.value().endswith(b"4 syslog 5 three\n")
        lose(protocol)
        assert self.samples()["forward_retried"] == 2
        assert self.retry_delay() == 1
        self.clock.advance(1)
        protocol, transport = self.connected()
        assert transport.value() == b"2 syslog 3 two\n3 syslog 5 three\n"
        protocol.dataReceived(frame(2, b"rsp", b"200 OK") + frame(3, b"rsp", b"200 OK"))
        assert len(self.queue) == 0
        assert self.samples()["forward_sent"] == 3

    def test_a_target_that_stops_answering_is_given_up(self):
        self.start(target="relp:192.0.2.1:2514")
        protocol, transport = self.connected()
        self.clock.advance(ANSWER_TIMEOUT * 2)  # nothing sent, nothing awaited
        assert not transport.disconnecting
        self.queue.put([b"a", b"b"])
        self.clock.advance(ANSWER_TIMEOUT - 1)
        protocol.dataReceived(frame(2, b"rsp", b"200 OK"))  # an answer: it lives
        self.clock.advance(ANSWER_TIMEOUT - 1)
        assert not transport.disconnecting
        self.clock.advance(1)
        assert transport.disconnecting
        lose(protocol)
        ((_, text),) = self.forwarder.health_problems()
        assert text.endswith(": no answer for 90 s")
        assert self.samples()["forward_retried"] == 1

    def test_serverclose_reconnects(self):
        self.start(target="relp:192.0.2.1:2514")
        protocol, transport = self.connected()
        protocol.dataReceived(frame(0, b"serverclose"))
        assert transport.disconnecting
        lose(protocol, ConnectionDone)
        assert self.retry_delay() == 1
        assert any("serverclose" in line for line in self.log)
        self.clock.advance(1)
        assert len(self.endpoint.attempts) == 2

    def test_refused_messages_are_counted_logged_and_not_sent_again(self):
        self.start(target="relp:192.0.2.1:2514")
        protocol, transport = self.connected()
        self.queue.put([b"a", b"b", b"c"])
        protocol.dataReceived(
            frame(2, b"rsp", b"500 nope")
            + frame(3, b"rsp", b"500 nope\x1b[2J")
            + frame(4, b"rsp", b"200 OK")
        )
        assert len(self.queue) == 0
        refused = [line for line in self.log if "refused" in line]
        assert refused == [
            "forward central: relp:192.0.2.1:2514 refused 2 messages, taken as done (RELP does "
            "not send them again): 500 nope\\x1b[2J"
        ]
        samples = list(self.forwarder.metric_samples())
        assert ("errors", ("forward_refused",), 2) in samples

    def test_a_refused_session_is_an_outage(self):
        self.start(target="relp:192.0.2.1:2514")
        protocol, transport = self.endpoint.accept()
        protocol.dataReceived(frame(1, b"rsp", b"500 required command not supported by client"))
        lose(protocol, ConnectionDone)
        ((_, text),) = self.forwarder.health_problems()
        assert text.endswith(
            "the target refused the session: 500 required command not supported by client"
        )
        assert self.retry_delay() == 1

    def test_stop_sends_within_the_grace_then_closes_then_stops_the_queue(self):
        self.start(target="relp:192.0.2.1:2514")
        protocol, transport = self.connected()
        self.queue.put([b"last"])
        stopped = []
        self.forwarder.stopService().addCallback(stopped.append)
        assert transport.value() == b"2 syslog 4 last\n"  # waiting for its answer
        protocol.dataReceived(frame(2, b"rsp", b"200 OK"))
        assert transport.value() == b"2 syslog 4 last\n3 close 0\n"
        protocol.dataReceived(frame(3, b"rsp"))
        assert transport.disconnecting and not stopped
        lose(protocol, ConnectionDone)
        assert stopped
        assert not self.queue.running
        assert self.samples()["forward_retried"] == 0

    def test_stop_gives_up_on_a_silent_target(self):
        self.start(target="relp:192.0.2.1:2514")
        protocol, transport = self.connected()
        self.queue.put([b"unanswered"])
        stopped = self.forwarder.stopService()
        self.clock.advance(GRACE)
        assert transport.value().endswith(b"3 close 0\n")
        self.clock.advance(CLOSE_WAIT)
        assert stopped.called
        assert self.samples()["forward_retried"] == 1
        assert len(self.queue) == 1  # still queued, for the next start
        assert not self.queue.running

    def test_stop_during_an_attempt_aborts_it_quietly(self):
        self.start(target="relp:192.0.2.1:2514")
        protocol, transport = self.endpoint.accept()  # the open is not answered yet
        stopped = self.forwarder.stopService()
        assert transport.disconnecting
        protocol.dataReceived(OPENED)  # too late: still aborted
        lose(protocol)
        assert stopped.called
        assert not [line for line in self.log if "unreachable" in line]
        assert self.forwarder.health_problems() == []

    def test_stop_while_down_stops_trying(self):
        self.start(target="relp:192.0.2.1:2514")
        self.endpoint.refuse()
        stopped = self.forwarder.stopService()
        assert stopped.called
        assert not [c for c in self.clock.getDelayedCalls() if c.active()]


class TargetTLSFileTests(SynchronousTestCase):
    def setUp(self):
        self.directory = Path(self.mktemp())
        self.directory.mkdir()
        self.pki = make_pki(self.directory)

    def test_unreadable_or_wrong_files_are_config_errors_naming_their_key(self):
        not_pem = self.directory / "not.pem"
        not_pem.write_text("hello")
        for keys, named in (
            ({"ca": str(self.directory / "missing.crt")}, "ca"),
            ({"ca": str(not_pem)}, "ca"),
            (
                {"certificate": self.pki["client_crt"], "private_key": self.pki["server_key"]},
                "private_key",
            ),
            ({"certificate": str(not_pem), "private_key": self.pki["client_key"]}, "certificate"),
        ):
            settings = ForwardSettings(name="central", target="tls:localhost:6514", **keys)
            with self.assertRaises(ConfigError) as caught:
                target_tls(settings)
            assert f"[logger.forward] {named} = " in str(caught.exception), caught.exception

    def test_suite_check_finds_them_too(self):
        good = ForwardSettings(name="a", target="tls:localhost:6514", ca=self.pki["ca"])
        bad = ForwardSettings(name="b", target="tls:localhost:6514", ca="/nonexistent/ca.crt")
        half = ForwardSettings(name="c", target="tls:x:1", certificate=self.pki["client_crt"])
        (mistake,) = forward_mistakes([good, bad, half])  # half: relay_mistakes says it
        assert str(mistake).startswith("default: [logger.forward] ca = ")

    def test_a_queue_directory_that_cannot_be_used_is_a_config_error(self):
        not_a_directory = self.directory / "file"
        not_a_directory.write_text("")
        forward = ForwardSettings(
            name="central", target="relp:localhost:2514", queue_dir=str(not_a_directory)
        )
        with self.assertRaises(ConfigError) as caught:
            open_forwarders([forward], False, MemoryReactorClock())
        assert "[logger.forward] queue_dir = " in str(caught.exception), caught.exception
        assert "cannot open" in str(caught.exception)

    def test_each_target_gets_a_forwarder_and_its_queue(self):
        forwards = [
            ForwardSettings(name="a", target="relp:localhost:2514"),
            ForwardSettings(
                name="b",
                target="tls:localhost:6514",
                ca=self.pki["ca"],
                queue_dir=str(self.directory / "b"),
            ),
        ]
        a, b = open_forwarders(forwards, True, MemoryReactorClock())
        # No service name: a sibling may hold it (the writer of `output = "a"`).
        assert a.name is None and b.name is None
        assert (a.queue.name, a.tls) == ("a", None)
        assert (b.queue.name, b.queue.sync, b.queue.directory) == (
            "b",
            True,
            str((self.directory / "b").absolute()),
        )
        assert b.tls is not None
        b.queue.stopService()

    def test_plain_targets_have_no_tls(self):
        assert target_tls(ForwardSettings(name="a", target="relp:localhost:2514")) is None


class LoopbackTCPStopTests(TestCase):
    """A real tcp: target on 127.0.0.1 that stops reading, then the suite stops (SIGTERM)."""

    async def test_a_clean_stop_loses_nothing_twisted_still_held(self):
        target = socket.socket()
        self.addCleanup(target.close)
        target.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        target.bind(("127.0.0.1", 0))
        target.listen(1)  # accepted by the kernel, never read until the end
        directory = self.mktemp()
        settings = ForwardSettings(
            name="central", target=f"tcp:127.0.0.1:{target.getsockname()[1]}", queue_dir=directory
        )
        queue = ForwardQueue("central", directory, 16 * 2**20, 2**30, "block", reactor)
        forwarder = Forwarder(settings, queue, reactor)
        forwarder.startService()
        total = 200_000
        queue.put([b"<13>msg %06d" % n for n in range(total)])
        for _ in range(250):  # Twisted's buffer fills and pauses the session (5 s at most)
            if forwarder.session is not None and forwarder.session.paused:
                break
            await deferLater(reactor, 0.02)
        assert forwarder.session is not None and forwarder.session.paused
        await forwarder.stopService()  # the close cannot finish: aborted after CLOSE_WAIT
        connection, _ = target.accept()
        self.addCleanup(connection.close)
        connection.settimeout(0.5)
        data = b""
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := connection.recv(1 << 20):
                data += chunk
        received = {int(n) for n in re.findall(rb"msg (\d{6})", data)}
        again = ForwardQueue("central", directory, 16 * 2**20, 2**30, "block", reactor)
        self.addCleanup(again.stopService)
        kept = set()
        while batch := again.take(1024, 1 << 20):
            kept |= {int(message[8:]) for _, message in batch}
        assert set(range(total)) - received - kept == set()
        assert forwarder.sent <= len(received)  # counted sent: reached the target
        # Given back: sent again after a restart (none when the close happened to finish).
        assert forwarder.retried <= len(kept)


class Receiver(Protocol):
    def connectionMade(self):
        self.factory.connected.append(self)
        self.received = b""

    def dataReceived(self, data):
        self.received += data


class LoopbackTLSTests(TestCase):
    """A real TLS target on 127.0.0.1, the forwarder verifying its certificate and name."""

    def setUp(self):
        directory = Path(self.mktemp())
        directory.mkdir()
        self.pki = make_pki(directory)
        self.queue = memory_queue(reactor)
        self.log = captured_log(self)
        self.forwarders = []
        self.listen()

    def listen(self, **keys):
        server = tls_options(
            TLSSettings(
                certificate=self.pki["server_crt"], private_key=self.pki["server_key"], **keys
            )
        )
        factory = Factory.forProtocol(Receiver)
        factory.connected = []
        self.factory = factory
        self.port = reactor.listenSSL(0, factory, server, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)

    def forwarder(self, **keys):
        settings = ForwardSettings(
            name="central", target=f"tls:127.0.0.1:{self.port.getHost().port}", **keys
        )
        forwarder = Forwarder(settings, self.queue, reactor, target_tls(settings))
        forwarder.startService()
        self.addCleanup(forwarder.stopService)
        self.forwarders.append(forwarder)
        return forwarder

    async def wait(self, done, seconds=5.0):
        for _ in range(int(seconds / 0.02)):
            if done():
                return True
            await deferLater(reactor, 0.02)
        return done()

    async def test_messages_reach_a_verified_target_octet_counted(self):
        forwarder = self.forwarder(ca=self.pki["ca"])
        self.queue.put([b"<13>one", b"<13>two"])
        assert await self.wait(
            lambda: (
                self.factory.connected
                and self.factory.connected[0].received == b"7 <13>one7 <13>two"
            )
        )
        await forwarder.stopService()  # closed as asked: everything written reached the kernel
        assert len(self.queue) == 0
        assert forwarder.retried == 0

    async def test_a_target_refusing_the_client_after_its_handshake_loses_nothing(self):
        # TLS 1.3: the client's handshake is over before the server checks its certificate.
        self.listen(client_ca=self.pki["ca"], min_version="1.3")
        self.forwarder(ca=self.pki["ca"])  # no client certificate
        self.queue.put([b"<13>kept"])
        assert await self.wait(lambda: self.forwarder_retried() > 0)
        assert len(self.queue) == 1
        assert all(not receiver.received for receiver in self.factory.connected)
        assert any("unreachable" in line for line in self.log)

    def forwarder_retried(self):
        return self.forwarders[-1].retried

    async def test_a_client_certificate_is_presented(self):
        self.listen(client_ca=self.pki["ca"], min_version="1.3")
        self.forwarder(
            ca=self.pki["ca"],
            certificate=self.pki["client_crt"],
            private_key=self.pki["client_key"],
        )
        self.queue.put([b"<13>mutual"])
        assert await self.wait(
            lambda: any(r.received == b"10 <13>mutual" for r in self.factory.connected)
        )

    async def test_a_target_whose_certificate_is_not_trusted_gets_nothing(self):
        self.forwarder()  # the system's CAs do not know the test CA
        self.queue.put([b"<13>secret"])
        assert await self.wait(lambda: any("unreachable" in line for line in self.log))
        (line,) = [line for line in self.log if "unreachable" in line]
        assert "TLS failed" in line, line
        assert len(self.queue) == 1
        assert all(not receiver.received for receiver in self.factory.connected)
