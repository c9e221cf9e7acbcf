"""
A forward target's queue: order across memory and disk, what the forwarder
takes, acknowledges and gives back, full queues, sync, restarts, and disk
segments repaired after a crash or a failing disk.
"""

import errno
import os
import shutil

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.logger import segments as segments_module
from suite.logger.queue import ForwardQueue, QueueInUse
from suite.logger.segments import FRAME_OVERHEAD, MEMORY_OVERHEAD, segment_name
from tests.helpers import captured_log, tmp_dir

MiB = 2**20


def numbered(start: int, stop: int, width: int = 10) -> list[bytes]:
    """Messages START … STOP-1, each naming its number."""
    return [b"message %0*d" % (width, n) for n in range(start, stop)]


def take_all(queue: ForwardQueue, acknowledge: bool = True) -> list[tuple[int, bytes]]:
    """Everything the queue holds, in the order the forwarder gets it (bounded)."""
    taken: list[tuple[int, bytes]] = []
    for _ in range(10_000):
        batch = queue.take(100, MiB)
        if not batch:
            break
        taken += batch
        if acknowledge:
            queue.acknowledge(batch[-1][0])
    return taken


def messages_of(taken: list[tuple[int, bytes]]) -> list[bytes]:
    return [message for _, message in taken]


def in_memory(messages: list[bytes]) -> int:
    return sum(len(m) + MEMORY_OVERHEAD for m in messages)


def on_disk(messages: list[bytes]) -> int:
    return sum(len(m) + FRAME_OVERHEAD for m in messages)


def segments(directory) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.endswith(".seg"))


class QueueTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.directory = str(tmp_dir(self) / "queue")
        self.log = captured_log(self)

    def open(self, memory_bytes=0, queue_bytes=MiB, when_full="block", directory=None, sync=False):
        queue = ForwardQueue(
            "central",
            self.directory if directory is None else directory,
            memory_bytes,
            queue_bytes,
            when_full,
            self.clock,
            sync=sync,
        )
        self.addCleanup(queue.stopService)
        return queue

    def lines(self, word: str) -> list[str]:
        return [line for line in self.log if word in line]


class OrderTests(QueueTestCase):
    def test_memory_then_disk_then_memory_again(self) -> None:
        """
        Messages fill memory, spill to disk, keep going to disk while it
        holds any (even once memory has room), and go to memory again once
        the disk part is taken; the forwarder gets them all in order.
        """
        first, second, third = numbered(0, 10), numbered(10, 20), numbered(20, 25)
        queue = self.open(memory_bytes=in_memory(first))
        queue.put(first)
        self.assertEqual(queue.queued_bytes, (in_memory(first), 0))
        queue.put(second)
        self.assertEqual(queue.queued_bytes, (in_memory(first), on_disk(second)))

        early = queue.take(5, MiB)
        queue.acknowledge(early[-1][0])
        queue.put(third)  # memory has room, but the disk holds messages: after them
        self.assertEqual(
            queue.queued_bytes, (in_memory(first[5:]), on_disk(second) + on_disk(third))
        )
        taken = early + take_all(queue)
        self.assertEqual(messages_of(taken), first + second + third)
        self.assertEqual([n for n, _ in taken], list(range(1, 26)))
        self.assertEqual(queue.queued_bytes, (0, 0))
        self.assertEqual(len(queue), 0)

        queue.put(numbered(25, 28))  # nothing on disk waits: memory again
        self.assertEqual(queue.queued_bytes, (in_memory(numbered(25, 28)), 0))
        self.assertEqual(take_all(queue), list(zip(range(26, 29), numbered(25, 28), strict=True)))

    def test_memory_is_used_once_the_disk_part_is_all_taken(self) -> None:
        """Messages taken from disk but unacknowledged stay ahead of newer ones in memory."""
        queue = self.open(memory_bytes=in_memory(numbered(0, 4)))
        queue.put(numbered(0, 4))
        queue.put(numbered(4, 8))  # disk
        in_flight = queue.take(8, MiB)
        queue.acknowledge(2)
        queue.put(numbered(8, 10))  # memory: nothing on disk waits to be taken
        self.assertEqual(queue.queued_bytes[0], in_memory(numbered(2, 4) + numbered(8, 10)))
        self.assertEqual(queue.give_back(), 6)
        self.assertEqual(
            take_all(queue), in_flight[2:] + list(zip(range(9, 11), numbered(8, 10), strict=True))
        )

    def test_memory_only(self) -> None:
        queue = self.open(memory_bytes=MiB, directory="")
        queue.put(numbered(0, 50))
        self.assertEqual(queue.queued_bytes, (in_memory(numbered(0, 50)), 0))
        self.assertEqual(messages_of(take_all(queue)), numbered(0, 50))
        self.assertEqual(queue.stored(), None)


