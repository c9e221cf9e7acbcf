"""
The registry on etcd, shared by several name servers (replicas).  Each
keeps the whole registry in memory, the local copy every Lookup, Watch and
DNS answer comes from, and an etcd watch on the prefix keeps that copy
current: every change any replica (or the leader's evictions) makes reaches
every copy within milliseconds.  Lookups never wait on etcd.  The keys are
L{suite.names.etcd_layout}'s: each instance whole, its indexes etcd's
revisions, and each name's index in a key of its own, so that every
replica serves the same indexes and none goes back across a restart.

A write (Register, Deregister, a check's status) is answered once etcd
acknowledged it, with the revision of its transaction (the index of the
change), and once this replica's copy holds it, so a client that registers
and then looks up on the same replica finds what it registered.  Should the
watch not bring it within CATCH_UP seconds, the write is answered with the
revision the copy holds instead: the name server serves the change at once,
but the registry's index does not run ahead of changes the watch has yet to
apply (a blocking read of the whole registry at that index would miss
them); the watch then brings the change at its own revision.  Writes asked
for together go to etcd as few transactions of at most MAX_TXN_OPS
operations, one transaction in flight at a time; an instance's key and its
name's key always share one.

A save computed from the copy (a check's result, a TTL pass, maintenance)
is conditional on the revision its writer saw: if another replica changed
or deregistered the instance since, nothing is written and it fails with
StoreConflict.  Conditional writes asked for together share transactions of
their own, retried without those a change overtook.

The keys of names without instances (each keeps its name's index) are kept
for at most `max_instances` names: the replica whose write leaves more
deletes the oldest, raising the `floor` key to their highest revision in the
same transaction; every replica raises its registry's floor before it
forgets such a name, so no name's index goes back.

When etcd cannot be reached, writes fail with a StoreError (the name server
answers UNAVAILABLE), lookups go on from the copy, `/health` says degraded,
and the log says so once when the outage begins and once when it ends.  The
watch reconnects by itself and resumes from the last revision it applied;
if etcd compacted that revision away, the copy is read again whole (a range
read) and only the differences are applied, so watchers hear of real
changes only.

Keys of the previous layout (`instances/NAME/HOST/PORT`) that a range read
finds are served as they are, and moved to the new layout in transactions
that each replica starting at the same time may attempt: each moves a key
only if it did not change since read, so every key moves once.
"""

from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote, urlsplit

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.foundation.flood import FloodControl
from suite.foundation.printable import printable
from suite.names.allowed import NotAllowed
from suite.names.etcd import EtcdClient, EtcdError, decode, encode, prefix_end
from suite.names.etcd_layout import (
    HEARTBEATS,
    MAX_TXN_OPS,
    MIGRATION_BATCH,
    NAMES,
    OLD_INSTANCES,
    REAP_BATCH,
    SERVICES,
    Layout,
    OldKey,
    Unparsable,
    Write,
    check_of,
    floor_of,
    migration,
    name_of,
    old_id,
    old_instance,
    packed,
    put,
    refused,
    service_instance,
    transaction,
)
from suite.names.registry import Instance, Registry, RegistryFull
from suite.names.store import BatchedWrites, IRegistryStore, StoreConflict, Stored, StoreError

log = Logger()

CATCH_UP = 1.0  # seconds a write's answer may wait for the watch to bring it into the copy
RECONNECT_FIRST, RECONNECT_MAX = 0.1, 2.0  # seconds between watch reconnections, doubling
MIGRATION_ATTEMPTS = 3  # transactions tried per batch of old keys that others keep changing

Holder = tuple[str, int, int]  # the leader key's value, create revision and lease
CatchingUp = tuple[int, defer.Deferred[int], IDelayedCall]  # a write waiting for the copy


def etcd_endpoints(setting: str) -> list[str]:
    """
    `etcd:http://HOST:PORT[,http://HOST:PORT…]` -> the endpoint URLs;
    ValueError if malformed.
    """
    endpoints = [url.strip().rstrip("/") for url in setting.removeprefix("etcd:").split(",")]
    for url in endpoints:
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme != "http" or not parts.hostname or port is None or parts.path:
            raise ValueError(f"{url!r} is not http://HOST:PORT")
    return endpoints


