"""
The TOML configuration, typed and validated.

A section is a frozen dataclass: each field is one key, declared with
L{key} (its kind, default and help), so the settings a service reads are
typed attributes and the same declaration yields the config check and the
plugin's command-line options.  Every mistake becomes one L{ConfigError}
line naming the file, section, key, value and problem, raised before
anything binds, so an operator never has to read a traceback to fix a typo.

A relative path written in a config file (or a path key's default, when a
file is read) means a path beside that file, wherever the process runs:
`twistd suite --config /etc/suite/suite.toml` from `/` and `make run` from a
checkout read the same files.  Paths given on the command line keep
meaning paths from the working directory, as every command's do.
"""

import dataclasses
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

COMMAND_LINE = "command line"
SECRET = "***"
LONGEST_SHOWN = 256
CREDENTIAL = "credential:"
# An unknown key whose name holds one of these is probably a misspelt secret
# (`tokn = "…"`): its value is never shown.
SECRET_LOOKING = ("tok", "secret", "pas", "pw", "auth", "cred", "key")


class ConfigError(Exception):
    """A user mistake in the configuration; str() is the one line to show."""


class Problems:
    """
    Where config mistakes go.  At start the first one stops everything
    (raised as usual); `suite check` collects them instead, so that one run
    names every mistake, one line each.
    """

    def __init__(self, collect: bool = False):
        self.collect = collect
        self.found: list[ConfigError] = []

    def report(self, error: ConfigError) -> None:
        """ERROR is noted (collecting) or raised."""
        if not self.collect:
            raise error
        self.found.append(error)

    @contextmanager
    def step(self) -> Iterator[None]:
        """Run a check; its ConfigError is reported."""
        try:
            yield
        except ConfigError as e:
            self.report(e)


