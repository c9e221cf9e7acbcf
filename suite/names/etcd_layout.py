"""
How the registry is laid out under `etcd_prefix`, and how its keys and
values read; pure (no I/O), so the store (L{suite.names.etcd_store}) and
its tests share one definition.

- `services/ID` (the ID percent-encoded, so any ID is one key): the JSON
  of one instance's record (L{Instance.record}, every field); the key's
  create and mod revisions are the instance's create and modify indexes.
- `names/NAME`, empty: put in the same transaction as every change to an
  instance of NAME, deregistrations included, so its mod revision is the
  index of NAME's last change.  Every replica therefore computes the same
  indexes from etcd alone, and a restart finds them where they were.
- `heartbeats/CHECK` (the check ID percent-encoded): put at each update of
  a TTL check from outside, so that the replica running the checks (the
  leader) restarts its TTL; it changes no index.
- `floor`: the index of every name without a `names/` key, its value a
  revision in decimal.  Keys of names without instances are kept for at
  most `max_instances` names: beyond, the oldest are deleted, and `floor`
  raised to the highest of their revisions, in one transaction
  (L{Layout.reap}), so that no name's index goes back.
- `leader`: the replica that runs the health checks (L{suite.names.leader}).

A write whose writer saw the instance at some revision (a check's result,
a TTL pass, maintenance: computed from the copy) is conditional on the
instance's key still having that revision, so that it never brings back an
instance another replica deregistered nor overwrites its re-registration
(L{transaction}).

The previous version kept `instances/NAME/HOST/PORT`, valued
`{"description", "addresses", "source"}` (or, earlier, `{"description"}`
alone); such keys are served as they are until migrated (L{migration}).
"""

import json
from collections.abc import Collection, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from suite.contracts.names import Invalid
from suite.names.etcd import decode, encode
from suite.names.registry import Instance, check_name, default_id

SERVICES, NAMES, HEARTBEATS, OLD_INSTANCES = "services/", "names/", "heartbeats/", "instances/"
SECTIONS = (SERVICES, NAMES, HEARTBEATS, OLD_INSTANCES)
LEADER, FLOOR = "leader", "floor"
MAX_TXN_OPS = 128  # etcd's default --max-txn-ops (of compares, and of operations)
# Bytes of keys and values (base64) in one transaction: well within etcd's default
# --max-request-bytes (1.5 MiB, counted before base64), so a batch of instances with
# long check outputs is not refused whole.
MAX_TXN_BYTES = 2**20
OP_OVERHEAD = 64  # bytes of an operation beyond its key and value (JSON framing, fields)
# A migrated key is a put, a delete and its name's put: the keys one transaction moves.
MIGRATION_BATCH = MAX_TXN_OPS // 3
REAP_BATCH = MAX_TXN_OPS - 1  # names/ keys one transaction deletes, with the floor's put

Op = dict[str, Any]  # one operation of a transaction, as the JSON gateway takes it
Unparsable = (Invalid, ValueError, KeyError, TypeError)  # what a key or value not ours raises


def put(key: str, value: str) -> Op:
    return {"request_put": {"key": encode(key), "value": encode(value)}}


def delete(key: str) -> Op:
    return {"request_delete_range": {"key": encode(key)}}