operations = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.lists(st.integers(0, 60), min_size=1, max_size=8)),
        st.tuples(st.just("take"), st.integers(1, 6), st.integers(1, 150)),
        st.tuples(st.just("acknowledge"), st.integers(0, 3)),
        st.tuples(st.just("give_back")),
        st.tuples(st.just("restart")),
    ),
    min_size=5,
    max_size=60,
)


class ModelTests(QueueTestCase):
    @settings(max_examples=60, deadline=None)
    @given(st.sampled_from([0, 150, 600]), operations)
    def test_behaves_as_one_ordered_list(self, memory_bytes, steps) -> None:
        """
        Whatever the mix of puts, takes, acknowledgements, lost connections
        and clean restarts, across memory, many small segments and back: the
        queue is one list in order, each message keeps its number, and
        acknowledged messages never come back.
        """
        self.patch(segments_module, "SEGMENT_BYTES", 150)
        directory = str(tmp_dir(self) / "queue")
        queue = self.open(memory_bytes=memory_bytes, directory=directory)
        waiting: list[bytes] = []  # the model: unacknowledged messages, in order
        numbers: dict[bytes, int] = {}
        in_flight = 0
        made = 0
        for step in steps:
            if step[0] == "put":
                batch = [b"%d:" % (made + i) + b"." * size for i, size in enumerate(step[1])]
                made += len(batch)
                queue.put(batch)
                waiting += batch
            elif step[0] == "take":
                taken = queue.take(step[1], step[2])
                expected = waiting[in_flight : in_flight + len(taken)]
                self.assertEqual(messages_of(taken), expected)
                if in_flight < len(waiting):
                    self.assertTrue(taken)
                self.assertLessEqual(len(taken), step[1])
                for number, message in taken:
                    self.assertEqual(numbers.setdefault(message, number), number)
                in_flight += len(taken)
            elif step[0] == "acknowledge" and in_flight:
                upto = min(step[1], in_flight - 1)
                queue.acknowledge(numbers[waiting[upto]])
                del waiting[: upto + 1]
                in_flight -= upto + 1
            elif step[0] == "give_back":
                self.assertEqual(queue.give_back(), in_flight)
                in_flight = 0
            elif step[0] == "restart":
                queue.stopService()
                queue = self.open(memory_bytes=memory_bytes, directory=directory)
                in_flight = 0
            self.assertEqual(len(queue), len(waiting))
        ordered = sorted(numbers.values())
        self.assertEqual(ordered, sorted(set(ordered)))
        queue.give_back()
        self.assertEqual(messages_of(take_all(queue)), waiting)
        queue.stopService()


