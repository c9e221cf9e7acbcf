"""
The name server's registry: instances in memory, validated, rotated on
lookup, evicted after consecutive failed health checks.  Pure: no I/O, no
reactor; the name server applies changes here once the store has them.
Every way in (a registration, a stored row, an etcd event) passes the same
checks, the host's included (L{suite.names.allowed}), and each instance
remembers the source that registered it, so `max_instances_per_source`
counts what is registered, whichever name server took it.

An instance is Consul's model: an ID (by default NAME@HOST:PORT, what an
AMP registration names), tags, string metadata, SRV weights and health
checks; its status is the worst of its checks, and critical instances are
not served.  Every change carries an index, the store's (a counter the
SQLite file keeps, or etcd's revision), so the index of a name (the
highest of its changes, deregistrations included) and of the whole
registry never go backwards, and are the same on every replica: what the
HTTP API's blocking queries wait on.
"""

import json
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from suite.contracts.names import Invalid
from suite.names.allowed import AllowedHosts, IPAddress, ip_literal, shown
from suite.net.addresses import host_port

NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
META_KEY = re.compile(r"[A-Za-z0-9_-]{1,128}")
MAX_HOST = 253  # bytes of a host name (RFC 1123)
MAX_DESCRIPTION = 256
MAX_ID = 512  # characters of an instance or check ID (a default ID can have 330)
MAX_TAGS, MAX_TAG = 64, 256  # tags of an instance, characters of one
MAX_META, MAX_META_VALUE = 64, 512  # Consul's own limits on service metadata
MAX_CHECKS = 16  # checks of one instance
MAX_TEXT = 4096  # characters of a check's output or notes kept (longer: cut)
MAX_WEIGHT = 65535  # an SRV weight is 16 bits
MAX_RECORD = 512 * 1024  # bytes of an instance's JSON record (etcd takes 1.5 MiB a request)
OUTPUT_ROOM = MAX_TEXT * 6 + 16  # bytes a check's output may take in it (\u escapes: 6 a char)

PASSING, WARNING, CRITICAL = "passing", "warning", "critical"
STATUSES = (PASSING, WARNING, CRITICAL)
SEVERITY = {PASSING: 0, WARNING: 1, CRITICAL: 2}
CHECK_KINDS = ("tcp", "http", "ttl", "logs")
MAX_APP = 255  # characters of a logs check's app (RFC 5424's APP-NAME has at most 48)
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "OPTIONS")
MAINTENANCE_CHECK = "_service_maintenance:"  # + the instance's ID: its synthetic check


def default_id(name: str, host: str, port: int) -> str:
    """The ID of an instance registered without one (every AMP registration): NAME@HOST:PORT."""
    return f"{name}@{host_port(host, port)}"


def check_name(name: str) -> None:
    if not NAME.fullmatch(name):
        raise Invalid(f"name '{shown(name)}': 1-63 of a-z 0-9 -, not starting with -")


def _check_text(what: str, value: str, limit: int) -> None:
    if not value or len(value) > limit or not value.isprintable():
        raise Invalid(f"{what} '{shown(value)}': 1-{limit} printable characters")


def check_instance(name: str, host: str, port: int, description: str) -> IPAddress | None:
    """
    The syntax of an instance: NAME, an IP literal (no scope id) or RFC 1123
    host name, PORT.  Returns HOST as an IP address, None for a host name.
    """
    check_name(name)
    literal = ip_literal(host)
    if literal is None:
        labels = host.removesuffix(".").split(".")
        if len(host.encode()) > MAX_HOST or not all(
            HOST_LABEL.fullmatch(label) for label in labels
        ):
            raise Invalid(
                f"host '{shown(host)}': not an IP address, nor a host name of at most "
                f"{MAX_HOST} bytes (labels of 1-63 letters, digits, hyphens)"
            )
    if not 1 <= port <= 65535:
        raise Invalid(f"port {port}: must be 1-65535")
    if len(description) > MAX_DESCRIPTION:
        raise Invalid(f"description longer than {MAX_DESCRIPTION} characters")
    return literal


