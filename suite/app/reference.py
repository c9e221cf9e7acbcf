"""
The configuration reference, docs/configuration.md, written from the
settings declarations themselves: every key's type, default and help come
from the same `key(...)` that checks the file and makes the plugin option,
so the reference cannot drift from what the suite accepts.

    python -m suite.app.reference > docs/configuration.md

A key's type is read off its kind by what the kind refuses: the problem a
wrong value gets ("must be an integer", "must be at least 1") is exactly
what the reader needs to know, and a new kind it cannot name stops the
generator instead of being written as something vague.
"""

import dataclasses
import json
import re
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from suite.app.compose import PLAN_SECTIONS
from suite.app.tap import SERVICES
from suite.app.workers import AUTO, WorkersSettings
from suite.foundation.config import SECRET, FileMode, Key, Kind, Settings
from suite.foundation.declaration import ServiceDeclaration
from suite.net.tls import TLSSettings

COMMAND = "python -m suite.app.reference > docs/configuration.md"
PATH = "docs/configuration.md"

# Values no kind accepts: what each kind says about them names the kind.
_NOT_A_VALUE = object()
_FAR_BELOW = -(2**62)
_FAR_ABOVE = 2**62
_NO_CHOICE = "\x00"

INTRO = f"""\
# Configuration reference

<!-- Generated from the settings declarations by `{COMMAND}`
     (`make docs`); edit the declarations, not this file. -->

The suite reads one TOML file: `twistd suite --config FILE` (default
`etc/suite.toml`) runs every service whose section is present, unless the
section says `enabled = false`.  Each table below is one section of that file.

- **Checked whole before anything starts.** An unknown section or key, or a
  value of the wrong type or out of bounds, stops the start with one line naming
  the file, section, key, value and problem (the known keys are listed).
- **Relative paths** written in the file (and the path keys' defaults, when a
  file is read) mean paths beside that file, wherever the process runs; given
  on the command line, they are read from the working directory.  A listener
  string is Twisted's to read: write a `unix:` socket's path absolute.
- **Secrets**: where a key's meaning says so (the TLS files, tokens), it also
  takes `credential:NAME`, the file `NAME` in `$CREDENTIALS_DIRECTORY`
  (systemd's `LoadCredential=`).  A secret key's value is shown as `"{SECRET}"`
  in every message.
- **Command line**: every key `some_key` of a service's section, and of `[tls]`,
  is also the option `--some-key` of that service's own plugin (`twistd
  suite-echo --mode raw`): list keys are repeatable options, boolean keys are
  flags that turn them on, and what is given there overrides the file given with
  `--config`.  A single-service plugin runs its service whatever `enabled` says
  (so `enabled` is no option), and reads `[announce]` and `[metrics]` from its
  `--config` file only; the `suite` plugin's only options are `--config` and
  `--workers`.
- Durations are in seconds and sizes in bytes; a number may be written as an
  integer (`10` or `10.0`).
"""


def sections() -> list[tuple[type[Settings], ServiceDeclaration | None]]:
    """
    Every section, in the order an operator meets them: [tls] (which the
    services' tls_listen use), the services in the order they start, then
    the sections serving the whole suite.
    """
    ordered: list[tuple[type[Settings], ServiceDeclaration | None]] = [
        (WorkersSettings, None),
        (TLSSettings, None),
    ]
    ordered += [(declaration.settings, declaration) for declaration in SERVICES]
    ordered += [
        (kind, None) for kind in PLAN_SECTIONS if kind not in (TLSSettings, WorkersSettings)
    ]
    return ordered


def _refusal(kind: Kind, value: object) -> str | None:
    """The problem KIND finds with VALUE, without "must be "; None if it accepts it."""
    try:
        kind.check(value)
    except ValueError as e:
        return str(e).removeprefix("must be ")
    return None


