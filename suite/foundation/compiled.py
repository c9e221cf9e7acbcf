"""
Choosing an optional compiled extension: the suite builds its C
extensions at install when it can (a compiler and Python's headers), and
each has a pure-Python path doing the same work, which the tests hold the C
to.  An extension is used only when it imports, offers every function its
chooser names (an editable install not rebuilt since a function was added
lacks one), and SUITE_PURE_PYTHON=1 is not in the environment (to rule the
extensions out when investigating).
"""

import importlib
from collections.abc import Iterable, Mapping
from types import ModuleType

PURE_PYTHON_ENV = "SUITE_PURE_PYTHON"


def load_compiled(
    module: str, functions: Iterable[str], environ: Mapping[str, str]
) -> ModuleType | None:
    """MODULE, or None when it is not built, lacks one of FUNCTIONS, or ENVIRON says not to."""
    if environ.get(PURE_PYTHON_ENV) == "1":
        return None
    try:
        found = importlib.import_module(module)
    except ImportError:
        return None
    if not all(hasattr(found, name) for name in functions):
        return None
    return found
