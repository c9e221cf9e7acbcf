"""
One health checker among replicas: the replica that holds the leader key
runs the health checks (the pings and the declared checks) and evictions,
the others only serve.  Each replica holds an etcd lease of `leader_ttl - 1`
seconds, renewed every third of it; whoever creates the leader key (a
transaction: "if it does not exist, put it, bound to my lease") leads.
When the leader dies its lease runs out, etcd deletes the key, every
replica's watch sees the deletion, and the first to create the key again
leads: a takeover within `leader_ttl` (the lease, plus etcd's half-second
expiry check and the watch).  A leader that stops revokes its lease, so
another takes over at once.

Two replicas never evict at once: an eviction is a transaction conditioned
on the leader key still having the create revision this replica wrote
(L{EtcdStore.evict}); a leader cut off from etcd whose lease ran out finds
its evictions refused, and stops checking as soon as it learns it.  Status
changes of declared checks are plain writes, not conditioned on the leader
key: between losing its lease and learning it, a former leader may still
write a check's result (the new leader's next run of that check corrects it).
"""

import os
import socket
from collections.abc import Iterator

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.foundation.interfaces import IMetricSource
from suite.names.checks import CheckRunner
from suite.names.etcd import encode
from suite.names.etcd_store import EtcdStore, Holder
from suite.names.health import HealthChecker
from suite.names.store import StoreError

log = Logger()


def identity() -> str:
    """What the leader key says of its holder: host and process."""
    return f"{socket.gethostname()} pid {os.getpid()}"


@implementer(IMetricSource)
class Leadership(service.Service):
    """
    Campaigns for the leader key of STORE (an L{EtcdStore}) with a lease of
    LEASE_TTL seconds, and runs CHECKER (a L{HealthChecker}) and RUNNER (a
    L{CheckRunner}, if any), not started otherwise, while it leads.
    """

    name: str  # what the leader key says of this replica (a service's name may be None)

    def __init__(
        self,
        store: EtcdStore,
        lease_ttl: int,
        clock: IReactorTime,
        checker: HealthChecker,
        name: str | None = None,
        runner: CheckRunner | None = None,
    ) -> None:
        self.store = store
        self.lease_ttl = lease_ttl
        self.clock = clock
        self.checker = checker
        self.runner = runner
        self.name = name or identity()
        self.lease: int | None = None
        self.leading = False
        self.holder: Holder | None = None  # the leader key's, None: nobody leads
        self._renewed = 0.0  # when etcd last confirmed the lease (0: never)
        self._round_running: defer.Deferred[None] | None = None
        self._again = False  # a round was asked for while one ran
        self._rounds = LoopingCall(self._round)
        self._rounds.clock = clock
        store.on_leader = self._leader_changed

    def metric_samples(self) -> Iterator[tuple[str, tuple, object]]:
        yield "leader", (), int(self.leading)
        yield from self.checker.metric_samples()
        if self.runner is not None:
            yield from self.runner.metric_samples()

    def startService(self) -> None:
        service.Service.startService(self)
        self._rounds.start(self.lease_ttl / 3, now=True)

    def stopService(self) -> defer.Deferred[list[None]]:
        service.Service.stopService(self)
        if self._rounds.running:
            self._rounds.stop()
        waits = [self._step_down(None), self._round_running or defer.succeed(None)]
        if self.lease is not None:
            # Asked now, before the store closes its client: the leader key goes with the
            # lease and another replica takes over at once.
            revoked = self.store.request("/v3/lease/revoke", {"ID": str(self.lease)})
            self.lease = None
            waits.append(revoked.addErrback(lambda failure: failure.trap(StoreError)))
        return defer.gatherResults(waits)

    def _round(self) -> None:
        """Renew the lease (or get one), and campaign when nobody leads."""
        if self._round_running is not None:
            self._again = True
            return
        d = self._round_running = defer.ensureDeferred(self._renew_and_campaign())
        d.addErrback(self._round_failed)
        d.addBoth(self._round_done)

    def _round_done(self, _: object) -> None:
        self._round_running = None
        if self._again and self.running:
            self._again = False
            self._round()

    def _round_failed(self, failure: Failure) -> None:
        failure.trap(StoreError)  # the store logged the outage
        if self.leading and self.clock.seconds() - self._renewed >= self.lease_ttl:
            self._step_down(
                "etcd has not confirmed the lease for {seconds:.0f} s: another "
                "name server may lead now"
            )

    async def _renew_and_campaign(self) -> None:
        if self.lease is not None:
            answer = await self.store.request("/v3/lease/keepalive", {"ID": str(self.lease)})
            if int(answer.get("result", answer).get("TTL", 0)) > 0:
                self._renewed = self.clock.seconds()
            else:
                self.lease = None
                self._step_down("the lease expired: another name server may lead now")
        if self.lease is None and self.running:
            answer = await self.store.request("/v3/lease/grant", {"TTL": str(self.lease_ttl)})
            self.lease, self._renewed = int(answer["ID"]), self.clock.seconds()
        if self.running and not self.leading and (self.holder is None or not self.store.loaded):
            await self._campaign()

    async def _campaign(self) -> None:
        key = encode(self.store.leader_key)
        answer = await self.store.request(
            "/v3/kv/txn",
            {
                "compare": [
                    {"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
                ],
                "success": [
                    {
                        "request_put": {
                            "key": key,
                            "value": encode(self.name),
                            "lease": str(self.lease),
                        }
                    }
                ],
                "failure": [{"request_range": {"key": key}}],
            },
        )
        if answer.get("succeeded"):
            self._lead(int(answer["header"]["revision"]))
            return
        kvs = answer["responses"][0]["response_range"].get("kvs", [])
        if kvs and int(kvs[0].get("lease", 0)) == self.lease:  # ours from before
            self._lead(int(kvs[0]["create_revision"]))

    def _lead(self, term: int) -> None:
        if self.leading or not self.running:
            return
        self.leading, self.store.term = True, term
        log.info(
            "names: this name server now leads the health checks ({name}, etcd lease {lease:x})",
            name=self.name,
            lease=self.lease,
        )
        self.checker.startService()
        if self.runner is not None:
            self.runner.startService()

    def _step_down(self, why: str | None) -> defer.Deferred:
        if not self.leading:
            return defer.succeed(None)
        self.leading, self.store.term = False, None
        if why is not None:
            log.warn(
                "names: no longer leading the health checks: " + why,
                seconds=self.clock.seconds() - self._renewed,
            )
        stopped = [defer.maybeDeferred(self.checker.stopService)]
        if self.runner is not None:
            stopped.append(self.runner.stopService())
        return defer.gatherResults(stopped)

    def _leader_changed(self, holder: Holder | None, revision: int) -> None:
        """The store's watch saw the leader key change at REVISION (or read it whole)."""
        term = self.store.term  # set while this replica leads
        if self.leading and term is not None and revision < term:
            return  # older news than our own term
        self.holder = holder
        if self.leading and (holder is None or holder[1] != self.store.term):
            self._step_down("another name server holds the leader key")
        if holder is None and self.running:
            self._round()
