"""
TOML configuration and command-line options, typed and validated (SPEC §2-§3).

Every mistake becomes one L{ConfigError} line naming the file, section, key,
value and problem, raised before anything binds, so an operator never has to
read a traceback to fix a typo.
"""

import json
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any, Callable

from twisted.python import usage

COMMAND_LINE = "command line"


class ConfigError(Exception):
    """A user mistake in the configuration; str() is the one line to show."""


def _quote(value: Any) -> str:
    """Render a value the way it would be written in TOML."""
    try:
        return json.dumps(value)
    except TypeError:
        return repr(value)


# Value types.  Each takes the TOML value and returns the typed value or raises
# ValueError with the problem; `from_text` turns a command-line string into
# the TOML value first.


@dataclass(frozen=True)
class Kind:
    """How one key's value is checked (from TOML) and read (from the command line)."""

    check: Callable[[Any], Any]
    from_text: Callable[[str], Any] = str
    repeatable: bool = False
    flag: bool = False


def _bounded(noun: str, accepted: tuple, convert: Callable, minimum, maximum) -> Kind:
    """A numeric kind: NOUN names it in errors; NaN fails the range check too."""
    upper = float("inf") if maximum is None else maximum
    limits = f"at least {minimum:g}" + ("" if maximum is None else f" and at most {maximum:g}")

    def check(value):
        if isinstance(value, bool) or not isinstance(value, accepted):
            raise ValueError(f"must be {noun}")
        if not minimum <= value <= upper:
            raise ValueError(f"must be {limits}")
        return convert(value)

    def from_text(text):
        try:
            return convert(text)
        except ValueError:
            raise ValueError(f"must be {noun}") from None

    return Kind(check, from_text)


def integer(minimum: int, maximum: int | None = None) -> Kind:
    return _bounded("an integer", (int,), int, minimum, maximum)


def number(minimum: float, maximum: float | None = None) -> Kind:
    return _bounded("a number", (int, float), float, minimum, maximum)


def _check_boolean(value):
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


BOOLEAN = Kind(_check_boolean, flag=True)


def text(validate: Callable[[str], None] | None = None) -> Kind:
    def check(value):
        if not isinstance(value, str):
            raise ValueError("must be a string")
        if validate is not None:
            validate(value)
        return value

    return Kind(check)


def choice(*allowed: str) -> Kind:
    def validate(value):
        if value not in allowed:
            raise ValueError("must be one of " + ", ".join(allowed))

    return text(validate)


def _check_string_list(value):
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("must be a list of strings")
    return tuple(value)


STRING_LIST = Kind(_check_string_list, repeatable=True)


@dataclass(frozen=True)
class Key:
    """One configuration key; also the plugin option --KEY-WITH-DASHES."""

    name: str
    kind: Kind
    default: Any
    help: str

    @property
    def option(self) -> str:
        return self.name.replace("_", "-")


@dataclass(frozen=True)
class Section:
    """A TOML table: a service's settings, or [tls]."""

    name: str
    keys: tuple[Key, ...]
    description: str = ""
    service: bool = True
    keyed: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "keyed", {k.name: k for k in self.keys})


ENABLED = Key("enabled", BOOLEAN, True, "run this service (a present section is enabled)")


class Settings:
    """
    One validated section.  It remembers where each value came from so that
    checks made later (endpoint strings, certificate files) still name the
    file and key in their error.
    """

    def __init__(self, section: Section, values: dict, origins: dict):
        self.section = section
        self._values = values
        self._origins = origins

    def __getattr__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __repr__(self):
        return f"<Settings [{self.section.name}] {self._values!r}>"

    def origin(self, key: str) -> str:
        return self._origins.get(key, "default")

    def error(self, key: str, problem: str, value: Any = None) -> ConfigError:
        """A ConfigError for KEY of this section, naming where it was set."""
        if value is None:
            value = self._values.get(key)
        return problem_at(self.origin(key), self.section.name, key, value, problem)


def problem_at(origin: str, section: str, key: str, value: Any, problem: str) -> ConfigError:
    if origin == COMMAND_LINE:
        where = f"{origin}: [{section}] --{key.replace('_', '-')} {_quote(value)}"
    else:
        where = f"{origin}: [{section}] {key} = {_quote(value)}"
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
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}:{_toml_line(e)}: invalid TOML: {e}") from None


