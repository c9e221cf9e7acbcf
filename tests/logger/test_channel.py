"""
The collector split across worker processes, over real Unix socketpairs on
the real reactor, as the supervisor wires them: the parent's delivery
(real writers to files in a temporary directory) serves each worker's
channel; a worker's listeners feed its remote delivery.  What an operator
notices: one file with every worker's records, each connection's in order;
RELP answered only once the parent wrote; pressure reaching the workers'
listeners; nothing lost at a worker's stop; routes, forward targets and
the silent-source hearers working as in one process; a broken worker
channel closed without harm to the others; a worker whose parent is gone
taking nothing more.
"""

import json
import marshal
import os
import socket
import struct
from dataclasses import replace

from twisted.application.service import MultiService
from twisted.internet import defer, reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from suite.foundation.jsonlines import BatchWriter, WriteFailed, open_output
from suite.logger.channel import (
    EVENT,
    MESSAGES,
    NEEDS,
    FrameReader,
    RemoteDelivery,
    WorkerChannelFactory,
    connect_to_parent,
    frame_limit,
)
from suite.logger.delivery import Delivery
from suite.logger.records import RecordSink
from suite.logger.relay_settings import Match
from suite.logger.routing import Route
from suite.logger.service import LoggerSettings, build_shared, build_worker
from tests.helpers import captured_log, json_lines, tmp_dir
from tests.logger.test_delivery import HeldOutlet
from tests.logger.test_relp import OMRELP_OPEN, OPENED, ok, syslog


def peer(port):
    return IPv4Address("TCP", "192.0.2.7", port)


class ClosingTransport(StringTransport):
    """A StringTransport whose loseConnection ends the connection, as a socket's does."""

    def loseConnection(self):
        if not self.disconnecting:
            super().loseConnection()
            self.protocol.connectionLost(connectionDone)


def connect(factory, address):
    """A listener's connection from ADDRESS: (protocol, transport)."""
    protocol = factory.buildProtocol(address)
    transport = ClosingTransport(peerAddress=address)
    transport.protocol = protocol
    protocol.makeConnection(transport)
    return protocol, transport


def wait_until(predicate, seconds=5.0):
    """Fires once PREDICATE() holds; fails after SECONDS (polled every 10 ms)."""

    @defer.inlineCallbacks
    def poll():
        for _ in range(int(seconds / 0.01)):
            if predicate():
                return
            yield task.deferLater(reactor, 0.01, lambda: None)
        raise AssertionError(f"not within {seconds} s: {predicate}")

    return poll()


def pause(seconds):
    return task.deferLater(reactor, seconds, lambda: None)


def message(n, app="app", tag=b"m"):
    return b"<13>1 2024-05-01T12:00:00Z host %s - - - %s%d\n" % (app.encode(), tag, n)


def messages_of(path):
    return [r for r in json_lines(path) if r["event"] == "message"]


class HeldOutput:
    """An output whose writes fail (as a full disk's) while `held`."""

    def __init__(self, output):
        self.output = output
        self.held = False

    def __getattr__(self, name):
        return getattr(self.output, name)

    def write(self, data):
        if self.held:
            raise WriteFailed(0, OSError(28, "No space left on device"))
        self.output.write(data)


class Hearer:
    wants_hashes = True  # what the name server's compiled table asks: not made in a worker

    def __init__(self):
        self.heard_from = []

    def heard(self, routing, address, hashes=None):
        assert hashes is None
        self.heard_from += [(fields, address) for fields in routing]