def _quote(value: Any) -> str:
    """Render a value the way it would be written in TOML, cut short if long."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # inf, -inf, nan: TOML's spelling (JSON has none)
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
    # A path key's values that start with it hold a path after it ("" for
    # every value; "sqlite:" for the store); None: not a path.
    path_prefix: str | None = None
    # A list of tables (`[[logger.forward]]`), each read as settings of this
    # kind: set in the config file only, never on the command line.
    table: "type[Settings] | None" = None

    def path_in(self, value: Any) -> str | None:
        """The file VALUE names: None when it names none ("", "-", credential:, memory)."""
        prefix = self.path_prefix
        if prefix is None or not isinstance(value, str) or not value.startswith(prefix):
            return None
        named = value.removeprefix(prefix)
        if not named or named == "-" or named.startswith(CREDENTIAL):
            return None
        return named

    def relocate(self, value: Any, directory: str) -> Any:
        """VALUE, meaning the same file read from DIRECTORY as from anywhere."""
        if self.table is not None:
            return tuple(relocated(item, directory) for item in value) if value else value
        named = self.path_in(value)
        if named is None or os.path.isabs(named):
            return value
        return f"{self.path_prefix}{os.path.join(directory, named)}"


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


def path(validate: Callable[[str], None] | None = None, prefix: str = "") -> Kind:
    """
    A path (a string): relative, it means a path beside the config file.
    With PREFIX, only values starting with it hold a path, after it
    (`sqlite:PATH`; other values, such as `memory`, are not paths); "",
    "-" (standard output) and `credential:NAME` name no path.
    """
    return dataclasses.replace(text(validate), path_prefix=prefix)


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


def tables(kind: "type[Settings]") -> Kind:
    """
    A list of tables (TOML's `[[section.key]]`), each checked as settings of
    KIND (whose `section` names them in errors, `logger.forward`).  Read by
    L{_checked}, which knows the file each came from.
    """

    def check(value: object) -> tuple:
        if isinstance(value, tuple) and all(isinstance(item, kind) for item in value):
            return value  # already read
        if isinstance(value, list) and all(isinstance(item, dict) for item in value):
            try:
                return tuple(settings_for(kind, item, "table") for item in value)
            except ConfigError as e:
                raise ValueError(str(e)) from None
        raise ValueError(f"must be a list of tables ([[{kind.section}]])")

    def from_text(text: str) -> object:
        raise ValueError(f"is set in the config file only, as [[{kind.section}]] tables")

    return Kind(check, from_text, table=kind)


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
    # Paths as written, where they were read beside the config file: what
    # an error shows, so the operator finds the line they wrote.
    written: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def keys(cls) -> list[Key]:
        return [
            Key(f.name, f.metadata["kind"], f.default, f.metadata["help"], f.metadata["secret"])
            for f in dataclasses.fields(cls)
            if "kind" in f.metadata
        ]

    @classmethod
    def kind_of(cls, name: str) -> Kind:
        return next(k.kind for k in cls.keys() if k.name == name)

    def origin(self, name: str) -> str:
        return self.origins.get(name, "default")

    def error(self, name: str, problem: str, value: Any = None) -> ConfigError:
        """A ConfigError for key NAME of this section, naming where it was set."""
        means = None
        if value is None and name in self.written:
            # As written, then the file it means: `"tls/x.crt" (/etc/suite/tls/x.crt)`.
            means = self.kind_of(name).path_in(getattr(self, name))
            value = self.written[name]
        elif value is None:
            value = getattr(self, name)
        if any(k.secret for k in self.keys() if k.name == name):
            value = SECRET
        return problem_at(self.origin(name), self.section, name, value, problem, means)


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


LISTEN_HELP = (
    "server endpoints: tcp:PORT, tcp6:PORT, unix:PATH, systemd:…; "
    "udp:PORT[:interface=ADDR] where the service has a datagram side"
)


@dataclass(frozen=True, kw_only=True)
class ServiceSettings(Settings):
    """What every service section has: whether it runs, and where it listens."""

    enabled: bool = key(BOOLEAN, True, "run this service (a present section is enabled)")
    listen: tuple[str, ...] = key(STRING_LIST, (), LISTEN_HELP)
    tls_listen: tuple[str, ...] = key(
        STRING_LIST,
        (),
        "stream endpoints (tcp:, tcp6:, unix:, systemd:) served through TLS with [tls]",
    )
    reuse_port: bool = key(
        BOOLEAN,
        False,
        "bind tcp:, tcp6: and udp: listeners with SO_REUSEPORT, so several processes share them",
    )


TOP_LEVEL = ""  # the section name of the keys written before any table


def listen(*defaults: str) -> Any:
    """The `listen` key with a service's own default listeners."""
    return key(STRING_LIST, tuple(defaults), LISTEN_HELP)


def problem_at(
    origin: str, section: str, name: str, value: Any, problem: str, means: str | None = None
) -> ConfigError:
    """The one line: where VALUE was set (and the file it MEANS, if relative), and PROBLEM."""
    table = f"[{section}] " if section else ""  # "": a key at the top of the file
    if origin == COMMAND_LINE:
        where = f"{origin}: {table}--{name.replace('_', '-')} {_quote(value)}"
    else:
        where = f"{origin}: {table}{name} = {_quote(value)}"
    if means is not None:
        where += f" ({means})"
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


def looks_secret(name: str) -> bool:
    lowered = name.lower()
    return any(part in lowered for part in SECRET_LOOKING)


def settings_for(
    kind: type[Settings],
    table: Any,
    origin: str,
    overrides: dict | None = None,
    directory: str | None = None,
    problems: Problems | None = None,
) -> Settings:
    """
    Validate one TOML TABLE (from ORIGIN, a file in DIRECTORY: relative
    paths there and in defaults are read from it) as settings of KIND, then
    apply OVERRIDES (command-line values: text, read by each key's kind).
    Each mistake goes to PROBLEMS (raised by default); a key in error keeps
    its default.
    """
    problems = problems or Problems()
    if not isinstance(table, dict):
        problems.report(
            ConfigError(f"{origin}: [{kind.section}] must be a table, not {_quote(table)}")
        )
        table = {}
    keyed = {k.name: k for k in kind.keys()}
    values, origins, written = {}, {}, {}
    for layer_origin, layer in ((origin, table), (COMMAND_LINE, overrides or {})):
        for name, value in layer.items():
            with problems.step():
                values[name] = _checked(kind, keyed.get(name), name, value, layer_origin)
                origins[name] = layer_origin
    if directory is not None:
        for declared in keyed.values():
            if origins.get(declared.name) != COMMAND_LINE:
                value = values.get(declared.name, declared.default)
                relocated = declared.kind.relocate(value, directory)
                if relocated is not value:
                    values[declared.name] = relocated
                    written[declared.name] = value
    return kind(**values, origins=origins, written=written)


def relocated(settings: "Settings", directory: str) -> "Settings":
    """SETTINGS (one table of a list) with its relative paths read from DIRECTORY."""
    changes, written = {}, dict(settings.written)
    for declared in settings.keys():
        if settings.origin(declared.name) == COMMAND_LINE:
            continue
        value = getattr(settings, declared.name)
        moved = declared.kind.relocate(value, directory)
        if moved is not value:
            changes[declared.name] = moved
            written[declared.name] = value
    if not changes:
        return settings
    return dataclasses.replace(settings, **changes, written=written)


def _checked(
    kind: type[Settings], declared: Key | None, name: str, value: Any, origin: str
) -> Any:
    """VALUE of key NAME of KIND's section, from ORIGIN, checked; or a ConfigError."""
    if declared is None:
        known = ", ".join(sorted(k.name for k in kind.keys()))
        shown = SECRET if looks_secret(name) else value
        raise problem_at(origin, kind.section, name, shown, f"unknown key (known: {known})")
    table = declared.kind.table
    if table is not None and origin != COMMAND_LINE:
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise problem_at(
                origin, kind.section, name, value, f"must be tables, written [[{table.section}]]"
            )
        return tuple(settings_for(table, item, origin) for item in value)
    try:
        if origin == COMMAND_LINE and isinstance(value, str):
            value = declared.kind.from_text(value)
        return declared.kind.check(value)
    except ValueError as e:
        shown = SECRET if declared.secret else value
        raise problem_at(origin, kind.section, name, shown, str(e)) from None


def load(
    path: str | None,
    kinds: list[type[Settings]],
    overrides: dict | None = None,
    only_listed: bool = False,
    problems: Problems | None = None,
    known_sections: tuple[str, ...] = (),
) -> dict[str, Settings]:
    """
    Read PATH (or nothing) into settings of each of KINDS, by section name;
    mistakes go to PROBLEMS (raised by default).

    With ONLY_LISTED false (the `suite` plugin) every table of the file must be
    a known section, and a service section is returned only when present and
    enabled.  With ONLY_LISTED true (a single-service plugin) the listed
    sections are always returned and the file's other tables are not read,
    but each must still be a section the suite knows (KNOWN_SECTIONS, when
    given): a misspelt `[echoo]` is a mistake, not a silent start on defaults.
    """
    problems = problems or Problems()
    document = read_toml(path) if path else {}
    origin = path or "default"
    directory = os.path.dirname(os.path.abspath(path)) if path else None
    overrides = overrides or {}
    by_name = {k.section: k for k in kinds}
    known = set(by_name) | set(known_sections)
    # Keys before the first table (`workers = 2`) are the top-level section "".
    top = {
        name: value
        for name, value in document.items()
        if not isinstance(value, dict) and name not in known  # `echo = 1`: not a table
    }
    if top:
        document = {name: value for name, value in document.items() if name not in top}
        if TOP_LEVEL in known:
            document[TOP_LEVEL] = top
        else:  # a plugin without top-level keys, given a file written for another
            document.update(top)
    if not only_listed or known_sections:
        sections = ", ".join(sorted(filter(None, known)))
        for name in document:
            if name not in known:
                problems.report(
                    ConfigError(f"{origin}: [{name}]: unknown section (known: {sections})")
                )
    result = {}
    for kind in kinds:
        present = kind.section in document
        settings = settings_for(
            kind,
            document.get(kind.section, {}),
            origin,
            overrides.get(kind.section),
            directory,
            problems,
        )
        if (
            isinstance(settings, ServiceSettings)
            and not only_listed
            and not (present and settings.enabled)
        ):
            continue
        result[kind.section] = settings
    return result
