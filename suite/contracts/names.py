"""The name server's AMP contract, shared by the server and suite-client."""

from twisted.protocols import amp

from suite.contracts.errors import OVERLOADED


class Invalid(Exception):
    """
    A name, host, port or description that the name server does not accept:
    the reason says which (a host outside allowed_networks, a host name that
    does not resolve, a source over max_instances_per_source, …).
    """


class NotFound(Exception):
    """No live instance of that name (or no such instance to deregister)."""


class Unauthorized(Exception):
    """Register and Deregister need the server's token, and it was missing or wrong."""


class Unavailable(Exception):
    """The store cannot be written or reached; the registry is unchanged."""


# Any command may fail with these.
EVERY_COMMAND: dict[type[Exception], bytes] = {Unavailable: b"UNAVAILABLE", **OVERLOADED}


# (name, host, port) identifies an instance.
INSTANCE = [(b"name", amp.Unicode()), (b"host", amp.Unicode()), (b"port", amp.Integer())]
TOKEN = (b"token", amp.Unicode(optional=True))


class Register(amp.Command):
    """Register (or update) the instance (name, host, port)."""

    arguments = [*INSTANCE, (b"description", amp.Unicode(optional=True)), TOKEN]
    response = []
    errors = {Unauthorized: b"UNAUTHORIZED", Invalid: b"INVALID", **EVERY_COMMAND}


class Deregister(amp.Command):
    """Remove the instance (name, host, port)."""

    arguments = [*INSTANCE, TOKEN]
    response = []
    errors = {Unauthorized: b"UNAUTHORIZED", NotFound: b"NOT_FOUND", **EVERY_COMMAND}


class Lookup(amp.Command):
    """The live instances of NAME, rotated by one on each call; cache them TTL seconds."""

    arguments = [(b"name", amp.Unicode())]
    response = [
        (
            b"instances",
            amp.AmpList(
                [
                    (b"host", amp.Unicode()),
                    (b"port", amp.Integer()),
                    (b"description", amp.Unicode()),
                ]
            ),
        ),
        (b"ttl", amp.Integer()),
    ]
    errors = {NotFound: b"NOT_FOUND", Invalid: b"INVALID", **EVERY_COMMAND}


class Services(amp.Command):
    """The names that have at least one live instance, sorted."""

    arguments = []
    response = [(b"names", amp.ListOf(amp.Unicode()))]
    errors = EVERY_COMMAND


class Watch(amp.Command):
    """
    The live instances of NAME now (registration order, possibly none), and
    from then on a Changed call on this connection at each change of them.
    """

    arguments = [(b"name", amp.Unicode())]
    response = Lookup.response
    errors = {Invalid: b"INVALID", **EVERY_COMMAND}


class Unwatch(amp.Command):
    """No more Changed calls for NAME on this connection."""

    arguments = [(b"name", amp.Unicode())]
    response = []
    errors = EVERY_COMMAND


class Changed(amp.Command):
    """Server to client: the live instances of a watched NAME are now INSTANCES (in order)."""

    arguments = [(b"name", amp.Unicode()), Lookup.response[0]]
    response = []
