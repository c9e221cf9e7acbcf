"""
The policy every stream connection of the suite shares: `max_connections`
and `max_connections_per_source` (refusal beyond them), `idle_timeout`,
`handshake_timeout` on TLS, flow control, half-close, and the lingering
close that lets an error line reach a client that is still sending.  The
service protocols only say what to answer.
"""

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from OpenSSL import SSL
from zope.interface import implementer

from twisted.internet import protocol
from twisted.internet.interfaces import IHalfCloseableProtocol, IHandshakeListener, ISSLTransport
from twisted.logger import Logger

from suite.net.addresses import describe_peer, source_of
from suite.net.transport import socket_transport
from suite.foundation.config import Settings, integer, key, number
from suite.foundation.flood import FloodControl
from suite.foundation.metrics import UNCOUNTED, Counts

log = Logger()

LINGER_SECONDS = 1.0
BATCH_BYTES = 65536  # answers gathered from one read before they are written
SWEEPS_PER_TIMEOUT = 10  # an idle connection is closed at most 10% after its idle_timeout


def idle_timeout(default: float) -> Any:
    """The `idle_timeout` key, with a service's own default."""
    return key(number(0), default, "seconds without data before closing; 0 = never")


@dataclass(frozen=True, kw_only=True)
class ConnectionLimits(Settings):
    """The keys of every stream service."""

    max_connections: int = key(integer(1), 1000, "connections served at once; more are refused")
    max_connections_per_source: int = key(
        integer(1), 100, "connections from one IP address (all Unix peers: one source)"
    )
    idle_timeout: float = idle_timeout(300.0)
    handshake_timeout: float = key(
        number(0.001), 10.0, "seconds a tls_listen connection may take to finish its handshake"
    )


