"""
Consul's service definition (the body of `PUT /v1/agent/service/register`)
read into an L{Instance} with its L{Check}s, as Consul's agent reads it.

Keys are matched case-insensitively with `_` ignored, since Go's decoder
ignores case and py-consul sends snake_case (`name`, `enable_tag_override`,
`DeregisterCriticalServiceAfter`); keys Consul would ignore, or that
describe what this registry does not keep (`TaggedAddresses`, `Connect`,
`Kind`), are ignored.  A value of the wrong JSON type is refused as Go's
decoder refuses it, the whole registration with it.  Durations are Go
duration strings or numbers of nanoseconds.

What Consul fills in is filled in the same way: the ID is the name, the
address the caller's, the weights 1 and 1, a check's ID `service:ID` (or
`service:ID:N` counting from 1 when there are several), its name
`Service 'NAME' check`, its initial status critical, its timeout 10 s, and
an interval under one second becomes one second.  The metadata key
`description` is the instance's description.  Only TCP, HTTP and TTL
checks, and the suite's own Logs checks, exist here; a definition of any
other kind is refused.

A Logs check, `{"Logs": {"App": "web", "Hostname": "h1"}, "MaxSilence":
"60s", "SilenceStatus": "warning"}`, names the syslog app the instance logs
as (and the host it logs from: by default the instance's own) and the
silence after which it turns SilenceStatus (`warning` by default, or
`critical`).  Nothing runs it on an interval: the collector tells the name
server who logged.  It starts passing unless `Status` says otherwise, so
that a new instance is not taken out of DNS before it had a chance to log;
its name is `Service 'NAME' logs`.  MaxSilence is at least one second: a
bare number is nanoseconds, as every duration here, and `60` would
otherwise be a silence of 60 ns.

Each refusal is an L{Invalid} whose text is Consul's answer (a 400).  What
the registry itself checks (the name's syntax, the host, the lengths) is
left to L{Instance.validate}.
"""

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from suite.contracts.names import Invalid
from suite.names.allowed import shown
from suite.names.go_values import duration_of_nanoseconds, parse_duration
from suite.names.registry import (
    CRITICAL,
    MAINTENANCE_CHECK,
    PASSING,
    STATUSES,
    WARNING,
    Check,
    Instance,
)

DEFAULT_TIMEOUT = 10.0  # seconds, Consul's for TCP and HTTP checks
MIN_INTERVAL = 1.0  # seconds: Consul runs no check more often
# Keys of check kinds Consul has and this registry does not run.
OTHER_KINDS = (
    "args",
    "scriptargs",
    "script",
    "grpc",
    "udp",
    "h2ping",
    "dockercontainerid",
    "aliasnode",
    "aliasservice",
    "osservice",
)
DECODE_FAILED = "Request decode failed: "
MIN_SILENCE = 1.0  # seconds: the shortest MaxSilence of a Logs check
# A Logs check's own keys, meaningless on any other check.
LOGS_KEYS = {"maxsilence": "MaxSilence", "silencestatus": "SilenceStatus"}


def key_of(name: str) -> str:
    """How a key is matched: lower case, without `_`."""
    return name.replace("_", "").lower()


def keyed(value: object, where: str) -> dict[str, Any]:
    """A JSON object's members by L{key_of} (the last of equal keys counts)."""
    if not isinstance(value, dict):
        raise _wrong_type(where, "an object", value)
    return {key_of(name): member for name, member in value.items()}


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _wrong_type(where: str, wanted: str, value: object) -> Invalid:
    return Invalid(
        f"{DECODE_FAILED}{where}: cannot take a JSON {_json_type(value)}, needs {wanted}"
    )


def text_of(fields: Mapping[str, Any], key: str, where: str, default: str = "") -> str:
    value = fields.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise _wrong_type(where, "a string", value)
    return value


def integer_of(fields: Mapping[str, Any], key: str, where: str, default: int = 0) -> int:
    value = fields.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong_type(where, "an integer", value)
    return value


def flag_of(fields: Mapping[str, Any], key: str, where: str) -> bool:
    value = fields.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _wrong_type(where, "true or false", value)
    return value


