"""
Health checks: every `ping_interval` a TCP connection to each instance,
`ping_concurrency` at a time; an instance is evicted after `max_failures`
failures in a row.  Checks run on the reactor beside lookups and never
block them.
"""

from twisted.application import service
from twisted.internet import defer, error
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

log = Logger()


def tcp_ping(reactor, timeout: float):
    """ping(host, port) -> Deferred that fires once a TCP connection opens (then closes it)."""

    def ping(host, port):
        # IP literals skip the resolver: it runs in a small thread pool and would pace the checks.
        if isIPAddress(host):
            endpoint = TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
        elif isIPv6Address(host):
            endpoint = TCP6ClientEndpoint(reactor, host, port, timeout=timeout)
        else:
            endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
        connected = endpoint.connect(Factory.forProtocol(Protocol))
        connected.addTimeout(timeout, reactor)
        return connected.addCallback(lambda protocol: protocol.transport.loseConnection())

    return ping


def failure_reason(failure, timeout) -> str:
    if failure.check(error.ConnectionRefusedError):
        return "connection refused"
    if failure.check(defer.TimeoutError, defer.CancelledError, error.TimeoutError):
        return f"no connection within {timeout:g} s"
    if failure.check(error.DNSLookupError):
        return "host name not found"
    return failure.getErrorMessage()


class HealthChecker(service.Service):
    def __init__(self, registry, clock, ping, interval, timeout, max_failures, concurrency,
                 on_evict):
        self.registry = registry
        self.clock = clock
        self.ping = ping
        self.interval = interval
        self.timeout = timeout
        self.max_failures = max_failures
        self.concurrency = concurrency
        self.on_evict = on_evict
        self._loop = None

    def startService(self):
        service.Service.startService(self)
        self._loop = LoopingCall(self.check_all)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=False)

    def stopService(self):
        service.Service.stopService(self)
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def check_all(self) -> defer.Deferred:
        """One round over every instance; the next round waits for this one to end."""
        limit = defer.DeferredSemaphore(self.concurrency)
        return defer.gatherResults(
            [limit.run(self._check, instance) for instance in self.registry.instances()]
        )

    def _check(self, instance) -> defer.Deferred:
        d = defer.maybeDeferred(self.ping, instance.host, instance.port)
        d.addCallbacks(lambda _: self._result(instance, None), lambda f: self._result(instance, f))
        return d

    def _result(self, instance, failure):
        reason = None if failure is None else failure_reason(failure, self.timeout)
        if reason is not None:
            log.info(
                "names: ping {host}:{port} ({name}) failed {failures}/{max_failures}: {reason}",
                host=instance.host, port=instance.port, name=instance.name,
                failures=instance.failures + 1, max_failures=self.max_failures, reason=reason,
                names_event="ping_failed",
            )
        if self.registry.ping_result(instance, reason is None, self.max_failures):
            self.on_evict(instance, reason)
