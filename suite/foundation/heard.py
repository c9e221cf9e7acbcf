"""
Who logged: what a collector hears, told to whatever watches for sources
that stopped logging (the name server's `logs` checks).

A collector tells its watchers of every read's messages at once, in the
form it parsed them anyway, so that hearing costs a watcher one call per
read and, per message, what its own lookup costs.  In one suite the
composition connects the two directly (L{suite.foundation.declaration.Parts});
a collector in another process reports over HTTP instead.

A watcher that looks messages up by hash (the logs checks' compiled heard
table) says so with C{wants_hashes}: the collector's compiled parser then
also hashes each message's hostname and app while their bytes are at hand
(suite/foundation/identity_hash.h, with L{IDENTITY_SEED}), and the watcher
reads no string at all.
"""

import os
from collections.abc import Sequence
from typing import Protocol

# (priority, hostname, app) of one syslog message, as the collector parsed it;
# hostname and app are None when the message has none ("-").
HeardFields = tuple[int, str | None, str | None]

# The seed of this process's identity hashes: drawn at start, so that no sender can
# know ahead which of its identities share a hash with a watched one.
IDENTITY_SEED = int.from_bytes(os.urandom(8), "little")


class Hearing(Protocol):
    """Something that wants to know, message by message, who logged."""

    # Whether L{heard} wants the messages' hashes too, when the collector can make them.
    wants_hashes: bool

    def heard(
        self,
        messages: Sequence[HeardFields | None] | None,
        address: str,
        hashes: bytes | None = None,
    ) -> None:
        """
        The messages of one read from the sender at ADDRESS (an IP address,
        IPv6 without brackets, or "" when unknown, as over a Unix socket):
        each one's fields, None for a message that is not syslog.  HASHES,
        when the collector made them: 16 bytes a message, the hashes of its
        hostname and of its app with IDENTITY_SEED (native byte order; 0
        for none).  A hearer that C{wants_hashes} may be given the hashes
        alone (MESSAGES None); any other gets MESSAGES always.
        """
