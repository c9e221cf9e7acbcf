"""The name server's AMP protocol: Register, Deregister, Lookup, Services."""

from suite.names.audit import connection_fields
from suite.names.commands import Deregister, Lookup, Register, Services
from suite.net.boxes import AMPPolicy
from suite.net.connections import StreamFactory


class NamesFactory(StreamFactory):
    """Settings: L{suite.names.service.NamesSettings}; every connection asks SERVER."""

    def __init__(self, settings, clock, server):
        super().__init__(settings, clock)
        self.server = server


class NamesProtocol(AMPPolicy):
    """
    Each command goes to the name server with who asked: peer, source,
    certificate subject.  A Lookup of a live name is answered with the
    name server's encoded answer as soon as its box is parsed; every
    other box (and a Lookup that fails) takes AMP's dispatch.
    """

    _audit_fields = None

    @property
    def audit_fields(self) -> str:
        if self._audit_fields is None:  # after the TLS handshake, which names the client
            self._audit_fields = connection_fields(self.peer, self.client)
        return self._audit_fields

    def box_received(self, box):
        if len(box) != 3 or box.get(b"_command") != b"Lookup":
            return False
        tag, name = box.get(b"_ask"), box.get(b"name")
        if tag is None or name is None:
            return False
        answer = self.factory.server.answer_lookup(name, tag, self.audit_fields)
        if answer is None:
            return False
        self.send(answer)
        return True

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
        return self.factory.server.lookup(name, self.audit_fields)

    @Services.responder
    def services(self):
        return self.factory.server.services()


NamesFactory.protocol = NamesProtocol
