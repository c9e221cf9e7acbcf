"""
The registry on etcd, shared by several name servers (replicas).  Each
keeps the whole registry in memory, the local copy every Lookup, Watch and
DNS answer comes from, and an etcd watch on the prefix keeps that copy
current: every change any replica (or the leader's evictions) makes reaches
every copy within milliseconds.  Lookups never wait on etcd.

Keys under `etcd_prefix`:
- `instances/NAME/HOST/PORT`, value `{"description": "…", "addresses": […],
  "source": "…"}`: one instance, the addresses its checks connect to and the
  source that registered it (a value without them, from an earlier version:
  an IP literal's address is its own; a host name is not served until it is
  registered again, see L{suite.names.allowed});
- `leader`: the replica that runs the health checks (see L{suite.names.leader}).

A write (Register, Deregister) is answered once etcd acknowledged it, and
once this replica's copy holds it (at most CATCH_UP seconds later), so a
client that registers and then looks up on the same replica finds what it
registered.  Writes asked for together go to etcd as one transaction of at
most MAX_TXN_OPS operations, one transaction in flight at a time.

When etcd cannot be reached, writes fail with a StoreError (the name server
answers UNAVAILABLE), lookups go on from the copy, `/health` says degraded,
and the log says so once when the outage begins and once when it ends.  The
watch reconnects by itself and resumes from the last revision it applied;
if etcd compacted that revision away, the copy is read again whole (a range
read) and only the differences are applied, so watchers hear of real
changes only.
"""

import json
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.contracts.names import Invalid
from suite.foundation.flood import FloodControl
from suite.foundation.printable import printable
from suite.names.allowed import NotAllowed
from suite.names.etcd import EtcdClient, EtcdError, decode, encode, prefix_end
from suite.names.registry import Instance, Registry, RegistryFull
from suite.names.store import BatchedWrites, IRegistryStore, StoreError

log = Logger()

INSTANCES = "instances/"
LEADER = "leader"
MAX_TXN_OPS = 128  # etcd's default --max-txn-ops
CATCH_UP = 1.0  # seconds a write's answer may wait for the watch to bring it into the copy
RECONNECT_FIRST, RECONNECT_MAX = 0.1, 2.0  # seconds between watch reconnections, doubling