class SplitTestCase(TestCase):
    """A parent and its workers on socketpairs, stopped at the end of each test."""

    def setUp(self):
        self.directory = tmp_dir(self)
        self.output = self.directory / "messages.jsonl"
        self.settings = LoggerSettings(output=str(self.output), listen=(), flush_interval=0.05)
        self.log = captured_log(self)

    def start(self, service):
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())

    def parent_from_settings(self):
        """The parent as the supervisor builds it: build_shared's parts."""
        parts = build_shared(self.settings, reactor)
        for service in parts.services:
            self.start(service)
        self.channels = parts.stream_factory
        return parts

    def parent_by_hand(self, outlets=None, routes=()):
        """A parent delivery of a started writer, with OUTLETS and ROUTES of the test's own."""
        writer = BatchWriter(open_output(str(self.output), 0, 1), reactor, 0.05, 2**20, 2**20)
        self.start(writer)
        self.writer = writer
        self.delivery = Delivery(RecordSink(writer, reactor), outlets or {}, routes=routes)
        self.channels = WorkerChannelFactory(self.delivery, frame_limit(self.settings.max_message))

    def pair(self):
        """(parent's end protocol's transport fd adopted, worker's fd) of a new socketpair."""
        parent_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            reactor.adoptStreamConnection(parent_end.fileno(), socket.AF_UNIX, self.channels)
        finally:
            parent_end.close()
        return worker_end.detach()

    def adopt(self, raw):
        """RAW serves a new worker end of its own, sending what the test says."""
        raw.lost = False
        fd = self.pair()
        try:
            reactor.adoptStreamConnection(fd, socket.AF_UNIX, Factory.forProtocol(lambda: raw))
        finally:
            os.close(fd)
        self.addCleanup(lambda: raw.transport.loseConnection())

    def worker(self):
        """A worker's parts, as build_worker makes them on its end of a socketpair."""
        parts = build_worker(self.settings, reactor, self.pair())
        remote = parts.stream_factory.delivery
        stop = MultiService()
        for service in parts.services:
            service.setServiceParent(stop)
        self.start(stop)
        self.addCleanup(self.close_channel, remote)
        return parts, remote, stop

    def close_channel(self, remote):
        channel = remote.channel
        if channel is not None and channel.transport is not None:
            channel.transport.loseConnection()
        return wait_until(lambda: remote.gone)

    def greeted(self, remote):
        return wait_until(lambda: remote.greeted and not remote.full)


class OneFileTests(SplitTestCase):
    @defer.inlineCallbacks
    def test_records_of_two_workers_land_in_one_file_each_connection_in_order(self):
        self.parent_from_settings()
        (first, remote_1, _), (second, remote_2, _) = self.worker(), self.worker()
        yield self.greeted(remote_1)
        yield self.greeted(remote_2)
        a, _ = connect(first.stream_factory, peer(40001))
        b, _ = connect(second.stream_factory, peer(40002))
        for n in range(0, 300, 3):  # reads of three messages, the workers taking turns
            a.dataReceived(message(n) + message(n + 1) + message(n + 2))
            b.dataReceived(
                message(n, tag=b"b") + message(n + 1, tag=b"b") + message(n + 2, tag=b"b")
            )
        yield defer.gatherResults([remote_1.written(), remote_2.written()])
        records = json_lines(self.output)
        by_peer = {}
        for record in records:
            if record["event"] == "message":
                by_peer.setdefault(record["peer"], []).append(record["message"])
        self.assertEqual(by_peer["192.0.2.7:40001"], [f"m{n}" for n in range(300)])
        self.assertEqual(by_peer["192.0.2.7:40002"], [f"b{n}" for n in range(300)])
        connected = [r["peer"] for r in records if r["event"] == "connected"]
        self.assertEqual(sorted(connected), ["192.0.2.7:40001", "192.0.2.7:40002"])
        self.assertEqual(records[0]["event"], "connected")  # written before its messages
        # Each worker wrote its own records: the parent wrote none of them.
        counted = [remote.writer.records_written for remote in (remote_1, remote_2)]
        self.assertEqual(sum(counted), len(records))
        self.assertEqual(self.channels.delivery.records.writer.records_written, 0)

    @defer.inlineCallbacks
    def test_a_worker_stop_waits_until_the_parent_has_written_what_it_took(self):
        # Written only when asked for, not by the drain's quiet wait: what the stop asks.
        self.settings = replace(self.settings, flush_interval=60.0)
        self.parent_from_settings()
        parts, remote, stop = self.worker()
        yield self.greeted(remote)
        protocol, _ = connect(parts.stream_factory, peer(40001))
        for n in range(100):
            protocol.dataReceived(message(n))
        yield stop.stopService()  # the drain, then the parent's confirmation
        self.assertEqual(
            [r["message"] for r in messages_of(self.output)], [f"m{n}" for n in range(100)]
        )
        yield wait_until(lambda: not self.channels.open)  # then the channel is closed


