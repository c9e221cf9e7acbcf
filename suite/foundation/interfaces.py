"""
What the application layer asks of the parts it runs.  Services and their
parts provide these; the root service finds them by walking the service tree
with C{providedBy}, never by looking for attributes.
"""

from zope.interface import Interface


class IReopenable(Interface):
    """A service that keeps files open and reopens them on SIGHUP."""

    def reopen():
        """Close and reopen every file at its configured path."""
