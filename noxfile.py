"""The versions the suite claims, tested: every Python it supports with the lowest and newest
Twisted in range (`make matrix`).

Each cell runs the tests that need no outside tool (everything but tests/e2e and tests/docs,
which start twistd and drive nc, dig, curl and openssl): the whole suite, those included,
already runs on the development Python in `make test`, and six cells of it would not fit
CI's time.  The "lowest" cells install every runtime dependency at
exactly the lower bound pyproject.toml declares, so a bound is only ever one that was tested;
the "latest" cells take the newest release each range allows.
"""

import os
import re
import tomllib
from pathlib import Path

import nox

PYTHONS = ["3.11", "3.12", "3.13"]
ROOT = Path(__file__).parent
LOWER_BOUND = re.compile(
    r"^(?P<name>[A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*>=\s*(?P<version>[^,;\s]+)"
)

nox.options.sessions = ["tests"]
nox.options.error_on_missing_interpreters = True


def find_pyenv_interpreters(pyenv_root: Path, versions: list[str]) -> list[Path]:
    """The bin/ folders of pyenv's newest patch release of each of VERSIONS.

    pyenv's shims answer `python3.12` only for the versions `pyenv global` names, and CI runs
    with whatever that is; the versions' own bin/ folders always answer.
    """
    folders = []
    for version in versions:
        installed = sorted(
            (path for path in pyenv_root.glob(f"versions/{version}.*") if path.name[-1].isdigit()),
            key=lambda path: tuple(int(part) for part in path.name.split(".")),
        )
        if installed:
            folders.append(installed[-1] / "bin")
    return folders


def lowest_constraints(dependencies: list[str]) -> list[str]:
    """Pin each dependency that has a lower bound to exactly that bound."""
    pins = []
    for requirement in dependencies:
        found = LOWER_BOUND.match(requirement)
        if found:
            pins.append(f"{found['name']}=={found['version']}")
    return pins


def declared_dependencies() -> list[str]:
    with open(ROOT / "pyproject.toml", "rb") as file:
        return tomllib.load(file)["project"]["dependencies"]


pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
os.environ["PATH"] = os.pathsep.join(
    [*map(str, find_pyenv_interpreters(pyenv_root, PYTHONS)), os.environ.get("PATH", "")]
)


@nox.session(python=PYTHONS)
@nox.parametrize("twisted", ["lowest", "latest"])
def tests(session: nox.Session, twisted: str) -> None:
    """The tests but tests/e2e and tests/docs, on one Python with one end of the range."""
    if twisted == "lowest":
        constraints = Path(session.create_tmp()) / "lowest.txt"
        constraints.write_text("\n".join(lowest_constraints(declared_dependencies())) + "\n")
        session.install("-e", ".[test]", "--constraint", str(constraints))
    else:
        session.install("--upgrade", "-e", ".[test]")
    session.run(
        "python", "-c", "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
    )
    session.run(
        "python", "-c", "import sys, twisted; print('Twisted', twisted.__version__, sys.version)"
    )
    session.run(
        "python",
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--ignore=tests/e2e",
        "--ignore=tests/docs",
        *session.posargs,
    )