@dataclass
class Check:
    """
    One health check of an instance, Consul's: `kind` tcp (TARGET is
    HOST:PORT), http (TARGET is the URL) or ttl (passed from outside within
    TTL seconds); INTERVAL and TIMEOUT in seconds; `status` and `output`
    are the last result; DEREGISTER_AFTER (seconds, 0 = never) removes the
    instance once the check has been critical that long.

    The suite's own kind, logs: passing while a syslog message from APP on
    TARGET (a hostname, or a sender's address; empty: the instance's host)
    arrived within MAX_SILENCE seconds, else SILENCE_STATUS (warning or
    critical).
    """

    check_id: str
    kind: str
    name: str = ""
    target: str = ""
    interval: float = 0.0
    timeout: float = 10.0
    ttl: float = 0.0
    status: str = CRITICAL
    output: str = ""
    notes: str = ""
    deregister_after: float = 0.0
    method: str = "GET"
    header: dict[str, list[str]] = field(default_factory=dict)
    tls_skip_verify: bool = False
    app: str = ""
    max_silence: float = 0.0
    silence_status: str = WARNING

    def validate(self) -> None:
        _check_text("check ID", self.check_id, MAX_ID)
        if self.kind not in CHECK_KINDS:
            raise Invalid(f"check kind '{shown(self.kind)}': one of {', '.join(CHECK_KINDS)}")
        if self.status not in STATUSES:
            raise Invalid(f"check status '{shown(self.status)}': passing, warning or critical")
        for seconds in (self.interval, self.timeout, self.ttl, self.deregister_after):
            if not 0 <= seconds <= 10 * 365 * 86400:
                raise Invalid(f"check duration {seconds!r}: out of range")
        for what, text in (("name", self.name), ("notes", self.notes), ("output", self.output)):
            if len(text) > MAX_TEXT:
                raise Invalid(f"check {what} longer than {MAX_TEXT} characters")
        if len(self.target) > MAX_TEXT or not self.target.isprintable():
            raise Invalid(f"check target '{shown(self.target)}': not printable, or too long")
        if self.method not in HTTP_METHODS:
            raise Invalid(f"check method '{shown(self.method)}': one of {', '.join(HTTP_METHODS)}")
        if sum(len(k) + sum(map(len, v)) for k, v in self.header.items()) > MAX_TEXT:
            raise Invalid(f"check headers longer than {MAX_TEXT} characters")
        if not all(
            k.isprintable() and all(v.isprintable() for v in vs) for k, vs in self.header.items()
        ):
            raise Invalid("check headers: printable characters only")
        check_target_host(self)
        if self.kind == "logs":
            _check_text("logs check app", self.app, MAX_APP)
            if " " in self.app:
                raise Invalid(f"logs check app '{shown(self.app)}': without spaces")
            if not 0 < self.max_silence <= 10 * 365 * 86400:
                raise Invalid(f"logs check max_silence {self.max_silence!r}: out of range")
            if self.silence_status not in (WARNING, CRITICAL):
                raise Invalid(
                    f"logs check silence status '{shown(self.silence_status)}': "
                    "warning or critical"
                )

    def record(self) -> dict[str, Any]:
        """
        What the stores keep of the check: every field, as JSON values (a
        logs check's own fields only for a logs check, so that the records
        of the other kinds are those of before).
        """
        logs = {}
        if self.kind == "logs":
            logs = {
                "app": self.app,
                "max_silence": self.max_silence,
                "silence_status": self.silence_status,
            }
        return {
            "id": self.check_id,
            "kind": self.kind,
            "name": self.name,
            "target": self.target,
            "interval": self.interval,
            "timeout": self.timeout,
            "ttl": self.ttl,
            "status": self.status,
            "output": self.output,
            "notes": self.notes,
            "deregister_after": self.deregister_after,
            "method": self.method,
            "header": self.header,
            "tls_skip_verify": self.tls_skip_verify,
            **logs,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "Check":
        """A check from its L{record}; Invalid when a field is missing or of the wrong type."""
        try:
            check = cls(
                check_id=_typed(record["id"], str),
                kind=_typed(record["kind"], str),
                name=_typed(record.get("name", ""), str),
                target=_typed(record.get("target", ""), str),
                interval=float(_typed(record.get("interval", 0.0), (int, float))),
                timeout=float(_typed(record.get("timeout", 10.0), (int, float))),
                ttl=float(_typed(record.get("ttl", 0.0), (int, float))),
                status=_typed(record.get("status", CRITICAL), str),
                output=_typed(record.get("output", ""), str),
                notes=_typed(record.get("notes", ""), str),
                deregister_after=float(_typed(record.get("deregister_after", 0.0), (int, float))),
                method=_typed(record.get("method", "GET"), str),
                header={
                    _typed(k, str): [_typed(v, str) for v in _typed(values, list)]
                    for k, values in _typed(record.get("header", {}), dict).items()
                },
                tls_skip_verify=_typed(record.get("tls_skip_verify", False), bool),
                app=_typed(record.get("app", ""), str),
                max_silence=float(_typed(record.get("max_silence", 0.0), (int, float))),
                silence_status=_typed(record.get("silence_status", WARNING), str),
            )
        except KeyError as e:
            raise Invalid(f"check without {e.args[0]}") from None
        check.validate()
        return check


def check_target_host(check: Check) -> str | None:
    """
    The host a tcp or http check connects to (IPv6 without brackets); None
    for a ttl or logs check (which connect nowhere).  Invalid when the
    target has no host.
    """
    if check.kind == "tcp":
        host, _, port = check.target.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise Invalid(f"TCP check '{shown(check.target)}': not HOST:PORT")
        return host
    if check.kind == "http":
        parts = urlsplit(check.target)
        try:
            parts.port  # noqa: B018  # raises ValueError when out of range
        except ValueError:
            parts = urlsplit("")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Invalid(f"HTTP check '{shown(check.target)}': not an http(s) URL")
        return parts.hostname
    return None


def _typed(value: Any, kinds: type | tuple[type, ...]) -> Any:
    """VALUE if it is of KINDS (a bool is not a number here); Invalid otherwise."""
    if isinstance(value, kinds) and not (isinstance(value, bool) and kinds is not bool):
        return value
    raise Invalid(f"{shown(repr(value))} is not of the right type")


@dataclass(eq=False)
class Instance:
    """
    A registered instance.  `addresses`: what its health checks connect to
    (an IP literal's own, or a host name's as resolved at registration);
    `source`: the address of the peer that registered it; `pinged`: it
    came over AMP, so the name server pings it every `ping_interval` and
    evicts it after `max_failures` failures in a row (HTTP registrations
    have the checks they declare instead); `maintenance`: the reason given
    while the instance is in maintenance mode, None otherwise.
    `create_index` and `modify_index`: the indexes of its first and last
    change.
    """

    name: str
    host: str
    port: int
    description: str = ""
    failures: int = 0
    addresses: tuple[str, ...] = ()
    source: str = ""
    id: str = ""
    tags: tuple[str, ...] = ()
    meta: dict[str, str] = field(default_factory=dict)
    weights: tuple[int, int] = (1, 1)  # (passing, warning)
    checks: list[Check] = field(default_factory=list)
    maintenance: str | None = None
    pinged: bool = True
    create_index: int = 0
    modify_index: int = 0

    def __post_init__(self) -> None:
        if not self.id:
            self.id = default_id(self.name, self.host, self.port)

    @property
    def key(self) -> str:
        """What identifies the instance in the registry and the stores: its ID."""
        return self.id

    @property
    def status(self) -> str:
        """The worst of its checks (maintenance is critical); without checks, passing."""
        if self.maintenance is not None:
            return CRITICAL
        worst = PASSING
        for check in self.checks:
            if SEVERITY[check.status] > SEVERITY[worst]:
                worst = check.status
        return worst

    @property
    def weight(self) -> int:
        """The SRV weight it has now: its passing or its warning weight."""
        return self.weights[1] if self.status == WARNING else self.weights[0]

    def check(self, check_id: str) -> Check | None:
        for check in self.checks:
            if check.check_id == check_id:
                return check
        return None

    def validate(self) -> IPAddress | None:
        """
        Everything but where the host is (L{AllowedHosts}): Invalid naming the
        first problem.  Returns the host as an IP address, None for a name.
        """
        # Consul lets a service without a port register (a TTL-checked worker);
        # an instance the name server pings needs one.
        port = 1 if self.port == 0 and not self.pinged else self.port
        literal = check_instance(self.name, self.host, port, self.description)
        _check_text("ID", self.id, MAX_ID)
        if len(self.tags) > MAX_TAGS:
            raise Invalid(f"{len(self.tags)} tags: at most {MAX_TAGS}")
        for tag in self.tags:
            _check_text("tag", tag, MAX_TAG)
        if len(self.meta) > MAX_META:
            raise Invalid(f"{len(self.meta)} metadata keys: at most {MAX_META}")
        for key, value in self.meta.items():
            if not META_KEY.fullmatch(key) or key.startswith("consul-"):
                raise Invalid(
                    f"metadata key '{shown(key)}': 1-128 of A-Z a-z 0-9 _ -, not consul-"
                )
            if len(value) > MAX_META_VALUE:
                raise Invalid(f"metadata '{shown(key)}': a string of at most {MAX_META_VALUE}")
        passing, warning = self.weights
        if not (1 <= passing <= MAX_WEIGHT and 0 <= warning <= MAX_WEIGHT):
            raise Invalid(
                f"weights {passing}/{warning}: passing 1-{MAX_WEIGHT}, warning 0-{MAX_WEIGHT}"
            )
        if len(self.checks) > MAX_CHECKS:
            raise Invalid(f"{len(self.checks)} checks: at most {MAX_CHECKS}")
        ids = [check.check_id for check in self.checks]
        if len(set(ids)) != len(ids):
            raise Invalid("two checks with the same ID")
        for check in self.checks:
            check.validate()
        record = self.record()
        for check in record["checks"]:
            check["output"] = ""  # room for the longest output of each is kept below
        if len(json.dumps(record)) + len(self.checks) * OUTPUT_ROOM > MAX_RECORD:
            raise Invalid(
                f"instance larger than {MAX_RECORD // 1024} KiB as stored, with room for "
                f"each check's output"
            )
        return literal

    def record(self) -> dict[str, Any]:
        """What the stores keep of the instance (not its indexes: the store's own)."""
        return {
            "id": self.id,
            "name": self.name,
            "host": self.host,
            "port": self.port,
            "description": self.description,
            "addresses": list(self.addresses),
            "source": self.source,
            "tags": list(self.tags),
            "meta": dict(self.meta),
            "weights": list(self.weights),
            "checks": [check.record() for check in self.checks],
            "maintenance": self.maintenance,
            "pinged": self.pinged,
        }

    @classmethod
    def from_record(
        cls,
        record: Mapping[str, Any],
        create_index: int = 0,
        modify_index: int = 0,
        *,
        validate: bool = True,
    ) -> "Instance":
        """
        An instance from its L{record} (fields an earlier version did not
        write take their defaults); Invalid when one is of the wrong type,
        or (if VALIDATE) when L{validate} refuses it.  Where the host is is
        not checked here: L{Registry.addresses} does.
        """
        try:
            weights = _typed(record.get("weights", [1, 1]), list)
            maintenance = record.get("maintenance")
            instance = cls(
                name=_typed(record["name"], str),
                host=_typed(record["host"], str),
                port=_typed(record["port"], int),
                description=_typed(record.get("description", ""), str),
                addresses=tuple(_typed(a, str) for a in _typed(record.get("addresses", []), list)),
                source=_typed(record.get("source", ""), str),
                id=_typed(record.get("id", ""), str),
                tags=tuple(_typed(t, str) for t in _typed(record.get("tags", []), list)),
                meta={
                    _typed(k, str): _typed(v, str)
                    for k, v in _typed(record.get("meta", {}), dict).items()
                },
                weights=(_typed(weights[0], int), _typed(weights[1], int)),
                checks=[
                    Check.from_record(_typed(c, dict))
                    for c in _typed(record.get("checks", []), list)
                ],
                maintenance=None if maintenance is None else _typed(maintenance, str),
                pinged=_typed(record.get("pinged", True), bool),
                create_index=create_index,
                modify_index=modify_index,
            )
        except KeyError as e:
            raise Invalid(f"an instance without {e.args[0]}") from None
        except IndexError:
            raise Invalid("weights: [passing, warning]") from None
        if validate:
            instance.validate()
        return instance

    def copy(self, **changes: Any) -> "Instance":
        """Another instance like this one, CHANGES made, its checks copied (not shared)."""
        checks = [replace(check) for check in changes.pop("checks", self.checks)]
        return replace(self, checks=checks, **changes)


class RegistryFull(Exception):
    pass


class Registry:
    """
    Instances by ID and by name, each name's instances in registration
    order.  Whoever keeps something derived from a name's instances
    (encoded answers, blocking queries) registers with on_change and hears
    of every change to that name.  HOSTS (an L{AllowedHosts}) says where
    instances may be; without it (tests of answers and zones) any host of
    the right syntax is taken.

    The index of a name without instances (a tombstone: it must not go
    back, or a blocking read of it would miss the next registration) is
    kept for at most MAX_TOMBSTONES names (None: the store decides, as etcd
    does, see L{forget_name}); beyond, the oldest are forgotten and the
    `floor`, the index every name without an entry answers, rises to theirs.
    """

    def __init__(
        self,
        max_instances: int,
        hosts: AllowedHosts | None = None,
        max_tombstones: int | None = None,
    ):
        self.max_instances = max_instances
        self.max_tombstones = max_tombstones
        self.floor = 1
        self.hosts = hosts
        self._by_name: dict[str, OrderedDict[str, Instance]] = {}
        self._by_id: dict[str, Instance] = {}
        self._check_owner: dict[str, str] = {}  # check ID -> instance ID
        self._rotation: dict[str, int] = {}
        self._per_source: dict[str, int] = {}
        self._name_index: dict[str, int] = {}
        self._heartbeats: dict[str, float] = {}  # TTL check ID -> when it was last updated
        self.index = 1  # of the last change to anything (never 0: Consul's clients loop on 0)
        self._listeners: list[Callable[[str], object]] = []

    def on_change(self, listener: Callable[[str], object]) -> None:
        """LISTENER(name) is called after every change to the instances of a name."""
        self._listeners.append(listener)

    def _changed(self, name: str, index: int) -> None:
        self._name_index[name] = max(self._name_index.get(name, self.floor), index)
        self.index = max(self.index, index)
        for listener in self._listeners:
            listener(name)

    def __len__(self) -> int:
        return len(self._by_id)

    def name_index(self, name: str) -> int:
        """The index of the last change to NAME's instances (the floor if none known)."""
        return self._name_index.get(name, self.floor)

    def raise_floor(self, index: int) -> None:
        """Names without an index of their own answer at least INDEX from now on."""
        self.floor = max(self.floor, index)
        self.index = max(self.index, index)

    def forget_name(self, name: str) -> None:
        """
        Forget the index of NAME, a name without instances, raising the floor
        to it first, so that the name's index does not go back.
        """
        if name in self._by_name:
            return
        index = self._name_index.pop(name, None)
        if index is not None:
            self.raise_floor(index)

    def tombstones(self) -> int:
        """How many names without instances keep an index of their own."""
        return len(self._name_index) - len(self._by_name)

    def _reap_tombstones(self) -> None:
        """
        Over MAX_TOMBSTONES, forget the oldest tenth of them (a sort every
        tenth of the bound: amortised, not per deregistration).
        """
        if self.max_tombstones is None or self.tombstones() <= self.max_tombstones:
            return
        empty = sorted(
            (index, name) for name, index in self._name_index.items() if name not in self._by_name
        )
        for _, name in empty[: len(empty) - self.max_tombstones * 9 // 10]:
            self.forget_name(name)

    def raise_index(self, name: str, index: int) -> None:
        """
        Note that NAME changed at INDEX without a change of instance to show
        it (a deregistration the store remembers, a change the etcd watch
        brings after the write served it): its index, and the registry's,
        are at least INDEX, and the listeners hear of NAME if that raised it.
        """
        raised = index > self._name_index.get(name, self.floor)
        if raised:
            self._name_index[name] = index
        self.index = max(self.index, index)
        self._reap_tombstones()
        if raised:  # a blocking read of the name waits for exactly this
            for listener in self._listeners:
                listener(name)

    def addresses(self, host: str, resolved: Sequence[str] = ()) -> tuple[str, ...]:
        """
        What the checks of HOST connect to (see L{AllowedHosts.addresses});
        NotAllowed if nothing.
        """
        if self.hosts is not None:
            return self.hosts.addresses(host, resolved)
        literal = ip_literal(host)
        return tuple(resolved) if literal is None else (str(literal),)

    def from_source(self, source: str) -> int:
        """How many instances SOURCE registered."""
        return self._per_source.get(source, 0)

    def register(
        self,
        name: str,
        host: str,
        port: int,
        description: str = "",
        resolved: Sequence[str] = (),
        source: str = "",
    ) -> tuple[Instance, bool]:
        """
        Add or update (name, host, port) as AMP registers it, RESOLVED being
        a host name's addresses; returns the instance and whether it is new.
        """
        instance = Instance(name, host, port, description, source=source)
        instance.validate()
        instance.addresses = self.addresses(host, resolved)
        return self.put(instance, self.index + 1)

    def put(self, instance: Instance, index: int) -> tuple[Instance, bool]:
        """
        Serve INSTANCE (checked by its caller, L{Instance.validate} and
        L{addresses}), replacing the one of the same ID, as changed at
        INDEX.  A replacement keeps the source that first registered the ID
        and its create index; one that changes nothing a client sees (the
        announcer's refresh) changes no index and tells no listener.
        Returns the instance served and whether it is new.
        """
        existing = self._by_id.get(instance.id)
        beats: dict[
            str, float
        ] = {}  # a replacement (a status change) keeps the TTL heartbeats of its checks
        if existing is not None:
            beats = {
                c.check_id: self._heartbeats[c.check_id]
                for c in instance.checks
                if c.check_id in self._heartbeats
            }
            instance.source = existing.source
            instance.create_index = existing.create_index
            instance.failures = existing.failures
            if existing.record() == instance.record():
                existing.addresses = instance.addresses
                return existing, False
            moved = existing.name != instance.name
            self._unlink(existing, keep_place=not moved)  # a status change keeps its turn
            if moved:
                self._changed(existing.name, index)
                self._reap_tombstones()
        elif len(self._by_id) >= self.max_instances:
            raise RegistryFull(f"registry full ({self.max_instances} instances, max_instances)")
        else:
            instance.create_index = instance.create_index or index
        instance.modify_index = index
        self._link(instance)
        self._heartbeats.update(beats)
        self._changed(instance.name, index)
        return instance, existing is None

    def _link(self, instance: Instance) -> None:
        self._by_id[instance.id] = instance
        self._by_name.setdefault(instance.name, OrderedDict())[instance.id] = instance
        self._per_source[instance.source] = self._per_source.get(instance.source, 0) + 1
        for check in instance.checks:
            self._check_owner[check.check_id] = instance.id

    def _unlink(self, instance: Instance, keep_place: bool = False) -> None:
        """
        Forget INSTANCE; KEEP_PLACE leaves its place in its name's order for
        the replacement L{_link} puts there.
        """
        del self._by_id[instance.id]
        if not keep_place:
            instances = self._by_name[instance.name]
            del instances[instance.id]
            if not instances:
                del self._by_name[instance.name]
                self._rotation.pop(instance.name, None)
        remaining = self._per_source[instance.source] - 1
        if remaining:
            self._per_source[instance.source] = remaining
        else:
            del self._per_source[instance.source]
        for check in instance.checks:
            if self._check_owner.get(check.check_id) == instance.id:
                del self._check_owner[check.check_id]
                self._heartbeats.pop(check.check_id, None)

    def by_id(self, instance_id: str) -> Instance | None:
        return self._by_id.get(instance_id)

    def owner_of_check(self, check_id: str) -> Instance | None:
        """The instance that has the check CHECK_ID, None if none does."""
        owner = self._check_owner.get(check_id)
        return None if owner is None else self._by_id.get(owner)

    def get(self, name: str, host: str, port: int) -> Instance | None:
        """The instance of NAME at HOST:PORT: the one of the default ID, else the first found."""
        instance = self._by_id.get(default_id(name, host, port))
        if instance is not None and instance.name == name:
            return instance
        for instance in self._by_name.get(name, {}).values():
            if instance.host == host and instance.port == port:
                return instance
        return None

    def holds(self, name: str, host: str, port: int) -> bool:
        return self.get(name, host, port) is not None

    def holds_exactly(self, instance: Instance) -> bool:
        """Whether INSTANCE itself (not a later registration of the same ID) is registered."""
        return self._by_id.get(instance.id) is instance

    def remove(self, instance_id: str, index: int) -> Instance | None:
        """Stop serving the instance of that ID, as changed at INDEX; returns it (None if none)."""
        instance = self._by_id.get(instance_id)
        if instance is None:
            return None
        self._unlink(instance)
        self._changed(instance.name, index)
        self._reap_tombstones()
        return instance

    def deregister(self, name: str, host: str, port: int) -> Instance | None:
        """Remove the instance of NAME at HOST:PORT (see L{get})."""
        instance = self.get(name, host, port)
        return None if instance is None else self.remove(instance.id, self.index + 1)

    def lookup(self, name: str) -> list[Instance]:
        """The live instances of NAME, starting one further on each call (round robin)."""
        instances = self.live_of(name)
        if not instances:
            return []
        turn = self.take_turn(name, len(instances))
        return instances[turn:] + instances[:turn]

    def instances_of(self, name: str) -> list[Instance]:
        """Every instance of NAME (critical ones too) in registration order."""
        check_name(name)
        instances = self._by_name.get(name)
        return [] if instances is None else list(instances.values())

    def live_of(self, name: str) -> list[Instance]:
        """
        The instances of NAME that are served (passing or warning) in
        registration order, without taking a turn.
        """
        check_name(name)
        instances = self._by_name.get(name)
        if instances is None:
            return []
        return [i for i in instances.values() if i.status != CRITICAL]

    def take_turn(self, name: str, count: int) -> int:
        """Where the next answer for NAME (COUNT instances) starts: one further each call."""
        turn = self._rotation.get(name, 0) % count
        self._rotation[name] = turn + 1
        return turn

    def names(self) -> list[str]:
        """The names with at least one instance, sorted."""
        return sorted(self._by_name)

    def live_names(self) -> list[str]:
        """The names with at least one served instance, sorted."""
        return sorted(
            name
            for name, instances in self._by_name.items()
            if any(i.status != CRITICAL for i in instances.values())
        )

    def instances(self) -> list[Instance]:
        return list(self._by_id.values())

    def checks(self) -> Iterator[tuple[Instance, Check]]:
        """Every (instance, check), the maintenance of an instance not included."""
        for instance in self._by_id.values():
            for check in instance.checks:
                yield instance, check

    def heartbeat(self, check_id: str, when: float) -> None:
        """A TTL check was passed (or warned, or failed) at WHEN: its TTL starts again."""
        self._heartbeats[check_id] = when

    def last_heartbeat(self, check_id: str) -> float | None:
        """When the TTL check CHECK_ID was last updated from outside (None: not since start)."""
        return self._heartbeats.get(check_id)

    def ping_result(self, instance: Instance, alive: bool, max_failures: int) -> bool:
        """
        Count a health check; True when the instance, still registered, has
        now failed MAX_FAILURES (or more) in a row and is due for eviction.
        """
        if alive:
            instance.failures = 0
            return False
        instance.failures += 1
        return instance.failures >= max_failures and self.holds_exactly(instance)
