"""
Reference: the bare Twisted Protocol echo of Twisted's own examples; `--udp`:
its DatagramProtocol echo.
"""

import sys

from twisted.internet import protocol, reactor


class Echo(protocol.Protocol):
    def dataReceived(self, data):
        self.transport.write(data)


class DatagramEcho(protocol.DatagramProtocol):
    def datagramReceived(self, data, address):
        self.transport.write(data, address)


if "--udp" in sys.argv:
    reactor.listenUDP(int(sys.argv[1]), DatagramEcho(), interface="127.0.0.1")
else:
    factory = protocol.Factory.forProtocol(Echo)
    reactor.listenTCP(int(sys.argv[1]), factory, interface="127.0.0.1", backlog=1024)
reactor.run()
