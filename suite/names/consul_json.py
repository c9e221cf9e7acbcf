"""
Instances and their checks as Consul's HTTP API answers them, so that
Consul's clients decode them unchanged.  Go decodes strictly, and one value
of the wrong type fails a whole answer: lists are `[]` (never null),
metadata values strings, ports and indexes integers,
`Node.TaggedAddresses` an object of strings and `Service.TaggedAddresses`
an object of `{Address, Port}`.

Each instance is shown on a node of its own, named and addressed by its
host (Consul's model for services registered from outside), in the one
datacenter this name server serves.  A description is the metadata key
`description`; maintenance mode is Consul's synthetic critical check
`_service_maintenance:ID`.  Pure: values in, JSON-able values out.
"""

import re
from collections.abc import Iterable
from typing import Any

from suite.names.registry import CRITICAL, MAINTENANCE_CHECK, MAX_TAGS, PASSING, Check, Instance
from suite.net.addresses import host_port

MAINTENANCE_NAME = "Service Maintenance Mode"
MAINTENANCE_TYPE = "maintenance"
# What Consul writes as the notes of maintenance mode entered without a reason.
DEFAULT_MAINTENANCE_REASON = (
    "Maintenance mode is enabled for this service, but no reason was provided. "
    "This is a default message."
)
LABEL_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")


def service_meta(instance: Instance) -> dict[str, str]:
    """The instance's metadata, its description as the key `description` when it has one."""
    meta = dict(instance.meta)
    if instance.description:
        meta["description"] = instance.description
    return meta


def weights(instance: Instance) -> dict[str, int]:
    passing, warning = instance.weights
    return {"Passing": passing, "Warning": warning}


def _node_fields(instance: Instance, datacenter: str) -> dict[str, Any]:
    """What every answer says of the node the instance is shown on: its host."""
    return {
        "ID": "",
        "Node": instance.host,
        "Address": instance.host,
        "Datacenter": datacenter,
        "TaggedAddresses": {},
    }


def _indexes(instance: Instance) -> dict[str, int]:
    return {"CreateIndex": instance.create_index, "ModifyIndex": instance.modify_index}


def node(instance: Instance, datacenter: str) -> dict[str, Any]:
    """The node the instance is shown on, as a health entry's `Node`."""
    return {**_node_fields(instance, datacenter), "Meta": {}, **_indexes(instance)}


def service(instance: Instance) -> dict[str, Any]:
    """The instance as a health entry's `Service` (Consul's AgentService)."""
    return {
        "ID": instance.id,
        "Service": instance.name,
        "Tags": list(instance.tags),
        "Address": instance.host,
        "Port": instance.port,
        "Meta": service_meta(instance),
        "TaggedAddresses": {},
        "Weights": weights(instance),
        "EnableTagOverride": False,
        **_indexes(instance),
    }


def _check_entry(
    instance: Instance, check_id: str, name: str, status: str, notes: str, output: str, kind: str
) -> dict[str, Any]:
    return {
        "Node": instance.host,
        "CheckID": check_id,
        "Name": name,
        "Status": status,
        "Notes": notes,
        "Output": output,
        "ServiceID": instance.id,
        "ServiceName": instance.name,
        "ServiceTags": list(instance.tags),
        "Type": kind,
        **_indexes(instance),
    }


def check_entry(instance: Instance, check: Check) -> dict[str, Any]:
    """One check of the instance, as Consul's HealthCheck."""
    return _check_entry(
        instance, check.check_id, check.name, check.status, check.notes, check.output, check.kind
    )


def check_entries(instance: Instance) -> list[dict[str, Any]]:
    """Every check of the instance, maintenance mode's first while it is in maintenance."""
    entries = [check_entry(instance, check) for check in instance.checks]
    if instance.maintenance is not None:
        maintenance = _check_entry(
            instance,
            MAINTENANCE_CHECK + instance.id,
            MAINTENANCE_NAME,
            CRITICAL,
            instance.maintenance or DEFAULT_MAINTENANCE_REASON,
            "",
            MAINTENANCE_TYPE,
        )
        entries.insert(0, maintenance)
    return entries


def health_entry(instance: Instance, datacenter: str) -> dict[str, Any]:
    """The instance as `/v1/health/service/NAME` lists it: node, service, checks."""
    return {
        "Node": node(instance, datacenter),
        "Service": service(instance),
        "Checks": check_entries(instance),
    }


