"""
Whether the fast path's UDP port moves many datagrams per system call:
suite/net/_mmsg.c, an optional extension built at install, reads a
socket's waiting datagrams with one recvmmsg and sends a batch's replies
with one sendmmsg, a run of replies of one size to one peer as one message
the kernel cuts into datagrams (L{suite.net.twisted_internals.datagrams}).  Without it
(no compiler at install, an interpreter it was not built for) or with
SUITE_PURE_PYTHON=1 in the environment, the port reads and sends one
datagram per call, recvfrom and sendto: the same datagrams, the same
addresses, more CPU per datagram.  The Python path is the reference the
tests hold the C to.
"""

import os
from collections.abc import Mapping
from typing import Protocol, cast

from suite.foundation.compiled import load_compiled


class Mmsg(Protocol):
    """What suite/net/_mmsg.c offers (each function is described there)."""

    def recv_batch(
        self, fd: int, max_count: int, max_size: int, /
    ) -> list[tuple[bytes, tuple[str, int]]]: ...

    def send_batch(
        self,
        fd: int,
        family: int,
        replies: list[tuple[bytes, tuple]],
        start: int,
        segment: int,
        /,
    ) -> tuple[int, int, bool]: ...


FUNCTIONS = ("recv_batch", "send_batch")


def load_mmsg(environ: Mapping[str, str]) -> Mmsg | None:
    """The compiled calls, or None (L{suite.foundation.compiled.load_compiled})."""
    return cast(Mmsg | None, load_compiled("suite.net._mmsg", FUNCTIONS, environ))


mmsg = load_mmsg(os.environ)