def _toml_line(error: tomllib.TOMLDecodeError) -> str:
    """The line number: an attribute from Python 3.14, only in the text before."""
    lineno = getattr(error, "lineno", None)
    if lineno is None:
        found = re.search(r"line (\d+)", str(error))
        lineno = found.group(1) if found else "?"
    return str(lineno)


def settings_for(
    section: Section,
    table: Any,
    origin: str,
    overrides: dict | None = None,
) -> Settings:
    """
    Validate one TOML TABLE (from ORIGIN) for SECTION, then apply OVERRIDES
    (command-line values: text, read by each key's kind).
    """
    if not isinstance(table, dict):
        raise ConfigError(f"{origin}: [{section.name}] must be a table, not {_quote(table)}")
    values = {k.name: k.default for k in section.keys}
    origins = {}
    for layer_origin, layer in ((origin, table), (COMMAND_LINE, overrides or {})):
        for name, value in layer.items():
            key = section.keyed.get(name)
            if key is None:
                known = ", ".join(sorted(section.keyed))
                raise problem_at(
                    layer_origin, section.name, name, value, f"unknown key (known: {known})"
                )
            try:
                if layer_origin == COMMAND_LINE and isinstance(value, str):
                    value = key.kind.from_text(value)
                values[name] = key.kind.check(value)
            except ValueError as e:
                raise problem_at(layer_origin, section.name, name, value, str(e)) from None
            origins[name] = layer_origin
    return Settings(section, values, origins)


def load(path: str | None, sections: list[Section], overrides: dict | None = None,
         only_listed: bool = False) -> dict[str, Settings]:
    """
    Read PATH (or nothing) into Settings for each of SECTIONS.

    With ONLY_LISTED false (the `suite` plugin) every table of the file must be
    a known section, and a service section is returned only when present and
    enabled.  With ONLY_LISTED true (a single-service plugin) the other tables
    are ignored and the listed sections are always returned.
    """
    document = read_toml(path) if path else {}
    origin = path or "default"
    overrides = overrides or {}
    by_name = {s.name: s for s in sections}
    if not only_listed:
        for name, table in document.items():
            if name not in by_name:
                known = ", ".join(sorted(by_name))
                raise ConfigError(f"{origin}: [{name}]: unknown section (known: {known})")
    result = {}
    for section in sections:
        present = section.name in document
        settings = settings_for(
            section, document.get(section.name, {}), origin, overrides.get(section.name)
        )
        if section.service and not only_listed and not (present and settings.enabled):
            continue
        result[section.name] = settings
    return result


def options_for(sections: list[Section], description: str) -> type[usage.Options]:
    """
    A usage.Options class with --config and one option per key of SECTIONS
    (list keys repeatable, booleans as flags), collecting what was given as
    `overrides` for L{load}.
    """
    parameters, flags, methods = [], [], {}
    owners = {}
    for section in sections:
        for key in section.keys:
            if key is ENABLED:
                continue
            owners[key.option] = (section.name, key)
            if key.kind.flag:
                flags.append([key.option, None, key.help])
            elif key.kind.repeatable:
                methods["opt_" + key.option.replace("-", "_")] = _repeatable(key)
            else:
                parameters.append([key.option, None, None, key.help])

    def postOptions(self):
        self.overrides = {}
        for option, (section_name, key) in owners.items():
            if key.kind.repeatable:
                if not self.get(key.name):
                    continue
                value = list(self[key.name])
            elif key.kind.flag:
                if not self[option]:
                    continue
                value = True
            else:
                if self[option] is None:
                    continue
                value = self[option]
            self.overrides.setdefault(section_name, {})[key.name] = value

    attributes = {
        "__doc__": description,
        "synopsis": "[options]",
        "longdesc": description,
        "optParameters": [["config", "c", None, "TOML config file (SPEC §3)"], *parameters],
        "optFlags": flags,
        "postOptions": postOptions,
        **methods,
    }
    return type("Options", (usage.Options,), attributes)


def _repeatable(key: Key):
    def opt(self, value):
        self.setdefault(key.name, []).append(value)

    opt.__doc__ = key.help + " (repeatable)"
    return opt