class ConsumerTests(QueueTestCase):
    def test_take_limits_count_and_bytes_but_gives_at_least_one(self) -> None:
        queue = self.open(memory_bytes=MiB)
        queue.put([b"a" * 10, b"b" * 10, b"c" * 10, b"d" * 100, b"e"])
        self.assertEqual(queue.take(2, MiB), [(1, b"a" * 10), (2, b"b" * 10)])
        self.assertEqual(queue.take(10, 15), [(3, b"c" * 10)])
        self.assertEqual(queue.take(10, 15), [(4, b"d" * 100)])  # larger than the budget
        self.assertEqual(queue.take(10, 15), [(5, b"e")])
        self.assertEqual(queue.take(10, 15), [])
        self.assertEqual(len(queue), 5)  # in flight still counts

    def test_acknowledge_and_give_back(self) -> None:
        """
        Acknowledged messages leave; a lost connection gives back the rest
        of what was in flight, taken again first with the same numbers.
        """
        queue = self.open(memory_bytes=in_memory(numbered(0, 5)))
        queue.put(numbered(0, 10))  # 5 in memory, 5 on disk
        taken = queue.take(8, MiB)
        self.assertEqual([n for n, _ in taken], list(range(1, 9)))
        queue.acknowledge(3)
        self.assertEqual(len(queue), 7)
        self.assertEqual(queue.give_back(), 5)
        self.assertEqual(queue.give_back(), 0)
        again = queue.take(100, MiB)
        self.assertEqual(again, taken[3:] + list(zip(range(9, 11), numbered(8, 10), strict=True)))
        queue.acknowledge(100)  # beyond what was taken: only the taken ones leave
        self.assertEqual(len(queue), 0)
        queue.put(numbered(10, 11))
        self.assertEqual(queue.take(1, MiB), [(11, b"message 0000000010")])

    def test_acknowledge_never_takes_what_was_not_taken(self) -> None:
        queue = self.open(memory_bytes=MiB)
        queue.put(numbered(0, 4))
        queue.take(2, MiB)
        queue.acknowledge(4)
        self.assertEqual(len(queue), 2)
        self.assertEqual(messages_of(queue.take(10, MiB)), numbered(2, 4))

    def test_on_ready_after_take_found_nothing(self) -> None:
        queue = self.open(memory_bytes=0)
        calls: list[None] = []
        queue.on_ready(lambda: calls.append(None))
        queue.put(numbered(0, 1))
        self.assertEqual(calls, [])  # the forwarder has not looked yet
        self.assertEqual(len(queue.take(10, MiB)), 1)
        self.assertEqual(queue.take(10, MiB), [])
        queue.put(numbered(1, 2))
        queue.put(numbered(2, 3))
        self.assertEqual(calls, [None])
        queue.take(10, MiB)
        self.assertEqual(queue.take(10, MiB), [])
        self.assertEqual(queue.give_back(), 3)
        self.assertEqual(calls, [None, None])

    def test_delivered_segments_are_deleted(self) -> None:
        self.patch(segments_module, "SEGMENT_BYTES", 100)
        queue = self.open(memory_bytes=0)
        for n in range(10):
            queue.put(numbered(n * 4, n * 4 + 4))  # 4 x 26 bytes: a segment per put
        self.assertEqual(len(segments(self.directory)), 10)
        queue.acknowledge(queue.take(20, MiB)[-1][0])
        self.assertEqual(segments(self.directory), [segment_name(n) for n in range(21, 41, 4)])
        self.assertEqual(queue.queued_bytes, (0, on_disk(numbered(20, 40))))

    def test_a_message_longer_than_a_read(self) -> None:
        self.patch(segments_module, "READ_BYTES", 64)
        queue = self.open(memory_bytes=0)
        batch = [b"short", b"L" * 500, b"after"]
        queue.put(batch)
        self.assertEqual(messages_of(take_all(queue)), batch)


class ReadFailureTests(QueueTestCase):
    def test_a_segment_deleted_underneath_loses_only_its_messages(self) -> None:
        self.patch(segments_module, "SEGMENT_BYTES", 100)
        queue = self.open(memory_bytes=0)
        for n in range(3):
            queue.put(numbered(n * 4, n * 4 + 4))  # a segment each
        os.unlink(os.path.join(self.directory, segment_name(5)))
        self.assertEqual(messages_of(take_all(queue)), numbered(0, 4) + numbered(8, 12))
        self.assertEqual((len(queue), queue.dropped, queue.queued_bytes), (0, 4, (0, 0)))
        self.assertEqual(len(self.lines("deleted by another program")), 1)

    def test_a_segment_that_cannot_be_read_is_tried_again(self) -> None:
        self.patch(segments_module, "SEGMENT_BYTES", 100)
        queue = self.open(memory_bytes=0)
        queue.put(numbered(0, 4))
        queue.put(numbered(4, 8))
        ready: list[None] = []
        queue.on_ready(lambda: ready.append(None))
        pread = os.pread

        def failing(fd, size, offset):
            raise OSError(errno.EIO, os.strerror(errno.EIO))

        self.patch(os, "pread", failing)
        self.assertEqual(queue.take(10, MiB), [])
        self.assertEqual(queue.take(10, MiB), [])
        self.assertEqual(len(self.lines("cannot read")), 1)
        self.patch(os, "pread", pread)
        self.clock.advance(1)
        self.assertEqual(ready, [None])
        self.assertEqual(messages_of(take_all(queue)), numbered(0, 8))
        self.assertEqual(len(self.lines("reading its segments again")), 1)


