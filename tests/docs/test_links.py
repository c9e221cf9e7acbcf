"""
Every relative link of the README and of docs/*.md leads somewhere: the file
exists, and a `#fragment` names a heading of it (as GitHub spells anchors),
so moving a section between documents cannot leave a reader at a dead end.
"""

import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of PATH (code blocks skipped)."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        heading = re.match(r"#{1,6} (.*)", line)
        if fenced or not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading[1].strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def links(path: Path) -> list[str]:
    """The relative links of PATH, outside code blocks."""
    found = []
    fenced = False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            found += [t for t in LINK.findall(line) if not re.match(r"[a-z]+:", t)]
    return found


class LinkTests(SynchronousTestCase):
    def test_every_relative_link_resolves(self):
        broken = []
        for document in DOCUMENTS:
            for target in links(document):
                name, _, fragment = target.partition("#")
                path = (document.parent / name).resolve() if name else document
                where = f"{document.relative_to(ROOT)}: ({target})"
                if not path.exists():
                    broken.append(f"{where}: no such file")
                elif fragment and path.suffix == ".md" and fragment not in anchors(path):
                    broken.append(f"{where}: no such heading in {path.name}")
        self.assertEqual(broken, [])

    def test_the_readme_points_to_every_document(self):
        readme = set(links(ROOT / "README.md"))
        for document in DOCUMENTS[1:]:
            self.assertIn(f"docs/{document.name}", readme)
