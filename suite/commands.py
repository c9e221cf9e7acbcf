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


class Invalid(Exception):
    """A name, host, port or description that the name server does not accept."""


class NotFound(Exception):
    """No live instance of that name (or no such instance to deregister)."""


class Unauthorized(Exception):
    """Register and Deregister need the server's token, and it was missing or wrong."""


class Register(amp.Command):
    """Register (or update) the instance (name, host, port)."""

    arguments = [
        (b"name", amp.Unicode()),
        (b"host", amp.Unicode()),
        (b"port", amp.Integer()),
        (b"description", amp.Unicode(optional=True)),
        (b"token", amp.Unicode(optional=True)),
    ]
    response = []
    errors = {Unauthorized: b"UNAUTHORIZED", Invalid: b"INVALID"}


class Deregister(amp.Command):
    arguments = [
        (b"name", amp.Unicode()),
        (b"host", amp.Unicode()),
        (b"port", amp.Integer()),
        (b"token", amp.Unicode(optional=True)),
    ]
    response = []
    errors = {Unauthorized: b"UNAUTHORIZED", NotFound: b"NOT_FOUND"}


class Lookup(amp.Command):
    """The live instances of NAME, rotated by one on each call; cache them TTL seconds."""

    arguments = [(b"name", amp.Unicode())]
    response = [
        (
            b"instances",
            amp.AmpList(
                [(b"host", amp.Unicode()), (b"port", amp.Integer()), (b"description", amp.Unicode())]
            ),
        ),
        (b"ttl", amp.Integer()),
    ]
    errors = {NotFound: b"NOT_FOUND", Invalid: b"INVALID"}


class Services(amp.Command):
    """The names that have at least one live instance, sorted."""

    arguments = []
    response = [(b"names", amp.ListOf(amp.Unicode()))]


ERROR_CODES = {
    error: code
    for command in (Sleep, Register, Deregister, Lookup)
    for error, code in command.errors.items()
}
