"""
Plugin command lines derived from settings declarations: every key
`some_key` is the option `--some-key` (list keys repeatable, booleans as
flags), and `--config FILE` reads the same keys from a TOML file.

As Twisted's own plugins do, the options are checked in `postOptions`: the
whole config (the file and the values given here) is loaded and validated
there, and a mistake is a L{usage.UsageError}, so `makeService` only builds.
"""

from collections.abc import Callable
from typing import Any, ClassVar

from twisted.python import usage

from suite.foundation.config import ConfigError, Key, Settings
from suite.foundation.version import describe_versions

CONFIG_HELP = "TOML config file; options given here override it"


def describe_default(value: object) -> str:
    """A default as --help shows it: on/off, words, `none` for empty, 300 for 300.0."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        value = " ".join(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value) or "none"


def _help(key: Key) -> str:
    suffix = " (repeatable)" if key.kind.repeatable else ""
    return f"{key.help}{suffix} [default: {describe_default(key.default)}]"


class ConfigMistake(usage.UsageError):
    """A mistake in the config file or in a value given on the command line."""


class ConfigOptions(usage.Options):
    """
    A plugin's command line, validated whole in `postOptions` by VALIDATE
    (the config path and the `overrides` given here -> what `makeService`
    builds from, kept as `validated`).

    twistd answers a UsageError with its whole usage text on standard output
    and the reason last; a config mistake is not a misuse of the command, so
    under twistd (a parent) it is the one line `error: REASON` on standard
    error and exit status 1, as it always was.
    """

    owners: ClassVar[dict[str, tuple[str, Key]]] = {}  # option -> (section, key)
    validate: Callable[[str | None, dict[str, dict[str, Any]]], object]
    overrides: dict[str, dict[str, Any]]
    validated: object

    def parseOptions(self, options: list[str] | None = None) -> None:
        try:
            super().parseOptions(options)
        except ConfigMistake as e:
            if self.parent is None:
                raise
            raise SystemExit(f"error: {e}") from None

    def postOptions(self) -> None:
        self.overrides = {}
        for option, (section, key) in self.owners.items():
            value: object
            if key.kind.repeatable:
                value = list(self.get(key.name, ())) or None
            elif key.kind.flag:
                value = True if self[option] else None
            else:
                value = self[option]
            if value is not None:
                self.overrides.setdefault(section, {})[key.name] = value
        try:
            self.validated = self.validate(self["config"], self.overrides)
        except ConfigError as e:
            raise ConfigMistake(str(e)) from None

    def opt_version(self) -> None:
        """Print the suite's, Twisted's and Python's versions and exit."""
        print(describe_versions())
        raise SystemExit(0)


def options_for(
    kinds: list[type[Settings]],
    description: str,
    validate: Callable[[str | None, dict[str, dict[str, Any]]], object],
    config_default: str | None = None,
) -> type[ConfigOptions]:
    """
    A L{ConfigOptions} class with --config and one option per key of KINDS,
    collecting what was given as `overrides` ({section: {key: value}}) for
    L{suite.foundation.config.load}, which VALIDATE does.  Defaults are shown
    in the help, not set as option values: only what the operator typed
    overrides the file.
    """
    parameters, flags, methods = [], [], {}
    owners = {}
    for kind in kinds:
        for key in kind.keys():
            if key.name == "enabled" or key.kind.table is not None:
                continue  # tables ([[logger.forward]]) are written in the config file only
            owners[key.option] = (kind.section, key)
            if key.kind.flag:
                flags.append([key.option, None, _help(key)])
            elif key.kind.repeatable:
                methods["opt_" + key.option.replace("-", "_")] = _repeatable(key)
            else:
                parameters.append([key.option, None, None, _help(key)])

    return type(
        "Options",
        (ConfigOptions,),
        {
            "__doc__": description,
            "synopsis": "[options]",
            "longdesc": description,
            "optParameters": [["config", "c", config_default, CONFIG_HELP], *parameters],
            "optFlags": flags,
            "owners": owners,
            "validate": staticmethod(validate),
            **methods,
        },
    )


def _repeatable(key: Key) -> Callable[[usage.Options, str], None]:
    def opt(self: usage.Options, value: str) -> None:
        self.setdefault(key.name, []).append(value)

    opt.__doc__ = _help(key)
    return opt
