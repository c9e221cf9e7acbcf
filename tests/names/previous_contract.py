"""
The names AMP contract as the version before IDs, tags, metadata, status
and the read token declared it: what older clients and servers still speak.
"""

from twisted.protocols import amp

from suite.contracts.names import EVERY_COMMAND, Invalid, NotFound, Unauthorized

INSTANCE = [(b"name", amp.Unicode()), (b"host", amp.Unicode()), (b"port", amp.Integer())]
TOKEN = (b"token", amp.Unicode(optional=True))


class Register(amp.Command):
    commandName = b"Register"
    arguments = [*INSTANCE, (b"description", amp.Unicode(optional=True)), TOKEN]
    response = []
    errors = {Unauthorized: b"UNAUTHORIZED", Invalid: b"INVALID", **EVERY_COMMAND}


class Deregister(amp.Command):
    commandName = b"Deregister"
    arguments = [*INSTANCE, TOKEN]
    response = []
    errors = {Unauthorized: b"UNAUTHORIZED", NotFound: b"NOT_FOUND", **EVERY_COMMAND}


class Lookup(amp.Command):
    commandName = b"Lookup"
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
    commandName = b"Services"
    arguments = []
    response = [(b"names", amp.ListOf(amp.Unicode()))]
    errors = EVERY_COMMAND


class Watch(amp.Command):
    commandName = b"Watch"
    arguments = [(b"name", amp.Unicode())]
    response = Lookup.response
    errors = {Invalid: b"INVALID", **EVERY_COMMAND}


class Changed(amp.Command):
    commandName = b"Changed"
    arguments = [(b"name", amp.Unicode()), Lookup.response[0]]
    response = []
