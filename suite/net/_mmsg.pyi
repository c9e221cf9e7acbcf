# Many datagrams per system call for the fast path's UDP port (suite/net/_mmsg.c).

def recv_batch(
    fd: int, max_count: int, max_size: int, /
) -> list[tuple[bytes, tuple[str, int]]]: ...
def send_batch(
    fd: int, family: int, replies: list[tuple[bytes, tuple]], start: int, segment: int, /
) -> tuple[int, int, bool]: ...
