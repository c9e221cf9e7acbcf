"""The configuration reference: generated from the declarations, checked in, complete, readable."""

import io
import re
import tomllib
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from suite.app import reference
from suite.app.compose import PLAN_SECTIONS
from suite.app.tap import SERVICES
from suite.foundation.config import (
    BOOLEAN,
    FILE_MODE,
    FILE_MODE_KIND,
    STRING_LIST,
    Key,
    Kind,
    choice,
    integer,
    number,
    path,
    text,
)

CHECKED_IN = Path(__file__).resolve().parents[2] / reference.PATH
EVERY_SECTION = [*PLAN_SECTIONS, *(declaration.settings for declaration in SERVICES)]
# A table row's cells are separated by the pipes that are not escaped.
CELL_SEPARATOR = re.compile(r"(?<!\\)\|")


def sections_of(markdown: str) -> dict[str, str]:
    """
    Each `## [section]` of MARKDOWN, by section name, with its text up to the
    next; "## Top level" (the keys before any table) as "".
    """
    parts = re.split(r"^## (?:`\[(\w+)\]`|Top level)$", markdown, flags=re.MULTILINE)
    return {name or "": text for name, text in zip(parts[1::2], parts[2::2], strict=True)}


def rows(markdown: str) -> list[list[str]]:
    """The cells of every table row of MARKDOWN (header and rule included)."""
    return [
        [cell.strip() for cell in CELL_SEPARATOR.split(line)[1:-1]]
        for line in markdown.splitlines()
        if line.startswith("|")
    ]


class CheckedInTests(SynchronousTestCase):
    def test_the_checked_in_reference_is_the_generated_one(self):
        self.assertTrue(
            CHECKED_IN.read_text(encoding="utf-8") == reference.render(),
            f"{reference.PATH} differs from the settings declarations: regenerate it with "
            f"`make docs` ({reference.COMMAND}) and commit it",
        )

    def test_every_key_of_every_section_has_its_row(self):
        documented = sections_of(CHECKED_IN.read_text(encoding="utf-8"))
        for kind in EVERY_SECTION:
            self.assertIn(kind.section, documented)
            named = {cells[0] for cells in rows(documented[kind.section])}
            for key in kind.keys():
                self.assertIn(f"`{key.name}`", named, f"[{kind.section}] {key.name}")

    def test_sections_come_in_the_order_an_operator_meets_them(self):
        self.assertEqual(
            list(sections_of(reference.render())),
            ["", "tls", "timestamp", "echo", "logger", "sleep", "names", "announce", "metrics"],
        )


class TableTests(SynchronousTestCase):
    def test_every_row_has_four_cells(self):
        for cells in rows(reference.render()):
            self.assertEqual(len(cells), 4, cells)

    def test_a_pipe_in_a_cell_is_escaped(self):
        self.assertEqual(reference.cell("ctime | iso"), "ctime \\| iso")
        self.assertEqual(len(CELL_SEPARATOR.split(reference.cell("`a|b`"))), 1)

    def test_a_cell_is_one_line_without_html(self):
        self.assertEqual(reference.cell("a\n  b <c>"), "a b &lt;c>")

    def test_a_code_span_holding_a_backtick_takes_a_longer_fence(self):
        self.assertEqual(reference.code("a`b"), "``a`b``")
        self.assertEqual(reference.code("`x"), "`` `x ``")

    def test_every_default_as_written_reads_back_as_the_default(self):
        """An operator who copies a default into the file gets exactly the default."""
        for kind in EVERY_SECTION:
            for key in kind.keys():
                written = reference.toml_value(key.default)
                value = tomllib.loads(f"value = {written}")["value"]
                self.assertEqual(
                    key.kind.check(value), key.default, f"[{kind.section}] {key.name}"
                )

    def test_defaults_are_written_as_toml(self):
        self.assertEqual(reference.toml_value(True), "true")
        self.assertEqual(reference.toml_value(8192), "8192")
        self.assertEqual(reference.toml_value(0.2), "0.2")
        self.assertEqual(reference.toml_value(("tcp:1", "udp:1")), '["tcp:1", "udp:1"]')
        self.assertEqual(reference.toml_value(()), "[]")
        self.assertEqual(reference.toml_value(FILE_MODE), '"0640"')

    def test_a_secret_default_is_hidden_unless_empty(self):
        self.assertEqual(reference.default_of(Key("token", text(), "", "", secret=True)), '`""`')
        self.assertEqual(
            reference.default_of(Key("token", text(), "s3cret", "", secret=True)), '`"***"`'
        )


class KindTests(SynchronousTestCase):
    def test_each_kind_is_named_with_its_bounds_or_choices(self):
        for kind, described in [
            (integer(1), "integer, at least 1"),
            (integer(0, 10), "integer, at least 0 and at most 10"),
            (number(0.001), "number, at least 0.001"),
            (BOOLEAN, "boolean"),
            (text(), "string"),
            (choice("line", "raw"), "one of `line`, `raw`"),
            (STRING_LIST, "list of strings"),
            (path(), "path"),
            (FILE_MODE_KIND, 'octal file mode (`"0640"` or `0o640`)'),
        ]:
            self.assertEqual(reference.describe_kind(kind), described)

    def test_a_path_after_a_prefix_is_named(self):
        self.assertEqual(
            reference.describe_kind(path(prefix="sqlite:")), "string; a path after `sqlite:`"
        )

    def test_a_secret_says_so(self):
        key = Key("token", text(), "", "", secret=True)
        self.assertEqual(reference.describe_key(key), "string, secret")

    def test_a_kind_it_cannot_name_stops_the_generator(self):
        self.assertRaises(ValueError, reference.describe_kind, Kind(check=lambda value: value))


class CommandTests(SynchronousTestCase):
    def test_it_prints_the_reference(self):
        out = io.StringIO()
        with redirect_stdout(out):
            self.assertEqual(reference.main([]), 0)
        self.assertEqual(out.getvalue(), reference.render())

    def test_an_argument_gets_the_usage(self):
        err = io.StringIO()
        with redirect_stderr(err), redirect_stdout(io.StringIO()) as out:
            self.assertEqual(reference.main(["--write"]), 2)
        self.assertEqual(out.getvalue(), "")
        self.assertIn(reference.COMMAND, err.getvalue())