class FullTests(QueueTestCase):
    def test_drop_counts_what_does_not_fit(self) -> None:
        queue = self.open(memory_bytes=in_memory(numbered(0, 3)), directory="", when_full="drop")
        pressure: list[bool] = []
        queue.on_pressure(pressure.append)
        for _ in range(5):
            queue.put(numbered(0, 5))
        self.assertEqual(len(queue), 3)
        self.assertFalse(queue.full)
        self.assertEqual(pressure, [])
        samples = {(name, labels): value for name, labels, value in queue.metric_samples()}
        self.assertEqual(samples["forward_dropped", ("central",)], 22)
        self.assertEqual(samples["forward_queued", ("central",)], 3)
        self.assertEqual(len(self.lines("dropped")), 1)  # once a minute at most
        self.clock.advance(60)
        queue.put(numbered(0, 1))
        self.assertEqual(len(self.lines("dropped")), 2)
        self.assertEqual(messages_of(take_all(queue)), numbered(0, 3))

    def test_drop_spills_to_disk_then_drops(self) -> None:
        memory, disk = numbered(0, 2), numbered(2, 5)
        queue = self.open(
            memory_bytes=in_memory(memory), queue_bytes=on_disk(disk), when_full="drop"
        )
        queue.put(numbered(0, 8))
        self.assertEqual(queue.queued_bytes, (in_memory(memory), on_disk(disk)))
        self.assertEqual(queue.dropped, 3)
        self.assertEqual(messages_of(take_all(queue)), memory + disk)

    def test_block_accepts_everything_and_says_when_full(self) -> None:
        memory, disk = numbered(0, 2), numbered(2, 4)
        queue = self.open(
            memory_bytes=in_memory(memory), queue_bytes=on_disk(disk), when_full="block"
        )
        pressure: list[bool] = []
        queue.on_pressure(pressure.append)
        queue.put(numbered(0, 3))
        self.assertEqual(pressure, [])
        queue.put(numbered(3, 6))  # one read's overshoot is accepted
        self.assertEqual(pressure, [True])
        self.assertTrue(queue.full)
        self.assertEqual((len(queue), queue.dropped), (6, 0))
        queue.acknowledge(queue.take(4, MiB)[-1][0])  # the disk part is still at its bound
        self.assertEqual(pressure, [True])
        queue.acknowledge(queue.take(1, MiB)[-1][0])
        self.assertEqual(pressure, [True, False])
        self.assertEqual(messages_of(take_all(queue)), numbered(5, 6))

    def test_memory_only_block(self) -> None:
        queue = self.open(memory_bytes=in_memory(numbered(0, 2)), directory="")
        pressure: list[bool] = []
        queue.on_pressure(pressure.append)
        queue.put(numbered(0, 5))
        self.assertEqual((pressure, len(queue)), ([True], 5))
        queue.acknowledge(queue.take(4, MiB)[-1][0])
        self.assertEqual(pressure, [True, False])

    def test_a_message_larger_than_the_whole_queue_is_dropped(self) -> None:
        """Even blocking: it could never fit, and would hold everything back."""
        for when_full in ("block", "drop"):
            queue = self.open(
                memory_bytes=100,
                queue_bytes=100,
                when_full=when_full,
                directory=f"{self.directory}-{when_full}",
            )
            queue.put([b"before", b"x" * 200, b"after"])
            self.assertEqual(messages_of(take_all(queue)), [b"before", b"after"])
            self.assertEqual(queue.dropped, 1)
            self.assertFalse(queue.full)
        self.assertEqual(len(self.lines("larger than the whole queue")), 2)


