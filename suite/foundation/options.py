"""
Plugin command lines derived from settings declarations: every key
`some_key` is the option `--some-key` (list keys repeatable, booleans as
flags), and `--config FILE` reads the same keys from a TOML file.
"""

from twisted.python import usage

from suite.foundation.config import Key, Settings
from suite.foundation.version import describe_versions

CONFIG_HELP = "TOML config file; options given here override it"


def describe_default(value) -> str:
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


def options_for(kinds: list[type[Settings]], description: str,
                config_default: str | None = None) -> type[usage.Options]:
    """
    A usage.Options class with --config and one option per key of KINDS,
    collecting what was given as `overrides` ({section: {key: value}}) for
    L{suite.foundation.config.load}.  Defaults are shown in the help, not set as
    option values: only what the operator typed overrides the file.
    """
    parameters, flags, methods = [], [], {}
    owners = {}
    for kind in kinds:
        for key in kind.keys():
            if key.name == "enabled":
                continue
            owners[key.option] = (kind.section, key)
            if key.kind.flag:
                flags.append([key.option, None, _help(key)])
            elif key.kind.repeatable:
                methods["opt_" + key.option.replace("-", "_")] = _repeatable(key)
            else:
                parameters.append([key.option, None, None, _help(key)])

    def postOptions(self):
        self.overrides = {}
        for option, (section, key) in owners.items():
            if key.kind.repeatable:
                value = list(self.get(key.name, ())) or None
            elif key.kind.flag:
                value = True if self[option] else None
            else:
                value = self[option]
            if value is not None:
                self.overrides.setdefault(section, {})[key.name] = value

    def opt_version(self):
        """Print the suite's, Twisted's and Python's versions and exit."""
        print(describe_versions())
        raise SystemExit(0)

    return type(
        "Options",
        (usage.Options,),
        {
            "opt_version": opt_version,
            "__doc__": description,
            "synopsis": "[options]",
            "longdesc": description,
            "optParameters": [["config", "c", config_default, CONFIG_HELP], *parameters],
            "optFlags": flags,
            "postOptions": postOptions,
            **methods,
        },
    )


def _repeatable(key: Key):
    def opt(self, value):
        self.setdefault(key.name, []).append(value)

    opt.__doc__ = _help(key)
    return opt
