"""What the package claims about itself: the dependencies it names and its news fragments."""

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent
FRAGMENT_NAME = re.compile(r"^(?:\d+|\+[\w-]+)\.(?P<type>[a-z]+)(?:\.\d+)?\.md$")
REQUIREMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*")


def normalized(distribution: str) -> str:
    """A distribution's name as PyPI compares it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as file:
        return tomllib.load(file)


def imported_top_level_names(sources: list[Path]) -> set[str]:
    """The top-level module of every absolute import in SOURCES, however deep it sits."""
    names = set()
    for source in sources:
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def fragment_problems(names: list[str], types: set[str]) -> list[str]:
    """Why each of NAMES is not a news fragment towncrier would file under one of TYPES."""
    problems = []
    for name in names:
        found = FRAGMENT_NAME.match(name)
        if not found:
            problems.append(f"{name}: not <issue>.<type>[.<n>].md nor +<word>.<type>[.<n>].md")
        elif found["type"] not in types:
            problems.append(f"{name}: {found['type']} is not one of {', '.join(sorted(types))}")
    return problems


class DependencyTests(SynchronousTestCase):
    """A package suite/ imports but does not declare arrives only while another one pulls it in."""

    def setUp(self) -> None:
        self.declared = {
            normalized(REQUIREMENT_NAME.match(requirement)[0])
            for requirement in pyproject()["project"]["dependencies"]
        }
        sources = [*ROOT.glob("suite/**/*.py"), *ROOT.glob("twisted/plugins/*.py")]
        self.assertTrue(sources)
        third_party = imported_top_level_names(sources) - set(sys.stdlib_module_names) - {"suite"}
        distributions = packages_distributions()
        self.providers = {
            name: {normalized(d) for d in distributions.get(name, [])} - {"suite"}
            for name in third_party
        }

    def test_every_imported_package_is_declared(self) -> None:
        undeclared = {
            name: sorted(providers)
            for name, providers in self.providers.items()
            if not providers & self.declared
        }
        self.assertEqual(undeclared, {})

    def test_every_declared_package_is_imported(self) -> None:
        provided = set().union(*self.providers.values())
        self.assertEqual(sorted(self.declared - provided), [])

    def test_twisted_range_ends_before_the_next_major(self) -> None:
        """Twisted may change any private name in any release: only a tested range is claimed."""
        twisted = [
            requirement
            for requirement in pyproject()["project"]["dependencies"]
            if normalized(REQUIREMENT_NAME.match(requirement)[0]) == "twisted"
        ]
        self.assertEqual(len(twisted), 1)
        self.assertRegex(twisted[0], r">=\s*\d+\.\d+.*,\s*<\s*\d+")

    def test_imports_are_found_however_deep(self) -> None:
        source = Path(self.mktemp())
        source.write_text(
            "import os.path\nfrom OpenSSL import SSL\nfrom . import sibling\n"
            "def later():\n    import prometheus_client.core\n"
        )
        self.assertEqual(
            imported_top_level_names([source]), {"os", "OpenSSL", "prometheus_client"}
        )


class NewsFragmentTests(SynchronousTestCase):
    """towncrier files a fragment by its name; a misnamed one is silently left out of a release."""

    def setUp(self) -> None:
        self.types = {kind["directory"] for kind in pyproject()["tool"]["towncrier"]["type"]}

    def test_types_are_twisteds(self) -> None:
        self.assertEqual(self.types, {"feature", "bugfix", "removal", "doc", "misc"})

    def test_every_fragment_has_a_valid_name_and_type(self) -> None:
        directory = ROOT / pyproject()["tool"]["towncrier"]["directory"]
        # `make changelog` removes every fragment, and git then the emptied folder.
        names = sorted(path.name for path in directory.iterdir()) if directory.exists() else []
        self.assertEqual(fragment_problems(names, self.types), [])

    def test_misnamed_fragments_are_reported(self) -> None:
        self.assertEqual(
            fragment_problems(
                ["26.feature.md", "26.feature.1.md", "+tls.bugfix.md", "26.feat.md", "notes.txt"],
                self.types,
            ),
            [
                "26.feat.md: feat is not one of bugfix, doc, feature, misc, removal",
                "notes.txt: not <issue>.<type>[.<n>].md nor +<word>.<type>[.<n>].md",
            ],
        )