def strings_of(fields: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = fields.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _wrong_type(where, "an array of strings", value)
    return tuple(value)


def string_map_of(fields: Mapping[str, Any], key: str, where: str) -> dict[str, str]:
    value = fields.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _wrong_type(where, "an object of strings", value)
    return dict(value)


def seconds_of(fields: Mapping[str, Any], key: str, where: str) -> float:
    """
    A duration: a Go duration string or a number of nanoseconds (either at
    most an int64's); 0 when absent.
    """
    value = fields.get(key)
    if value is None or value == "":
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _wrong_type(where, "a duration", value)
    try:
        if isinstance(value, str):
            return parse_duration(value)
        return duration_of_nanoseconds(value)
    except ValueError as e:
        raise Invalid(f"{DECODE_FAILED}{e}") from None


def headers_of(fields: Mapping[str, Any], where: str) -> dict[str, list[str]]:
    value = fields.get("header")
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(values, list) and all(isinstance(v, str) for v in values)
        for values in value.values()
    ):
        raise _wrong_type(where, "an object of arrays of strings", value)
    return {name: list(values) for name, values in value.items()}


def parse_check(body: object, check_id: str, service: str, where: str) -> Check:
    """
    One check definition (BODY, a JSON object) of the service named
    SERVICE; CHECK_ID is its ID unless it names its own.
    """
    fields = keyed(body, where)
    if any(fields.get(other) for other in OTHER_KINDS):
        raise Invalid("Invalid check: only TCP, HTTP, TTL and Logs checks are run here")
    logs = fields.get("logs") is not None
    kind_fields = _logs_check(fields, where) if logs else _run_check(fields, where)
    status = text_of(fields, "status", f"{where}.Status", PASSING if logs else CRITICAL)
    if status not in STATUSES:
        raise Invalid("Status for checks must 'passing', 'warning', 'critical'")
    given_id = text_of(fields, "checkid", f"{where}.CheckID") or text_of(
        fields, "id", f"{where}.ID"
    )
    if given_id.startswith(MAINTENANCE_CHECK):
        raise Invalid(f"Invalid check: the ID {MAINTENANCE_CHECK}… is maintenance mode's")
    return Check(
        check_id=given_id or check_id,
        name=text_of(fields, "name", f"{where}.Name")
        or f"Service '{service}' {'logs' if logs else 'check'}",
        status=status,
        notes=text_of(fields, "notes", f"{where}.Notes"),
        deregister_after=max(
            seconds_of(
                fields, "deregistercriticalserviceafter", f"{where}.DeregisterCriticalServiceAfter"
            ),
            0.0,
        ),
        **kind_fields,
    )


