"""
Passing the collector's messages on to a `[[logger.forward]]` target: one
L{Forwarder} per target keeps a connection to it and sends what its queue
holds, as received, framed for the target:

- `relp:`, `relp+tls:`: RELP (L{suite.logger.relp_client}); a message leaves
  the queue once the target answered it; after a broken connection what was
  not answered is sent again (at least once: the target may see it twice).
- `tcp:`, `tls:`: octet-counted syslog (`LEN SP MSG`, RFC 6587, and over TLS
  RFC 5425); the target never answers, so a message leaves the queue once
  it is known to have left Twisted's buffer for the kernel's (and, on a new
  connection, once that has lasted SETTLE seconds).  What may still be in
  Twisted's buffer when the connection breaks or a stop aborts it goes back
  to the queue and is sent again (at least once, the target may see it
  twice); what the kernel took and the connection then lost is lost, as
  with rsyslog's omfwd.

Writes are batched (one write per batch) and stop while the connection's
buffer is full (the session is the transport's streaming producer), so a
slow target holds messages in the queue, whose size is bounded, never in
memory here.  The target being down costs a timer: connecting is
asynchronous, the queue takes what arrives meanwhile.

A connection that cannot be made or is lost is tried again after 1 s, then
2, 4 ... up to 60 s; the delay goes back to 1 s once a connection has lasted
STABLE seconds (a target that accepts and at once closes, such as a load
balancer with no backend, is not hammered).  A RELP target that takes
messages and answers none for ANSWER_TIMEOUT is given up like a lost
connection.  An outage is logged once when it begins (why, and how many
messages wait) and once when it ends (how long it lasted); meanwhile
/health says the logger is degraded.
"""

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import cast

from twisted.application import service
from twisted.internet import endpoints, ssl
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IDelayedCall,
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IProtocol,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.foundation.config import ConfigError
from suite.foundation.flood import FloodControl
from suite.foundation.health import DEGRADED
from suite.foundation.interfaces import IHealthSource, IMetricSource
from suite.foundation.printable import printable
from suite.foundation.stamps import utc_second
from suite.logger.queue import ForwardQueue
from suite.logger.relay_settings import ForwardSettings
from suite.logger.relp_client import Batch, RelpSession, Session, SessionOwner, describe
from suite.net.tls import client_certificate_options, trust_root

log = Logger()

FIRST_DELAY = 1.0  # seconds before the first reconnection
MAX_DELAY = 60.0
STABLE = 10.0  # seconds a connection must last for the delay to go back to FIRST_DELAY
CONNECT_TIMEOUT = 10.0  # seconds to connect, and to finish TLS and RELP's open
ANSWER_TIMEOUT = 90.0  # seconds a RELP target may take messages without answering (librelp's)
GRACE = 1.0  # seconds a stop still sends what is queued
CLOSE_WAIT = 0.5  # seconds a stop waits for the target to answer RELP's close
BATCH_MESSAGES = 1024  # messages of one write
BATCH_BYTES = 256 * 1024  # bytes of one write
BATCHES_PER_TURN = 16  # writes before the reactor gets to do something else
SETTLE = 1.0  # seconds a new tcp: or tls: connection must last before what it took is done
PROBATION_MESSAGES = 16 * BATCH_MESSAGES  # what it may take meanwhile
# More than Twisted can hold of what a tcp: or tls: session wrote, besides its
# newest write: the transport pauses its producer once its buffer holds over
# 64 KiB (FileDescriptor.bufferSize), TLS gathers up to 64,000 bytes more
# before passing them on, and a paused session writes nothing.
HELD_BYTES = 256 * 1024


def octet_counted(batch: Batch) -> bytes:
    """BATCH framed as RFC 6587 octet counting (RFC 5425 over TLS): `LEN SP MSG` each."""
    return b"".join(b"%d %s" % (len(message), message) for _, message in batch)


