"""
The files of a forward queue's disk part, and nothing else: how messages
are framed in segment files, how a segment is checked (and its torn tail
found) at start, and the checkpoint.

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
