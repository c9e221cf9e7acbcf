"""The sleep service's AMP contract, shared by the server and suite-client."""

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