class NotLeader(StoreError):
    """An eviction asked while this replica does not hold the leadership; nothing was written."""


@dataclass
class Sent:
    """
    What became of writes sent together: the revision of each one's
    transaction, the keys of those refused (a change overtook them), and
    the revision the copy held when they were answered.
    """

    revisions: dict[Hashable, int] = field(default_factory=dict)
    refused: set[Hashable] = field(default_factory=set)
    copied: int = 0

    def index(self, key: Hashable) -> int:
        """
        The index at which the name server serves the write of KEY: its
        revision once the copy holds it, else the copy's; StoreConflict if
        it was refused.
        """
        if key in self.refused:
            raise StoreConflict("changed since it was read: nothing written")
        return min(self.revisions[key], self.copied)


def _index_of(sent: Any, key: Hashable) -> int:
    """L{Sent.index}, of what L{EtcdStore._written} gives."""
    index: int = sent.index(key)
    return index


@implementer(IRegistryStore)
class EtcdStore:
    """
    The registry kept in etcd through CLIENT (an L{EtcdClient}) under
    PREFIX, mirrored into REGISTRY.  `term` is the create revision of the
    leader key while this replica leads (set by L{Leadership}), which
    conditions every eviction; `on_leader(holder, revision)` hears of each
    change of the leader key: holder (value, create revision, lease) or None.
    """

    def __init__(
        self, client: EtcdClient, registry: Registry, prefix: str, clock: IReactorTime
    ) -> None:
        self.clock = clock
        # Writes of one name, with that name's key, fill one transaction.
        self.writes = BatchedWrites(
            clock, self._transaction, written=self._written, max_batch=MAX_TXN_OPS - 1
        )
        self.client = client
        self.registry = registry
        self.prefix = prefix
        self.layout = Layout(prefix)
        self.leader_key = self.layout.leader
        self.revision = 0  # the etcd revision the local copy reflects
        self.loaded = False  # whether the copy was read from etcd once
        self.outage: tuple[float, str] | None = None  # (since, why) while etcd cannot be reached
        self.term: int | None = None
        self.on_leader: Callable[[Holder | None, int], None] = lambda holder, revision: None
        self.warnings = FloodControl(clock, "names")
        self.old: dict[str, str] = {}  # ID -> its key of the previous layout, served until moved
        self.name_keys: dict[str, int] = {}  # name -> its names/ key's mod revision, as copied
        self.floor_revision = 0  # the floor key's mod revision, as copied (0: none)
        self._reaping = False  # whether keys of names without instances are being deleted
        self._migrating: defer.Deferred[None] | None = None
        self._catching_up: list[CatchingUp] = []
        self._read_whole = True  # the next connection starts with a range read
        self._watching: defer.Deferred[None] | None = None  # the watch's stream; cancel() ends it
        self._watch_endpoint: str | None = None
        self._reconnect_call: IDelayedCall | None = None
        self._delay = RECONNECT_FIRST
        self._closing = False

    # What the name server sees of any store.

    def load(self) -> Stored:
        return Stored()  # the copy fills from etcd once the reactor runs (start)

    def start(self) -> None:
        self._connect()

    def save(self, instance: Instance, expected: int | None = None) -> defer.Deferred[int]:
        """
        Write INSTANCE whole; with EXPECTED (the modify index its writer
        saw), only if its key (or its key of the previous layout, which it
        was read from) still has that revision: else StoreConflict.
        """
        before = self.registry.by_id(instance.id)
        dropped = set() if before is None else {check.check_id for check in before.checks}
        dropped -= {check.check_id for check in instance.checks}
        old_key = self.old.get(instance.id)
        ops = self.layout.instance_ops(instance, True, dropped, old_key)
        if expected is None:
            return self._queue(instance, ops)
        compared = old_key or self.layout.service(instance.id)
        # a key of its own: it never takes the place of another write waiting
        write = Write(object(), ops, {compared: expected})
        written = self._enqueue(write).addCallback(_index_of, write.key)
        return written.addCallback(self._reap_tombstones)

    def delete(self, instance: Instance) -> defer.Deferred[int]:
        return self._queue(
            instance, self.layout.instance_ops(instance, False, old_key=self.old.get(instance.id))
        )

    def evict(self, instance: Instance) -> defer.Deferred[int]:
        """
        Delete INSTANCE if this replica still leads: a transaction on the
        leader key's revision.
        """
        if self.term is None:
            return defer.fail(NotLeader(f"eviction of {instance.name} left to the leader"))
        ops = self.layout.instance_ops(instance, False, old_key=self.old.get(instance.id))
        body = {
            "compare": [
                {
                    "key": encode(self.leader_key),
                    "target": "CREATE",
                    "result": "EQUAL",
                    "create_revision": str(self.term),
                }
            ],
            "success": list(ops.values()),
        }

        def answered(answer: dict) -> defer.Deferred[int]:
            if not answer.get("succeeded"):
                raise NotLeader(f"no longer the leader: eviction of {instance.name} left to it")
            return self._caught_up(int(answer["header"]["revision"]))

        evicted = self.request("/v3/kv/txn", body).addCallback(answered)
        return evicted.addCallback(self._reap_tombstones)

    def heartbeat(self, check_id: str) -> defer.Deferred[None]:
        """
        Put the check's heartbeat key: every replica's watch (the leader's
        runs the checks) restarts the check's TTL.  No index changes.
        """
        key = self.layout.heartbeat(check_id)
        written = self._enqueue(Write(("heartbeat", check_id), {key: put(key, "")}))
        return written.addCallback(lambda _: None)

    def _reap_tombstones(self, index: int) -> int:
        """
        After a write (passing on INDEX): when the copy holds the keys of
        more than `max_instances` names without instances, delete the
        oldest down to nine tenths of that (a sort per tenth, not per
        deregistration), REAP_BATCH per transaction, each raising `floor`
        to its highest revision.  A reap overtaken by another write (a
        registration under one of the names, another replica's reap) stops;
        the next write tries again from the copy.
        """
        bound = self.registry.max_instances
        if self._reaping or self._closing or self.registry.tombstones() <= bound:
            return index
        live = set(self.registry.names())
        empty = sorted((r, name) for name, r in self.name_keys.items() if name not in live)
        oldest = empty[: len(empty) - bound * 9 // 10]
        if oldest:
            self._reaping = True
            reaped = defer.ensureDeferred(self._reap(oldest))
            reaped.addErrback(self._reap_failed).addBoth(self._reaped)
        return index

    async def _reap(self, oldest: list[tuple[int, str]]) -> None:
        floor_revision, floor = self.floor_revision, self.registry.floor
        for start in range(0, len(oldest), REAP_BATCH):
            if self._closing:
                return
            batch = oldest[start : start + REAP_BATCH]
            floor = max(floor, batch[-1][0])
            write = self.layout.reap(batch, floor_revision, floor)
            sent: Sent = await self._enqueue(write)
            if write.key in sent.refused:
                return
            floor_revision = sent.revisions[write.key]

    def _reap_failed(self, failure: Failure) -> None:
        if not failure.check(StoreError) and not self._closing:  # an outage is logged as such
            log.failure("names: deleting the keys of names without instances failed", failure)

    def _reaped(self, _: object) -> None:
        self._reaping = False

    def health_problems(self) -> list[tuple[str, str]]:
        if self.outage is not None:
            since, why = self.outage
            seconds = self.clock.seconds() - since
            return [
                (
                    "degraded",
                    f"etcd unreachable for {seconds:.0f} s ({why}): registrations "
                    "answer UNAVAILABLE, lookups come from the local copy",
                )
            ]
        if not self.loaded:
            return [("degraded", "the registry has not been read from etcd yet")]
        return []

    def metric_samples(self) -> Iterator[tuple[str, tuple, object]]:
        yield "etcd_reachable", (), int(self.outage is None and self.loaded)

    def close(self) -> defer.Deferred[None]:
        """Write what waits, stop the watch, then let go of the connections."""
        return self.writes.drained().addCallback(self._close)

    def _close(self, _: object) -> defer.Deferred[None]:
        self._closing = True
        if self._reconnect_call is not None and self._reconnect_call.active():
            self._reconnect_call.cancel()
        if self._watching is not None:
            self._watching.cancel()
        self._release(lambda entry: True)  # closing: nothing more will come
        return self.client.close()

    # Requests, and what they say about etcd being reachable.

    def request(self, path: str, body: dict) -> defer.Deferred[dict]:
        """CLIENT's call, noting whether etcd answered (the outage's start and end are logged)."""
        return self.client.call(path, body).addCallbacks(self._answered, self._failed)

    def _answered(self, answer: dict) -> dict:
        if self.outage is not None:
            since, _ = self.outage
            self.outage = None
            log.info(
                "names: etcd reached again after {seconds:.1f} s",
                seconds=self.clock.seconds() - since,
            )
            if self._reconnect_call is not None and self._reconnect_call.active():
                self._reconnect_call.reset(0)
        return answer

    def _failed(self, failure: Failure) -> Failure:
        """Note an outage (logged once) when etcd could not be reached; the failure goes on."""
        failure.trap(EtcdError)
        error = failure.value
        if isinstance(error, EtcdError) and error.retry_elsewhere:  # an EtcdError: trapped
            if self.outage is None:
                self.outage = (self.clock.seconds(), str(error))
                log.warn(
                    "names: etcd unreachable ({error}): registrations answer UNAVAILABLE, "
                    "lookups go on from the local copy ({count} instances) until it is back",
                    error=str(error),
                    count=len(self.registry),
                )
            error.reported = True
            if self._watching is not None and self._watch_endpoint != self.client.endpoint:
                self._watching.cancel()  # it may hang on a member the requests have left
        return failure

    # Writes, grouped into transactions by self.writes (L{BatchedWrites}).

    def _queue(self, instance: Instance, ops: dict[str, dict]) -> defer.Deferred[int]:
        """
        Write OPS, INSTANCE's; its name's key is also a write of its own, so
        that it is still put when a later write of the same ID (under
        another name) takes the place of this one before it is sent.
        """
        name_key = self.layout.name(instance.name)
        name_written = self._enqueue(Write(("name", instance.name), {name_key: put(name_key, "")}))
        name_written.addErrback(lambda _: None)  # the instance's caller hears of a failure
        written = self._enqueue(Write(instance.id, ops)).addCallback(_index_of, instance.id)
        return written.addCallback(self._reap_tombstones)

    def _enqueue(self, write: Write) -> defer.Deferred[Any]:
        """WRITE, in place of any write of its key still waiting; fires as L{_written}."""
        return self.writes.queue(write.key, write)

    def _transaction(self, writes: list[Write]) -> defer.Deferred[Sent]:
        return defer.ensureDeferred(self._send(writes))

    async def _send(self, writes: list[Write]) -> Sent:
        """
        WRITES in as few transactions as fit, in turn; a conditional one
        that failed is sent again without the writes a change overtook
        (each attempt refuses one at least, so it ends).
        """
        sent = Sent()
        waiting = packed(writes)
        while waiting:
            members, ops = waiting.pop(0)
            answer = await self.request("/v3/kv/txn", transaction(members, ops))
            if answer.get("succeeded") or not members[0].expected:
                revision = int(answer["header"]["revision"])
                sent.revisions.update((write.key, revision) for write in members)
                continue
            overtaken = refused(members, answer)
            sent.refused.update(write.key for write in overtaken)
            waiting[:0] = packed([write for write in members if write not in overtaken])
        return sent

    def _written(self, sent: Sent) -> defer.Deferred[Any]:
        """SENT, once the copy holds all its writes (see L{_caught_up})."""

        def copied(index: int) -> Sent:
            return replace(sent, copied=index)

        return self._caught_up(max(sent.revisions.values(), default=0)).addCallback(copied)

    def _caught_up(self, revision: int) -> defer.Deferred[int]:
        """
        Fires with REVISION once the copy holds it; if the watch does not
        bring it within CATCH_UP seconds (or ends), with the revision the
        copy holds then (see L{_answer}).
        """
        if revision <= self.revision or self._watching is None:
            return defer.succeed(self._answer(revision))
        d: defer.Deferred[int] = defer.Deferred()
        call = self.clock.callLater(CATCH_UP, self._release, lambda entry: entry[1] is d)
        self._catching_up.append((revision, d, call))
        return d

    def _answer(self, revision: int) -> int:
        """
        The index at which the name server serves a change etcd made at
        REVISION: REVISION once the copy holds it, else the copy's
        revision, so that the registry's index never runs ahead of changes
        the watch has yet to apply.  (Before the first read nothing is
        served: REVISION.)
        """
        return min(revision, self.revision) if self.loaded else revision

    def _release(self, due: Callable[[CatchingUp], bool]) -> None:
        """Answer the writes waiting for the watch that DUE((revision, Deferred, call)) picks."""
        released = [entry for entry in self._catching_up if due(entry)]
        self._catching_up = [entry for entry in self._catching_up if not due(entry)]
        for revision, d, call in released:
            if call.active():
                call.cancel()
            d.callback(self._answer(revision))

    def _applied_through(self, revision: int) -> None:
        self.revision = max(self.revision, revision)
        if self._catching_up:
            self._release(lambda entry: entry[0] <= self.revision)

    # The copy: a range read, then a watch from the revision after it.

    def _connect(self) -> None:
        self._reconnect_call = None
        if self._closing:
            return
        d = self._read_registry() if self._read_whole else defer.succeed(None)
        d.addCallbacks(lambda _: self._watch(), self._reconnect_later)

    def _read_registry(self) -> defer.Deferred[None]:
        body = {"key": encode(self.prefix), "range_end": prefix_end(self.prefix)}
        return self.request("/v3/kv/range", body).addCallback(self._replace_copy)

    def _replace_copy(self, answer: dict) -> None:
        """
        Make the copy what the range read found, applying only the
        differences; then move keys of the previous layout to the new one.
        """
        revision = int(answer["header"]["revision"])
        found: dict[str, Instance] = {}
        old: dict[str, OldKey] = {}
        name_indexes: dict[str, int] = {}
        holder: Holder | None = None
        self.floor_revision = 0  # unless the read finds it
        for kv in answer.get("kvs", []):
            key = decode(kv["key"])
            if key == self.leader_key:
                holder = self._holder(kv)
                continue
            if key == self.layout.floor:
                self._floor_put(kv)  # first: the floor is under every name's index
                continue
            section, rest = self.layout.section(key) or ("", key)
            if section == HEARTBEATS:
                continue  # a start gives every TTL check a grace of one TTL anyway
            parsed = self._parsed(key, section, rest, kv)
            if isinstance(parsed, Instance) and section == SERVICES:
                found[parsed.id] = parsed
            elif isinstance(parsed, Instance):
                old[parsed.id] = OldKey(key, int(kv["mod_revision"]), parsed)
            elif isinstance(parsed, str):
                name_indexes[parsed] = int(kv["mod_revision"])
        for instance_id, moving in old.items():
            if instance_id in found:
                moving.instance = None  # the new layout's is newer: the old key only goes
            elif moving.instance is not None:
                found[instance_id] = moving.instance.copy()  # served; the move writes the other
        self.old = {i: moving.key for i, moving in old.items() if moving.instance is not None}
        for instance in self.registry.instances():
            if instance.id not in found:
                self.registry.remove(instance.id, name_indexes.get(instance.name, revision))
        skipped: list[str] = []
        for instance in found.values():
            try:
                self._serve(instance)
            except NotAllowed as e:
                skipped.append(str(e))
        for name, index in name_indexes.items():
            self.registry.raise_index(name, index)
        for name in self.name_keys.keys() - name_indexes.keys():
            self.registry.forget_name(name)  # another replica's reap, while the watch was away
        self.name_keys = name_indexes
        if skipped:
            log.warn(
                "names: {count} instances in etcd not served: their hosts are not allowed "
                "now (first: {first}); they stay in etcd until registered again or "
                "deregistered",
                count=len(skipped),
                first=skipped[0],
            )
        self.on_leader(holder, revision)
        self._read_whole = False
        if not self.loaded:
            self.loaded = True
            log.info(
                "names: read {count} instances from etcd (revision {revision})",
                count=len(self.registry),
                revision=revision,
            )
        self._applied_through(revision)
        if old and self._migrating is None:
            self._migrating = defer.ensureDeferred(self._migrate(list(old.values())))
            self._migrating.addBoth(self._migrated)

    def _parsed(self, key: str, section: str, rest: str, kv: dict) -> Instance | str | None:
        """
        What a key holds: an instance (`services/`, or the previous
        layout's), a name's index key (the name), or None (warned) for
        anything else.
        """
        try:
            if section == SERVICES:
                return service_instance(rest, kv)
            if section == OLD_INSTANCES:
                return old_instance(rest, kv)
            if section == NAMES:
                return name_of(rest)
            raise ValueError("not a key of the registry")
        except Unparsable as e:
            self.warnings.warn(
                "etcd keys",
                key,
                "names: etcd key {key} is not an instance of the registry ({error}): ignored",
                key=printable(key),
                error=printable(str(e)),
            )
            return None

    def _serve(self, instance: Instance) -> None:
        """
        Serve INSTANCE as etcd holds it, its indexes etcd's (even when its
        record is what the copy has); a host not allowed now is NotAllowed,
        a full registry warned.
        """
        create, modify = instance.create_index, instance.modify_index
        instance.addresses = self.registry.addresses(instance.host, instance.addresses)
        try:
            served, _ = self.registry.put(instance, modify)
        except RegistryFull as e:
            self.warnings.warn(
                "etcd keys",
                instance.id,
                "names: instance {id} from etcd is not served: {error}",
                id=printable(instance.id),
                error=str(e),
            )
            return
        served.create_index, served.modify_index = create, modify
        self.registry.raise_index(served.name, modify)

    def _watch(self) -> None:
        request = {
            "key": encode(self.prefix),
            "range_end": prefix_end(self.prefix),
            "start_revision": str(self.revision + 1),
        }
        self._watch_endpoint = self.client.endpoint
        self._watching = self.client.watch(request, self._watch_message)
        self._watching.addBoth(self._watch_ended)

    def _watch_ended(self, result: Failure | None) -> None:
        endpoint, self._watching, self._watch_endpoint = self._watch_endpoint, None, None
        self._release(lambda entry: True)  # the watch is gone: nothing more will come now
        if isinstance(result, Failure) and result.check(defer.CancelledError):
            result = None  # closed here: to resync, or to follow the requests to another member
        if isinstance(result, Failure) and result.check(EtcdError):
            if endpoint == self.client.endpoint:
                self.client.next_endpoint()  # the next connection tries the next member
        self._reconnect_later(result)

    def _reconnect_later(self, result: Failure | None) -> None:
        if self._closing:
            return
        if isinstance(result, Failure):
            if result.check(EtcdError):
                self._failed(result).trap(EtcdError)
            else:
                log.failure("names: following etcd failed", result)
        self._reconnect_call = self.clock.callLater(self._delay, self._connect)
        self._delay = min(self._delay * 2, RECONNECT_MAX)

    def _watch_message(self, message: dict) -> None:
        result = message.get("result", message)
        if result.get("created"):
            self._delay = RECONNECT_FIRST
            self._answered(result)
            return
        if result.get("canceled"):
            if result.get("compact_revision"):
                log.info(
                    "names: etcd compacted its history past revision {revision}: reading "
                    "the registry again",
                    revision=self.revision,
                )
                self._read_whole = True
            if self._watching is not None:
                self._watching.cancel()
            return
        revision = None
        for event in result.get("events", []):
            event_revision = int(event["kv"]["mod_revision"])
            if revision is not None and event_revision != revision:
                self._applied_through(revision)  # a write's answer sees its own revision whole
            revision = event_revision
            self._apply(event)
        if revision is not None:
            self._applied_through(revision)

    def _apply(self, event: dict) -> None:
        kv = event["kv"]
        key = decode(kv["key"])
        deleted = event.get("type") == "DELETE"
        revision = int(kv["mod_revision"])
        if key == self.leader_key:
            self.on_leader(None if deleted else self._holder(kv), revision)
            return
        if key == self.layout.floor:
            if deleted:
                self.floor_revision = 0
            else:
                self._floor_put(kv)
            return
        section, rest = self.layout.section(key) or ("", key)
        if section == HEARTBEATS:
            check_id = check_of(rest)
            if not deleted and self.registry.owner_of_check(check_id) is not None:
                self.registry.heartbeat(check_id, self.clock.seconds())
        elif not deleted:
            self._put(key, section, rest, kv)
        elif section == SERVICES:
            self.registry.remove(unquote(rest), revision)
        elif section == OLD_INSTANCES:
            self._old_deleted(key, rest, revision)
        elif section == NAMES and self.name_keys.pop(rest, None) is not None:
            # a reap's: the floor, put first in its transaction, is at its revision already;
            # forget_name raises it to the name's index all the same
            self.registry.forget_name(rest)

    def _floor_put(self, kv: dict) -> None:
        """The floor key put (another replica's reap, or this one's): the registry's rises."""
        self.floor_revision = int(kv["mod_revision"])  # a reap replaces even a value not ours
        try:
            floor = floor_of(kv)
        except Unparsable as e:
            self.warnings.warn(
                "etcd keys",
                "floor",
                "names: etcd key {key} is not a revision ({error}): ignored",
                key=printable(self.layout.floor),
                error=printable(str(e)),
            )
            return
        self.registry.raise_floor(floor)

    def _put(self, key: str, section: str, rest: str, kv: dict) -> None:
        """A key put: an instance to serve, or a name's index to raise."""
        parsed = self._parsed(key, section, rest, kv)
        if isinstance(parsed, str):
            self.name_keys[parsed] = int(kv["mod_revision"])
            self.registry.raise_index(parsed, int(kv["mod_revision"]))
            return
        if parsed is None:
            return
        if section == SERVICES:
            moved = self.old.pop(parsed.id, None) is not None
        elif parsed.id in self.old or self.registry.by_id(parsed.id) is None:
            moved, self.old[parsed.id] = False, key  # a replica of the previous version's
        else:
            return  # the new layout holds this ID: it wins over the previous one's
        try:
            self._serve(parsed)
        except NotAllowed as e:
            if not moved:  # a moved key was counted not served when first read
                self.warnings.warn(
                    "etcd keys",
                    parsed.id,
                    "names: instance {key} from etcd is not served: {error}",
                    key=printable(key),
                    error=str(e),
                )

    def _old_deleted(self, key: str, rest: str, revision: int) -> None:
        """A key of the previous layout deleted: its instance goes, unless moved meanwhile."""
        try:
            instance_id = old_id(rest)
        except Unparsable:
            return
        if self.old.get(instance_id) == key:
            del self.old[instance_id]
            self.registry.remove(instance_id, revision)

    @staticmethod
    def _holder(kv: dict) -> Holder:
        return decode(kv.get("value")), int(kv["create_revision"]), int(kv.get("lease", 0))

    # The move of the previous layout's keys to the new one.

    async def _migrate(self, old: list[OldKey]) -> None:
        """
        Move OLD, in transactions of MIGRATION_BATCH keys, each key only if it
        did not change since read (another replica starting too may have
        moved it); a batch refused is read again and tried again with the
        keys still there, at most MIGRATION_ATTEMPTS times.
        """
        moved = 0
        for start in range(0, len(old), MIGRATION_BATCH):
            batch = old[start : start + MIGRATION_BATCH]
            for _ in range(MIGRATION_ATTEMPTS):
                if not batch or self._closing:
                    break
                answer = await self.request("/v3/kv/txn", migration(self.layout, batch))
                if answer.get("succeeded"):
                    moved += sum(entry.instance is not None for entry in batch)
                    break
                batch = self._still_old(batch, answer)
        if moved:
            log.info("names: migrated {count} instances in etcd to the new layout", count=moved)

    def _still_old(self, batch: list[OldKey], answer: dict) -> list[OldKey]:
        """The keys of BATCH still in the previous layout, as a refused migration read them."""
        remaining = []
        for entry, response in zip(batch, answer.get("responses", []), strict=False):
            for kv in response.get("response_range", {}).get("kvs", []):
                section, rest = self.layout.section(entry.key) or ("", entry.key)
                parsed = self._parsed(entry.key, section, rest, kv)
                if isinstance(parsed, Instance):
                    moving = None if entry.instance is None else parsed
                    remaining.append(OldKey(entry.key, int(kv["mod_revision"]), moving))
        return remaining

    def _migrated(self, result: Failure | None) -> None:
        self._migrating = None
        if not isinstance(result, Failure) or self._closing:
            return
        if result.check(StoreError):  # an outage, logged as such
            log.warn(
                "names: keys of the previous layout left in etcd for now ({error}): "
                "they are served as they are, and moved at the next start",
                error=result.getErrorMessage(),
            )
        else:
            log.failure("names: moving keys of the previous layout failed", result)
