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
def take_lines(
    data: bytes,
    start: int,
    stop: int,
    delimiter: int,
    max_message: int,
    frames: list[tuple[bytes, bool]],
    /,
) -> int: ...
def octet_frames(
    data: bytes,
    start: int,
    max_message: int,
    max_frame: int,
    frames: list[tuple[bytes, bool]],
    /,
) -> int: ...
