"""
What the network layer asks of the stream factories it serves: the accept
loop refuses connections it cannot serve (out of file descriptors) before
any protocol exists, and tells the factory, which counts and logs them.
"""

from zope.interface import Attribute, Interface

from suite.net.addresses import PeerAddress


class IRefusesAtDescriptorLimit(Interface):
    """A stream factory told of connections refused below it."""

    refusal = Attribute("Bytes sent to a connection refused before it is served (may be b'').")

    def refused_at_descriptor_limit(address: PeerAddress | None, reason: str) -> None:
        """
        A connection from ADDRESS was refused for REASON; ADDRESS is None
        when not even a spare descriptor was left to accept it.
        """
