"""
Whether the collector's hot path runs compiled: suite/logger/_speedups.c,
an optional extension built at install, frames each read's lines and
whole octet-counted frames (L{suite.logger.framing}) and formats the records of plain RFC 5424
messages (L{suite.logger.records}).  Without it (no compiler at install, an
interpreter it was not built for) or with SUITE_PURE_PYTHON=1 in the
environment, the Python code does all of it: the same frames and the same
bytes, slower.  The Python code is the reference the tests hold the C to.
"""

import os
from collections.abc import Callable, Mapping
from typing import Protocol, cast

from suite.foundation.compiled import load_compiled


class Speedups(Protocol):
    """What suite/logger/_speedups.c offers (each function is described there)."""

    def encode_plain(
        self,
        frames: list[tuple[bytes, bool]],
        head: bytes,
        client: bytes,
        syslog_heads: tuple[bytes, ...],
        routing: list[tuple[int, str | None, str | None] | None] | None,
        fields: bool,
        hashes: bytearray | None,
        seed: int,
        fallback: Callable[[bytes, bool, tuple], bytes],
        context: tuple,
        /,
    ) -> bytes: ...

    def take_lines(
        self,
        data: bytes,
        start: int,
        stop: int,
        delimiter: int,
        max_message: int,
        frames: list[tuple[bytes, bool]],
        /,
    ) -> int: ...

    def octet_frames(
        self,
        data: bytes,
        start: int,
        max_message: int,
        max_frame: int,
        frames: list[tuple[bytes, bool]],
        /,
    ) -> int: ...


FUNCTIONS = ("encode_plain", "take_lines", "octet_frames")


def load_speedups(environ: Mapping[str, str]) -> Speedups | None:
    """The compiled calls, or None (L{suite.foundation.compiled.load_compiled})."""
    return cast(Speedups | None, load_compiled("suite.logger._speedups", FUNCTIONS, environ))


speedups = load_speedups(os.environ)
