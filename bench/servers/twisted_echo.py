"""Reference: the bare Twisted Protocol echo of Twisted's own examples."""

import sys

from twisted.internet import protocol, reactor


class Echo(protocol.Protocol):
    def dataReceived(self, data):
        self.transport.write(data)


factory = protocol.Factory.forProtocol(Echo)
reactor.listenTCP(int(sys.argv[1]), factory, interface="127.0.0.1", backlog=1024)
reactor.run()
