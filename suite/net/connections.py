"""
The policy every stream connection of the suite shares, composed from
parts with one job each: L{Admission} (`max_connections`,
`max_connections_per_source`), L{IdleSweep} (`idle_timeout`),
L{HandshakeDeadline} (`handshake_timeout` on TLS), L{AnswerBatch} (one
write per read) and L{LingeringClose} (an error line that reaches a client
still sending); here, what joins them: counting, flow control and
half-close.  The service protocols only say what to answer.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol, cast

from twisted.internet import protocol
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IHandshakeListener,
    IPushProducer,
    IReactorTime,
    ISSLTransport,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.foundation.config import Settings, integer, key, number
from suite.foundation.flood import FloodControl
from suite.foundation.interfaces import IMetricSource
from suite.foundation.metrics import UNCOUNTED, Counts
from suite.net.addresses import PeerAddress, describe_peer, source_of
from suite.net.admission import DESCRIPTOR_LIMIT, Admission
from suite.net.answer_batch import AnswerBatch
from suite.net.handshake_deadline import HandshakeDeadline, certificate_subject
from suite.net.idle_sweep import IdleSweep
from suite.net.interfaces import IRefusesAtDescriptorLimit
from suite.net.lingering_close import LingeringClose
from suite.net.transport import CountedServer, socket_transport

log = Logger()


class ConnectionTransport(Protocol):
    """
    What the policy asks of a connection's transport: a TCP or Unix
    connection, or TLS over either (Twisted's `ITCPTransport`, `IConsumer`
    and `IPushProducer` together, which no one interface says).
    """

    disconnecting: bool

    def getPeer(self) -> PeerAddress: ...
    def write(self, data: bytes) -> None: ...
    def loseConnection(self) -> None: ...
    def abortConnection(self) -> None: ...
    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None: ...
    def unregisterProducer(self) -> None: ...
    def pauseProducing(self) -> None: ...
    def resumeProducing(self) -> None: ...
    def stopProducing(self) -> None: ...


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


@implementer(IRefusesAtDescriptorLimit, IMetricSource)
class StreamFactory(protocol.Factory):
    """
    Builds the connections of every stream listener of one service, so its
    SETTINGS' limits cover them all; CLOCK is the reactor (or a test Clock).
    Its parts: `admission` (the connection limits), `idle` (the sweep that
    closes quiet connections) and `warnings`, one L{FloodControl} for the
    repeated ones (refusals, TLS failures, protocol errors).

    Its metrics: connections, bytes and requests by transport (L{Counts}),
    refusals by limit, and errors by kind.
    """

    noisy = False
    # Twisted's Factory[P] would need P to name this very factory class; the
    # services' factories subclass it, so a plain Factory and a narrower protocol.
    protocol: "type[ConnectionPolicy] | None" = None  # type: ignore[assignment]

    def __init__(self, settings: ConnectionLimits, clock: IReactorTime) -> None:
        self.settings = settings
        self.clock = clock
        self.admission = Admission(settings.max_connections, settings.max_connections_per_source)
        self.idle = IdleSweep(clock, settings.idle_timeout)
        self.warnings = FloodControl(clock, self.service_name)
        self.counts: dict[str, Counts] = {}
        self.errors: dict[str, int] = {}

    @property
    def service_name(self) -> str:
        return self.settings.section

    @property
    def refusal(self) -> bytes:
        """What a connection refused before its protocol exists is sent: its protocol's refusal."""
        return b"" if self.protocol is None else self.protocol.refusal

    @property
    def connections(self) -> int:
        """How many connections are admitted and open now."""
        return self.admission.connections

    @property
    def tick(self) -> int:
        """The idle sweep's count, which a connection notes when something happens on it."""
        return self.idle.tick

    def counts_for(self, transport: str) -> Counts:
        """The counts of TRANSPORT (tcp, tls, unix) of this factory's connections."""
        counts = self.counts.get(transport)
        if counts is None:
            counts = self.counts[transport] = Counts()
        return counts

    def count_bytes_of(self, transport: object, kind: str) -> Counts:
        """
        The counts of KIND, which the socket under TRANSPORT (under TLS, the
        one beneath it) adds its bytes read and sent to.
        """
        counts = self.counts_for(kind)
        below = socket_transport(transport)
        if isinstance(below, CountedServer):  # what the suite's ports make; others count nothing
            below.counts = counts
        return counts

    def count_error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def refusal_reason(self, source: str) -> str | None:
        """Why one more connection from SOURCE is refused (counted), or None: admitted."""
        return self.admission.refusal_reason(source)

    def admit(self, source: str) -> None:
        self.admission.admit(source)

    def release(self, source: str) -> None:
        self.admission.release(source)

    def warn_refused(self, source: str, peer: str, reason: str) -> None:
        self.warnings.warn(
            "refused connections",
            source,
            "{service}: refused connection from {peer}: {reason}",
            service=self.service_name,
            peer=peer,
            reason=reason,
        )

    def refused_at_descriptor_limit(self, address: PeerAddress | None, reason: str) -> None:
        """
        The port refused a connection from ADDRESS (None: one it could not
        even accept) because the process is out of file descriptors
        (L{suite.net.transport.RefusingPort}): counted, logged flood-controlled.
        """
        self.admission.count_refusal(DESCRIPTOR_LIMIT)
        if address is None:
            source, peer = "unaccepted", "a client still waiting to be accepted"
        else:
            source, peer = source_of(address), describe_peer(address)
        self.warn_refused(source, peer, reason)

    def metric_samples(self) -> Iterator[tuple[str, tuple, object]]:
        for transport, counts in list(self.counts.items()):
            yield from counts.metric_samples(transport)
        yield from self.admission.metric_samples()
        for kind, count in list(self.errors.items()):
            yield "errors", (kind,), count

    def stopFactory(self) -> None:
        self.warnings.flush()


