"""The name server's AMP protocol (SPEC §4 "names"): Register, Deregister, Lookup, Services."""

from twisted.protocols import amp

from suite.commands import Deregister, Lookup, Register, Services
from suite.streams import StreamFactory, StreamProtocol, describe_peer


class NamesFactory(StreamFactory):
    def __init__(self, service_name, clock, max_connections, idle_timeout, server):
        super().__init__(service_name, clock, max_connections, idle_timeout)
        self.server = server


class NamesProtocol(StreamProtocol, amp.AMP):
    def connectionMade(self):
        self.peer = describe_peer(self.transport.getPeer())
        StreamProtocol.connectionMade(self)

    def dataReceived(self, data):
        self.resetTimeout()
        amp.AMP.dataReceived(self, data)

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

    def connectionLost(self, reason):
        StreamProtocol.connectionLost(self, reason)
        amp.AMP.connectionLost(self, reason)


NamesFactory.protocol = NamesProtocol
