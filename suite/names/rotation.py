"""
Encoded items (AMP instance boxes, DNS records) kept for round-robin
answers: stored twice in a row, so the answer starting at item N is one
slice, and an answer that must fit in so many bytes ends at an item
boundary found by bisection.  Lookup answers and DNS answers both rotate
this way.
"""

from bisect import bisect_right


class Packed:
    """Encoded items in order (`data`), and where each starts (`offsets`, one more at the end)."""

    def __init__(self, encoded: list[bytes]) -> None:
        self.count = len(encoded)
        self.data = b"".join(encoded)
        self.offsets = [0]
        for item in encoded:
            self.offsets.append(self.offsets[-1] + len(item))

    def fitting(self, room: int) -> int:
        """How many of the first items fit in ROOM bytes."""
        return bisect_right(self.offsets, room) - 1


class Rotating(Packed):
    """Items stored twice in a row: `count` is how many there are once."""

    def __init__(self, encoded: list[bytes]) -> None:
        super().__init__(encoded * 2)
        self.count = len(encoded)
        self.size = len(self.data) // 2  # all of them, once

    def slice(self, turn: int, room: int) -> tuple[bytes, int]:
        """
        The items from TURN on (wrapping round) that fit in ROOM bytes, and
        how many they are.
        """
        start = self.offsets[turn]
        if self.size <= room:
            return self.data[start : start + self.size], self.count
        last = bisect_right(self.offsets, start + room, turn, turn + self.count) - 1
        return self.data[start : self.offsets[last]], last - turn