class SyncTests(QueueTestCase):
    def test_stored_fires_after_the_fsync(self) -> None:
        """
        Every message is on disk and fsynced before stored() fires, with one
        fsync for all the puts of a turn of the reactor.
        """
        events: list[str] = []
        write, fsync = os.write, os.fsync

        def recording_write(fd, data):
            events.append("write")
            return write(fd, data)

        def recording_fsync(fd):
            events.append("fsync")
            fsync(fd)

        self.patch(os, "write", recording_write)
        self.patch(os, "fsync", recording_fsync)
        queue = self.open(memory_bytes=MiB, sync=True)
        queue.put(numbered(0, 3))
        first = queue.stored()
        queue.put(numbered(3, 6))
        second = queue.stored()
        self.assertEqual(queue.queued_bytes[0], 0)  # straight to disk
        first.addCallback(lambda _: events.append("stored"))
        second.addCallback(lambda _: events.append("stored"))
        self.assertEqual(events, ["write", "write"])
        self.clock.advance(0)
        # The segment, then the directory (a new file's name), then the callers.
        self.assertEqual(events, ["write", "write", "fsync", "fsync", "stored", "stored"])
        self.assertIsNone(self.successResultOf(queue.stored()))  # nothing new: already safe
        del events[:]
        queue.put(numbered(6, 7))
        queue.stored().addCallback(lambda _: events.append("stored"))
        self.clock.advance(0)
        self.assertEqual(events, ["write", "fsync", "stored"])

    def test_one_write_for_the_messages_of_a_put(self) -> None:
        writes: list[int] = []
        write = os.write

        def counting_write(fd, data):
            writes.append(len(data))
            return write(fd, data)

        self.patch(os, "write", counting_write)
        queue = self.open(memory_bytes=0)
        queue.put(numbered(0, 100))
        self.assertEqual(writes, [on_disk(numbered(0, 100))])

    def test_sync_without_a_directory_says_what_it_means(self) -> None:
        queue = self.open(memory_bytes=MiB, directory="", sync=True)
        self.assertEqual(len(self.lines("acknowledged to senders while only in memory")), 1)
        queue.put(numbered(0, 1))
        self.assertIsNone(self.successResultOf(queue.stored()))

    def test_without_sync_nothing_waits(self) -> None:
        queue = self.open(memory_bytes=0)
        queue.put(numbered(0, 1))
        self.assertIsNone(queue.stored())


class RestartTests(QueueTestCase):
    def test_stop_writes_memory_to_disk_and_a_new_queue_gives_everything_back(self) -> None:
        """
        A clean stop loses nothing: what waited in memory (in flight or not)
        is on disk, in order, with its numbers; acknowledged messages do not
        come back, and numbers go on rising.
        """
        queue = self.open(memory_bytes=in_memory(numbered(0, 4)))
        queue.put(numbered(0, 4))  # memory
        queue.put(numbered(4, 8))  # disk
        queue.acknowledge(queue.take(2, MiB)[-1][0])
        queue.take(3, MiB)  # in flight at the stop
        queue.put(numbered(8, 9))  # disk, after the others
        queue.stopService()

        again = self.open(memory_bytes=MiB)
        self.assertEqual(len(again), 7)
        self.assertEqual(again.queued_bytes, (0, on_disk(numbered(2, 9))))
        again.put(numbered(9, 10))  # memory: nothing on disk is taken yet, so disk
        self.assertEqual(take_all(again), list(zip(range(3, 11), numbered(2, 10), strict=True)))
        again.stopService()

        third = self.open(memory_bytes=MiB)
        self.assertEqual(len(third), 0)
        third.put(numbered(10, 11))
        self.assertEqual(third.take(1, MiB), [(11, b"message 0000000010")])

    def test_messages_put_after_the_stop_go_straight_to_disk(self) -> None:
        """Connections still closing during shutdown: what they bring is kept."""
        queue = self.open(memory_bytes=MiB)
        queue.put(numbered(0, 2))
        queue.stopService()
        queue.put(numbered(2, 4))
        again = self.open(memory_bytes=MiB)
        self.assertEqual(messages_of(take_all(again)), numbered(0, 4))

    def test_a_corrupt_checkpoint_starts_from_the_oldest_message(self) -> None:
        queue = self.open(memory_bytes=0)
        queue.put(numbered(0, 5))
        queue.acknowledge(queue.take(3, MiB)[-1][0])
        queue.stopService()
        again = self.open(memory_bytes=0)
        self.assertEqual(messages_of(take_all(again, acknowledge=False)), numbered(3, 5))
        again.stopService()

        with open(os.path.join(self.directory, "checkpoint"), "r+b") as f:
            f.write(b"\xff")
        third = self.open(memory_bytes=0)
        self.assertEqual(messages_of(take_all(third)), numbered(0, 5))
        self.assertEqual(len(self.lines("is corrupt")), 1)

    def test_a_second_queue_on_the_directory_is_refused(self) -> None:
        queue = self.open()
        with self.assertRaises(QueueInUse) as raised:
            self.open()
        self.assertIsInstance(raised.exception, OSError)
        self.assertIn("another running suite", str(raised.exception))
        queue.stopService()
        self.open()  # the lock went with the first queue

    def test_directory_created_private_and_foreign_files_left_alone(self) -> None:
        os.makedirs(self.directory)
        os.rmdir(self.directory)
        queue = self.open(directory=os.path.join(self.directory, "deeper"))
        directory = os.path.join(self.directory, "deeper")
        self.assertEqual(os.stat(directory).st_mode & 0o777, 0o700)
        queue.stopService()
        foreign = {
            "notes.txt": b"mine",
            "1.seg": b"not a segment",
            "00000000000000000001.bak": b"x",
        }
        for name, data in foreign.items():
            with open(os.path.join(directory, name), "wb") as f:
                f.write(data)
        queue = self.open(directory=directory)
        queue.put(numbered(0, 3))
        take_all(queue)
        queue.stopService()
        for name, data in foreign.items():
            with open(os.path.join(directory, name), "rb") as f:
                self.assertEqual(f.read(), data)

    def test_a_directory_that_cannot_be_made_is_an_error_at_build(self) -> None:
        blocker = str(tmp_dir(self) / "file")
        open(blocker, "w").close()
        self.assertRaises(OSError, self.open, directory=os.path.join(blocker, "queue"))