def _run_check(fields: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The fields of a check the name server runs: TCP, HTTP or TTL."""
    tcp = text_of(fields, "tcp", f"{where}.TCP")
    http = text_of(fields, "http", f"{where}.HTTP")
    interval = seconds_of(fields, "interval", f"{where}.Interval")
    ttl = seconds_of(fields, "ttl", f"{where}.TTL")
    if interval > 0 and ttl > 0:
        raise Invalid("Invalid check: Interval and TTL cannot both be specified")
    if tcp or http:
        if interval <= 0:
            raise Invalid(
                "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or "
                "GRPC checks"
            )
        if tcp and http:
            raise Invalid("Invalid check: a check is either TCP or HTTP, not both")
    elif ttl <= 0:
        raise Invalid("Invalid check: one of TCP, HTTP, TTL or Logs must be specified")
    given = [name for key, name in LOGS_KEYS.items() if fields.get(key) not in (None, "")]
    if given:
        raise Invalid(f"Invalid check: {given[0]} is a Logs check's, given without Logs")
    if tcp:
        kind, target = "tcp", tcp
        _check_tcp_target(tcp)
    elif http:
        kind, target = "http", http
        _check_url(http)
    else:
        kind, target = "ttl", ""
    timeout = seconds_of(fields, "timeout", f"{where}.Timeout")
    return {
        "kind": kind,
        "target": target,
        "interval": max(interval, MIN_INTERVAL) if kind != "ttl" else 0.0,
        "timeout": timeout if timeout > 0 else DEFAULT_TIMEOUT,
        "ttl": ttl,
        "method": text_of(fields, "method", f"{where}.Method") or "GET",
        "header": headers_of(fields, f"{where}.Header"),
        "tls_skip_verify": flag_of(fields, "tlsskipverify", f"{where}.TLSSkipVerify"),
    }


def _logs_check(fields: Mapping[str, Any], where: str) -> dict[str, Any]:
    """
    The fields of a Logs check: the app (required) and host to hear from,
    MaxSilence (required) and SilenceStatus.  The check is told who logged
    and runs nothing, so a target to run or an Interval is refused.
    """
    if (
        text_of(fields, "tcp", f"{where}.TCP")
        or text_of(fields, "http", f"{where}.HTTP")
        or seconds_of(fields, "ttl", f"{where}.TTL") > 0
    ):
        raise Invalid("Invalid check: a check is Logs, or one of TCP, HTTP and TTL, not both")
    if seconds_of(fields, "interval", f"{where}.Interval") > 0:
        raise Invalid("Invalid check: a Logs check takes no Interval (its messages tell)")
    logs = keyed(fields["logs"], f"{where}.Logs")
    app = text_of(logs, "app", f"{where}.Logs.App")
    if not app:
        raise Invalid("Invalid check: Logs needs App, the syslog app name the service logs as")
    hostname = text_of(logs, "hostname", f"{where}.Logs.Hostname")
    if " " in hostname:
        raise Invalid(
            f"Invalid check: Logs.Hostname '{shown(hostname)}' must be a syslog hostname "
            "or an address, without spaces"
        )
    max_silence = seconds_of(fields, "maxsilence", f"{where}.MaxSilence")
    if max_silence < MIN_SILENCE:
        raise Invalid(
            'Invalid check: MaxSilence must be at least 1s for Logs checks ("60s", or a '
            "number of nanoseconds)"
        )
    silence_status = text_of(fields, "silencestatus", f"{where}.SilenceStatus", WARNING)
    if silence_status not in (WARNING, CRITICAL):
        raise Invalid("Invalid check: SilenceStatus must be 'warning' or 'critical'")
    return {
        "kind": "logs",
        "target": hostname,
        "app": app,
        "max_silence": max_silence,
        "silence_status": silence_status,
    }


def _check_tcp_target(target: str) -> None:
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise Invalid("Invalid check: TCP needs HOST:PORT")


def _check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # raises ValueError for a port out of range
    except ValueError:
        raise Invalid("Invalid check: HTTP needs an http:// or https:// URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid("Invalid check: HTTP needs an http:// or https:// URL")


def check_definitions(fields: Mapping[str, Any]) -> list[tuple[str, object]]:
    """
    (where, definition) of `Check` (ignored when empty, as Consul does)
    followed by those of `Checks`.
    """
    found: list[tuple[str, object]] = []
    single = fields.get("check")
    if single is not None and single != {}:
        found.append(("Check", single))
    several = fields.get("checks")
    if several is not None:
        if not isinstance(several, list):
            raise _wrong_type("Checks", "an array", several)
        found.extend((f"Checks[{number}]", check) for number, check in enumerate(several))
    return found


def parse_weights(fields: Mapping[str, Any]) -> tuple[int, int]:
    """Weights given: Go's zero for what is missing; not given at all: 1 and 1."""
    given = fields.get("weights")
    if given is None:
        return (1, 1)
    weights = keyed(given, "Weights")
    return (
        integer_of(weights, "passing", "Weights.Passing"),
        integer_of(weights, "warning", "Weights.Warning"),
    )


def parse_registration(body: object, caller: str) -> Instance:
    """
    The instance a service definition BODY (decoded JSON) registers;
    CALLER is the address the request came from.  Invalid: Consul's 400.
    """
    fields = keyed(body, "ServiceDefinition")
    name = text_of(fields, "name", "Name")
    if not name:
        raise Invalid("Missing service name")
    meta = string_map_of(fields, "meta", "Meta")
    description = meta.pop("description", "")
    instance_id = text_of(fields, "id", "ID") or name
    definitions = check_definitions(fields)
    numbered = len(definitions) > 1
    checks = [
        parse_check(
            definition,
            f"service:{instance_id}:{number}" if numbered else f"service:{instance_id}",
            name,
            where,
        )
        for number, (where, definition) in enumerate(definitions, 1)
    ]
    flag_of(fields, "enabletagoverride", "EnableTagOverride")  # accepted, and without effect
    return Instance(
        name=name,
        host=text_of(fields, "address", "Address") or caller,
        port=integer_of(fields, "port", "Port"),
        description=description,
        id=instance_id,
        tags=strings_of(fields, "tags", "Tags"),
        meta=meta,
        weights=parse_weights(fields),
        checks=checks,
        pinged=False,
    )
