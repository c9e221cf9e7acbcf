"""
The name server's AMP contract, shared by the server and suite-client.

Every argument and answer field added after the first version is optional,
so that clients and servers of either version keep talking: a server
ignores the arguments it does not know, an older client the answer fields
it does not declare, and a newer client reads a field an older server does
not send as absent (None).
"""

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
    """
    The token was missing or wrong: Register and Deregister need the
    server's token; Lookup, Watch and Services its read token (or the
    token) when it has one.
    """


class Unavailable(Exception):
    """The store cannot be written or reached; the registry is unchanged."""


# Any command may fail with these.
EVERY_COMMAND: dict[type[Exception], bytes] = {Unavailable: b"UNAVAILABLE", **OVERLOADED}
READ_ERRORS: dict[type[Exception], bytes] = {Unauthorized: b"UNAUTHORIZED", **EVERY_COMMAND}


# (name, host, port) identifies an instance registered without an ID.
INSTANCE = [(b"name", amp.Unicode()), (b"host", amp.Unicode()), (b"port", amp.Integer())]
TOKEN = (b"token", amp.Unicode(optional=True))
ID = (b"id", amp.Unicode(optional=True))
TAGS = (b"tags", amp.ListOf(amp.Unicode(), optional=True))
# String metadata as key/value pairs (sorted by key in answers).
META = (b"meta", amp.AmpList([(b"key", amp.Unicode()), (b"value", amp.Unicode())], optional=True))


# A logs check: the syslog app the instance logs as (from its host), and the
# seconds without a message after which it is silent (a warning).
LOGS = [(b"logs_app", amp.Unicode(optional=True)), (b"max_silence", amp.Float(optional=True))]


class Register(amp.Command):
    """
    Register (or update) an instance: the instance of ID, by default
    NAME@HOST:PORT, with its TAGS and META (string metadata); with
    LOGS_APP, a logs check (MAX_SILENCE seconds, by default 60).
    """

    arguments = [
        *INSTANCE,
        (b"description", amp.Unicode(optional=True)),
        TOKEN,
        ID,
        TAGS,
        META,
        *LOGS,
    ]
    response = []
    errors = {Unauthorized: b"UNAUTHORIZED", Invalid: b"INVALID", **EVERY_COMMAND}


class Deregister(amp.Command):
    """
    Remove the instance (name, host, port), or the instance of ID: one or
    the other is given (INVALID otherwise).
    """

    arguments = [
        (b"name", amp.Unicode(optional=True)),
        (b"host", amp.Unicode(optional=True)),
        (b"port", amp.Integer(optional=True)),
        TOKEN,
        ID,
    ]
    response = []
    errors = {
        Unauthorized: b"UNAUTHORIZED",
        NotFound: b"NOT_FOUND",
        Invalid: b"INVALID",
        **EVERY_COMMAND,
    }


# An instance as Lookup, Watch and Changed give it.  `status` is passing or
# warning (critical instances are not served); `tags` and `meta` are left
# out when empty.
INSTANCES = (
    b"instances",
    amp.AmpList(
        [
            (b"host", amp.Unicode()),
            (b"port", amp.Integer()),
            (b"description", amp.Unicode()),
            ID,
            TAGS,
            META,
            (b"status", amp.Unicode(optional=True)),
        ]
    ),
)


class Lookup(amp.Command):
    """The live instances of NAME, rotated by one on each call; cache them TTL seconds."""

    arguments = [(b"name", amp.Unicode()), TOKEN]
    response = [INSTANCES, (b"ttl", amp.Integer())]
    errors = {NotFound: b"NOT_FOUND", Invalid: b"INVALID", **READ_ERRORS}


class Services(amp.Command):
    """The names that have at least one live instance, sorted."""

    arguments = [TOKEN]
    response = [(b"names", amp.ListOf(amp.Unicode()))]
    errors = READ_ERRORS


class Watch(amp.Command):
    """
    The live instances of NAME now (registration order, possibly none), and
    from then on a Changed call on this connection at each change of them.
    """

    arguments = [(b"name", amp.Unicode()), TOKEN]
    response = Lookup.response
    errors = {Invalid: b"INVALID", **READ_ERRORS}


class Unwatch(amp.Command):
    """No more Changed calls for NAME on this connection."""

    arguments = [(b"name", amp.Unicode())]
    response = []
    errors = EVERY_COMMAND


class Changed(amp.Command):
    """Server to client: the live instances of a watched NAME are now INSTANCES (in order)."""

    arguments = [(b"name", amp.Unicode()), INSTANCES]
    response = []