class RepairTests(QueueTestCase):
    """A segment torn or changed on the disk is cut back to its last whole message at start."""

    def make_segment(self) -> tuple[bytes, list[int], list[bytes]]:
        """A segment of messages of several lengths: (its bytes, frame ends, messages)."""
        messages = [b"first", b"second message", b"x" * 40, b"", b"last one"]
        queue = self.open(memory_bytes=0)
        queue.put(messages[:2])
        queue.put(messages[2:])
        queue.stopService()
        (name,) = segments(self.directory)
        with open(os.path.join(self.directory, name), "rb") as f:
            data = f.read()
        ends = []
        end = 0
        for message in messages:
            end += FRAME_OVERHEAD + len(message)
            ends.append(end)
        self.assertEqual(ends[-1], len(data))
        return data, ends, messages

    def reopen_with(self, data: bytes, case: str) -> tuple[ForwardQueue, list[bytes]]:
        directory = os.path.join(self.directory + "-cases", case)
        os.makedirs(directory)
        with open(os.path.join(directory, segment_name(1)), "wb") as f:
            f.write(data)
        del self.log[:]
        queue = self.open(directory=directory)
        kept = messages_of(take_all(queue, acknowledge=False))
        queue.stopService()
        shutil.rmtree(directory)
        return queue, kept

    def test_torn_at_every_byte_of_the_last_messages(self) -> None:
        data, ends, messages = self.make_segment()
        for size in range(ends[1], len(data) + 1):
            whole = sum(1 for end in ends if end <= size)
            queue, kept = self.reopen_with(data[:size], f"torn-{size}")
            self.assertEqual(kept, messages[:whole], size)
            cut = size - ends[whole - 1]
            self.assertEqual(queue.cut_bytes, cut, size)
            self.assertEqual(len(self.lines(f"cut {cut} bytes")), 1 if cut else 0, size)

    def test_a_changed_byte_cuts_from_its_message_on(self) -> None:
        data, ends, messages = self.make_segment()
        for offset in range(ends[1], len(data)):
            changed = bytearray(data)
            changed[offset] ^= 0x5A
            damaged = sum(1 for end in ends if end <= offset)  # the frame holding OFFSET
            queue, kept = self.reopen_with(bytes(changed), f"flip-{offset}")
            self.assertEqual(kept, messages[:damaged], offset)
            self.assertEqual(queue.cut_bytes, len(data) - ends[damaged - 1], offset)
            self.assertEqual(len(self.lines("cut ")), 1, offset)

    def test_a_repaired_queue_goes_on_after_its_last_whole_message(self) -> None:
        data, ends, messages = self.make_segment()
        with open(os.path.join(self.directory, segment_name(1)), "r+b") as f:
            f.truncate(ends[2] + 3)
        queue = self.open(memory_bytes=0)
        self.assertEqual(len(queue), 3)
        queue.put([b"new"])
        self.assertEqual(
            take_all(queue),
            [(1, messages[0]), (2, messages[1]), (3, messages[2]), (4, b"new")],
        )
        samples = {(name, labels): value for name, labels, value in queue.metric_samples()}
        self.assertEqual(samples["forward_queue_cut_bytes", ("central",)], 3)


