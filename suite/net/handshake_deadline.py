"""
The TLS handshake of a connection must finish within `handshake_timeout`:
a client that connects and never completes it would otherwise hold a
connection (and its place under the limits) for as long as it likes.  A
handshake that fails or times out is reported once, with OpenSSL's reason.
"""

from collections.abc import Callable

from OpenSSL import SSL
from OpenSSL.crypto import X509
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ISSLTransport
from twisted.python.failure import Failure


def tls_failure_reason(error: SSL.Error) -> str:
    """OpenSSL's reasons (`peer did not return a certificate`, `wrong version number` ...)."""
    reasons = [entry[-1] for entry in error.args[0] if entry] if error.args else []
    return "; ".join(str(r) for r in reasons) or str(error) or "TLS error"


def certificate_subject(transport: ISSLTransport) -> str | None:
    """The RFC 4514 subject of the client certificate on a TLS TRANSPORT, if one was given."""
    certificate = transport.getPeerCertificate()
    if not isinstance(certificate, X509):  # None: no certificate was given
        return None
    return certificate.to_cryptography().subject.rfc4514_string()


class HandshakeDeadline:
    """
    Started with the connection: after SECONDS on CLOCK, FAILED(reason) is
    told and ABORT() drops the connection, unless completed() came first;
    a connection lost mid-handshake to an SSL error is FAILED too.
    """

    def __init__(
        self,
        clock: IReactorTime,
        seconds: float,
        failed: Callable[[str], None],
        abort: Callable[[], None],
    ) -> None:
        self.seconds = seconds
        self.failed = failed
        self.abort = abort
        self._timer: IDelayedCall | None = clock.callLater(seconds, self._timed_out)

    @property
    def pending(self) -> bool:
        return self._timer is not None

    def completed(self) -> None:
        """The handshake is done in time: the deadline no longer holds."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def connection_lost(self, reason: Failure | None) -> None:
        """The connection is gone; before its handshake finished, an SSL error is its failure."""
        if self._timer is None:
            return
        self.completed()
        if reason is not None and isinstance(reason.value, SSL.Error):
            self.failed(tls_failure_reason(reason.value))

    def _timed_out(self) -> None:
        self._timer = None
        self.failed(f"not finished within {self.seconds:g} s (handshake_timeout)")
        self.abort()