class OwnRecordsTests(SplitTestCase):
    @defer.inlineCallbacks
    def test_a_parent_that_needs_nothing_is_sent_nothing_per_read(self):
        self.parent_by_hand()
        delivered = []
        self.patch(self.delivery, "deliver", lambda *args: delivered.append(args))
        parts, remote, _ = self.worker()
        yield self.greeted(remote)
        protocol, _ = connect(parts.stream_factory, peer(40001))
        for n in range(50):
            protocol.dataReceived(message(n))
        yield remote.written()
        self.assertEqual(delivered, [])
        self.assertEqual(
            [r["message"] for r in messages_of(self.output)], [f"m{n}" for n in range(50)]
        )

    @defer.inlineCallbacks
    def test_with_routes_the_parent_writes_every_record(self):
        route_writer = BatchWriter(
            open_output(str(self.directory / "auth.jsonl"), 0, 1), reactor, 0.05, 2**20
        )
        self.start(route_writer)
        self.parent_by_hand(routes=[Route(Match(app="sshd"), route_writer, stop=True)])
        parts, remote, _ = self.worker()
        yield self.greeted(remote)
        self.assertFalse(remote._own)
        protocol, _ = connect(parts.stream_factory, peer(40001))
        protocol.dataReceived(message(1, app="cron"))
        yield remote.written()
        self.assertEqual([r["message"] for r in messages_of(self.output)], ["m1"])
        self.assertEqual(remote.writer.records_written, 0)
        self.assertEqual(self.writer.records_written, 2, "connected, then the message")


class WrittenTests(SplitTestCase):
    @defer.inlineCallbacks
    def test_relp_is_answered_only_once_its_record_is_written(self):
        self.parent_by_hand()
        parts, remote, _ = self.worker()
        yield self.greeted(remote)
        self.assertTrue(remote._own, "no routes: the worker writes its own records")
        held = remote.writer.output = HeldOutput(remote.writer.output)
        relp, transport = connect(parts.other_listeners["relp_listen"].stream_factory, peer(40001))
        relp.dataReceived(OMRELP_OPEN)
        self.assertEqual(transport.value(), OPENED)
        transport.clear()
        held.held = True  # the disk is full
        relp.dataReceived(syslog(2, b"<13>kept"))
        written = remote.written()
        yield pause(0.3)
        self.assertEqual((transport.value(), written.called), (b"", False))
        self.assertEqual(messages_of(self.output), [])
        held.held = False  # the writer retries every second
        yield written
        self.assertEqual([r["message"] for r in messages_of(self.output)], ["kept"])
        yield wait_until(lambda: transport.value() == ok(2))


class PressureTests(SplitTestCase):
    @defer.inlineCallbacks
    def test_a_full_parent_holds_back_every_worker_listener_and_drops_datagrams(self):
        outlet = HeldOutlet()
        self.parent_by_hand({outlet.name: outlet})
        parts, remote, _ = self.worker()
        yield self.greeted(remote)
        protocol, transport = connect(parts.stream_factory, peer(40001))
        datagrams = parts.make_datagram_protocol()
        outlet.set_full(True)  # a forward queue that blocks has no room
        yield wait_until(lambda: remote.full)
        self.assertEqual(transport.producerState, "paused")
        datagrams.datagramReceived(b"<13>lost", ("192.0.2.8", 514))
        self.assertEqual(datagrams.dropped, 1)
        outlet.set_full(False)
        yield wait_until(lambda: not remote.full)
        self.assertEqual(transport.producerState, "producing")
        protocol.dataReceived(message(1))
        yield wait_until(lambda: outlet.messages)
        self.assertEqual(outlet.messages, [message(1).rstrip(b"\n")])

    @defer.inlineCallbacks
    def test_a_worker_whose_parent_is_gone_takes_nothing_more(self):
        self.parent_by_hand()
        parts, remote, _ = self.worker()
        yield self.greeted(remote)
        _, transport = connect(parts.stream_factory, peer(40001))
        for channel in list(self.channels.open):
            channel.transport.abortConnection()  # the parent died
        yield wait_until(lambda: remote.gone)
        self.assertTrue(remote.full)
        self.assertEqual(transport.producerState, "paused")
        self.assertTrue(
            any("the channel to the parent process is gone" in line for line in self.log)
        )
        written = remote.written()
        self.assertTrue(written.called)  # nothing was sent: nothing to wait for


