"""
The TOML configuration, typed and validated.

A section is a frozen dataclass: each field is one key, declared with
L{key} (its kind, default and help), so the settings a service reads are
typed attributes and the same declaration yields the config check and the
plugin's command-line options.  Every mistake becomes one L{ConfigError}
line naming the file, section, key, value and problem, raised before
anything binds, so an operator never has to read a traceback to fix a typo.
"""

import dataclasses
import json
import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

COMMAND_LINE = "command line"
SECRET = "***"
LONGEST_SHOWN = 256


class ConfigError(Exception):
    """A user mistake in the configuration; str() is the one line to show."""


def _quote(value: Any) -> str:
    """Render a value the way it would be written in TOML, cut short if long."""
    try:
        shown = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        shown = repr(value)
    if len(shown) > LONGEST_SHOWN:
        shown = shown[:LONGEST_SHOWN] + "..."
    return shown


# Value kinds.  Each takes the TOML value and returns the typed value or
# raises ValueError with the problem; `from_text` turns a command-line string
# into the TOML value first.


@dataclass(frozen=True)
class Kind:
    """How one key's value is checked (from TOML) and read (from the command line)."""

    check: Callable[[Any], Any]
    from_text: Callable[[str], Any] = str
    repeatable: bool = False
    flag: bool = False


def _bounded(
    noun: str,
    accepted: tuple[type[int] | type[float], ...],
    convert: Callable[[Any], float],
    minimum: float,
    maximum: float | None,
) -> Kind:
    """A numeric kind: NOUN names it in errors; NaN and infinities are refused."""
    upper = float("inf") if maximum is None else maximum
    limits = f"at least {minimum:g}" + ("" if maximum is None else f" and at most {maximum:g}")

    def check(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, accepted):
            raise ValueError(f"must be {noun}")
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        if not minimum <= value <= upper:
            raise ValueError(f"must be {limits}")
        return convert(value)

    def from_text(text: str) -> object:
        try:
            return convert(text)
        except ValueError:
            raise ValueError(f"must be {noun}") from None

    return Kind(check, from_text)


def integer(minimum: int, maximum: int | None = None) -> Kind:
    return _bounded("an integer", (int,), int, minimum, maximum)


def number(minimum: float, maximum: float | None = None) -> Kind:
    return _bounded("a number", (int, float), float, minimum, maximum)


def _check_boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


BOOLEAN = Kind(_check_boolean, flag=True)


def text(validate: Callable[[str], None] | None = None) -> Kind:
    def check(value: object) -> str:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        if validate is not None:
            validate(value)
        return value

    return Kind(check)


def choice(*allowed: str) -> Kind:
    def validate(value: str) -> None:
        if value not in allowed:
            raise ValueError("must be one of " + ", ".join(allowed))

    return text(validate)


def string_list(validate: Callable[[str], object] | None = None) -> Kind:
    """A list of strings, each passed to VALIDATE (which raises ValueError) when given."""

    def check(value: object) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError("must be a list of strings")
        if validate is not None:
            for item in value:
                validate(item)
        return tuple(value)

    return Kind(check, repeatable=True)


STRING_LIST = string_list()


class FileMode(int):
    """Permission bits, shown in octal as chmod takes them ("0640", not 416)."""

    def __str__(self) -> str:
        return f"0{self:o}"


# Files the suite writes (records, the registry's store) hold what clients
# sent: readable by the owner's group (a log reader), never by everyone,
# whatever the umask.
FILE_MODE = FileMode(0o640)
_OCTAL = re.compile(r"(0o|0)?([0-7]{1,4})")


def _check_file_mode(value: object) -> int:
    """An octal string ("0640", "0o640") or an integer (0o640 in TOML): permission bits only."""
    if isinstance(value, str):
        found = _OCTAL.fullmatch(value)
        if found is None:
            raise ValueError('must be an octal mode such as "0640"')
        value = int(found[2], 8)
    elif isinstance(value, bool) or not isinstance(value, int):
        raise ValueError('must be an octal mode such as "0640"')
    if not 0 <= value <= 0o777:
        raise ValueError(
            "must hold permission bits only (0 to 0o777; no setuid, setgid or sticky bit, "
            'and an integer is decimal: write "0640" or 0o640)'
        )
    return FileMode(value)


FILE_MODE_KIND = Kind(_check_file_mode)


@dataclass(frozen=True)
class Key:
    """One configuration key; also the plugin option --KEY-WITH-DASHES."""

    name: str
    kind: Kind
    default: Any
    help: str
    secret: bool = False

    @property
    def option(self) -> str:
        return self.name.replace("_", "-")


def key(kind: Kind, default: Any, help: str, secret: bool = False) -> Any:
    """Declare a settings field as a configuration key; a SECRET one is shown as "***"."""
    return field(default=default, metadata={"kind": kind, "help": help, "secret": secret})


