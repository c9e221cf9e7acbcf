"""
The name server's behaviour behind the AMP commands: token check, registry,
durable store writes and the audit trail: structured twisted.logger events
with `names_event` = register, deregister or evict, and `client`, the
subject of the client's certificate under mutual TLS; lookups, the hot
path, go to their own JSON-lines file (L{suite.names.audit}).

A change is written to the store first and applied to the registry only
once the store has it: Register and Deregister are answered after the
commit, and a failed write answers UNAVAILABLE with the registry unchanged,
so what the name server acknowledged is what a restart finds.  An etcd
store applies every change to the registry itself, from its watch, before
the write's answer; applying it here again then changes nothing.

Before anything is written, a registration's host must be one the name
server may look at (L{suite.names.allowed}: a host name is resolved
first), and its source must hold fewer than `max_instances_per_source`
instances; otherwise INVALID says why.  A client can repeat any of these
events at will, so each kind is logged the first time per source, then
counted in summaries, and the text a client chose is escaped.
"""

import hmac
from collections.abc import Callable, Iterator, Sequence
from time import perf_counter
from typing import Any, NoReturn, TypeVar

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.contracts.errors import Overloaded
from suite.contracts.names import Invalid, NotFound, Unauthorized, Unavailable
from suite.foundation.flood import FloodControl, LineBudget
from suite.foundation.interfaces import IHealthSource, IMetricSource, ISummarySource
from suite.foundation.metrics import Histogram
from suite.foundation.printable import printable
from suite.names.allowed import NotAllowed, ip_literal, shown
from suite.names.answers import EncodedAnswers, as_fields, fitting
from suite.names.audit import LookupAudit
from suite.names.changes import DEREGISTERED, EVICTED, REGISTERED, STATUS, Change, RecentChanges
from suite.names.registry import PASSING, Check, Instance, Registry, check_target_host
from suite.names.store import IRegistryStore, StoreConflict, Stored, StoreError
from suite.names.watches import Watcher, Watches
from suite.net.addresses import host_port

log = Logger()

MAX_INSTANCES_PER_SOURCE = 1000
MAX_RESOLVING = 64  # host names resolved at once; beyond, Register answers OVERLOADED
STATUS_LINES = 100  # status changes audited in full per 10 s; beyond, counted
DEFAULT_MAX_SILENCE = 60.0  # seconds: a logs check registered over AMP without max_silence

Applied = TypeVar("Applied")  # what a change applied to the registry answers
Resolve = Callable[[str], defer.Deferred[list[str]]]  # a host name -> its addresses


class CheckTaken(Invalid):
    """A registration names a check ID another instance holds: CHECK_ID, OWNER (its ID)."""

    def __init__(self, check_id: str, owner: str) -> None:
        super().__init__(f"check ID '{shown(check_id)}' belongs to the instance '{shown(owner)}'")
        self.check_id, self.owner = check_id, owner


def load_registry(registry: Registry, stored: Stored) -> None:
    """
    Fill REGISTRY with what the store held (STORED); an instance that does
    not validate, or too many, is a StoreError.  Instances whose host the
    rules of L{suite.names.allowed} refuse (written by a version without
    them, or under a wider `allowed_networks`) are not served but left in
    the store (a re-registration or a wider list brings them back), in one
    line.
    """
    skipped: list[str] = []
    for number, instance in enumerate(stored.instances, 1):
        if len(registry) >= registry.max_instances:
            raise StoreError(f"holds more than max_instances ({registry.max_instances}) instances")
        try:
            instance.validate()
            instance.addresses = registry.addresses(instance.host, instance.addresses)
            registry.put(instance, max(instance.modify_index, 1))
        except NotAllowed as e:
            skipped.append(str(e))
        except Invalid as e:
            raise StoreError(
                f"stored instance {number} ({instance.name!r}, {instance.host!r}, "
                f"{instance.port!r}) is invalid: {e}"
            ) from e
    registry.raise_floor(stored.floor)
    for name, index in stored.name_indexes.items():
        registry.raise_index(name, index)
    if skipped:
        log.warn(
            "names: {count} stored instances not served: their hosts are not allowed now "
            "(first: {first}); they stay stored until registered again or deregistered",
            count=len(skipped),
            first=skipped[0],
        )


SUMMARY_NAMES = 1000  # names a summary lists (the count is always whole)
SUMMARY_ADDRESSES = 20  # addresses it lists per name