class SilentParent(Protocol):
    """A parent that greets its worker, then reads nothing more."""

    def connectionMade(self):
        payload = marshal.dumps((NEEDS, False, False, False))
        self.transport.write(struct.pack(">I", len(payload)) + payload)
        self.transport.pauseProducing()


class WriteBufferTests(SplitTestCase):
    @defer.inlineCallbacks
    def test_a_worker_is_full_while_the_parent_reads_it_too_slowly(self):
        parent_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        parent = SilentParent()
        try:
            reactor.adoptStreamConnection(
                parent_end.fileno(), socket.AF_UNIX, Factory.forProtocol(lambda: parent)
            )
        finally:
            parent_end.close()
        self.addCleanup(lambda: parent.transport.loseConnection())
        remote = RemoteDelivery(self.settings, reactor)
        connect_to_parent(reactor, worker_end.detach(), remote)
        self.addCleanup(self.close_channel, remote)
        told = []
        remote.on_pressure(told.append)
        yield self.greeted(remote)
        frames = [(message(n) * 10, False) for n in range(100)]
        for _ in range(100):  # some 8 MB: more than the kernel and the write buffer hold
            if remote.full:
                break
            remote.messages(frames, "192.0.2.7:40001", "tcp")
            yield pause(0)
        self.assertEqual((remote.full, remote.write_full, told[-1:]), (True, True, [True]))
        parent.transport.resumeProducing()  # the parent catches up
        yield wait_until(lambda: not remote.full)
        self.assertEqual(told[-1], False)


class RoutingTests(SplitTestCase):
    @defer.inlineCallbacks
    def test_routes_and_forward_targets_work_through_the_split(self):
        outlet = HeldOutlet()
        auth = self.directory / "auth.jsonl"
        route_writer = BatchWriter(open_output(str(auth), 0, 1), reactor, 0.05, 2**20)
        self.start(route_writer)
        route = Route(Match(app="sshd"), route_writer, outlets=("central",), stop=True)
        self.parent_by_hand({outlet.name: outlet}, routes=[route])
        parts, remote, _ = self.worker()
        yield self.greeted(remote)
        self.assertTrue(remote.preparation.needs.routed)
        protocol, _ = connect(parts.stream_factory, peer(40001))
        protocol.dataReceived(message(1, app="sshd") + message(2, app="cron"))
        yield wait_until(lambda: outlet.pending is not None)
        outlet.on_disk()
        yield remote.written()
        self.assertEqual([r["message"] for r in messages_of(auth)], ["m1"])
        self.assertEqual([r["message"] for r in messages_of(self.output)], ["m2"])
        self.assertEqual(outlet.messages, [message(1, app="sshd").rstrip(b"\n")])

    @defer.inlineCallbacks
    def test_a_hearer_added_in_the_parent_hears_the_workers_senders(self):
        self.parent_by_hand()
        parts, remote, _ = self.worker()
        yield self.greeted(remote)
        self.assertFalse(remote.preparation.needs.fields)  # nothing to tell yet: not sent
        hearer = Hearer()
        self.delivery.add_hearer(hearer)  # the name server's watcher, wired after the build
        yield wait_until(lambda: remote.preparation.needs.fields)
        protocol, _ = connect(parts.stream_factory, peer(40001))
        protocol.dataReceived(message(1, app="sshd"))
        yield remote.written()
        self.assertEqual(hearer.heard_from, [((13, "host", "sshd"), "192.0.2.7")])


