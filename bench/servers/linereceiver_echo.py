"""Reference: a bare LineReceiver echo answering like the suite's line echo."""

import sys

from twisted.internet import protocol, reactor
from twisted.protocols.basic import LineReceiver


class Echo(LineReceiver):
    delimiter = b"\n"

    def lineReceived(self, line):
        self.transport.write(b"You said: " + line + b"\r\n")


factory = protocol.Factory.forProtocol(Echo)
reactor.listenTCP(int(sys.argv[1]), factory, interface="127.0.0.1", backlog=1024)
reactor.run()
