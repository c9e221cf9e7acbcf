"""The error every command of the suite's AMP services may answer, one class for all of them."""


class Overloaded(Exception):
    """
    The server has too much in flight to take this command now: commands on
    this connection (max_pending), or a service's own bound (sleeps on the
    server, names watched, host names being resolved); the reason says
    which.  Trying again later may succeed.
    """


# The errors map of a command that may be refused for load (Command.errors).
OVERLOADED: dict[type[Exception], bytes] = {Overloaded: b"OVERLOADED"}
