"""Reference: a minimal Twisted AMP responder answering Lookup with a fixed answer."""

import sys

from twisted.internet import protocol, reactor
from twisted.protocols import amp

sys.path.insert(0, sys.argv[2])  # the suite's tree, for the Lookup command's definition
from suite.contracts.names import Lookup

ANSWER = {
    "instances": [
        {"host": "127.0.0.1", "port": 8080, "description": ""},
        {"host": "127.0.0.1", "port": 8081, "description": ""},
    ],
    "ttl": 5,
}


class Fixed(amp.AMP):
    @Lookup.responder
    def lookup(self, name, token=None):
        return ANSWER


reactor.listenTCP(int(sys.argv[1]), protocol.Factory.forProtocol(Fixed), interface="127.0.0.1")
reactor.run()
