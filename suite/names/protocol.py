"""The name server's AMP protocol: Register, Deregister, Lookup, Services."""

from twisted.protocols import amp

from suite.names.commands import Deregister, Lookup, Register, Services
from suite.net.addresses import describe_peer
from suite.net.connections import ConnectionPolicy, StreamFactory


class NamesFactory(StreamFactory):
    """Settings: L{suite.names.service.NamesSettings}; every connection asks SERVER."""

    def __init__(self, settings, clock, server):
        super().__init__(settings, clock)
        self.server = server


class NamesProtocol(ConnectionPolicy, amp.AMP):
    def connectionMade(self):
        self.peer = describe_peer(self.transport.getPeer())
        super().connectionMade()

    @Register.responder
    def register(self, name, host, port, description=None, token=None):
        return self.factory.server.register(name, host, port, description, token, self.peer)

    @Deregister.responder
    def deregister(self, name, host, port, token=None):
        return self.factory.server.deregister(name, host, port, token, self.peer)

    @Lookup.responder
    def lookup(self, name):
        return self.factory.server.lookup(name, self.peer)

    @Services.responder
    def services(self):
        return self.factory.server.services()


NamesFactory.protocol = NamesProtocol
