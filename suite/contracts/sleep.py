"""The sleep service's AMP contract, shared by the server and suite-client."""

from twisted.protocols import amp

from suite.contracts.errors import OVERLOADED


class InvalidDuration(Exception):
    """Sleep seconds negative, NaN, infinite or above max_seconds."""


class Sleep(amp.Command):
    """Sleep SECONDS, then answer how long the server measured (never less)."""

    arguments = [(b"seconds", amp.Float())]
    response = [(b"slept", amp.Float())]
    errors = {InvalidDuration: b"INVALID_DURATION", **OVERLOADED}