@implementer(IHandshakeListener)
class OctetCountedSession(Session):
    """
    Octet-counted syslog to a `tcp:` or `tls:` target, which never answers:
    a message is done with once the kernel took it.  Twisted says when its
    buffer is empty only by resuming the session after pausing it, so a
    written batch stays in flight (not acknowledged to the queue) until
    either Twisted resumed the session since, or more than HELD_BYTES were
    written after it besides the newest write (more than Twisted can hold),
    or the session's own close finished (Twisted closes only once its buffer
    is written).  Lost otherwise, what is in flight goes back to the queue.

    Probation, the first SETTLE seconds of a connection: a target can take a
    connection and drop it at once (a load balancer without a backend; over
    TLS 1.3 a server refusing the client's certificate, which it says only
    after the client finished its handshake), and what was written then
    would be lost every attempt.  So at most PROBATION_MESSAGES are written
    on probation and none is done with before the connection lasted SETTLE
    seconds; lost before, they are sent again on the next connection.
    Over TLS nothing is written before the handshake verified the target.
    """

    def __init__(self, owner: SessionOwner, tls: bool, clock: IReactorTime) -> None:
        Session.__init__(self, owner)
        self.tls = tls
        self.clock = clock
        self._probation: IDelayedCall | None = None
        self._written = 0  # messages written on probation
        # Batches written and not yet done with, oldest first: (last sequence, messages, bytes).
        self._unsure: deque[tuple[int, int, int]] = deque()
        self._unsure_messages = 0
        self._unsure_bytes = 0
        self._drained = 0  # how many of the oldest _unsure Twisted resumed after (on probation)
        self._closing = False

    def connectionMade(self) -> None:
        Session.connectionMade(self)
        if not self.tls:
            self._ready()

    def handshakeCompleted(self) -> None:
        self._ready()

    def _ready(self) -> None:
        self.ready = True
        self._probation = self.clock.callLater(SETTLE, self._settled)
        self.owner.established(self)

    def _settled(self) -> None:
        self._probation = None
        self._written = 0
        self._done_with(self._drained)
        self._done_with_older()
        self.owner.more_room()

    @property
    def in_flight(self) -> int:
        """Messages written on probation: the stop waits for the probation to end."""
        return self._written

    @property
    def unsure(self) -> int:
        """Messages written and not known to have reached the kernel."""
        return self._unsure_messages

    def room(self) -> int:
        if not self.ready or self.paused or self._closing:
            return 0
        if self._probation is None:
            return BATCH_MESSAGES
        return PROBATION_MESSAGES - self._written

    def send(self, batch: Batch) -> None:
        data = octet_counted(batch)
        self._transport.write(data)
        self._unsure.append((batch[-1][0], len(batch), len(data)))
        self._unsure_messages += len(batch)
        self._unsure_bytes += len(data)
        if self._probation is not None:
            self._written += len(batch)
        else:
            self._done_with_older()

    def _done_with_older(self) -> None:
        """The batches with more than HELD_BYTES written after them, the newest aside."""
        newest = self._unsure[-1][2] if self._unsure else 0
        count = 0
        behind = self._unsure_bytes - newest
        for _, _, size in self._unsure:
            behind -= size
            if behind < HELD_BYTES:
                break
            count += 1
        self._done_with(count)

    def _done_with(self, count: int) -> None:
        """The COUNT oldest batches written reached the kernel."""
        if not count:
            return
        messages = upto = 0
        for _ in range(count):
            upto, number, size = self._unsure.popleft()
            messages += number
            self._unsure_bytes -= size
        self._unsure_messages -= messages
        self._drained = max(0, self._drained - count)
        self.owner.delivered(upto, messages)

    def assume_written(self) -> None:
        """
        Everything written is taken as in the kernel, when the owner's queue
        is full of it and the session stayed unpaused (Twisted writes what it
        holds as soon as the kernel has room, which only a target that
        stopped reading would not have): else a queue smaller than HELD_BYTES
        would hold its senders back for ever.
        """
        if self._probation is None and not self.paused and not self._closing:
            self._done_with(len(self._unsure))

    def resumeProducing(self) -> None:
        """Twisted's buffer is empty: what was written reached the kernel."""
        if self._probation is None:
            self._done_with(len(self._unsure))
        else:
            self._drained = len(self._unsure)
        Session.resumeProducing(self)

    def close(self) -> Deferred[None]:
        """
        Unregistered first: Twisted does not close a connection (nor TLS send
        its close) while a producer is registered and wants to write.
        """
        if not self._closing and self.transport is not None:
            self._closing = True
            self._transport.unregisterProducer()
        return Session.close(self)

    def dataReceived(self, data: bytes) -> None:
        """A syslog receiver says nothing; whatever it sends is not kept."""

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        probation, self._probation = self._probation, None
        if probation is not None and probation.active():
            probation.cancel()
        if self._closing and probation is None and reason.check(ConnectionDone):
            # Closed as asked: Twisted wrote all it held first.
            self._done_with(len(self._unsure))
        self._written = 0
        Session.connectionLost(self, reason)