class StreamFactory(protocol.Factory):
    """
    Builds the connections of every stream listener of one service, so its
    SETTINGS' limits cover them all; CLOCK is the reactor (or a test Clock).
    Repeated warnings (refusals, TLS failures, protocol errors) go through
    one L{FloodControl}.

    Idle connections are found by one sweep over the open connections every
    tenth of `idle_timeout`: each sweep advances `tick`, a read stores the
    current tick on its connection, and a connection whose tick is more
    than ten sweeps old has been quiet for at least `idle_timeout` (and at
    most 10% longer).  Moving a timer per read (Twisted's `TimeoutMixin`)
    cost more than answering a short request, and a timer per connection
    more memory than the rest of an idle connection's state.

    Its metrics: connections, bytes and requests by transport (L{Counts}),
    refusals by limit, and errors by kind.
    """

    noisy = False
    _sweep_call = None
    tick = 0

    def __init__(self, settings: ConnectionLimits, clock):
        self.settings = settings
        self.clock = clock
        self.connections = 0
        self.per_source: dict[str, int] = {}
        self.warnings = FloodControl(clock, self.service_name)
        self._watched: list = []  # connections under idle_timeout; each knows its _idle_slot
        self.counts: dict[str, Counts] = {}
        self.refusals: dict[str, int] = {}
        self.errors: dict[str, int] = {}

    def counts_for(self, transport: str) -> Counts:
        """The counts of TRANSPORT (tcp, tls, unix) of this factory's connections."""
        counts = self.counts.get(transport)
        if counts is None:
            counts = self.counts[transport] = Counts()
        return counts

    def count_bytes_of(self, transport, kind: str) -> Counts:
        """
        The counts of KIND, which the socket under TRANSPORT (under TLS, the
        one beneath it) adds its bytes read and sent to.
        """
        counts = self.counts_for(kind)
        socket_transport(transport).counts = counts
        return counts

    def warn_refused(self, source: str, peer: str, reason: str) -> None:
        self.warnings.warn(
            "refused connections", source,
            "{service}: refused connection from {peer}: {reason}",
            service=self.service_name, peer=peer, reason=reason,
        )

    def refused_at_descriptor_limit(self, address, reason: str) -> None:
        """
        The port refused a connection from ADDRESS (None: one it could not
        even accept) because the process is out of file descriptors
        (L{suite.net.transport.RefusingPort}): counted, logged flood-controlled.
        """
        self.refusals["file_descriptors"] = self.refusals.get("file_descriptors", 0) + 1
        if address is None:
            source, peer = "unaccepted", "a client still waiting to be accepted"
        else:
            source, peer = source_of(address), describe_peer(address)
        self.warn_refused(source, peer, reason)

    def count_error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def metric_samples(self):
        for transport, counts in list(self.counts.items()):
            yield from counts.metric_samples(transport)
        for limit, count in list(self.refusals.items()):
            yield "connections_refused", (limit,), count
        for kind, count in list(self.errors.items()):
            yield "errors", (kind,), count

    def watch_idle(self, connection) -> None:
        """Let the sweep close CONNECTION once idle; the sweep runs while any is watched."""
        connection._idle_slot = len(self._watched)
        self._watched.append(connection)
        if self._sweep_call is None:
            self._schedule_sweep()

    def unwatch_idle(self, connection) -> None:
        slot = connection._idle_slot
        if slot is None:
            return
        connection._idle_slot = None
        last = self._watched.pop()
        if last is not connection:
            self._watched[slot], last._idle_slot = last, slot
        if not self._watched and self._sweep_call is not None:
            self._sweep_call.cancel()
            self._sweep_call = None

    def _schedule_sweep(self):
        period = self.settings.idle_timeout / SWEEPS_PER_TIMEOUT
        self._sweep_call = self.clock.callLater(period, self._sweep)

    def _sweep(self):
        self._sweep_call = None
        self.tick = tick = self.tick + 1
        for connection in [c for c in self._watched if tick - c.last_activity > SWEEPS_PER_TIMEOUT]:
            if connection.is_idle():
                connection.timeoutConnection()
        if self._watched and self._sweep_call is None:
            self._schedule_sweep()

    @property
    def service_name(self) -> str:
        return self.settings.section

    def refusal_reason(self, source: str) -> str | None:
        """
        Why one more connection from SOURCE is refused (counted by the limit
        it meets), or None when it is admitted.
        """
        limits = self.settings
        if self.connections >= limits.max_connections:
            limit, reason = "max_connections", f"max_connections ({limits.max_connections}) reached"
        elif self.per_source.get(source, 0) >= limits.max_connections_per_source:
            limit, reason = "max_connections_per_source", (
                f"max_connections_per_source ({limits.max_connections_per_source}) "
                f"reached for {source}"
            )
        else:
            return None
        self.refusals[limit] = self.refusals.get(limit, 0) + 1
        return reason

    def admit(self, source: str) -> None:
        self.connections += 1
        self.per_source[source] = self.per_source.get(source, 0) + 1

    def release(self, source: str) -> None:
        self.connections -= 1
        remaining = self.per_source[source] - 1
        if remaining:
            self.per_source[source] = remaining
        else:
            del self.per_source[source]

    def stopFactory(self):
        self.warnings.flush()


def transport_kind(transport, source: str) -> str:
    """tcp, tls or unix: the `transport` label of a connection's metrics."""
    if ISSLTransport.providedBy(transport):
        return "tls"
    return "unix" if source == "unix" else "tcp"


def tls_failure_reason(error: SSL.Error) -> str:
    """OpenSSL's reasons (`peer did not return a certificate`, `wrong version number` ...)."""
    reasons = [entry[-1] for entry in error.args[0] if entry] if error.args else []
    return "; ".join(str(r) for r in reasons) or str(error) or "TLS error"


def certificate_subject(transport) -> str | None:
    """The RFC 4514 subject of the client certificate on a TLS TRANSPORT, if one was given."""
    certificate = transport.getPeerCertificate()
    if certificate is None:
        return None
    return certificate.to_cryptography().subject.rfc4514_string()


