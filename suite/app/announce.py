"""
Self-registration (`[announce]`): every TCP and TLS listener of every
enabled service is registered with each configured name server under the
service's name (description `tcp` or `tls`), again every `interval` (so a
restarted name server learns them again), and deregistered when the suite
stops, before its listeners close.

With `tls = true` every name server is spoken to through TLS, its
certificate verified against `ca` and its host name, so that the token and
the registrations cannot be read or changed on the way; `certificate` and
`private_key` answer a name server that asks for a client certificate.

With `logs_app`, each instance is registered with a logs check: the name
server turns it warning once no syslog message from that app on the
instance's host reached it for `max_silence` seconds, so a suite that still
answers but stopped logging (a full disk, a broken log shipper) shows.

Announcing never delays the start: registrations go out once the reactor
runs.  A name server that cannot be reached (or refuses) is tried again at
the next interval; its outage is logged once when it begins and once when
it ends.
"""

import ipaddress
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

from twisted.application import service
from twisted.internet import defer, ssl, threads
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.app.lifecycle import ISuiteReactor
from suite.contracts.names import Deregister, NotFound, Register
from suite.foundation.config import BOOLEAN, Settings, key, number, path, string_list, text
from suite.foundation.interfaces import IStopsFirst
from suite.foundation.printable import printable
from suite.names.registry import MAX_APP
from suite.net.amp import QuietAMP
from suite.net.client_endpoints import parse_address, stream_endpoint, tls_failure
from suite.net.listeners import ListenerService
from suite.net.tls import client_certificate_options, trust_root

log = Logger()

CONNECT_TIMEOUT = 5.0  # seconds to reach a name server, and to hear its answers
STOP_TIMEOUT = 5.0  # seconds the deregistrations may hold up a stop


def check_logs_app(app: str) -> None:
    """A syslog app name as the name servers take it; empty: no logs check."""
    if app and (len(app) > MAX_APP or not app.isprintable() or " " in app):
        raise ValueError(f"must be 1-{MAX_APP} printable characters without spaces")


@dataclass(frozen=True, kw_only=True)
class AnnounceSettings(Settings):
    """
    Registers every enabled service's TCP and TLS listeners with name servers,
    again every `interval`, and deregisters them when the suite stops.
    """

    section = "announce"

    name_server: tuple[str, ...] = key(
        string_list(parse_address),
        (),
        "name servers to register with (host:port, [v6]:port or an endpoint string); none: no "
        "announcing",
    )
    token: str = key(text(), "", "the name servers' token (or credential:NAME)", secret=True)
    token_file: str = key(
        path(), "", "a file holding the token (or credential:NAME); not together with token"
    )
    host: str = key(
        text(),
        "",
        "host announced; default: the listener's interface when "
        "specific, else this machine's FQDN",
    )
    interval: float = key(number(0.1), 10.0, "seconds between re-registrations")
    tls: bool = key(
        BOOLEAN, False, "speak TLS to the name servers, verifying their certificate and host name"
    )
    ca: str = key(
        path(),
        "",
        "tls: PEM CA certificate(s) the name servers' certificates are "
        "verified against, or credential:NAME; default: the system's CAs",
    )
    certificate: str = key(
        path(),
        "",
        "tls: PEM client certificate (chain) for name servers "
        "that ask for one (mutual TLS), or credential:NAME",
    )
    private_key: str = key(path(), "", "tls: PEM private key of certificate, or credential:NAME")
    logs_app: str = key(
        text(check_logs_app),
        "",
        "the syslog app the suite's own logs carry: each instance registered gets a logs "
        "check, silent once no message from it on its host arrived for max_silence; empty: none",
    )
    max_silence: float = key(
        number(1), 60.0, "seconds without a message from logs_app before the check turns warning"
    )


TLS_FILES = ("ca", "certificate", "private_key")


