"""The sleep RPC (SPEC §4 "sleep") over AMP: many sleeps in flight per connection, no threads."""

from twisted.internet.defer import CancelledError, Deferred
from twisted.protocols import amp

from suite.commands import InvalidDuration, Overloaded, Sleep
from suite.streams import StreamFactory, StreamProtocol


class SleepFactory(StreamFactory):
    def __init__(self, service_name, clock, max_connections, idle_timeout,
                 max_seconds, max_pending, max_total):
        super().__init__(service_name, clock, max_connections, idle_timeout)
        self.max_seconds = max_seconds
        self.max_pending = max_pending
        self.max_total = max_total
        self.pending_total = 0


class SleepProtocol(StreamProtocol, amp.AMP):
    """
    Each Sleep is a timer on the reactor, not a thread.  A connection that
    goes away cancels its timers: nothing is left on the reactor.
    """

    def connectionMade(self):
        self.pending: dict[Deferred, object] = {}
        StreamProtocol.connectionMade(self)

    def dataReceived(self, data):
        self.resetTimeout()
        amp.AMP.dataReceived(self, data)

    @Sleep.responder
    def sleep(self, seconds):
        factory = self.factory
        if not 0 <= seconds <= factory.max_seconds:  # NaN fails this too
            raise InvalidDuration(
                f"seconds must be from 0 to {factory.max_seconds:g} (max_seconds), not {seconds}"
            )
        if len(self.pending) >= factory.max_pending:
            raise Overloaded(f"{factory.max_pending} sleeps pending on this connection (max_pending)")
        if factory.pending_total >= factory.max_total:
            raise Overloaded(f"{factory.max_total} sleeps pending on this server (max_total)")
        clock = factory.clock
        started = clock.seconds()
        done = Deferred(canceller=self._cancel)

        def wake():
            slept = clock.seconds() - started
            if slept < seconds:  # the clock was stepped back: still never answer early
                self.pending[done] = clock.callLater(seconds - slept, wake)
                return
            self._forget(done)
            done.callback({"slept": slept})

        self.pending[done] = clock.callLater(seconds, wake)
        factory.pending_total += 1
        return done.addErrback(self._cancelled)

    def _forget(self, done):
        del self.pending[done]
        self.factory.pending_total -= 1

    def _cancel(self, done):
        self.pending[done].cancel()
        self._forget(done)

    @staticmethod
    def _cancelled(failure):
        # A known AMP error: the answer is dropped quietly on the closed connection.
        failure.trap(CancelledError)
        raise amp.RemoteAmpError(b"CANCELLED", "connection lost")

    def timeoutConnection(self):
        if self.pending:
            self.setTimeout(self.factory.idle_timeout)
        else:
            StreamProtocol.timeoutConnection(self)

    def connectionLost(self, reason):
        for done in list(getattr(self, "pending", ())):
            done.cancel()
        StreamProtocol.connectionLost(self, reason)
        amp.AMP.connectionLost(self, reason)


SleepFactory.protocol = SleepProtocol
