"""The sleep RPC over AMP: many sleeps in flight per connection, no threads."""

from collections.abc import Iterator
from typing import TYPE_CHECKING, NoReturn

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.protocols import amp
from twisted.python.failure import Failure

from suite.contracts.errors import Overloaded
from suite.contracts.sleep import InvalidDuration, Sleep
from suite.foundation.metrics import Histogram
from suite.net.amp import AMPFactory, AMPPolicy

if TYPE_CHECKING:
    from suite.sleep.service import SleepSettings


class SleepFactory(AMPFactory):
    """
    Settings: L{suite.sleep.service.SleepSettings}; counts the sleeps of all
    connections, pending and done (with their durations).
    """

    settings: "SleepSettings"

    def __init__(self, settings: "SleepSettings", clock: IReactorTime) -> None:
        super().__init__(settings, clock)
        self.pending_total = 0
        self.durations = Histogram()

    def metric_samples(self) -> Iterator[tuple[str, tuple, object]]:
        yield from super().metric_samples()
        yield "sleeps_pending", (), self.pending_total
        yield "request_duration_seconds", (), self.durations


class SleepProtocol(AMPPolicy):
    """
    Each Sleep is a timer on the reactor, not a thread.  A connection that
    goes away cancels its timers: nothing is left on the reactor.  Sleeps
    pending on one connection are bounded by the AMP policy's max_pending.
    """

    factory: SleepFactory

    def connectionMade(self) -> None:
        self.pending: dict[Deferred[dict[str, float]], IDelayedCall] = {}
        super().connectionMade()

    @Sleep.responder
    def sleep(self, seconds: float) -> Deferred[dict[str, float]]:
        factory, limits = self.factory, self.factory.settings
        if not 0 <= seconds <= limits.max_seconds:  # NaN fails this too
            raise InvalidDuration(
                f"seconds must be from 0 to {limits.max_seconds:g} (max_seconds), not {seconds}"
            )
        if factory.pending_total >= limits.max_total:
            raise Overloaded(f"{limits.max_total} sleeps pending on this server (max_total)")
        clock = factory.clock
        started = clock.seconds()
        done: Deferred[dict[str, float]] = Deferred(canceller=self._cancel)

        def wake() -> None:
            slept = clock.seconds() - started
            if slept < seconds:  # the clock was stepped back: still never answer early
                self.pending[done] = clock.callLater(seconds - slept, wake)
                return
            self._forget(done)
            factory.durations.observe(slept)
            done.callback({"slept": slept})

        self.pending[done] = clock.callLater(seconds, wake)
        factory.pending_total += 1
        return done.addErrback(self._cancelled)

    def _forget(self, done: Deferred[dict[str, float]]) -> None:
        del self.pending[done]
        self.factory.pending_total -= 1
        self.touch()  # the answer goes out now: idle time counts from here

    def _cancel(self, done: Deferred[dict[str, float]]) -> None:
        self.pending[done].cancel()
        self._forget(done)

    @staticmethod
    def _cancelled(failure: Failure) -> NoReturn:
        # A known AMP error: the answer is dropped quietly on the closed connection.
        failure.trap(CancelledError)
        raise amp.RemoteAmpError(b"CANCELLED", "connection lost")

    def is_idle(self) -> bool:
        return not self.pending

    def connectionLost(self, reason: Failure | None = connectionDone) -> None:
        for done in list(getattr(self, "pending", ())):
            done.cancel()
        super().connectionLost(reason)


SleepFactory.protocol = SleepProtocol