def transport_kind(transport: object, source: str) -> str:
    """tcp, tls or unix: the `transport` label of a connection's metrics."""
    if ISSLTransport.providedBy(transport):
        return "tls"
    return "unix" if source == "unix" else "tcp"


@implementer(IHalfCloseableProtocol, IHandshakeListener)
class ConnectionPolicy(protocol.Protocol):
    """
    Cooperative base of every stream protocol built by a L{StreamFactory};
    list it before the wire protocol's class (`class P(ConnectionPolicy,
    LineReceiver)`), and call super() in overrides.

    A connection the factory's admission turns away is sent REFUSAL and
    closed (refused(reason) is told); the wire protocol's connectionMade
    does not run for it.  FLOW_PRODUCER() is registered as the transport's
    streaming producer (the transport itself by default): when a client
    stops reading and the write buffer fills, Twisted pauses it, which
    stops reading from that client, so memory per connection stays bounded
    whatever the client sends.

    On a TLS transport the handshake must finish within `handshake_timeout`;
    a handshake that fails or times out is logged with the peer and the
    reason and reported to handshakeFailed.  Under mutual TLS, `client` is
    the subject of the client's certificate once the handshake is done.

    A connection that has received nothing for `idle_timeout` seconds, and
    whose is_idle() agrees, is closed (timeoutConnection); a service that
    sends on its own (a delayed answer) calls touch().

    Answers to one read leave in one write: a protocol brackets its
    handling of a read with start_batch()/end_batch() and answers with
    send().
    """

    factory: StreamFactory
    refusal = b""
    admitted = False
    source = ""  # the IP address the per-source limit counts
    client: str | None = None
    lingering = False
    closing = False
    last_activity = 0  # the factory's sweep tick when something last happened
    idle_slot: int | None = None  # its place in the factory's idle sweep
    kind = "tcp"  # the transport: tcp, tls or unix
    counts = UNCOUNTED  # the counts of this connection's kind of transport
    _handshake: HandshakeDeadline | None = None
    _linger: LingeringClose | None = None
    _batch: AnswerBatch | None = None  # while a read is handled
    _answers: AnswerBatch | None = None  # kept for the next read

    @property
    def stream(self) -> ConnectionTransport:
        """
        The transport, which Twisted types as optional: the policy's methods
        run while connected, on what the suite's stream ports make.
        """
        return cast(ConnectionTransport, self.transport)

    def connectionMade(self) -> None:
        factory = self.factory
        transport = self.stream
        self.source = source_of(transport.getPeer())
        self.kind = transport_kind(transport, self.source)
        self.counts = factory.count_bytes_of(transport, self.kind)
        reason = factory.admission.refusal_reason(self.source)
        if reason is not None:
            factory.warn_refused(self.source, self.peer, reason)
            self.refused(reason)
            if self.tls:
                transport.abortConnection()  # nothing can be said before a handshake
            else:
                transport.write(self.refusal)
                transport.loseConnection()
            return
        factory.admission.admit(self.source)
        self.admitted = True
        self.counts.opened += 1
        transport.registerProducer(self.flow_producer(), True)
        self.touch()
        if factory.settings.idle_timeout:
            factory.idle.watch(self)
        if self.tls:
            self._handshake = HandshakeDeadline(
                factory.clock,
                factory.settings.handshake_timeout,
                self._handshake_failed,
                transport.abortConnection,
            )
        super().connectionMade()

    def flow_producer(self) -> IPushProducer:
        """What the transport pauses when its write buffer is full: the transport itself."""
        return cast(IPushProducer, self.transport)

    def refused(self, reason: str) -> None:
        """Called when a limit turns this connection away (REASON says which); a hook."""

    def handshakeCompleted(self) -> None:
        """The TLS handshake is done: the deadline no longer holds; `client` is known."""
        if self._handshake is not None:
            self._handshake.completed()
        self.client = certificate_subject(cast(ISSLTransport, self.transport))  # only TLS tells

    def handshakeFailed(self, reason: str) -> None:
        """A TLS handshake failed or timed out (already logged); a hook for subclasses."""

    def _handshake_failed(self, reason: str) -> None:
        self.factory.count_error("tls_handshake")
        self.factory.warnings.warn(
            "TLS handshake failures",
            self.source,
            "{service}: TLS handshake with {peer} failed: {reason}",
            service=self.factory.service_name,
            peer=self.peer,
            reason=reason,
        )
        self.handshakeFailed(reason)

    @property
    def tls(self) -> bool:
        return self.kind == "tls"

    @cached_property
    def peer(self) -> str:
        """`host:port` of the client, for logs and records (built when first needed)."""
        return describe_peer(self.stream.getPeer())

    def touch(self) -> None:
        """Something happened on this connection: its idle time starts again."""
        self.last_activity = self.factory.idle.tick

    def is_idle(self) -> bool:
        """Whether a connection quiet for idle_timeout may be closed (a hook: no work pending)."""
        return True

    def dataReceived(self, data: bytes) -> None:
        self.last_activity = self.factory.idle.tick
        super().dataReceived(data)

    def connectionLost(self, reason: Failure | None = protocol.connectionDone) -> None:
        if self.admitted:
            self.admitted = False
            self.counts.closed += 1
            self.factory.admission.release(self.source)
            self.factory.idle.unwatch(self)
            if self._handshake is not None:
                self._handshake.connection_lost(reason)
            if self._linger is not None:
                self._linger.cancel()
        super().connectionLost(reason)  # type: ignore[arg-type]  # None passes on as given

    def start_batch(self) -> None:
        """From now until end_batch(), send() gathers the answers into one write."""
        if self._answers is None:
            self._answers = AnswerBatch()
        self._batch = self._answers

    def send(self, data: bytes) -> None:
        """Send DATA; within a batch, with the batch's other answers (BATCH_BYTES at a time)."""
        batch = self._batch
        if batch is None:
            self.stream.write(data)
        elif batch.add(data):
            self.flush_batch()

    def flush_batch(self) -> None:
        """Write what the batch holds now (before an answer that takes another way)."""
        batch = self._batch
        if batch is not None and batch.size and self.transport is not None:
            self.transport.write(batch.take())  # (AMP drops its transport when lost)

    def end_batch(self) -> None:
        self.flush_batch()
        self._batch = None

    def close(self) -> None:
        """
        Send what was written, then close.  The self-registration as producer
        is undone first: a transport whose producer is paused would otherwise
        wait for it forever instead of closing.
        """
        self.flush_batch()
        if not self.closing:
            self.closing = True
            self.stream.unregisterProducer()
        self.stream.loseConnection()

    def close_after_error(self, message: bytes) -> None:
        """
        Send MESSAGE and close without losing it to a reset (L{LingeringClose});
        what arrives meanwhile is discarded.
        """
        self.flush_batch()  # the answers before the error go first
        self.lingering = self.closing = True
        self._linger = LingeringClose(self.factory.clock, self.stream, message, self.tls)

    def warn_protocol_error(self, kind: str, format: str, **fields: object) -> None:
        """
        Count a client's protocol error of KIND (line_too_long, bad_frame,
        bad_box ...) and log it, flood-controlled.
        """
        self.factory.count_error(kind)
        self.factory.warnings.warn(
            "protocol errors",
            self.source,
            format,
            service=self.factory.service_name,
            peer=self.peer,
            **fields,
        )

    def timeoutConnection(self) -> None:
        """Idle for idle_timeout: close; still open after another idle_timeout: abort."""
        seconds = self.factory.settings.idle_timeout
        log.info(
            "{service}: closing {peer}: idle for {seconds}s (idle_timeout)",
            service=self.factory.service_name,
            peer=self.peer,
            seconds=seconds,
        )
        if self.stream.disconnecting:
            self.stream.abortConnection()
        else:
            self.close()
            self.touch()

    # Half-close: without IHalfCloseableProtocol Twisted drops the unsent
    # replies when a client shuts down its sending side (`nc -N`).
    def readConnectionLost(self) -> None:
        self.close()

    def writeConnectionLost(self) -> None:
        if not self.lingering:
            self.close()