class _Sessions(Factory):
    """Builds the one session of a connection attempt, without a log line per attempt."""

    noisy = False

    def __init__(self, make: Callable[[], Protocol]) -> None:
        self.make = make

    def buildProtocol(self, addr: object) -> Protocol:
        return self.make()


def target_tls(settings: ForwardSettings) -> IOpenSSLClientConnectionCreator | None:
    """
    The client TLS of a `tls:` or `relp+tls:` target (None for the others):
    its certificate verified against `ca` (or the system's CAs) and its host
    name; a client certificate when one is given.  The files are read now,
    so that a bad one is a config error naming its key, not an outage later.
    """
    target = settings.parsed_target
    if not target.tls:
        return None
    trust = trust_root(settings, "ca") if settings.ca else ssl.platformTrust()
    client = client_certificate_options(settings)
    return ssl.optionsForClientTLS(target.host, trustRoot=trust, extraCertificateOptions=client)


@implementer(IMetricSource, IHealthSource)
class Forwarder(service.Service):
    """
    Sends what QUEUE holds to the target of SETTINGS, through the client TLS
    creator TLS (L{target_tls}) for TLS targets; REACTOR connects and times,
    through ENDPOINT (default: the target's host and port, through TLS).
    It starts and stops its queue: the queue starts first and stops last,
    after a stop has sent what it could within GRACE.
    """

    def __init__(
        self,
        settings: ForwardSettings,
        queue: ForwardQueue,
        reactor: IReactorTime,
        tls: IOpenSSLClientConnectionCreator | None = None,
        endpoint: IStreamClientEndpoint | None = None,
    ) -> None:
        self.settings = settings
        # Not the service's `name`: a sibling (the output's writer) may hold that one.
        self.target_name = settings.name
        self.target = settings.parsed_target
        self.queue = queue
        self.reactor = reactor
        self.tls = tls
        self.endpoint = endpoint or self._endpoint()
        self.sent = 0
        self.retried = 0
        self.refusals = 0
        self.session: Session | None = None  # the established session
        self._attempt: Session | None = None  # connected, not yet established
        self._connecting: Deferred[IProtocol] | None = None
        self._timeout: IDelayedCall | None = None
        self._retry: IDelayedCall | None = None
        self._soon: IDelayedCall | None = None
        self._silence: IDelayedCall | None = None  # awaiting RELP answers
        self._stuck: IDelayedCall | None = None  # a queue full of what tcp: or tls: wrote
        self._delay = FIRST_DELAY
        self._up_since: float | None = None
        self._down_since: float | None = None
        self._down_reason = ""
        self._reached = False
        self._stopping: Deferred[None] | None = None
        self._flood = FloodControl(reactor, f"forward {self.target_name}")
        queue.on_ready(self.pump)

    def _endpoint(self) -> IStreamClientEndpoint:
        endpoint: IStreamClientEndpoint = endpoints.HostnameEndpoint(
            self.reactor, self.target.host, self.target.port, timeout=CONNECT_TIMEOUT
        )
        if self.tls is not None:
            endpoint = endpoints.wrapClientTLS(self.tls, endpoint)
        return endpoint

    def _new_session(self) -> Session:
        if self.target.relp:
            return RelpSession(self, self.settings.window)
        return OctetCountedSession(self, self.tls is not None, self.reactor)

    def startService(self) -> None:
        self.queue.startService()
        service.Service.startService(self)
        self._connect()

    def _connect(self) -> None:
        self._retry = None
        connecting = self.endpoint.connect(_Sessions(self._new_session))
        self._connecting = connecting
        self._timeout = self.reactor.callLater(CONNECT_TIMEOUT, self._too_slow)
        connecting.addCallbacks(self._connected, self._not_connected)

    def _connected(self, protocol: IProtocol) -> None:
        self._connecting = None
        session = cast(Session, protocol)  # one of _new_session's
        if self.session is not session:  # not established at once (TLS, RELP's open)
            self._attempt = session

    def _not_connected(self, failure: Failure) -> None:
        self._connecting = None
        self._cancel_timeout()
        if self.running:
            self._failed(describe(failure))

    def _too_slow(self) -> None:
        self._timeout = None
        if self._connecting is not None:
            self._connecting.cancel()  # errbacks: _not_connected
        elif self._attempt is not None:
            self._attempt.reason = f"no session within {CONNECT_TIMEOUT:g} s"
            self._attempt.abort()

    def _cancel_timeout(self) -> None:
        if self._timeout is not None:
            if self._timeout.active():
                self._timeout.cancel()
            self._timeout = None

    # What the sessions say (L{suite.logger.relp_client.SessionOwner}).

    def established(self, session: Session) -> None:
        self._cancel_timeout()
        self._attempt = None
        if not self.running:  # opened while a stop was aborting it
            session.abort()
            return
        self.session = session
        self._up_since = self.reactor.seconds()
        if self._down_since is not None:
            log.info(
                "forward {name}: connected to {target} after {seconds:.1f} s unreachable; "
                "messages waiting: {waiting}",
                name=self.target_name,
                target=str(self.target),
                seconds=self._up_since - self._down_since,
                waiting=len(self.queue),
            )
        elif not self._reached:
            log.info(
                "forward {name}: connected to {target}",
                name=self.target_name,
                target=str(self.target),
            )
        self._down_since = None
        self._reached = True
        self.pump()

    def delivered(self, upto: int, count: int) -> None:
        self.queue.acknowledge(upto)
        self.sent += count
        self._cancel_silence()
        self._await_answers()

    def _await_answers(self) -> None:
        """
        A target that takes messages and answers none for ANSWER_TIMEOUT (hung,
        or a black hole in between) is given up, as librelp does, so that the
        outage is seen and what was sent goes again on a new connection.
        """
        session = self.session
        if self._silence is None and session is not None and session.in_flight:
            self._silence = self.reactor.callLater(ANSWER_TIMEOUT, self._silent, session)

    def _silent(self, session: Session) -> None:
        self._silence = None
        session.reason = f"no answer for {ANSWER_TIMEOUT:g} s"
        session.abort()

    def _cancel_silence(self) -> None:
        if self._silence is not None:
            if self._silence.active():
                self._silence.cancel()
            self._silence = None

    def refused(self, count: int, answer: str) -> None:
        self.refusals += count
        self._flood.warn(
            "refused messages",
            self.target_name,
            "forward {name}: {target} refused {count} messages, taken as done (RELP does not "
            "send them again): {answer}",
            name=self.target_name,
            target=str(self.target),
            count=count,
            answer=printable(answer),
        )

    def more_room(self) -> None:
        self.pump()

    def lost(self, session: Session, reason: str) -> None:
        if session is self._attempt:
            self._attempt = None
            self._cancel_timeout()
            self._failed(reason)
            return
        if session is not self.session:
            return
        self.session = None
        self._cancel_silence()
        self.retried += self.queue.give_back()
        if self._stopping is not None:
            self._check_drained()
        elif self.running:
            up = self.reactor.seconds() - (self._up_since or 0.0)
            if up >= STABLE:
                self._delay = FIRST_DELAY
            self._failed(reason)

    def _failed(self, reason: str) -> None:
        """The target cannot be reached (or was lost): an outage begins, unless one goes on."""
        if not self.running:  # an attempt aborted by a stop
            return
        if self._down_since is None:
            self._down_since = self.reactor.seconds()
            self._down_reason = printable(reason)
            log.warn(
                "forward {name}: {target} unreachable: {reason}; {waiting} messages wait in "
                "its queue; trying again from {first:g} s to every {most:g} s",
                name=self.target_name,
                target=str(self.target),
                reason=self._down_reason,
                waiting=len(self.queue),
                first=FIRST_DELAY,
                most=MAX_DELAY,
            )
        self._retry = self.reactor.callLater(self._delay, self._connect)
        self._delay = min(self._delay * 2, MAX_DELAY)

    # Sending.

    def pump(self) -> None:
        """Send what the queue holds while the session has room (a few batches per turn)."""
        if self._soon is not None and self._soon.active():
            self._soon.cancel()
        self._soon = None
        for _ in range(BATCHES_PER_TURN):
            session = self.session
            room = session.room() if session is not None else 0
            if not room:
                break
            batch = self.queue.take(min(room, BATCH_MESSAGES), BATCH_BYTES)
            if not batch:
                self._check_stuck(session)
                break  # the queue calls pump when more arrives
            session.send(batch)  # type: ignore[union-attr]
            self._await_answers()
        else:
            self._soon = self.reactor.callLater(0, self.pump)
        self._check_drained()

    def _check_stuck(self, session: Session | None) -> None:
        """
        The queue is full of what a tcp: or tls: session wrote, which no pause
        of Twisted's told the kernel took: after SETTLE seconds with nothing
        else to send it is taken as written (L{OctetCountedSession.assume_written}).
        """
        if (
            self._stuck is None
            and self.queue.full
            and isinstance(session, OctetCountedSession)
            and session.unsure
        ):
            self._stuck = self.reactor.callLater(SETTLE, self._unstick, session)

    def _unstick(self, session: OctetCountedSession) -> None:
        self._stuck = None
        if session is self.session and self.running and self.queue.full:
            session.assume_written()

    def _check_drained(self) -> None:
        """While stopping: done once nothing waits to be sent or answered."""
        if self._stopping is None or self._stopping.called:
            return
        session = self.session
        if session is None:
            self._stopping.callback(None)
            return
        # What a tcp: or tls: session wrote is known only once its close is done.
        written = session.unsure if isinstance(session, OctetCountedSession) else 0
        if not session.in_flight and len(self.queue) <= written:
            self._stopping.callback(None)

    # Stopping.

    def stopService(self) -> Deferred[None]:
        """
        Stop connecting; send what can be within GRACE; close (RELP's `close`,
        answered within CLOSE_WAIT); then what was not answered goes back to the
        queue, which stops (writing what it holds in memory to disk).
        """
        service.Service.stopService(self)
        for call in (self._retry, self._soon, self._stuck):
            if call is not None and call.active():
                call.cancel()
        self._retry = self._soon = self._stuck = None
        if self._connecting is not None:
            self._connecting.cancel()
        if self._attempt is not None:
            self._attempt.abort()
        self._stopping = Deferred()
        self._check_drained()
        sending = self._stopping.addTimeout(GRACE, self.reactor).addErrback(lambda _: None)
        return sending.addCallback(self._close).addCallback(self._stop_queue)

    def _close(self, _: object) -> Deferred[None] | None:
        session = self.session
        if session is None:
            return None
        closing = session.close().addTimeout(CLOSE_WAIT, self.reactor)
        return closing.addErrback(lambda _: session.abort())

    def _stop_queue(self, _: object) -> Deferred[None] | None:
        self._cancel_timeout()
        self._cancel_silence()
        self._flood.flush()
        if self.session is not None:  # still not gone after the abort
            self.session = None
            self.retried += self.queue.give_back()
        queue: service.IService = self.queue
        stopping: Deferred[None] | None = queue.stopService()
        return stopping

    # What /metrics and /health read.

    def metric_samples(self) -> Iterator[tuple[str, tuple, object]]:
        labels = (self.target_name,)
        yield "forward_sent", labels, self.sent
        yield "forward_retried", labels, self.retried
        yield "forward_connected", labels, int(self.session is not None)
        if self.refusals:
            yield "errors", ("forward_refused",), self.refusals
        if IMetricSource.providedBy(self.queue):
            yield from self.queue.metric_samples()

    def health_problems(self) -> list[tuple[str, str]]:
        problems = []
        if self._down_since is not None:
            problems.append(
                (
                    DEGRADED,
                    f"forward target {self.target_name} ({self.target}) unreachable since "
                    f"{utc_second(self._down_since)}: {self._down_reason}",
                )
            )
        if IHealthSource.providedBy(self.queue):
            problems.extend(self.queue.health_problems())
        return problems