Holder = tuple[str, int, int]  # the leader key's value, create revision and lease
InstanceKey = tuple[str, str, int]  # name, host, port
InstanceFields = tuple[str, tuple[str, ...], str]  # description, addresses, source
CatchingUp = tuple[int, defer.Deferred[None], IDelayedCall]  # a write waiting for the copy


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
        self.writes = BatchedWrites(
            clock, self._transaction, written=self._written, max_batch=MAX_TXN_OPS
        )
        self.client = client
        self.registry = registry
        self.prefix = prefix
        self.leader_key = prefix + LEADER
        self.revision = 0  # the etcd revision the local copy reflects
        self.loaded = False  # whether the copy was read from etcd once
        self.outage: tuple[float, str] | None = None  # (since, why) while etcd cannot be reached
        self.term: int | None = None
        self.on_leader: Callable[[Holder | None, int], None] = lambda holder, revision: None
        self.warnings = FloodControl(clock, "names")
        self._catching_up: list[CatchingUp] = []
        self._read_whole = True  # the next connection starts with a range read
        self._watching: defer.Deferred[None] | None = None  # the watch's stream; cancel() ends it
        self._watch_endpoint: str | None = None
        self._reconnect_call: IDelayedCall | None = None
        self._delay = RECONNECT_FIRST
        self._closing = False

    # What the name server sees of any store.

    def load(self) -> list[tuple]:
        return []  # the copy fills from etcd once the reactor runs (start)

    def start(self) -> None:
        self._connect()

    def save(self, instance: Instance) -> defer.Deferred[None]:
        key = self._key(instance)
        value = json.dumps(
            {
                "description": instance.description,
                "addresses": list(instance.addresses),
                "source": instance.source,
            }
        )
        return self.writes.queue(
            key, {"request_put": {"key": encode(key), "value": encode(value)}}
        )

    def delete(self, instance: Instance) -> defer.Deferred[None]:
        key = self._key(instance)
        return self.writes.queue(key, {"request_delete_range": {"key": encode(key)}})

    def evict(self, instance: Instance) -> defer.Deferred[None]:
        """
        Delete INSTANCE if this replica still leads: a transaction on the
        leader key's revision.
        """
        if self.term is None:
            return defer.fail(NotLeader(f"eviction of {instance.name} left to the leader"))
        body = {
            "compare": [
                {
                    "key": encode(self.leader_key),
                    "target": "CREATE",
                    "result": "EQUAL",
                    "create_revision": str(self.term),
                }
            ],
            "success": [{"request_delete_range": {"key": encode(self._key(instance))}}],
        }

        def answered(answer: dict) -> defer.Deferred[None]:
            if not answer.get("succeeded"):
                raise NotLeader(f"no longer the leader: eviction of {instance.name} left to it")
            return self._written(answer)

        return self.request("/v3/kv/txn", body).addCallback(answered)

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

    def _key(self, instance: Instance) -> str:
        return f"{self.prefix}{INSTANCES}{instance.name}/{instance.host}/{instance.port}"

    def _transaction(self, operations: list[dict]) -> defer.Deferred[dict]:
        return self.request("/v3/kv/txn", {"success": operations})

    def _written(self, answer: dict) -> defer.Deferred[None]:
        """
        Fires once the copy holds the answer's revision, or after CATCH_UP
        seconds (etcd has it).
        """
        revision = int(answer["header"]["revision"])
        if revision <= self.revision or self._watching is None:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        call = self.clock.callLater(CATCH_UP, self._release, lambda entry: entry[1] is d)
        self._catching_up.append((revision, d, call))
        return d

    def _release(self, due: Callable[[CatchingUp], bool]) -> None:
        """Answer the writes waiting for the watch that DUE((revision, Deferred, call)) picks."""
        released = [entry for entry in self._catching_up if due(entry)]
        self._catching_up = [entry for entry in self._catching_up if not due(entry)]
        for _, d, call in released:
            if call.active():
                call.cancel()
            d.callback(None)

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
        """Make the copy what the range read found, applying only the differences."""
        found: dict[InstanceKey, InstanceFields] = {}
        holder: Holder | None = None
        skipped: list[str] = []
        for kv in answer.get("kvs", []):
            key = decode(kv["key"])
            if key == self.leader_key:
                holder = self._holder(kv)
                continue
            parsed = self._parse(key, kv.get("value"))
            if parsed is not None:
                found[parsed[0]] = parsed[1]
        for instance in self.registry.instances():
            if instance.key not in found:
                self.registry.deregister(*instance.key)
        for instance_key, fields in found.items():
            try:
                self._register(instance_key, fields)
            except NotAllowed as e:
                skipped.append(str(e))
        if skipped:
            log.warn(
                "names: {count} instances in etcd not served: their hosts are not allowed "
                "now (first: {first}); they stay in etcd until registered again or "
                "deregistered",
                count=len(skipped),
                first=skipped[0],
            )
        revision = int(answer["header"]["revision"])
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
        if key == self.leader_key:
            self.on_leader(None if deleted else self._holder(kv), int(kv["mod_revision"]))
            return
        parsed = self._parse(key, None if deleted else kv.get("value"))
        if parsed is None:
            return
        if deleted:
            self.registry.deregister(*parsed[0])
            return
        try:
            self._register(*parsed)
        except NotAllowed as e:
            self.warnings.warn(
                "etcd keys",
                repr(parsed[0]),
                "names: instance {key} from etcd is not served: {error}",
                key=printable(key),
                error=str(e),
            )

    @staticmethod
    def _holder(kv: dict) -> Holder:
        return decode(kv.get("value")), int(kv["create_revision"]), int(kv.get("lease", 0))

    def _parse(self, key: str, value: str | None) -> tuple[InstanceKey, InstanceFields] | None:
        """
        ((name, host, port), (description, addresses, source)) of an
        instance key; None (warned) otherwise.
        """
        try:
            if not key.startswith(self.prefix + INSTANCES):
                raise ValueError("not an instance")
            name, host, port = key.removeprefix(self.prefix + INSTANCES).split("/")
            fields = {"description": ""} if value is None else json.loads(decode(value))
            description = fields["description"]
            addresses, source = fields.get("addresses", []), fields.get("source", "")
            if (
                not isinstance(description, str)
                or not isinstance(source, str)
                or not (isinstance(addresses, list) and all(isinstance(a, str) for a in addresses))
            ):
                raise ValueError("not an instance's value")
            return (name, host, int(port)), (description, tuple(addresses), source)
        except (ValueError, KeyError, TypeError):
            self.warnings.warn(
                "etcd keys",
                key,
                "names: etcd key {key} is not an instance of the registry: ignored",
                key=printable(key),
            )
            return None

    def _register(self, key: InstanceKey, fields: InstanceFields) -> None:
        """
        Serve KEY with FIELDS; a host not allowed now is NotAllowed, any
        other refusal warned.
        """
        try:
            self.registry.register(*key, *fields)
        except NotAllowed:
            raise  # the caller counts these (a range read) or warns of each (the watch)
        except (Invalid, RegistryFull) as e:
            self.warnings.warn(
                "etcd keys",
                repr(key),
                "names: instance {key} from etcd is not served: {error}",
                key=printable(repr(key)),
                error=str(e),
            )
