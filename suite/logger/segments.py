"""
The pieces a forward queue is made of: runs of messages with consecutive
sequence numbers, in memory or in a segment file, and the files on disk
(how messages are framed, how a segment is checked at start and its torn
tail found, the checkpoint).  Which message goes where, and when, is the
queue's business (L{suite.logger.queue}).

A segment, `<first sequence number, 20 digits>.seg`, holds messages with
consecutive sequence numbers, the first one named by the file, so the
files sort in the order of their messages.  Each message is framed as

    length (4 bytes, big-endian) | CRC-32 (4 bytes) | message

the CRC-32 taken over the message with its length as the starting value,
so that a message cut short by a crash, or a length or a byte changed on
the disk, is found: reading stops at the first frame that is incomplete or
does not check, and everything from there on is the damaged tail.

The checkpoint, `checkpoint`, holds the sequence number of the last
message the target acknowledged (8 bytes) and its CRC-32 (4 bytes),
rewritten in place: messages up to it are not sent again after a restart.
"""

import errno
import os
import re
import struct
import zlib

MiB = 2**20

# Bounded so that a delivered stretch of the queue frees its disk space soon
# (a segment is deleted once every message in it was acknowledged), while a
# 1 GiB queue is still only a few hundred files.  One put's batch is never
# split, so a segment may exceed this by one batch.
SEGMENT_BYTES = 4 * MiB
READ_BYTES = MiB  # messages are read back from a segment this many bytes at a time

HEADER = struct.Struct(">II")  # length, CRC-32
FRAME_OVERHEAD = HEADER.size
CHECKPOINT = struct.Struct(">QI")  # sequence number, CRC-32 of its 8 bytes
CHECKPOINT_NAME = "checkpoint"
LOCK_NAME = "lock"

# What a message held in memory costs beyond its bytes: the bytes object's
# header and its slot in a list.  Counted against memory_bytes.
MEMORY_OVERHEAD = 48

_SEGMENT_NAME = re.compile(r"\A(\d{20})\.seg\Z")


def segment_name(first: int) -> str:
    return f"{first:020d}.seg"


def segment_first(name: str) -> int | None:
    """The first sequence number of the segment file NAME; None for any other file."""
    found = _SEGMENT_NAME.match(name)
    return int(found.group(1)) if found else None


def frame(messages: list[bytes]) -> bytes:
    """MESSAGES framed, in one buffer: the queue writes a put's batch with one write."""
    pack = HEADER.pack
    crc32 = zlib.crc32
    parts: list[bytes] = []
    add = parts.append
    for message in messages:
        length = len(message)
        add(pack(length, crc32(message, length)))
        add(message)
    return b"".join(parts)


def parse_frames(data: bytes, out: list[bytes]) -> int:
    """
    Append the messages of the whole frames at the start of DATA to OUT;
    returns the bytes they took.  No CRC check: this reads back what this
    process wrote, or what was checked at start.
    """
    unpack = HEADER.unpack_from
    add = out.append
    end = len(data)
    offset = 0
    while offset + FRAME_OVERHEAD <= end:
        length, _ = unpack(data, offset)
        stop = offset + FRAME_OVERHEAD + length
        if stop > end:
            break
        add(data[offset + FRAME_OVERHEAD : stop])
        offset = stop
    return offset


def frame_length(data: bytes) -> int:
    """The bytes of the frame DATA starts with (header and message)."""
    length: int = HEADER.unpack_from(data)[0]
    return FRAME_OVERHEAD + length


