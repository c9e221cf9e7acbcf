"""
Health checks and eviction: every `ping_interval` a TCP connection to each instance,
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


class _QuietProbes(Factory):
    """The pings' factory: Twisted logs every start and stop of a noisy one, twice per ping."""

    noisy = False
    protocol = Protocol


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
        connected = endpoint.connect(_QuietProbes())
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
    """
    Runs the rounds of checks over REGISTRY with the ping_* and max_failures
    of SETTINGS; ON_EVICT(instance, reason) evicts (its Deferred is waited for).  A
    round that fails (a bug in a check or in an eviction) is logged and the
    next round runs all the same; stopping waits for the round in flight.
    """

    def __init__(self, registry, settings, clock, ping, on_evict):
        self.registry = registry
        self.settings = settings
        self.ping = ping
        self.on_evict = on_evict
        self._round = None
        self._rounds = LoopingCall(self._next_round)
        self._rounds.clock = clock

    def startService(self):
        service.Service.startService(self)
        self._rounds.start(self.settings.ping_interval, now=False)

    def stopService(self):
        service.Service.stopService(self)
        if self._rounds.running:
            self._rounds.stop()
        if self._round is not None:
            finished = defer.Deferred()
            self._round.addBoth(lambda _: finished.callback(None))
            return finished

    def _next_round(self) -> defer.Deferred:
        """Run check_all; its failure is logged here, never left to stop the loop."""
        round_ = self._round = defer.maybeDeferred(self.check_all)
        round_.addErrback(lambda failure: log.failure("names: health round failed", failure))
        round_.addBoth(self._round_finished)
        return round_

    def _round_finished(self, _):
        self._round = None

    def check_all(self) -> defer.Deferred:
        """One round over every instance; the next round waits for this one to end."""
        limit = defer.DeferredSemaphore(self.settings.ping_concurrency)
        return defer.gatherResults(
            [limit.run(self._check, instance) for instance in self.registry.instances()]
        )

    def _check(self, instance) -> defer.Deferred:
        d = defer.maybeDeferred(self.ping, instance.host, instance.port)
        d.addCallbacks(lambda _: self._result(instance, None), lambda f: self._result(instance, f))
        d.addErrback(
            lambda failure: log.failure(
                "names: checking {name} {host}:{port} failed", failure,
                name=instance.name, host=instance.host, port=instance.port,
            )
        )
        return d

    def _result(self, instance, failure):
        max_failures = self.settings.max_failures
        reason = None if failure is None else failure_reason(failure, self.settings.ping_timeout)
        if reason is not None:
            log.info(
                "names: ping {host}:{port} ({name}) failed {failures}/{max_failures}: {reason}",
                host=instance.host, port=instance.port, name=instance.name,
                failures=instance.failures + 1, max_failures=max_failures, reason=reason,
                names_event="ping_failed",
            )
        if self.registry.ping_result(instance, reason is None, max_failures):
            return self.on_evict(instance, reason)