def name_server_tls(settings: AnnounceSettings) -> dict[str, IOpenSSLClientConnectionCreator]:
    """
    With `tls = true`, each name server's client TLS (name server -> connection
    creator); without, none.  Every file is read now, so that a missing or bad
    one is a config error at start, not an outage logged later; a file named
    while `tls` is off is refused, since the operator meant TLS to be used.
    """
    if not settings.tls:
        for name in TLS_FILES:
            if getattr(settings, name):
                raise settings.error(name, "used only with tls = true")
        return {}
    if bool(settings.certificate) != bool(settings.private_key):
        named = "certificate" if settings.certificate else "private_key"
        raise settings.error(named, "certificate and private_key go together")
    trust = trust_root(settings, "ca") if settings.ca else ssl.platformTrust()
    client = client_certificate_options(settings)
    creators = {}
    for name_server in settings.name_server:
        hostname = parse_address(name_server).hostname
        if hostname is None:
            raise settings.error(
                "name_server",
                "tls = true needs a host name to verify "
                "(host:port, [v6]:port or an endpoint string with host=)",
                name_server,
            )
        creators[name_server] = ssl.optionsForClientTLS(
            hostname, trustRoot=trust, extraCertificateOptions=dict(client)
        )
    return creators


@dataclass(frozen=True)
class Announcement:
    """One instance announced: (name, host, port) and its description."""

    name: str
    host: str
    port: int
    description: str


def specific_host(address: IPv4Address | IPv6Address) -> str | None:
    """The interface a listener is bound to, unless it is every interface."""
    host = address.host.split("%", 1)[0]
    if ipaddress.ip_address(host).is_unspecified:
        return None
    return host


class _QuietClients(Factory):
    """The announcer's connections, every interval: without a log line for each."""

    noisy = False
    protocol = QuietAMP


def _not_found_is_done(failure: Failure) -> None:
    """Deregistering what the name server no longer has is done."""
    failure.trap(NotFound)