def scan(fd: int, skip: int) -> tuple[int, int, int]:
    """
    Check every frame of the segment open at FD: (messages whole and
    correct, bytes they take from the start, offset of message number SKIP
    (counted from 0), or of the end when there are fewer).  Whatever
    follows the whole messages is the damaged tail.  Read in READ_BYTES
    pieces (a single longer message in one read of its own).
    """
    unpack = HEADER.unpack_from
    crc32 = zlib.crc32
    size = os.fstat(fd).st_size
    count = 0
    good = 0  # the file offset after the last whole message
    skipped_at = 0
    while good < size:
        data = os.pread(fd, READ_BYTES, good)
        if len(data) >= FRAME_OVERHEAD and frame_length(data) > len(data):
            if good + frame_length(data) > size:
                break  # torn (or a length changed on the disk): never read past the end
            data = os.pread(fd, frame_length(data), good)
        view = memoryview(data)
        offset = 0
        end = len(data)
        while offset + FRAME_OVERHEAD <= end:
            length, crc = unpack(data, offset)
            stop = offset + FRAME_OVERHEAD + length
            if stop > end or crc32(view[offset + FRAME_OVERHEAD : stop], length) != crc:
                break
            offset = stop
            count += 1
            if count == skip:
                skipped_at = good + offset
        view.release()
        if offset == 0:
            break  # the frame at GOOD is incomplete or does not check
        good += offset
    if count < skip:
        skipped_at = good
    return count, good, skipped_at


def checkpoint_bytes(sequence: int) -> bytes:
    number = sequence.to_bytes(8, "big")
    return number + zlib.crc32(number).to_bytes(4, "big")


def read_checkpoint(path: str) -> int | None:
    """The sequence number in the checkpoint at PATH: 0 when there is none, None when corrupt."""
    try:
        with open(path, "rb") as f:
            data = f.read(CHECKPOINT.size + 1)
    except FileNotFoundError:
        return 0
    if len(data) != CHECKPOINT.size:
        return None
    sequence, crc = CHECKPOINT.unpack(data)
    if zlib.crc32(data[:8]) != crc:
        return None
    return int(sequence)


class Run:
    """
    Messages with consecutive sequence numbers in one place; `base` is the
    number of messages[0].  messages[:head] were acknowledged (kept until
    the list is compacted), messages[head:taken] are in flight.
    """

    __slots__ = ("messages", "base", "head", "taken")

    def __init__(self, base: int, messages: list[bytes] | None = None) -> None:
        self.messages = messages if messages is not None else []
        self.base = base
        self.head = 0
        self.taken = 0

    def take(self, count: int, budget: int, out: list[tuple[int, bytes]]) -> int:
        """
        Append up to COUNT untaken messages to OUT, stopping before BUDGET
        bytes unless OUT is still empty; returns the bytes taken.
        """
        messages = self.messages
        i = self.taken
        end = min(len(messages), i + count)
        sequence = self.base + i
        used = sum(map(len, messages[i:end]))
        if used <= budget or (not out and end == i + 1):
            out.extend(zip(range(sequence, sequence + end - i), messages[i:end], strict=True))
            self.taken = end
            return used
        used = 0
        while i < end:
            message = messages[i]
            if used + len(message) > budget and out:
                break
            out.append((sequence, message))
            used += len(message)
            i += 1
            sequence += 1
        self.taken = i
        return used

    def untaken(self) -> bool:
        return self.taken < len(self.messages)

    def acknowledge(self, upto: int) -> int:
        """Taken messages numbered UPTO or less leave; returns how many."""
        stop = min(self.taken, upto - self.base + 1)
        count = stop - self.head
        if count <= 0:
            return 0
        self._acknowledged(self.head, stop)
        self.head = stop
        if self.head > 1024 and 2 * self.head > len(self.messages):
            del self.messages[: self.head]
            self.base += self.head
            self.taken -= self.head
            self.head = 0
        return count

    def _acknowledged(self, start: int, stop: int) -> None:
        """messages[start:stop] were acknowledged."""

    def give_back(self) -> int:
        count = self.taken - self.head
        self.taken = self.head
        return count

    def finished(self) -> bool:
        """Every message of the run was acknowledged: it can go."""
        return self.head == len(self.messages)

    def next_sequence(self) -> int:
        return self.base + len(self.messages)


