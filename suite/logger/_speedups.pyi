# The compiled half of suite/logger/records.py (suite/logger/_speedups.c).
from collections.abc import Callable

def encode_plain(
    frames: list[tuple[bytes, bool]],
    head: bytes,
    client: bytes,
    syslog_heads: tuple[bytes, ...],
    routing: list[tuple[int, str | None, str | None] | None] | None,
    fallback: Callable[[bytes, bool, tuple], bytes],
    context: tuple,
    /,
) -> bytes: ...