def catalog_entry(instance: Instance, datacenter: str) -> dict[str, Any]:
    """The instance as `/v1/catalog/service/NAME` lists it (Consul's CatalogService)."""
    return {
        **_node_fields(instance, datacenter),
        "NodeMeta": {},
        "ServiceID": instance.id,
        "ServiceName": instance.name,
        "ServiceAddress": instance.host,
        "ServicePort": instance.port,
        "ServiceTags": list(instance.tags),
        "ServiceMeta": service_meta(instance),
        "ServiceTaggedAddresses": {},
        "ServiceWeights": weights(instance),
        "ServiceEnableTagOverride": False,
        **_indexes(instance),
    }


def catalog_services(instances: Iterable[Instance]) -> dict[str, list[str]]:
    """`/v1/catalog/services`: each name with an instance, the tags of its instances merged."""
    tags: dict[str, set[str]] = {}
    for instance in instances:
        tags.setdefault(instance.name, set()).update(instance.tags)
    return {name: sorted(tags[name]) for name in sorted(tags)}


def checks_in_state(instances: Iterable[Instance], state: str | None) -> list[dict[str, Any]]:
    """`/v1/health/state/STATE`: every check in STATE (None: every check), maintenance too."""
    return [
        entry
        for instance in instances
        for entry in check_entries(instance)
        if state is None or entry["Status"] == state
    ]


class TagFilter:
    """
    The instances having every one of the TAGS a query asked for, compared
    case-insensitively as Consul's serviceTagFilter and this registry's DNS
    do.  The query's tags are folded into one set once; an instance's into
    one set each, so an instance costs its own tags plus one lookup per
    distinct tag asked, however many times a query repeats them.  More
    distinct tags than an instance may have (L{MAX_TAGS}) match nothing,
    and no instance is looked at.
    """

    def __init__(self, tags: Iterable[str]) -> None:
        self.wanted = frozenset(tag.lower() for tag in tags)
        self.impossible = len(self.wanted) > MAX_TAGS

    def matches(self, instance: Instance) -> bool:
        if not self.wanted:
            return True
        return self.wanted <= {tag.lower() for tag in instance.tags}

    def select(self, instances: Iterable[Instance]) -> list[Instance]:
        """The INSTANCES that have the tags, in their order."""
        if self.impossible:
            return []
        return [instance for instance in instances if self.matches(instance)]


def passing_only(instances: Iterable[Instance]) -> list[Instance]:
    """Consul's `?passing`: the instances all of whose checks pass."""
    return [instance for instance in instances if instance.status == PASSING]


def agent_self(
    datacenter: str, node_name: str, version: str, address: str, port: int
) -> dict[str, Any]:
    """
    `/v1/agent/self`: the agent's configuration and its member entry, where
    ADDRESS:PORT is where the client reached it.  Every top-level value is
    an object, as Go's client decodes it into a map of maps.
    """
    return {
        "Config": {
            "Datacenter": datacenter,
            "PrimaryDatacenter": datacenter,
            "NodeName": node_name,
            "NodeID": "",
            "Revision": "",
            "Server": True,
            "Version": version,
        },
        "DebugConfig": {},
        "Member": {
            "Name": node_name,
            "Addr": address,
            "Port": port,
            "Tags": {"dc": datacenter, "role": "node", "build": version},
            "Status": 1,
            "ProtocolMin": 1,
            "ProtocolMax": 5,
            "ProtocolCur": 2,
            "DelegateMin": 2,
            "DelegateMax": 5,
            "DelegateCur": 4,
        },
        "Meta": {},
        "Stats": {},
    }


def label_name(key: str) -> str:
    """A metadata key as part of a Prometheus label name (other characters become `_`)."""
    return LABEL_UNSAFE.sub("_", key)


def prometheus_group(instance: Instance) -> dict[str, Any]:
    """
    One target group of Prometheus' `http_sd_configs`: the instance's
    address, and its service, ID, tags (`,a,b,`, as Prometheus' Consul
    discovery joins them), health and metadata as `__meta_suite_*` labels.
    """
    labels = {
        "__meta_suite_service": instance.name,
        "__meta_suite_id": instance.id,
        "__meta_suite_tags": "," + ",".join(instance.tags) + ",",
        "__meta_suite_health": instance.status,
    }
    for key, value in service_meta(instance).items():
        labels["__meta_suite_meta_" + label_name(key)] = value
    return {"targets": [host_port(instance.host, instance.port)], "labels": labels}