@implementer(IHealthSource, IMetricSource, ISummarySource)
class NameServer(service.Service):
    """
    Owns the registry and the store; as a service it closes the store last,
    writes finished.  AUDIT (a L{LookupAudit}, or None) records lookups.
    RESOLVE(name) -> Deferred of a host name's addresses (see
    L{suite.names.allowed.host_resolver}); without it only IP literals
    are taken.
    Its metrics: live instances, lookups by result and their durations,
    evictions, and names watched.
    """

    def __init__(
        self,
        registry: Registry,
        store: IRegistryStore,
        token: str,
        cache_ttl: int,
        clock: IReactorTime,
        audit: LookupAudit | None = None,
        *,
        resolve: Resolve | None = None,
        max_instances_per_source: int = MAX_INSTANCES_PER_SOURCE,
        read_token: str = "",
    ) -> None:
        self.registry = registry
        self.read_token = read_token.encode()
        self.resolve = resolve
        self.max_instances_per_source = max_instances_per_source
        self._resolving = 0
        self.stopped = False  # a registration resolved after stopService is not written
        self._adding_from: dict[str, int] = {}  # new instances waiting for the store, by source
        self.store = store
        self.token = token.encode()
        self.cache_ttl = cache_ttl
        self.audit = audit
        self.answers = EncodedAnswers(registry, cache_ttl)
        self.watches = Watches(registry)
        self.clock = clock
        self.warnings = FloodControl(clock, "names")
        # Every status change is news (a logs check's source went quiet, then spoke): each
        # is audited, up to STATUS_LINES lines per interval, the rest counted.
        self.status_audit = LineBudget(clock, "names", "status changes", STATUS_LINES)
        self._writes: set[defer.Deferred[Any]] = set()
        self._turns: dict[str, defer.DeferredLock] = {}  # instance ID -> its writes, in order
        self._claimed_checks: dict[str, str] = {}  # check ID -> the instance whose write holds it
        self._adding = 0  # registrations of new instances waiting for the store
        self.lookups = {"found": 0, "not_found": 0}
        self.lookup_durations = Histogram()
        self.evictions = 0
        self.recent = RecentChanges()
        load_registry(registry, store.load())

    def startService(self) -> None:
        service.Service.startService(self)
        self.store.start()

    def health_problems(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = self.store.health_problems()
        return problems

    def summary(self) -> dict[str, object]:
        """The registry at a glance: its names (the first 1,000), each one's instances."""
        names = sorted(self.registry.names())
        listed = {}
        for name in names[:SUMMARY_NAMES]:
            instances = self.registry.instances_of(name)
            listed[name] = {
                "instances": len(instances),
                "addresses": [host_port(i.host, i.port) for i in instances[:SUMMARY_ADDRESSES]],
            }
        return {
            "instances": len(self.registry),
            "names": len(names),
            "registry": listed,
            "evictions": self.evictions,
        }

    def metric_samples(self) -> Iterator[tuple[str, tuple, object]]:
        yield "instances", (), len(self.registry)
        for result, count in list(self.lookups.items()):
            yield "lookups", (result,), count
        yield "request_duration_seconds", (), self.lookup_durations
        yield "evictions", (), self.evictions
        yield "watches", (), self.watches.count()
        yield from self.store.metric_samples()

    def _changed(self, kind: str, instance: Instance, detail: str) -> None:
        """A change to show on the status page (its log line is written where it happens)."""
        self.recent.add(Change(self.clock.seconds(), kind, instance.name, instance.id, detail))

    def authorize_write(self, token: str | None, command: str, peer: str, source: str) -> None:
        """Unauthorized unless TOKEN is the write token, when one is set."""
        given = (token or "").encode()
        if self.token and not hmac.compare_digest(given, self.token):
            self.warnings.warn(
                "failed tokens",
                source,
                "names: {command} from {peer} refused: missing or wrong token",
                command=command,
                peer=peer,
            )
            raise Unauthorized("a valid token is needed to change registrations")

    def authorize_read(self, token: str | None, command: str, peer: str, source: str) -> None:
        """Unauthorized unless TOKEN is the read token (or the write token), when one is set."""
        if not self.read_token:
            return
        given = (token or "").encode()
        if hmac.compare_digest(given, self.read_token) or (
            self.token and hmac.compare_digest(given, self.token)
        ):
            return
        self.warnings.warn(
            "failed tokens",
            source,
            "names: {command} from {peer} refused: missing or wrong read token",
            command=command,
            peer=peer,
        )
        raise Unauthorized("a valid token is needed to read the registry")

    def _stored(
        self, written: defer.Deferred[Any], applied: Callable[[Any], Applied]
    ) -> defer.Deferred[Applied]:
        """
        WRITTEN, then APPLIED(the index of the change); a store failure is
        logged and becomes Unavailable.
        """
        self._writes.add(written)

        def failed(failure: Failure) -> NoReturn:
            failure.trap(StoreError)
            error = failure.value
            if not (isinstance(error, StoreError) and error.reported):  # a StoreError: trapped
                self.warnings.warn(
                    "store write failures",
                    "store",
                    "names: {error}",
                    error=failure.getErrorMessage(),
                )
            raise Unavailable(f"registry store unavailable: {failure.getErrorMessage()}")

        def done(result: object) -> object:
            self._writes.discard(written)
            return result

        return written.addBoth(done).addCallbacks(applied, failed)

    def register(
        self,
        name: str,
        host: str,
        port: int,
        description: str | None,
        token: str | None,
        peer: str,
        source: str,
        client: str | None = None,
        *,
        instance_id: str | None = None,
        tags: Sequence[str] = (),
        meta: dict[str, str] | None = None,
        logs_app: str | None = None,
        max_silence: float | None = None,
    ) -> defer.Deferred[dict[str, object]]:
        """
        AMP's Register: the instance is live at once and pinged every
        `ping_interval` (evicted after `max_failures` failures in a row).
        With LOGS_APP it also has a logs check (`service:ID`, passing at
        first): silent (warning) once LOGS_APP on its host has sent no
        message for MAX_SILENCE seconds (default DEFAULT_MAX_SILENCE).
        """
        instance = Instance(
            name,
            host,
            port,
            description or "",
            id=instance_id or "",
            tags=tuple(tags),
            meta=dict(meta or {}),
        )
        if logs_app is not None:
            instance.checks = [
                Check(
                    f"service:{instance.id}",
                    "logs",
                    name=f"Service '{name}' logs",
                    status=PASSING,
                    app=logs_app,
                    max_silence=DEFAULT_MAX_SILENCE if max_silence is None else max_silence,
                )
            ]
        return self.put(instance, token, peer, source, client, command="Register")

    def put(
        self,
        instance: Instance,
        token: str | None,
        peer: str,
        source: str,
        client: str | None = None,
        *,
        command: str = "Register",
        replace_checks: bool = False,
    ) -> defer.Deferred[dict[str, object]]:
        """
        Register INSTANCE (new, or replacing the instance of its ID) once its
        host is resolved and allowed and SOURCE may add it.  A check the
        instance had before keeps its status and output unless
        REPLACE_CHECKS (Consul's `replace-existing-checks`).
        """
        self.authorize_write(token, command, peer, source)
        resolved = defer.maybeDeferred(self._resolve, instance)
        registered = resolved.addCallback(
            lambda addresses: self._in_turn(
                instance.id,
                self._register,
                addresses,
                instance,
                peer,
                source,
                client,
                replace_checks,
            )
        )
        return registered.addErrback(self._refused, command, peer, source)

    def _resolve(self, instance: Instance) -> defer.Deferred[Sequence[str]]:
        """
        The addresses of the instance's host, a host name (none for an IP
        literal), once the instance is checked.
        """
        literal = instance.validate()
        self._check_targets(instance)
        if literal is not None:
            return defer.succeed(())
        if self.resolve is None:
            raise NotAllowed(f"host '{instance.host}': this name server takes IP addresses only")
        if self._resolving >= MAX_RESOLVING:
            raise Overloaded(f"{MAX_RESOLVING} host names are being resolved: try again later")
        self._resolving += 1

        def resolved(result: Sequence[str] | Failure) -> Sequence[str] | Failure:
            self._resolving -= 1
            return result

        return self.resolve(instance.host).addBoth(resolved)

    def _check_targets(self, instance: Instance) -> None:
        """
        NotAllowed when a tcp or http check names an IP address outside
        `allowed_networks` (a host name is checked by the runner each time it
        resolves it): a check must not make the name server a port scanner.
        """
        for check in instance.checks:
            host = check_target_host(check)
            if host is not None and ip_literal(host) is not None:
                self.registry.addresses(host)

    def _refused(self, failure: Failure, command: str, peer: str, source: str) -> Failure:
        """An INVALID answer goes back to the client, and to the log (flood-controlled)."""
        failure.trap(Invalid)
        self.warnings.warn(
            "refused registrations",
            source,
            "names: {command} from {peer} refused: {reason}",
            command=command,
            peer=peer,
            reason=failure.getErrorMessage(),
        )
        return failure

    def _capacity_left(self, source: str) -> None:
        """Invalid unless the registry, and SOURCE's share of it, can take one more instance."""
        if len(self.registry) + self._adding >= self.registry.max_instances:
            raise Invalid(
                f"registry full ({self.registry.max_instances} instances, max_instances)"
            )
        held = self.registry.from_source(source) + self._adding_from.get(source, 0)
        if held >= self.max_instances_per_source:
            raise Invalid(
                f"{source} has registered {held} instances, the most one source may "
                "(max_instances_per_source)"
            )

    def _in_turn(
        self, instance_id: str, work: Callable[..., defer.Deferred[Applied]], *args: Any
    ) -> defer.Deferred[Applied]:
        """
        WORK(*ARGS) once every write asked before for the instance INSTANCE_ID
        is done: the writes of one instance never overlap, so each starts
        from what the one before it left (a check result never undoes a
        registration, a deregistration is never undone by a late result).
        """
        lock = self._turns.get(instance_id)
        if lock is None:
            lock = self._turns[instance_id] = defer.DeferredLock()

        def done(result: object) -> object:
            if not lock.locked and not lock.waiting:
                self._turns.pop(instance_id, None)
            return result

        ran: defer.Deferred[Applied] = lock.run(work, *args)
        return ran.addBoth(done)

    def _checks_free(self, instance: Instance) -> None:
        """Invalid when a check ID of INSTANCE belongs to another instance (or its write)."""
        for check in instance.checks:
            owner = self.registry.owner_of_check(check.check_id)
            owner_id = self._claimed_checks.get(check.check_id)
            if owner_id is None and owner is not None:
                owner_id = owner.id
            if owner_id is not None and owner_id != instance.id:
                raise CheckTaken(check.check_id, owner_id)

    def _claim_checks(self, instance: Instance) -> list[str]:
        """Hold INSTANCE's new check IDs while its write is on its way; returns them."""
        claimed = [c.check_id for c in instance.checks if c.check_id not in self._claimed_checks]
        for check_id in claimed:
            self._claimed_checks[check_id] = instance.id
        return claimed

    def _register(
        self,
        resolved: Sequence[str],
        instance: Instance,
        peer: str,
        source: str,
        client: str | None,
        replace_checks: bool,
    ) -> defer.Deferred[dict[str, object]]:
        if self.stopped:  # resolved after stopService: the store is closing or closed
            raise Unavailable("the name server is stopping")
        instance.addresses = self.registry.addresses(instance.host, resolved)
        before = self.registry.by_id(instance.id)
        new = before is None
        self._checks_free(instance)
        if before is None:
            self._capacity_left(source)
            self._adding += 1
            self._adding_from[source] = self._adding_from.get(source, 0) + 1
        else:
            source = before.source  # whoever registered it first keeps counting it
            instance.create_index = before.create_index
            instance.maintenance = before.maintenance
            if not replace_checks:
                for check in instance.checks:
                    kept = before.check(check.check_id)
                    if kept is not None:
                        check.status, check.output = kept.status, kept.output
        instance.source = source
        if before is not None and before.record() == instance.record():
            return defer.succeed({})  # a refresh (the announcer's): nothing changes, no index
        claimed = self._claim_checks(instance)

        def applied(index: int) -> dict[str, object]:
            self.registry.put(instance, index)  # checked above
            if new:
                self._changed(REGISTERED, instance, host_port(instance.host, instance.port))
            if before is not None and before.name != instance.name:
                self.registry.raise_index(before.name, index)
            self.warnings.emit(
                LogLevel.info,
                "registrations",
                source,
                "names: register {name} {address} ({change}) from {peer}",
                names_event="register",
                name=instance.name,
                id=printable(instance.id),
                address=host_port(instance.host, instance.port),
                host=instance.host,
                port=instance.port,
                description=printable(instance.description),
                change="new" if new else "update",
                peer=peer,
                client=client and printable(client),
            )
            return {}

        def settled(result: object) -> object:
            for check_id in claimed:
                del self._claimed_checks[check_id]
            if new:
                self._adding -= 1
                self._adding_from[source] -= 1
                if not self._adding_from[source]:
                    del self._adding_from[source]
            return result

        if before is not None and before.name != instance.name:
            self.store.delete(before).addErrback(lambda _: None)  # the old name's index
        written = self.store.save(instance)
        return self._stored(written.addBoth(settled), applied)

    def deregister(
        self,
        name: str,
        host: str,
        port: int,
        token: str | None,
        peer: str,
        source: str,
        client: str | None = None,
    ) -> defer.Deferred[dict[str, object]]:
        """AMP's Deregister: the instance of NAME at HOST:PORT."""
        self.authorize_write(token, "Deregister", peer, source)
        instance = self.registry.get(name, host, port)
        if instance is None:
            raise NotFound(f"no instance {shown(name)} at {shown(host_port(host, port))}")
        return self._remove(instance, peer, source, client)

    def deregister_id(
        self,
        instance_id: str,
        token: str | None,
        peer: str,
        source: str,
        client: str | None = None,
    ) -> defer.Deferred[dict[str, object]]:
        """Deregister the instance of that ID; NotFound if there is none."""
        self.authorize_write(token, "Deregister", peer, source)
        instance = self.registry.by_id(instance_id)
        if instance is None:
            raise NotFound(f"no instance with ID {shown(instance_id)}")
        return self._remove(instance, peer, source, client)

    def _remove(
        self, instance: Instance, peer: str, source: str, client: str | None
    ) -> defer.Deferred[dict[str, object]]:
        return self._in_turn(instance.id, self._remove_now, instance, peer, source, client)

    def _remove_now(
        self, instance: Instance, peer: str, source: str, client: str | None
    ) -> defer.Deferred[dict[str, object]]:
        current = self.registry.by_id(instance.id)
        if current is None:  # deregistered meanwhile, by the write before this one
            raise NotFound(f"no instance with ID {shown(instance.id)}")

        def applied(index: int) -> dict[str, object]:
            self.registry.remove(current.id, index)
            self._changed(DEREGISTERED, current, f"by {peer}")
            self.warnings.emit(
                LogLevel.info,
                "deregistrations",
                source,
                "names: deregister {name} {address} from {peer}",
                names_event="deregister",
                name=current.name,
                id=printable(current.id),
                address=host_port(current.host, current.port),
                host=current.host,
                port=current.port,
                peer=peer,
                client=client and printable(client),
            )
            return {}

        return self._stored(self.store.delete(current), applied)

    def evict(
        self, instance: Instance, reason: str, *, pings: bool = True
    ) -> defer.Deferred[None]:
        """
        Remove INSTANCE after its failed health checks, store first: failed
        pings (PINGS), or a declared check critical too long, as REASON says.
        If the store cannot be written the instance stays (and is checked
        again); the failure is logged.  An instance registered again since
        its checks began (another record under its ID) is not evicted.  (On
        etcd the store's watch has removed it already, and refuses the
        eviction to a replica no longer leading.)
        """
        return self._in_turn(instance.id, self._evict_now, instance, reason, pings)

    def _evict_now(self, instance: Instance, reason: str, pings: bool) -> defer.Deferred[None]:
        if not self.registry.holds_exactly(instance):
            return defer.succeed(None)  # gone, or registered again: not the one that failed

        def applied(index: int) -> None:
            if self.registry.holds_exactly(instance):
                self.registry.remove(instance.id, index)
            self.evictions += 1
            self._changed(EVICTED, instance, reason)
            self.warnings.emit(
                LogLevel.info,
                "evictions",
                instance.source,
                (
                    "names: evict {name} {address} after {failures} failed pings: {reason}"
                    if pings
                    else "names: evict {name} {address}: {reason}"
                ),
                names_event="evict",
                name=instance.name,
                id=printable(instance.id),
                address=host_port(instance.host, instance.port),
                host=instance.host,
                port=instance.port,
                failures=instance.failures,
                reason=reason,
            )

        written = self._stored(self.store.evict(instance), applied)
        return written.addErrback(lambda failure: failure.trap(Unavailable))

    def change(
        self,
        instance: Instance,
        mutate: Callable[[Instance], object],
        why: str,
        peer: str = "",
    ) -> defer.Deferred[bool]:
        """
        Change the checks or maintenance of the instance of INSTANCE's ID:
        MUTATE(a copy of it as it is when this change's turn comes) makes
        the change, written to the store, then served.  A change that
        changes nothing (a TTL pass of a passing check with the same
        output), or comes after the instance was deregistered, writes
        nothing and raises no index: the Deferred fires False; so does a
        change another name server's write overtook (etcd).  A change of
        the instance's status is audited (`names_event` = status) with WHY;
        store failures become Unavailable (and are logged).
        """
        return self._in_turn(instance.id, self._change_now, instance.id, mutate, why, peer)

    def _change_now(
        self, instance_id: str, mutate: Callable[[Instance], object], why: str, peer: str
    ) -> defer.Deferred[bool]:
        current = self.registry.by_id(instance_id)
        if current is None:
            return defer.succeed(False)
        changed = current.copy()
        mutate(changed)
        if changed.record() == current.record():
            return defer.succeed(False)
        changed.validate()

        def overtaken(failure: Failure) -> None:
            failure.trap(StoreConflict)
            return None

        def applied(index: int | None) -> bool:
            served = self.registry.by_id(instance_id)
            if index is None or served is None:  # overtaken, or deregistered meanwhile
                return False
            changed.failures = served.failures
            self.registry.put(changed, index)
            if changed.status != current.status:
                self._changed(STATUS, current, f"{current.status} to {changed.status}: {why}")
                self.status_audit.emit(
                    LogLevel.info,
                    "names: {name} {id} is now {status} (was {before}): {why}",
                    names_event="status",
                    name=current.name,
                    id=printable(current.id),
                    status=changed.status,
                    before=current.status,
                    why=printable(why),
                    peer=peer,
                )
            return True

        written = self.store.save(changed, expected=current.modify_index)
        return self._stored(written.addErrback(overtaken), applied)

    def ttl_updated(self, check_id: str) -> None:
        """
        The TTL check CHECK_ID was passed, warned or failed from outside: its
        TTL starts again, on the replica that runs the checks too.
        """
        self.registry.heartbeat(check_id, self.clock.seconds())
        told = self.store.heartbeat(check_id)
        told.addErrback(lambda failure: failure.trap(StoreError))  # the store logged its outage

    def answer_lookup(self, name: bytes, tag: bytes, audit_fields: str) -> bytes | None:
        """
        The encoded answer to Lookup(NAME) asked as TAG (see L{EncodedAnswers}),
        audited; None when only AMP's own path can answer (an error).  The
        protocol reports these answers with lookups_answered.
        """
        found = self.answers.answer(name, tag)
        if found is None:
            return None
        answer, count = found
        if self.audit is not None:
            self.audit.lookup(name.decode("ascii"), count, audit_fields)
        return answer

    def lookups_answered(self, count: int, seconds: float) -> None:
        """COUNT lookups were found and answered, SECONDS after their bytes were read."""
        self.lookups["found"] += count
        self.lookup_durations.observe(seconds, count)

    def lookup(self, name: str, audit_fields: str) -> dict[str, object]:
        started = perf_counter()
        instances = fitting(self.registry.lookup(name))
        if not instances and not self.store.loaded:
            raise Unavailable("the registry has not been read from etcd yet")
        if self.audit is not None:
            self.audit.lookup(name, len(instances), audit_fields)
        self.lookups["found" if instances else "not_found"] += 1
        self.lookup_durations.observe(perf_counter() - started)
        if not instances:
            raise NotFound(f"no live instance of {name}")
        return self._answer(instances)

    def watch(self, name: str, watcher: Watcher) -> dict[str, object]:
        """Start WATCHER's pushes for NAME; the answer: its live instances now, in order."""
        instances = fitting(self.registry.live_of(name))
        if not self.store.loaded:
            raise Unavailable("the registry has not been read from etcd yet")
        self.watches.watch(name, watcher)
        return self._answer(instances)

    def _answer(self, instances: list[Instance]) -> dict[str, object]:
        """The response of Lookup and Watch: INSTANCES (as many as one AMP value holds), ttl."""
        return {"instances": [as_fields(i) for i in instances], "ttl": self.cache_ttl}

    def unwatch(self, name: str, watcher: Watcher) -> None:
        self.watches.unwatch(name, watcher)

    def services(self) -> dict[str, object]:
        return {"names": self.registry.live_names()}

    def stopService(self) -> defer.Deferred[None]:
        service.Service.stopService(self)
        self.stopped = True
        writes = defer.DeferredList(list(self._writes), consumeErrors=True)
        writes.addBoth(self._flush_audit)  # the audit of those writes included
        return writes.addBoth(lambda _: self.store.close())

    def _flush_audit(self, _: object) -> None:
        self.warnings.flush()
        self.status_audit.flush()
