"""
What the name server's stream listeners expose to other hosts, said at
every start, one line per listener, so that an operator reading any start's
log sees it.  Without a token, anyone who can connect can change the
registrations; with one, a plain listener that other hosts reach carries
the token in clear, for anyone on the path to read and then use.

Loopback listeners and Unix sockets stay on this machine (a Unix socket's
file mode decides who may connect).  A `systemd:` listener is judged by the
address of the socket systemd passed: `ListenStream=127.0.0.1:5300` is
local, `ListenStream=5300` is not.  `tls_listen` and `http_tls_listen`
entries and Twisted's own `ssl:` endpoints are encrypted.  The HTTP API's
listeners count as the AMP ones do: the same token guards their writes, and
a read token travels on them too.
"""

from typing import TYPE_CHECKING

from twisted.internet.interfaces import IReactorSocket
from twisted.logger import Logger

from suite.net.listeners import reaches_beyond_loopback

if TYPE_CHECKING:
    from suite.names.service import NamesSettings

log = Logger()


def token_in_clear(description: str, reactor: IReactorSocket) -> bool:
    """Whether a token sent to the `listen` entry DESCRIPTION could be read by other hosts."""
    encrypted = description.split(":", 1)[0] == "ssl"
    return not encrypted and reaches_beyond_loopback(description, reactor)


def warn_about_exposure(settings: "NamesSettings", token: str, reactor: IReactorSocket) -> None:
    """The warnings of SETTINGS' (a [names] section's) listeners, given its write TOKEN."""
    plain = (*settings.listen, *settings.http_listen)
    if not token:
        for description in (*plain, *settings.tls_listen, *settings.http_tls_listen):
            if reaches_beyond_loopback(description, reactor):
                log.warn(
                    "names: {listener} accepts connections from other hosts and no token is "
                    "set: anyone who can reach it can register and deregister (set [names] token)",
                    listener=description,
                )
        return
    for description in plain:
        if token_in_clear(description, reactor):
            log.warn(
                "names: {listener} accepts connections from other hosts without TLS: the token "
                "crosses the network in clear, for anyone on the path to read (serve it through "
                "tls_listen, or bind it to loopback)",
                listener=description,
            )
