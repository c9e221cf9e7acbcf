"""
Closing after an error line without losing the line to a reset.

The client may still be sending, and closing a socket with unread input
makes the kernel answer with RST, which destroys the reply before the
client reads it.  So the connection stops interpreting input, shuts down
its sending side once the message is out, discards what arrives for up to
LINGER_SECONDS, then closes.
"""

from typing import Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITCPTransport

LINGER_SECONDS = 1.0


class StreamTransport(Protocol):
    """What the close asks of a connection's transport (TCP, Unix, or TLS over either)."""

    def write(self, data: bytes) -> None: ...
    def unregisterProducer(self) -> None: ...
    def resumeProducing(self) -> None: ...
    def loseConnection(self) -> None: ...
    def abortConnection(self) -> None: ...


class LingeringClose:
    """
    The close of one connection on TRANSPORT after MESSAGE; CLOCK times the
    linger.  Over TLS the close is TLS's own (close_notify, then the
    peer's); a transport that cannot close only its sending side (not TCP
    or Unix) is closed whole.
    """

    def __init__(self, clock: IReactorTime, transport: StreamTransport, message: bytes, tls: bool):
        self.transport = transport
        transport.write(message)
        transport.unregisterProducer()
        transport.resumeProducing()  # keep reading, to discard
        self._timer: IDelayedCall | None = clock.callLater(LINGER_SECONDS, self._stop_lingering)
        if tls or not ITCPTransport.providedBy(transport):
            transport.loseConnection()
        else:
            transport.loseWriteConnection()

    def cancel(self) -> None:
        """The connection closed in time: nothing left to cut."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _stop_lingering(self) -> None:
        """The second is up: close now, whatever the client (or its TLS layer) still owes."""
        self._timer = None
        self.transport.abortConnection()