class DiskFailureTests(QueueTestCase):
    def fail_writes(self, after_bytes: int | None = None) -> None:
        """os.write fails with ENOSPC (after writing AFTER_BYTES, when given) until restored."""
        write = os.write

        def failing(fd, data):
            if after_bytes:
                write(fd, bytes(data[:after_bytes]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        self.patch(os, "write", failing)
        self.restore_writes = lambda: self.patch(os, "write", write)

    def test_messages_wait_in_memory_while_the_disk_is_full(self) -> None:
        queue = self.open(memory_bytes=0)
        pressure: list[bool] = []
        queue.on_pressure(pressure.append)
        queue.put(numbered(0, 3))
        self.fail_writes()
        queue.put(numbered(3, 6))
        queue.put(numbered(6, 9))  # one read more, after the queue turned full
        self.assertEqual(pressure, [True])
        self.assertEqual(len(queue), 9)
        self.assertEqual(queue.queued_bytes, (in_memory(numbered(3, 9)), on_disk(numbered(0, 3))))
        self.assertEqual(len(self.lines("cannot write")), 1)
        self.assertEqual(len(queue.health_problems()), 1)
        self.assertEqual(messages_of(queue.take(100, MiB)), numbered(0, 3))
        self.clock.advance(1)  # still failing: no new line
        self.assertEqual(len(self.lines("cannot write")), 1)

        self.restore_writes()
        self.clock.advance(1)
        self.assertEqual(pressure, [True, False])
        self.assertEqual(len(self.lines("again")), 1)
        self.assertEqual(queue.health_problems(), [])
        self.assertEqual(queue.give_back(), 3)
        self.assertEqual(take_all(queue), list(zip(range(1, 10), numbered(0, 9), strict=True)))

    def test_a_write_torn_by_the_full_disk_is_cut_back(self) -> None:
        queue = self.open(memory_bytes=0)
        queue.put(numbered(0, 3))
        self.fail_writes(after_bytes=7)
        queue.put(numbered(3, 6))
        self.restore_writes()
        self.clock.advance(1)
        queue.stopService()
        again = self.open(memory_bytes=0)
        self.assertEqual(again.cut_bytes, 0)
        self.assertEqual(messages_of(take_all(again)), numbered(0, 6))

    def test_sync_callers_wait_for_the_retry(self) -> None:
        queue = self.open(memory_bytes=0, sync=True)
        self.fail_writes()
        queue.put(numbered(0, 2))
        stored = queue.stored()
        self.clock.advance(1)
        self.assertNoResult(stored)
        self.restore_writes()
        self.clock.advance(1)
        self.assertIsNone(self.successResultOf(stored))
        self.assertEqual(messages_of(take_all(queue)), numbered(0, 2))

    def test_dropping_while_the_disk_fails(self) -> None:
        queue = self.open(memory_bytes=0, when_full="drop")
        self.fail_writes()
        queue.put(numbered(0, 2))  # kept: accepted before the failure was known
        queue.put(numbered(2, 4))  # the queue counts as full
        self.assertEqual((len(queue), queue.dropped), (2, 2))
        self.restore_writes()
        self.clock.advance(1)
        self.assertEqual(messages_of(take_all(queue)), numbered(0, 2))

    def test_metrics(self) -> None:
        queue = self.open(memory_bytes=in_memory(numbered(0, 1)))
        queue.put(numbered(0, 3))
        self.assertEqual(
            sorted(queue.metric_samples()),
            [
                ("forward_dropped", ("central",), 0),
                ("forward_queue_bytes", ("central", "disk"), on_disk(numbered(1, 3))),
                ("forward_queue_bytes", ("central", "memory"), in_memory(numbered(0, 1))),
                ("forward_queue_cut_bytes", ("central",), 0),
                ("forward_queued", ("central",), 3),
            ],
        )
