"""
The door's guard: once per process, at first use, check that the Twisted
internals the fast path relies on are there and behave; if not (or when
SUITE_STOCK_TWISTED=1 asks), the suite runs on Twisted's stock ports and
transports and says so in one warning naming the Twisted version.
"""

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from twisted import __version__ as twisted_version
from twisted.logger import Logger

from suite.net.twisted_internals import datagrams, dispatch, streams

log = Logger(namespace="suite.net.twisted_internals")

STOCK_ENV = "SUITE_STOCK_TWISTED"
STOCK_CONSEQUENCE = "using Twisted's stock transports and ports (slower, never wrong)"


@dataclass(frozen=True)
class Decision:
    """Whether the fast path runs, and why not when it does not."""

    fast: bool
    reason: str = ""  # what failed, or that the environment asked for the stock path


def missing_attributes(required: Iterable[tuple[str, type, str]]) -> str | None:
    """The first of REQUIRED's (dotted name, class, attribute) the class lacks, or None."""
    for dotted, cls, name in required:
        if not hasattr(cls, name):
            return f"{dotted} is missing"
    return None


def checks() -> list[tuple[str, Callable[[], str | None]]]:
    """(what is checked, a check returning what failed or None), in order."""
    return [
        (
            "the attribute check",
            lambda: missing_attributes(streams.REQUIRED + datagrams.REQUIRED + dispatch.REQUIRED),
        ),
        *streams.SELF_TESTS,
        *datagrams.SELF_TESTS,
        *dispatch.SELF_TESTS,
    ]


def decide(environ: Mapping[str, str]) -> Decision:
    """Run the checks (unless ENVIRON asks for the stock path); the first failure decides."""
    if environ.get(STOCK_ENV) == "1":
        return Decision(False, f"{STOCK_ENV}=1 asked for the stock path")
    for name, check in checks():
        try:
            failed = check()
        except Exception as e:
            failed = f"raised {type(e).__name__}: {e}"
        if failed is not None:
            return Decision(False, f"{name} failed ({failed})")
    return Decision(True)


def warning(decision: Decision) -> str:
    """The one line logged when the stock path runs."""
    return (
        f"Twisted {twisted_version}: suite.net.twisted_internals: "
        f"{decision.reason}; {STOCK_CONSEQUENCE}"
    )


_decided: Decision | None = None


def fast_path() -> Decision:
    """The process's decision: made, and warned about, at the first call."""
    global _decided
    if _decided is None:
        _decided = decide(os.environ)
        if not _decided.fast:
            log.warn(
                "{line}",
                line=warning(_decided),
                twisted_version=twisted_version,
                stock_reason=_decided.reason,
            )
    return _decided
