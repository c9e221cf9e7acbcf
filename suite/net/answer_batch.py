"""
One write for the answers to one read.  The suite's transports send at
once (L{suite.net.transport}), and a system call per answer would cost
more than the answers; so a protocol gathers what it answers to one read
and writes it when the read is handled, or every BATCH_BYTES.
"""

BATCH_BYTES = 65536  # answers gathered from one read before they are written


class AnswerBatch:
    """The answers gathered so far; a connection keeps one and reuses it for every read."""

    __slots__ = ("parts", "size")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, data: bytes) -> bool:
        """Gather DATA; True when the batch holds BATCH_BYTES or more and should be written."""
        self.parts.append(data)
        self.size += len(data)
        return self.size >= BATCH_BYTES

    def take(self) -> bytes:
        """Everything gathered, in order, as one write; the batch is empty again."""
        data = b"".join(self.parts)
        self.parts.clear()
        self.size = 0
        return data