def forward_mistakes(forwards: Iterable[ForwardSettings]) -> Iterator[ConfigError]:
    """The TLS files of FORWARDS that cannot be used (read, never written): for `suite check`."""
    for forward in forwards:
        # A target missing, or a certificate without its key, is relay_mistakes' to say.
        if forward.target and bool(forward.certificate) == bool(forward.private_key):
            try:
                target_tls(forward)
            except ConfigError as e:
                yield e


def open_forwarders(
    forwards: Iterable[ForwardSettings], sync: bool, reactor: IReactorTime
) -> list[Forwarder]:
    """
    A forwarder and its queue for each of FORWARDS (SYNC: the logger's
    `sync`), every TLS file read and every queue directory opened (locked,
    its segments checked) now: a file or directory that cannot be used is a
    config error naming its key, before anything starts.
    """
    forwarders = []
    for forward in forwards:
        tls = target_tls(forward)
        try:
            queue = ForwardQueue(
                forward.name,
                forward.queue_dir,
                forward.memory_bytes,
                forward.queue_bytes,
                forward.when_full,
                reactor,
                sync=sync,
            )
        except OSError as e:
            where = f" ({e.filename})" if e.filename and e.filename != forward.queue_dir else ""
            raise forward.error("queue_dir", f"cannot open: {e.strerror}{where}") from None
        forwarders.append(Forwarder(forward, queue, reactor, tls))
    return forwarders