class RawWorker(Protocol):
    """A worker end that sends what the test says."""

    def connectionLost(self, reason):
        self.lost = True


class Frames(FrameReader):
    def __init__(self):
        super().__init__()
        self.items = []

    def received(self, item):
        self.items.append(item)

    def malformed(self, reason):
        self.items.append(("malformed", reason))


class FrameCuttingTests(TestCase):
    def test_frames_come_out_whole_however_the_reads_cut_them(self):
        items = [(MESSAGES, b"x" * size, None, None, "peer", 1) for size in (0, 3, 70000, 5)]
        data = b"".join(
            struct.pack(">I", len(payload)) + payload for payload in map(marshal.dumps, items)
        )
        for cut in (1, 3, 4, 5, 4096, 65536, len(data)):
            reader = Frames()
            for start in range(0, len(data), cut):
                reader.dataReceived(data[start : start + cut])
            self.assertEqual(reader.items, items, cut)

    def test_a_frame_above_the_limit_is_refused_before_its_bytes_come(self):
        reader = Frames()
        reader.limit = 100
        reader.dataReceived(struct.pack(">I", 101)[:2])
        reader.dataReceived(struct.pack(">I", 101)[2:])
        refused = ("malformed", "a frame of 101 bytes, above the limit of 100")
        self.assertEqual(reader.items, [refused])
        reader.dataReceived(b"more")
        self.assertEqual(len(reader.items), 1)


class MalformedTests(SplitTestCase):
    @defer.inlineCallbacks
    def check_closed_and_others_served(self, data, reason):
        self.parent_by_hand()
        parts, remote, _ = self.worker()
        yield self.greeted(remote)
        raw = RawWorker()
        self.adopt(raw)
        yield wait_until(lambda: len(self.channels.open) == 2)
        raw.transport.write(data)
        yield wait_until(lambda: raw.lost)
        broken = [line for line in self.log if "closing the channel of a worker process" in line]
        self.assertEqual(len(broken), 1)
        self.assertIn(reason, broken[0])
        protocol, _ = connect(parts.stream_factory, peer(40001))
        protocol.dataReceived(message(7))
        yield remote.written()
        self.assertEqual([r["message"] for r in messages_of(self.output)], ["m7"])

    def test_a_frame_that_does_not_decode_closes_that_channel_only(self):
        return self.check_closed_and_others_served(
            struct.pack(">I", 5) + b"\xff\xff\xff\xff\xff", "does not decode"
        )

    def test_a_frame_above_the_limit_closes_that_channel_only(self):
        return self.check_closed_and_others_served(
            struct.pack(">I", frame_limit(self.settings.max_message) + 1), "above the limit"
        )

    def test_a_frame_of_the_wrong_shape_closes_that_channel_only(self):
        payload = marshal.dumps((MESSAGES, ["line"], None, None, "peer", 1))
        return self.check_closed_and_others_served(
            struct.pack(">I", len(payload)) + payload, "does not fit"
        )

    def test_messages_without_their_count_close_that_channel_only(self):
        payload = marshal.dumps((MESSAGES, b"{}\n", None, None, "peer", "1"))
        return self.check_closed_and_others_served(
            struct.pack(">I", len(payload)) + payload, "does not fit"
        )

    @defer.inlineCallbacks
    def test_an_event_from_a_worker_keeps_its_time(self):
        self.parent_by_hand()
        raw = RawWorker()
        self.adopt(raw)
        yield wait_until(lambda: len(self.channels.open) == 1)
        payload = marshal.dumps((EVENT, "connected", "192.0.2.7:1", "tcp", None, None, 0.0))
        raw.transport.write(struct.pack(">I", len(payload)) + payload)
        yield wait_until(lambda: self.output.exists() and self.output.read_text())
        (record,) = [json.loads(line) for line in self.output.read_text().splitlines()]
        self.assertTrue(record["received"].startswith("1970-01-01T00:00:00"), record)
