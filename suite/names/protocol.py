"""The name server's AMP protocol: Register, Deregister, Lookup, Services."""

from suite.names.commands import Deregister, Lookup, Register, Services
from suite.net.boxes import AMPPolicy
from suite.net.connections import StreamFactory


class NamesFactory(StreamFactory):
    """Settings: L{suite.names.service.NamesSettings}; every connection asks SERVER."""

    def __init__(self, settings, clock, server):
        super().__init__(settings, clock)
        self.server = server


class NamesProtocol(AMPPolicy):
    """Each command goes to the name server with who asked: peer, source, certificate subject."""

    @Register.responder
    def register(self, name, host, port, description=None, token=None):
        return self.factory.server.register(
            name, host, port, description, token, self.peer, self.source, self.client
        )

    @Deregister.responder
    def deregister(self, name, host, port, token=None):
        return self.factory.server.deregister(
            name, host, port, token, self.peer, self.source, self.client
        )

    @Lookup.responder
    def lookup(self, name):
        return self.factory.server.lookup(name, self.peer, self.client)

    @Services.responder
    def services(self):
        return self.factory.server.services()


NamesFactory.protocol = NamesProtocol