@dataclass(frozen=True, kw_only=True)
class Settings:
    """
    The validated values of one TOML table.  Subclasses are frozen,
    keyword-only dataclasses that name their table in SECTION and declare
    each key with L{key}.  `origins` remembers where each value came from, so
    that checks made later (endpoint strings, certificate files) still name
    the file and key in their error.
    """

    section: ClassVar[str]
    origins: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def keys(cls) -> list[Key]:
        return [
            Key(f.name, f.metadata["kind"], f.default, f.metadata["help"], f.metadata["secret"])
            for f in dataclasses.fields(cls)
            if "kind" in f.metadata
        ]

    def origin(self, name: str) -> str:
        return self.origins.get(name, "default")

    def error(self, name: str, problem: str, value: Any = None) -> ConfigError:
        """A ConfigError for key NAME of this section, naming where it was set."""
        if value is None:
            value = getattr(self, name)
        if any(k.secret for k in self.keys() if k.name == name):
            value = SECRET
        return problem_at(self.origin(name), self.section, name, value, problem)


class Listening(Protocol):
    """
    A section with listeners (every service's, and [metrics]): what parsing
    its listen strings and deciding its TLS ask of it.
    """

    @property
    def section(self) -> str: ...
    @property
    def listen(self) -> tuple[str, ...]: ...
    @property
    def tls_listen(self) -> tuple[str, ...]: ...
    def error(self, name: str, problem: str, value: Any = None) -> ConfigError: ...


@dataclass(frozen=True, kw_only=True)
class ServiceSettings(Settings):
    """What every service section has: whether it runs, and where it listens."""

    enabled: bool = key(BOOLEAN, True, "run this service (a present section is enabled)")
    listen: tuple[str, ...] = key(STRING_LIST, (), "endpoint to listen on")
    tls_listen: tuple[str, ...] = key(STRING_LIST, (), "stream endpoint served through TLS")
    reuse_port: bool = key(
        BOOLEAN,
        False,
        "bind tcp:, tcp6: and udp: listeners with SO_REUSEPORT, so several processes share them",
    )


def listen(*defaults: str) -> Any:
    """The `listen` key with a service's own default listeners."""
    return key(STRING_LIST, tuple(defaults), "endpoint to listen on")


def problem_at(origin: str, section: str, name: str, value: Any, problem: str) -> ConfigError:
    if origin == COMMAND_LINE:
        where = f"{origin}: [{section}] --{name.replace('_', '-')} {_quote(value)}"
    else:
        where = f"{origin}: [{section}] {name} = {_quote(value)}"
    return ConfigError(f"{where}: {problem}")


def read_toml(path: str) -> dict:
    """Parse PATH; a missing file or a syntax error is one line with file and line."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file: {e.strerror}") from None
    except UnicodeDecodeError as e:
        line = e.object[: e.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 (byte 0x{e.object[e.start]:02x})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}:{_toml_line(e)}: invalid TOML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid TOML: arrays or tables nested too deeply") from None


def _toml_line(error: tomllib.TOMLDecodeError) -> str:
    """The line number: an attribute from Python 3.14, only in the text before."""
    lineno = getattr(error, "lineno", None)
    if lineno is None:
        found = re.search(r"line (\d+)", str(error))
        lineno = found.group(1) if found else "?"
    return str(lineno)


def settings_for(
    kind: type[Settings],
    table: Any,
    origin: str,
    overrides: dict | None = None,
) -> Settings:
    """
    Validate one TOML TABLE (from ORIGIN) as settings of KIND, then apply
    OVERRIDES (command-line values: text, read by each key's kind).
    """
    if not isinstance(table, dict):
        raise ConfigError(f"{origin}: [{kind.section}] must be a table, not {_quote(table)}")
    keyed = {k.name: k for k in kind.keys()}
    values, origins = {}, {}
    for layer_origin, layer in ((origin, table), (COMMAND_LINE, overrides or {})):
        for name, value in layer.items():
            declared = keyed.get(name)
            if declared is None:
                known = ", ".join(sorted(keyed))
                raise problem_at(
                    layer_origin, kind.section, name, value, f"unknown key (known: {known})"
                )
            try:
                if layer_origin == COMMAND_LINE and isinstance(value, str):
                    value = declared.kind.from_text(value)
                values[name] = declared.kind.check(value)
            except ValueError as e:
                shown = SECRET if declared.secret else value
                raise problem_at(layer_origin, kind.section, name, shown, str(e)) from None
            origins[name] = layer_origin
    return kind(**values, origins=origins)


def load(
    path: str | None,
    kinds: list[type[Settings]],
    overrides: dict | None = None,
    only_listed: bool = False,
) -> dict[str, Settings]:
    """
    Read PATH (or nothing) into settings of each of KINDS, by section name.

    With ONLY_LISTED false (the `suite` plugin) every table of the file must be
    a known section, and a service section is returned only when present and
    enabled.  With ONLY_LISTED true (a single-service plugin) the other tables
    are ignored and the listed sections are always returned.
    """
    document = read_toml(path) if path else {}
    origin = path or "default"
    overrides = overrides or {}
    by_name = {k.section: k for k in kinds}
    if not only_listed:
        for name in document:
            if name not in by_name:
                known = ", ".join(sorted(by_name))
                raise ConfigError(f"{origin}: [{name}]: unknown section (known: {known})")
    result = {}
    for kind in kinds:
        present = kind.section in document
        settings = settings_for(
            kind, document.get(kind.section, {}), origin, overrides.get(kind.section)
        )
        if (
            isinstance(settings, ServiceSettings)
            and not only_listed
            and not (present and settings.enabled)
        ):
            continue
        result[kind.section] = settings
    return result
