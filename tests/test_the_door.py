"""
Twisted's private names are used behind one door only,
suite/net/twisted_internals/: everywhere else the suite reads no attribute
with a leading underscore but its own (self, cls, super()) and imports no
private Twisted name, so a Twisted release that renames one can break the
fast path, which the door's guard then replaces, and nothing else.
"""

import ast
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

SUITE = Path(__file__).resolve().parent.parent / "suite"
DOOR = SUITE / "net" / "twisted_internals"


def _own(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return node.id in ("self", "cls")
    return (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"
    )


def private_uses(source: str) -> list[str]:
    """Every private attribute read on another object, and private name imported from Twisted."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            name = node.attr
            if name.startswith("_") and not name.startswith("__") and not _own(node.value):
                found.append(f"line {node.lineno}: .{name}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("twisted"):
            found += [
                f"line {node.lineno}: {node.module}.{alias.name}"
                for alias in node.names
                if alias.name.startswith("_")
            ]
        elif isinstance(node, ast.Import):
            found += [
                f"line {node.lineno}: {alias.name}"
                for alias in node.names
                if alias.name.startswith("twisted") and "._" in alias.name
            ]
    return found


class DoorTests(SynchronousTestCase):
    def test_private_names_only_behind_the_door(self):
        outside = {}
        for path in sorted(SUITE.rglob("*.py")):
            if DOOR in path.parents:
                continue
            uses = private_uses(path.read_text())
            if uses:
                outside[str(path.relative_to(SUITE.parent))] = uses
        self.assertEqual(outside, {})

    def test_the_check_sees_what_it_looks_for(self):
        source = (
            "from twisted.web.client import _HTTP11ClientFactory\n"
            "import twisted.internet._sslverify\n"
            "port._realPortNumber\n"
            "self._mine\n"
            "super()._bound(port)\n"
        )
        self.assertEqual(
            private_uses(source),
            [
                "line 1: twisted.web.client._HTTP11ClientFactory",
                "line 2: twisted.internet._sslverify",
                "line 3: ._realPortNumber",
            ],
        )