class MemoryRun(Run):
    """Messages held in memory; `size` counts them against memory_bytes."""

    __slots__ = ("size",)

    def __init__(self, base: int) -> None:
        super().__init__(base)
        self.size = 0

    def add(self, messages: list[bytes], size: int) -> None:
        self.messages += messages
        self.size += size

    def _acknowledged(self, start: int, stop: int) -> None:
        self.size -= sum(map(len, self.messages[start:stop])) + MEMORY_OVERHEAD * (stop - start)


class Segment(Run):
    """
    A segment file: `count` messages from number `first`, `size` bytes
    written.  Its `messages` are those read back (from `read_offset` on) and
    not yet acknowledged; only the newest segment, `writable`, is appended to.
    """

    __slots__ = ("path", "first", "count", "size", "read_offset", "fd", "writable", "delivered")

    def __init__(self, path: str, first: int, count: int, size: int, skip: int, skip_offset: int):
        super().__init__(first + skip)
        self.path = path
        self.first = first
        self.count = count
        self.size = size
        self.read_offset = skip_offset
        self.delivered = skip_offset  # bytes of the acknowledged messages at its start
        self.fd: int | None = None
        self.writable = False

    @classmethod
    def create(cls, directory: str, first: int) -> "Segment":
        path = os.path.join(directory, segment_name(first))
        segment = cls(path, first, 0, 0, 0, 0)
        segment.fd = os.open(
            path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600
        )
        segment.writable = True
        return segment

    def append(self, data: bytes, count: int) -> None:
        """
        Write DATA (COUNT framed messages) at the end, all or nothing: a
        write that fails part-way is cut back; if even that fails the
        segment takes no more writes (a torn frame must stay its last).
        """
        assert self.fd is not None
        view = memoryview(data)
        done = 0
        try:
            while done < len(data):
                done += os.write(self.fd, view[done:])
        except OSError:
            try:
                os.ftruncate(self.fd, self.size)  # whatever part reached the file
            except OSError:
                self.writable = False
            raise
        self.size += len(data)
        self.count += count

    def take(self, count: int, budget: int, out: list[tuple[int, bytes]]) -> int:
        used = 0
        while count > 0:
            if self.taken == len(self.messages):
                if self.read_offset >= self.size:
                    break
                self._load()
            before = len(out)
            used += Run.take(self, count, budget - used, out)
            count -= len(out) - before
            if self.taken < len(self.messages):
                break  # the budget is spent
        return used

    def _load(self) -> None:
        """Read the next READ_BYTES of messages (or the one message longer than that)."""
        if self.fd is None:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        if self.head:
            del self.messages[: self.head]
            self.base += self.head
            self.taken -= self.head
            self.head = 0
        want = min(READ_BYTES, self.size - self.read_offset)
        data = os.pread(self.fd, want, self.read_offset)
        used = parse_frames(data, self.messages)
        if not used and len(data) >= FRAME_OVERHEAD:
            data = os.pread(self.fd, frame_length(data), self.read_offset)
            used = parse_frames(data, self.messages)
        if not used:
            raise OSError(errno.EIO, "segment shorter than what was written to it", self.path)
        self.read_offset += used
        if self.read_offset >= self.size and not self.writable:
            self.close()

    def untaken(self) -> bool:
        return self.taken < len(self.messages) or self.read_offset < self.size

    def _acknowledged(self, start: int, stop: int) -> None:
        self.delivered += sum(map(len, self.messages[start:stop])) + FRAME_OVERHEAD * (
            stop - start
        )

    def finished(self) -> bool:
        return self.base + self.head == self.first + self.count

    def next_sequence(self) -> int:
        return self.first + self.count

    def seal(self, sync: bool) -> None:
        """
        Take no more writes (fsynced first with SYNC); closed until read, so
        a long queue keeps two files open, not hundreds.
        """
        if self.writable and sync and self.fd is not None:
            os.fsync(self.fd)
        self.writable = False
        self.close()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def delete(self) -> None:
        self.close()
        os.unlink(self.path)