@implementer(IStopsFirst)
class Announcer(service.Service):
    """
    Announces LISTENERS (L{suite.net.listeners.ListenerService}s of the
    `listen` and `tls_listen` keys) as SETTINGS say, with TOKEN, through the
    client TLS of each name server in TLS (L{name_server_tls}; none: plain
    TCP).  The root service stops it first (L{IStopsFirst}) and waits (at
    most STOP_TIMEOUT) for its deregistrations.
    """

    def __init__(
        self,
        settings: AnnounceSettings,
        token: str | None,
        listeners: Sequence[ListenerService],
        reactor: ISuiteReactor,
        tls: Mapping[str, IOpenSSLClientConnectionCreator],
    ) -> None:
        self.settings = settings
        self.token = token or None
        self.tls = tls
        self.listeners = listeners
        self.reactor = reactor
        self.announced: list[Announcement] = []
        self._down: dict[str, bool] = {}  # name server -> in an outage
        self._rounds = LoopingCall(self.announce)
        self._rounds.clock = reactor

    def startService(self) -> None:
        service.Service.startService(self)
        self.reactor.callWhenRunning(self._start)

    def _start(self) -> None:
        d = defer.ensureDeferred(self._announcements())
        d.addCallback(self._first_round)
        d.addErrback(lambda failure: log.failure("announce: cannot start", failure))

    def _first_round(self, announced: list[Announcement]) -> None:
        self.announced = announced
        if self.running:
            self._rounds.start(self.settings.interval, now=True)

    async def _announcements(self) -> list[Announcement]:
        announced: list[Announcement] = []
        fqdn: str | None = None
        for listener in self.listeners:
            address: object = listener.port.getHost() if listener.port is not None else None
            if not isinstance(address, (IPv4Address, IPv6Address)):
                continue  # a Unix socket cannot be reached from another host
            host = self.settings.host or specific_host(address)
            if host is None:
                if fqdn is None:  # may ask DNS: in a thread, not in the reactor
                    fqdn = await threads.deferToThreadPool(
                        self.reactor, self.reactor.getThreadPool(), socket.getfqdn
                    )
                host = fqdn
            description = "tls" if listener.listener.tls else "tcp"
            announced.append(Announcement(listener.service_name, host, address.port, description))
        return announced

    def announce(self) -> defer.Deferred[list[tuple[bool, None]]]:
        """One round: every announcement to every name server (the next waits for it)."""
        return defer.DeferredList(
            [
                self._with(name_server, Register, self._register_arguments)
                for name_server in self.settings.name_server
            ],
            consumeErrors=True,
        )

    def _register_arguments(self, announcement: Announcement) -> dict[str, object]:
        arguments: dict[str, object] = {
            "name": announcement.name,
            "host": announcement.host,
            "port": announcement.port,
            "description": announcement.description,
            "token": self.token,
        }
        if self.settings.logs_app:
            arguments["logs_app"] = self.settings.logs_app
            arguments["max_silence"] = self.settings.max_silence
        return arguments

    def _deregister_arguments(self, announcement: Announcement) -> dict[str, object]:
        return {
            "name": announcement.name,
            "host": announcement.host,
            "port": announcement.port,
            "token": self.token,
        }

    def _with(
        self,
        name_server: str,
        command: type[amp.Command],
        arguments: Callable[[Announcement], dict[str, object]],
    ) -> defer.Deferred[None]:
        d = defer.ensureDeferred(self._send(name_server, command, arguments))
        d.addCallbacks(
            lambda _: self._reached(name_server),
            lambda failure: self._failed(name_server, command, failure),
        )
        return d

    async def _send(
        self,
        name_server: str,
        command: type[amp.Command],
        arguments: Callable[[Announcement], dict[str, object]],
    ) -> None:
        endpoint = stream_endpoint(
            self.reactor, parse_address(name_server), CONNECT_TIMEOUT, self.tls.get(name_server)
        )
        connecting = endpoint.connect(_QuietClients())
        # The protocol _QuietClients builds.
        protocol = cast(QuietAMP, await connecting.addTimeout(CONNECT_TIMEOUT, self.reactor))
        transport = protocol.transport
        assert transport is not None  # it has just connected
        calls = [
            protocol.callRemote(command, **arguments(a)).addErrback(_not_found_is_done)
            for a in self.announced
        ]
        answered = defer.gatherResults(calls, consumeErrors=True)
        try:
            await answered.addTimeout(CONNECT_TIMEOUT, self.reactor)
        except defer.FirstError as e:
            e.subFailure.raiseException()
        finally:
            transport.loseConnection()

    def _reached(self, name_server: str) -> None:
        if self._down.get(name_server):
            log.info(
                "announce: {name_server} reached again; {count} listeners registered",
                name_server=name_server,
                count=len(self.announced),
            )
        self._down[name_server] = False

    def _failed(self, name_server: str, command: type[amp.Command], failure: Failure) -> None:
        if not self._down.get(name_server):
            reason = (
                tls_failure(failure.value)
                or failure.getErrorMessage()
                or type(failure.value).__name__
            )
            error = failure.value
            code = command.errors.get(type(error)) if isinstance(error, Exception) else None
            if code is not None:  # the name server's answer: UNAUTHORIZED, INVALID ...
                reason = f"{code.decode()}: {reason}"
            reason = printable(reason)  # a name server's words, from the network
            log.warn(
                "announce: cannot {action} with {name_server}: {reason}; trying again every "
                "{interval:g} s",
                action=command.__name__.lower(),
                name_server=name_server,
                reason=reason,
                interval=self.settings.interval,
            )
        self._down[name_server] = True

    def stopService(self) -> defer.Deferred[None] | None:
        """Deregister everything announced, from each name server, then let the listeners close."""
        if not self.running:
            return None
        service.Service.stopService(self)
        if self._rounds.running:
            self._rounds.stop()
        if not self.announced:
            return None
        leaving = defer.DeferredList(
            [
                self._with(name_server, Deregister, self._deregister_arguments)
                for name_server in self.settings.name_server
            ],
            consumeErrors=True,
        )
        leaving.addTimeout(STOP_TIMEOUT, self.reactor)
        return leaving.addBoth(lambda _: None)