def describe_kind(kind: Kind) -> str:
    """A key's type as the reference states it: "integer, at least 1", "one of `a`, `b`"."""
    if kind.flag:
        return "boolean"
    if kind.table is not None:
        return f"tables, each written `[[{kind.table.section}]]` (below)"
    if kind.repeatable:
        return "list of strings"
    what = _refusal(kind, _NOT_A_VALUE)
    if what in ("an integer", "a number"):
        noun = what.split()[-1]
        bounds = _refusal(kind, _FAR_BELOW) or _refusal(kind, _FAR_ABOVE)
        return f"{noun}, {bounds}" if bounds else noun
    if what == "a string":
        if kind.path_prefix == "":
            return "path"
        if kind.path_prefix is not None:
            return f"string; a path after {code(kind.path_prefix)}"
        allowed = _refusal(kind, _NO_CHOICE) or ""
        if allowed.startswith("one of "):
            words = allowed.removeprefix("one of ").split(", ")
            return "one of " + ", ".join(code(word) for word in words)
        return "string"
    if what is not None and what.endswith('or "auto"'):
        return f"integer ({what.split('(')[1].split(')')[0]}) or {code(json.dumps(AUTO))}"
    if what is not None and what.startswith("an inline table"):
        return "inline table"
    if what is not None and what.startswith("an octal mode"):
        return 'octal file mode (`"0640"` or `0o640`)'
    raise ValueError(f"a kind the reference cannot name (it says: must be {what})")


def toml_value(value: Any) -> str:
    """VALUE written as TOML writes it: `true`, `8192`, `10.0`, `"line"`, `["tcp:5001"]`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, FileMode):
        return json.dumps(str(value))
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if dataclasses.is_dataclass(value) and not any(vars(value).values()):
        return "{}"  # an inline table that leaves everything out (a route's match)
    raise ValueError(f"a default the reference cannot write in TOML: {value!r}")


def code(text: str) -> str:
    """TEXT as a Markdown code span, fenced by more backticks than it holds in a row."""
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    padding = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{padding}{text}{padding}{fence}"


def cell(text: str) -> str:
    """TEXT fit for one table cell: one line, `|` escaped (inside code spans too), no HTML."""
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;")


def default_of(key: Key) -> str:
    if key.secret and key.default:
        return code(json.dumps(SECRET))
    return code(toml_value(key.default))


def _summary(kind: type[Settings]) -> str:
    """The first paragraph of KIND's own docstring, if it has one (a dataclass makes one up)."""
    doc = kind.__dict__.get("__doc__") or ""
    if doc.startswith(kind.__name__ + "("):
        return ""
    return " ".join(doc.strip().split("\n\n")[0].split())


def section_lead(kind: type[Settings], declaration: ServiceDeclaration | None) -> str:
    """The sentences under a section's heading: what it is and who reads it."""
    if declaration is not None:
        return (
            f"{declaration.description} Run by `twistd suite` when this section is present; "
            f"alone by `twistd suite-{declaration.name}`, where every key here but `enabled` "
            "(and every key of `[tls]`) is the option `--key-name`."
        )
    if kind is WorkersSettings:
        reader = (
            "Written before the first table of the file; `--workers` on every plugin, "
            "the `suite` plugin's too."
        )
    elif kind is TLSSettings:
        reader = (
            "Serves every `tls_listen` of every section; its keys are also options of "
            "every single-service plugin."
        )
    else:
        reader = "Read from the config file by every plugin given one; no command-line options."
    return " ".join(part for part in (_summary(kind), reader) if part)


def describe_key(key: Key) -> str:
    """KEY's type; a secret one says so (its value is never shown in a message)."""
    described = describe_kind(key.kind)
    return f"{described}, secret" if key.secret else described


def table(keys: Sequence[Key]) -> Iterator[str]:
    yield "| key | type | default | meaning |"
    yield "| --- | --- | --- | --- |"
    for key in keys:
        row = (code(key.name), describe_key(key), default_of(key), key.help)
        yield "| " + " | ".join(cell(part) for part in row) + " |"


def render() -> str:
    """The whole reference, the same text for the same declarations."""
    lines = [INTRO]
    for kind, declaration in sections():
        heading = f"`[{kind.section}]`" if kind.section else "Top level"
        lines += [f"## {heading}", "", section_lead(kind, declaration), ""]
        lines += [*table(kind.keys()), ""]
        for key in kind.keys():
            if key.kind.table is not None:
                sub = key.kind.table
                lines += [f"### `[[{sub.section}]]`", "", _summary(sub), ""]
                lines += [*table(sub.keys()), ""]
    return "\n".join(lines)


def main(argv: Sequence[str] = ()) -> int:
    """Print the reference (the only argument understood is none)."""
    if argv:
        print(f"usage: {COMMAND}", file=sys.stderr)
        return 2
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
