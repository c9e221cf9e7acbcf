"""
The AMP wire contract: every Command the suite's services answer, with its
error codes.  Services and suite-client both import it, so the contract
lives in one place.
"""

from twisted.protocols import amp


class InvalidDuration(Exception):
    """Sleep seconds negative, NaN, infinite or above max_seconds."""


class Overloaded(Exception):
    """Too many sleeps pending on the connection (max_pending) or the server (max_total)."""


class Sleep(amp.Command):
    """Sleep SECONDS, then answer how long the server measured (never less)."""

    arguments = [(b"seconds", amp.Float())]
    response = [(b"slept", amp.Float())]
    errors = {InvalidDuration: b"INVALID_DURATION", Overloaded: b"OVERLOADED"}
