"""
The logger's shutdown drain.  When the suite stops, the listeners close
first; then every open connection is still read until it has been quiet for
QUIET seconds or `shutdown_timeout` has passed, so what senders had already
handed to the kernel before SIGTERM reaches the file.  Only then are the
connections closed, a frame still incomplete being written as truncated.
"""

from twisted.application import service
from twisted.internet.task import LoopingCall

QUIET = 0.2
POLL = 0.05


class ShutdownDrain(service.Service):
    """Drains the connections of FACTORY (a SyslogFactory) on stop, timed by CLOCK."""

    def __init__(self, factory, clock, timeout: float):
        self.factory = factory
        self.clock = clock
        self.timeout = timeout

    def stopService(self):
        service.Service.stopService(self)
        deadline = self.clock.seconds() + self.timeout

        def check():
            now = self.clock.seconds()
            reading = any(now - p.last_data < QUIET for p in self.factory.open)
            if not reading or now >= deadline:
                loop.stop()

        loop = LoopingCall(check)
        loop.clock = self.clock
        return loop.start(POLL, now=True).addCallback(lambda _: self._close_all())

    def _close_all(self):
        for protocol in list(self.factory.open):
            protocol.close_at_shutdown()
