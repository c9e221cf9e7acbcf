"""
Who logged: what a collector hears, told to whatever watches for sources
that stopped logging (the name server's `logs` checks).

A collector tells its watchers of every read's messages at once, in the
form it parsed them anyway, so that hearing costs a watcher one call per
read and, per message, what its own lookup costs.  In one suite the
composition connects the two directly (L{suite.foundation.declaration.Parts});
a collector in another process reports over HTTP instead.
"""

from collections.abc import Sequence
from typing import Protocol

# (priority, hostname, app) of one syslog message, as the collector parsed it;
# hostname and app are None when the message has none ("-").
HeardFields = tuple[int, str | None, str | None]


class Hearing(Protocol):
    """Something that wants to know, message by message, who logged."""

    def heard(self, messages: Sequence[HeardFields | None], address: str) -> None:
        """
        The messages of one read from the sender at ADDRESS (an IP address,
        IPv6 without brackets, or "" when unknown, as over a Unix socket):
        each one's fields, None for a message that is not syslog.
        """
