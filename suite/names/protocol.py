"""
The name server's AMP protocol: Register, Deregister, Lookup, Services,
Watch and Unwatch, and the Changed calls it makes to its watchers.  When
the name server has a read token, Lookup, Watch and Services need it (or
the token) as their `token` argument.
"""

import hmac
from time import perf_counter
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.protocols.amp import AmpBox
from twisted.python.failure import Failure

from suite.contracts.errors import Overloaded
from suite.contracts.names import (
    Deregister,
    Invalid,
    Lookup,
    Register,
    Services,
    Unwatch,
    Watch,
)
from suite.names.audit import connection_fields
from suite.net.amp import AMPFactory, AMPPolicy

if TYPE_CHECKING:
    from suite.names.server import NameServer
    from suite.names.service import NamesSettings


class NamesFactory(AMPFactory):
    """Settings: L{suite.names.service.NamesSettings}; every connection asks SERVER."""

    settings: "NamesSettings"

    def __init__(
        self, settings: "NamesSettings", clock: IReactorTime, server: "NameServer"
    ) -> None:
        super().__init__(settings, clock)
        self.server = server


class NamesProtocol(AMPPolicy):
    """
    Each command goes to the name server with who asked: peer, source,
    certificate subject.  A Lookup of a live name is answered with the
    name server's encoded answer as soon as its box is parsed, when the
    name server has no read token or the box carries it; every other box
    (a Lookup that fails, or whose token only AMP's path checks and logs)
    takes AMP's dispatch.

    The lookups answered that way leave together when the read is done, so
    each took the time from the read to that write: the clock is read twice
    per read, not per lookup (two readings and a histogram entry per lookup
    cost a tenth of a lookup).
    """

    factory: NamesFactory
    _audit_fields: str | None = None
    _found_now = 0  # lookups answered at once from the read being handled
    watching: dict[str, None] | None = None  # the names this connection watches
    _unacknowledged = 0  # bytes of Changed calls not answered yet

    @property
    def audit_fields(self) -> str:
        if self._audit_fields is None:  # after the TLS handshake, which names the client
            self._audit_fields = connection_fields(self.peer, self.client)
        return self._audit_fields

    def box_received(self, box: AmpBox) -> bool:
        token = box.get(b"token")
        if len(box) != (3 if token is None else 4) or box.get(b"_command") != b"Lookup":
            return False
        tag, name = box.get(b"_ask"), box.get(b"name")
        if tag is None or name is None:
            return False
        read_token = self.factory.server.read_token
        if read_token and (token is None or not hmac.compare_digest(token, read_token)):
            return False
        answer = self.factory.server.answer_lookup(name, tag, self.audit_fields)
        if answer is None:
            return False
        self._found_now += 1
        self.send(answer)
        return True

    def dataReceived(self, data: bytes) -> None:
        started = perf_counter()
        super().dataReceived(data)
        answered = self._found_now
        if answered:
            self._found_now = 0
            self.counts.requests += answered
            self.factory.server.lookups_answered(answered, perf_counter() - started)

    @Register.responder
    def register(
        self,
        name: str,
        host: str,
        port: int,
        description: str | None = None,
        token: str | None = None,
        id: str | None = None,
        tags: list[str] | None = None,
        meta: list[dict[str, str]] | None = None,
        logs_app: str | None = None,
        max_silence: float | None = None,
    ) -> Deferred[dict]:
        return self.factory.server.register(
            name,
            host,
            port,
            description,
            token,
            self.peer,
            self.source,
            self.client,
            instance_id=id,
            tags=tags or (),
            meta={pair["key"]: pair["value"] for pair in meta or ()},  # a key twice: the last
            logs_app=logs_app,
            max_silence=max_silence,
        )

    @Deregister.responder
    def deregister(
        self,
        name: str | None = None,
        host: str | None = None,
        port: int | None = None,
        token: str | None = None,
        id: str | None = None,
    ) -> Deferred[dict]:
        server = self.factory.server
        if id is not None and name is None and host is None and port is None:
            return server.deregister_id(id, token, self.peer, self.source, self.client)
        if id is None and name is not None and host is not None and port is not None:
            return server.deregister(name, host, port, token, self.peer, self.source, self.client)
        raise Invalid("Deregister takes either name, host and port, or id")

    @Lookup.responder
    def lookup(self, name: str, token: str | None = None) -> dict:
        self.factory.server.authorize_read(token, "Lookup", self.peer, self.source)
        return self.factory.server.lookup(name, self.audit_fields)

    @Watch.responder
    def watch(self, name: str, token: str | None = None) -> dict:
        self.factory.server.authorize_read(token, "Watch", self.peer, self.source)
        watching = self.watching
        if watching is None:
            watching = self.watching = {}
        limit = self.factory.settings.max_watches
        if name not in watching and len(watching) >= limit:
            raise Overloaded(f"{limit} names watched on this connection (max_watches)")
        answer = self.factory.server.watch(name, self)
        watching[name] = None
        return answer

    @Unwatch.responder
    def unwatch(self, name: str) -> dict:
        if self.watching is not None and self.watching.pop(name, 0) is None:
            self.factory.server.unwatch(name, self)
        return {}

    def push_change(self, name: bytes, instances: bytes) -> None:
        """
        Call Changed(NAME, INSTANCES).  A watcher that leaves more than
        `max_change_backlog` bytes of them unanswered (it stopped reading)
        is disconnected rather than buffered for without bound.
        """
        if self.transport is None or self.closing:
            return
        size = len(name) + len(instances)
        limit = self.factory.settings.max_change_backlog
        if self._unacknowledged + size > limit and self._unacknowledged:
            self.warn_protocol_error(
                "change_backlog",
                "{service}: closing {peer}: {backlog} bytes of Changed calls unanswered "
                "(max_change_backlog {limit})",
                backlog=self._unacknowledged + size,
                limit=limit,
            )
            self.closing = True
            self.stream.abortConnection()
            return
        self._unacknowledged += size
        self.flush_batch()  # after the answers already given
        answered = self.dispatcher.callRemoteString(b"Changed", name=name, instances=instances)
        answered.addBoth(self._change_answered, size)

    def _change_answered(self, result: object, size: int) -> None:
        """Answered (or failed: an error answer, the connection lost): no longer waiting."""
        self._unacknowledged -= size

    def is_idle(self) -> bool:
        return not self.watching  # a watcher waits for pushes, quietly

    def connectionLost(self, reason: Failure | None = connectionDone) -> None:
        for name in self.watching or ():
            self.factory.server.unwatch(name, self)
        self.watching = None
        super().connectionLost(reason)

    @Services.responder
    def services(self, token: str | None = None) -> dict:
        self.factory.server.authorize_read(token, "Services", self.peer, self.source)
        return self.factory.server.services()


NamesFactory.protocol = NamesProtocol