@implementer(IHalfCloseableProtocol, IHandshakeListener)
class ConnectionPolicy(protocol.Protocol):
    """
    Cooperative base of every stream protocol built by a L{StreamFactory};
    list it before the wire protocol's class (`class P(ConnectionPolicy,
    LineReceiver)`), and call super() in overrides.

    A connection over `max_connections`, or over `max_connections_per_source`
    from its source, is sent REFUSAL and closed; the wire protocol's
    connectionMade does not run for it.  FLOW_PRODUCER() is registered as
    the transport's streaming producer (the transport itself by default):
    when a client stops reading and the write buffer fills, Twisted pauses
    it, which stops reading from that client, so memory per connection stays
    bounded whatever the client sends.

    On a TLS transport the handshake must finish within `handshake_timeout`;
    a handshake that fails or times out is logged with the peer and the
    reason and reported to handshakeFailed.  Under mutual TLS, `client` is
    the subject of the client's certificate once the handshake is done.

    A connection that has received nothing for `idle_timeout` seconds, and
    whose is_idle() agrees, is closed (timeoutConnection); a service that
    sends on its own (a delayed answer) calls touch().
    """

    refusal = b""
    admitted = False
    source = ""  # the IP address the per-source limit counts
    client: str | None = None
    lingering = False
    closing = False
    _handshake_timer = None
    _linger_timer = None
    last_activity = 0  # the factory's sweep tick when something last happened
    _idle_slot = None
    kind = "tcp"  # the transport: tcp, tls or unix
    counts = UNCOUNTED  # the counts of this connection's kind of transport

    def connectionMade(self):
        factory = self.factory
        transport = self.transport
        self.source = source_of(transport.getPeer())
        self.kind = transport_kind(transport, self.source)
        self.counts = factory.count_bytes_of(transport, self.kind)
        reason = factory.refusal_reason(self.source)
        if reason is not None:
            factory.warn_refused(self.source, self.peer, reason)
            self.refused(reason)
            if self.tls:
                self.transport.abortConnection()  # nothing can be said before a handshake
            else:
                self.transport.write(self.refusal)
                self.transport.loseConnection()
            return
        factory.admit(self.source)
        self.admitted = True
        self.counts.opened += 1
        self.transport.registerProducer(self.flow_producer(), True)
        self.touch()
        if factory.settings.idle_timeout:
            factory.watch_idle(self)
        if self.tls:
            self._handshake_timer = factory.clock.callLater(
                factory.settings.handshake_timeout, self._handshake_timed_out
            )
        super().connectionMade()

    def flow_producer(self):
        """What the transport pauses when its write buffer is full: the transport itself."""
        return self.transport

    def refused(self, reason: str):
        """Called when a limit turns this connection away (REASON says which); a hook."""

    def handshakeCompleted(self):
        """The TLS handshake is done: the handshake timer stops; `client` is known."""
        self._cancel_handshake_timer()
        self.client = certificate_subject(self.transport)

    def handshakeFailed(self, reason: str):
        """A TLS handshake failed or timed out (already logged); a hook for subclasses."""

    def _handshake_failed(self, reason: str):
        self.factory.count_error("tls_handshake")
        self.factory.warnings.warn(
            "TLS handshake failures", self.source,
            "{service}: TLS handshake with {peer} failed: {reason}",
            service=self.factory.service_name, peer=self.peer, reason=reason,
        )
        self.handshakeFailed(reason)

    def _handshake_timed_out(self):
        self._handshake_timer = None
        self._handshake_failed(
            f"not finished within {self.factory.settings.handshake_timeout:g} s "
            "(handshake_timeout)"
        )
        self.transport.abortConnection()

    def _cancel_handshake_timer(self):
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None

    @property
    def tls(self) -> bool:
        return self.kind == "tls"

    @cached_property
    def peer(self) -> str:
        """`host:port` of the client, for logs and records (built when first needed)."""
        return describe_peer(self.transport.getPeer())

    def touch(self):
        """Something happened on this connection: its idle time starts again."""
        self.last_activity = self.factory.tick

    def is_idle(self) -> bool:
        """Whether a connection quiet for idle_timeout may be closed (a hook: no work pending)."""
        return True

    def dataReceived(self, data):
        self.last_activity = self.factory.tick
        super().dataReceived(data)

    def connectionLost(self, reason=protocol.connectionDone):
        if self.admitted:
            self.admitted = False
            self.counts.closed += 1
            self.factory.release(self.source)
            self.factory.unwatch_idle(self)
            if self._handshake_timer is not None:
                self._cancel_handshake_timer()
                if reason is not None and reason.check(SSL.Error):
                    self._handshake_failed(tls_failure_reason(reason.value))
            if self._linger_timer is not None and self._linger_timer.active():
                self._linger_timer.cancel()
        super().connectionLost(reason)

    # One write for the answers to one read: the suite's transports send at once
    # (suite.net.transport), and a system call per answer would cost more than
    # the answers.  A protocol brackets its handling of a read with
    # start_batch()/end_batch() and answers with send().
    _batch: list | None = None
    _batch_size = 0

    def start_batch(self):
        self._batch = []

    def send(self, data: bytes):
        """Send DATA; within a batch, with the batch's other answers (BATCH_BYTES at a time)."""
        if self._batch is None:
            self.transport.write(data)
            return
        self._batch.append(data)
        self._batch_size += len(data)
        if self._batch_size >= BATCH_BYTES:
            self.flush_batch()

    def flush_batch(self):
        """Write what the batch holds now (before an answer that takes another way)."""
        if self._batch and self.transport is not None:  # AMP drops its transport when lost
            data = b"".join(self._batch)
            self._batch.clear()
            self._batch_size = 0
            self.transport.write(data)

    def end_batch(self):
        self.flush_batch()
        self._batch = None

    def close(self):
        """
        Send what was written, then close.  The self-registration as producer
        is undone first: a transport whose producer is paused would otherwise
        wait for it forever instead of closing.
        """
        self.flush_batch()
        if not self.closing:
            self.closing = True
            self.transport.unregisterProducer()
        self.transport.loseConnection()

    def close_after_error(self, message: bytes):
        """
        Send MESSAGE and close without losing it to a reset: the client may
        still be sending, and closing a socket with unread input makes the
        kernel answer with RST, which destroys the reply before the client
        reads it.  So stop interpreting input, shut down the sending side
        once MESSAGE is out, discard what arrives for up to LINGER_SECONDS,
        then close.
        """
        self.flush_batch()  # the answers before the error go first
        self.lingering = self.closing = True
        self.transport.write(message)
        self.transport.unregisterProducer()
        self.transport.resumeProducing()  # keep reading, to discard
        self._linger_timer = self.factory.clock.callLater(LINGER_SECONDS, self._stop_lingering)
        if self.tls or not hasattr(self.transport, "loseWriteConnection"):
            self.transport.loseConnection()  # TLS: close_notify, then the peer's
        else:
            self.transport.loseWriteConnection()

    def _stop_lingering(self):
        """The second is up: close now, whatever the client (or its TLS layer) still owes."""
        self._linger_timer = None
        self.transport.abortConnection()

    def warn_protocol_error(self, kind: str, format: str, **fields):
        """
        Count a client's protocol error of KIND (line_too_long, bad_frame,
        bad_box ...) and log it, flood-controlled.
        """
        self.factory.count_error(kind)
        self.factory.warnings.warn(
            "protocol errors", self.source, format,
            service=self.factory.service_name, peer=self.peer, **fields,
        )

    def timeoutConnection(self):
        """Idle for idle_timeout: close; still open after another idle_timeout: abort."""
        seconds = self.factory.settings.idle_timeout
        log.info(
            "{service}: closing {peer}: idle for {seconds}s (idle_timeout)",
            service=self.factory.service_name, peer=self.peer, seconds=seconds,
        )
        if self.transport.disconnecting:
            self.transport.abortConnection()
        else:
            self.close()
            self.touch()

    # Half-close: without IHalfCloseableProtocol Twisted drops the unsent
    # replies when a client shuts down its sending side (`nc -N`).
    def readConnectionLost(self):
        self.close()

    def writeConnectionLost(self):
        if not self.lingering:
            self.close()