def _json(record: Mapping[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"))


class Layout:
    """The keys of the registry under PREFIX."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.leader = prefix + LEADER
        self.floor = prefix + FLOOR

    def service(self, instance_id: str) -> str:
        return f"{self.prefix}{SERVICES}{quote(instance_id, safe='')}"

    def name(self, name: str) -> str:
        return f"{self.prefix}{NAMES}{name}"

    def heartbeat(self, check_id: str) -> str:
        return f"{self.prefix}{HEARTBEATS}{quote(check_id, safe='')}"

    def section(self, key: str) -> tuple[str, str] | None:
        """(section, the rest of KEY) of a key of the registry; None for any other key."""
        for section in SECTIONS:
            if key.startswith(self.prefix + section):
                return section, key[len(self.prefix + section) :]
        return None

    def instance_ops(
        self,
        instance: Instance,
        stored: bool,
        dropped_checks: Collection[str] = (),
        old_key: str | None = None,
    ) -> dict[str, Op]:
        """
        The operations, by key, that store INSTANCE (STORED) or delete it:
        its `services/` key, its name's key, the heartbeats of its checks
        when deleted (of DROPPED_CHECKS when stored), and OLD_KEY, the key
        of the previous layout it was read from, if any.
        """
        key = self.service(instance.id)
        ops = {key: put(key, _json(instance.record())) if stored else delete(key)}
        gone = dropped_checks if stored else {check.check_id for check in instance.checks}
        for check_id in sorted(gone):
            ops[self.heartbeat(check_id)] = delete(self.heartbeat(check_id))
        if old_key is not None:
            ops[old_key] = delete(old_key)
        ops[self.name(instance.name)] = put(self.name(instance.name), "")
        return ops

    def reap(self, names: list[tuple[int, str]], floor_revision: int, floor: int) -> "Write":
        """
        The write that deletes the `names/` keys of NAMES ((mod revision,
        name), at most REAP_BATCH, the oldest names without instances) and
        puts `floor` at FLOOR first, if none of them changed since (a
        registration under one of the names, another replica's reap: the
        floor's revision is still FLOOR_REVISION, 0 when absent).
        """
        ops = {self.floor: put(self.floor, str(floor))}
        expected = {self.floor: floor_revision}
        for revision, name in names:
            ops[self.name(name)] = delete(self.name(name))
            expected[self.name(name)] = revision
        return Write(("reap",), ops, expected)


def service_instance(rest: str, kv: Mapping[str, Any]) -> Instance:
    """
    The instance of a `services/` key (REST: the ID as quoted), its indexes
    the key's revisions; one of L{Unparsable} when it is not one.
    """
    record = json.loads(decode(kv.get("value")))
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    instance = Instance.from_record(record, int(kv["create_revision"]), int(kv["mod_revision"]))
    if quote(instance.id, safe="") != rest:
        raise ValueError(f"the key does not name the ID {instance.id!r}")
    return instance


def floor_of(kv: Mapping[str, Any]) -> int:
    """The index a `floor` key holds; one of L{Unparsable} when it is not one."""
    floor = int(decode(kv.get("value")))
    if floor < 1:
        raise ValueError("not a revision")
    return floor


def name_of(rest: str) -> str:
    """The name of a `names/` key; Invalid when it is not one."""
    check_name(rest)
    return rest


def check_of(rest: str) -> str:
    """The check ID of a `heartbeats/` key."""
    return unquote(rest)


def old_id(rest: str) -> str:
    """The ID of an instance of the previous layout (REST: NAME/HOST/PORT)."""
    name, host, port = rest.split("/")
    return default_id(name, host, int(port))


def old_instance(rest: str, kv: Mapping[str, Any]) -> Instance:
    """
    The instance of a key of the previous layout (REST: NAME/HOST/PORT),
    its indexes the key's revisions; one of L{Unparsable} when it is not one.
    """
    name, host, port = rest.split("/")
    fields = json.loads(decode(kv.get("value")))
    description = fields["description"]
    addresses, source = fields.get("addresses", []), fields.get("source", "")
    if (
        not isinstance(description, str)
        or not isinstance(source, str)
        or not (isinstance(addresses, list) and all(isinstance(a, str) for a in addresses))
    ):
        raise ValueError("not an instance's value")
    instance = Instance(
        name,
        host,
        int(port),
        description,
        addresses=tuple(addresses),
        source=source,
        create_index=int(kv["create_revision"]),
        modify_index=int(kv["mod_revision"]),
    )
    instance.validate()
    return instance


@dataclass
class OldKey:
    """
    A key of the previous layout to migrate: its revision when read and
    its instance, or None when the new layout holds that ID already (the
    old key is then only deleted).
    """

    key: str
    mod_revision: int
    instance: Instance | None


def migration(layout: Layout, batch: list[OldKey]) -> dict[str, Any]:
    """
    The transaction that moves BATCH (at most MIGRATION_BATCH keys) to the
    new layout if none of its keys changed since read (so two replicas
    starting together do not both move one); otherwise it reads them again.
    """
    compare, success = [], {}
    for old in batch:
        compare.append(
            {
                "key": encode(old.key),
                "target": "MOD",
                "result": "EQUAL",
                "mod_revision": str(old.mod_revision),
            }
        )
        if old.instance is not None:
            key = layout.service(old.instance.id)
            success[key] = put(key, _json(old.instance.record()))
            success[layout.name(old.instance.name)] = put(layout.name(old.instance.name), "")
        success[old.key] = delete(old.key)
    return {
        "compare": compare,
        "success": list(success.values()),
        "failure": [{"request_range": {"key": encode(old.key)}} for old in batch],
    }


@dataclass
class Write:
    """
    One write asked of the store: its key among the waiting writes, its
    operations, and the mod revision each key of EXPECTED must still have
    for them to be done (0: absent); none expected, they are done whatever
    the keys hold.
    """

    key: Hashable
    ops: dict[str, Op] = field(default_factory=dict)
    expected: dict[str, int] = field(default_factory=dict)


def _size(op: Op) -> int:
    """What OP takes of a request: its key and value as sent (base64), and a little more."""
    (request,) = op.values()
    return len(request.get("key", "")) + len(request.get("value", "")) + OP_OVERHEAD


def packed(writes: list[Write]) -> list[tuple[list[Write], list[Op]]]:
    """
    WRITES, in order, as transactions of at most MAX_TXN_OPS operations
    (and as many compares) and about MAX_TXN_BYTES, each write whole in
    one of them (an instance with its name's key; a write larger than that
    alone), each key once per transaction (etcd refuses a key twice; a
    delete wins over a put: a heartbeat does not bring back the key of a
    check being deleted).  Conditional writes never share a transaction
    with others: etcd's transactions are all or nothing, so a failed
    compare would undo the writes that expected nothing.  Nor does one
    share a transaction with an earlier write of a key it expects (etcd
    compares before it writes: the second write would not see the first).
    """
    transactions: list[tuple[list[Write], dict[str, Op]]] = []
    members: list[Write] = []
    ops: dict[str, Op] = {}
    size = compares = 0
    for write in writes:
        added = [op for key, op in write.ops.items() if key not in ops]
        grown = size + sum(map(_size, added))
        if members and (
            bool(members[0].expected) != bool(write.expected)
            or len(ops) + len(added) > MAX_TXN_OPS
            or compares + len(write.expected) > MAX_TXN_OPS
            or any(key in ops for key in write.expected)
            or grown > MAX_TXN_BYTES
        ):
            transactions.append((members, ops))
            members, ops, compares = [], {}, 0
            grown = sum(map(_size, write.ops.values()))
        members.append(write)
        size = grown
        compares += len(write.expected)
        for key, op in write.ops.items():
            if "request_delete_range" not in ops.get(key, {}):
                ops[key] = op
    if members:
        transactions.append((members, ops))
    return [(members, list(ops.values())) for members, ops in transactions]


def transaction(members: list[Write], ops: list[Op]) -> dict[str, Any]:
    """
    The request of a transaction of MEMBERS (as L{packed} gathered them)
    doing OPS; if conditional, done only if every compare holds, and
    otherwise reading the compared keys (their revisions only), so that
    L{refused} can say which writes a change since overtook.
    """
    compared = _compared(members)
    if not compared:
        return {"success": ops}
    return {
        "compare": [
            {"key": encode(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}
            for key, revision in compared
        ],
        "success": ops,
        "failure": [
            {"request_range": {"key": encode(key), "keys_only": True}} for key, _ in compared
        ],
    }


def _compared(members: list[Write]) -> list[tuple[str, int]]:
    """Each (key, mod revision) the writes of MEMBERS expect, once."""
    return list(dict.fromkeys(item for write in members for item in write.expected.items()))


def refused(members: list[Write], answer: Mapping[str, Any]) -> list[Write]:
    """
    The writes of MEMBERS whose expected revisions the keys no longer had,
    from the answer of their failed L{transaction} (its failure reads);
    every member if it cannot tell (so that retrying the others ends).
    """
    compared = _compared(members)
    revisions: dict[str, int] = {}
    for (key, _), response in zip(compared, answer.get("responses", []), strict=False):
        kvs = response.get("response_range", {}).get("kvs", [])
        revisions[key] = int(kvs[0]["mod_revision"]) if kvs else 0
    overtaken = [
        write
        for write in members
        if any(revisions.get(key, -1) != revision for key, revision in write.expected.items())
    ]
    return overtaken or list(members)
