"""
An unexpected exception (a bug, not a client's mistake) while answering a
client, logged as one line: what failed, the exception's type and text, and
the file and line that raised it, enough to find the bug.  A client that
can trigger it can trigger it at will, so the line goes through the name
server's flood control (the first time per source, then counted), never as
a traceback per request, and what a client chose is escaped.
"""

from twisted.python.failure import Failure

from suite.foundation.flood import FloodControl
from suite.foundation.printable import printable

MAX_SHOWN = 200  # characters of the failed request's description and of the error's text


def described(failure: Failure) -> str:
    """FAILURE in one line: `Type: text (file.py:123 in function)`."""
    text = f"{type(failure.value).__name__}: {str(failure.value)[:MAX_SHOWN]}"
    if failure.frames:
        function, path, line = failure.frames[-1][:3]
        text += f" ({path.rsplit('/', 1)[-1]}:{line} in {function})"
    return printable(text)


def log_unexpected(
    warnings: FloodControl, kind: str, source: str, what: str, failure: Failure
) -> None:
    """Log, under KIND and flood-controlled per SOURCE, that WHAT failed with FAILURE."""
    warnings.warn(
        kind,
        source,
        "names: {what} failed: {error}",
        what=printable(what[:MAX_SHOWN]),
        error=described(failure),
    )
