"""The RELP client session: open and offers, window, TXNRs, in-order answers, errors."""

from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from suite.logger.relp_client import (
    MAX_DATA,
    MAX_TXNR,
    OFFERS,
    FrameReader,
    RelpProtocolError,
    RelpSession,
    frame,
    next_txnr,
)

SERVER_OFFERS = b"200 OK\nrelp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\ncommands=syslog"


class Owner:
    """Records what a session tells its owner."""

    def __init__(self):
        self.events = []
        self.session = None

    def established(self, session):
        self.events.append("established")

    def delivered(self, upto, count):
        self.events.append(("delivered", upto, count))

    def refused(self, count, answer):
        self.events.append(("refused", count, answer))

    def more_room(self):
        self.events.append("room")

    def lost(self, session, reason):
        self.events.append(("lost", reason))


def frames(data: bytes):
    return list(FrameReader().feed(data))


class FrameReaderTests(SynchronousTestCase):
    def test_frames_whole_split_at_every_byte_and_several_in_one_read(self):
        stream = (
            frame(1, b"rsp", SERVER_OFFERS)
            + frame(2, b"rsp", b"200 OK")
            + frame(0, b"serverclose")
        )
        expected = [(1, b"rsp", SERVER_OFFERS), (2, b"rsp", b"200 OK"), (0, b"serverclose", b"")]
        assert frames(stream) == expected
        reader = FrameReader()
        got = []
        for i in range(len(stream)):
            got += reader.feed(stream[i : i + 1])
        assert got == expected

    def test_data_may_hold_line_feeds_and_any_byte(self):
        data = b"200 OK\n\x00\xff\nmore"
        assert frames(frame(7, b"rsp", data)) == [(7, b"rsp", data)]

    def test_broken_frames_are_refused_as_soon_as_they_show(self):
        for broken in (
            b"x",  # not a TXNR
            b"1 rsp 3 abcX",  # data not followed by LF
            b"1234567890 rsp",  # ten digits of TXNR
            b"1 rsp 0 ",  # no data, yet a space
            b"1 rsp 5\n",  # data announced, none sent
            b"1 r-p",
        ):
            with self.assertRaises(RelpProtocolError, msg=broken):
                frames(broken)

    def test_an_answer_larger_than_the_bound_is_refused_before_it_is_read(self):
        with self.assertRaises(RelpProtocolError):
            frames(b"1 rsp %d " % (MAX_DATA + 1))


class RelpSessionTests(SynchronousTestCase):
    def setUp(self):
        self.owner = Owner()
        self.session = RelpSession(self.owner, window=3)
        self.transport = StringTransport()
        self.session.makeConnection(self.transport)

    def answer(self, *frames_):
        self.session.dataReceived(b"".join(frames_))

    def opened(self):
        self.answer(frame(1, b"rsp", SERVER_OFFERS))
        self.transport.clear()

    def test_opens_with_its_offers_and_waits_for_the_answer(self):
        assert self.transport.value() == b"1 open %d %s\n" % (len(OFFERS), OFFERS)
        assert OFFERS.startswith(b"relp_version=0\nrelp_software=suite,")
        assert OFFERS.endswith(b"\ncommands=syslog")
        assert self.session.room() == 0
        self.opened()
        assert self.owner.events == ["established"]
        assert self.session.room() == 3

    def test_a_refused_open_ends_the_session_with_the_targets_words(self):
        self.answer(frame(1, b"rsp", b"500 required command not supported by client"))
        assert self.transport.disconnecting
        assert self.session.reason == (
            "RELP protocol error: the target refused the session: "
            "500 required command not supported by client"
        )
        assert "established" not in self.owner.events

    def test_a_target_without_the_syslog_command_is_refused(self):
        self.answer(frame(1, b"rsp", b"200 OK\nrelp_version=0\ncommands=other"))
        assert self.transport.disconnecting
        assert "syslog" in self.session.reason

    def test_messages_go_as_syslog_frames_within_the_window(self):
        self.opened()
        self.session.send([(10, b"<13>one"), (11, b"<13>two words\n")])
        assert self.transport.value() == b"2 syslog 7 <13>one\n3 syslog 14 <13>two words\n\n"
        assert self.session.room() == 1
        self.answer(frame(2, b"rsp", b"200 OK"))
        assert self.owner.events[-2:] == [("delivered", 10, 1), "room"]
        assert self.session.room() == 2

    def test_answers_reach_the_queue_in_order(self):
        self.opened()
        self.session.send([(10, b"a"), (11, b"b"), (12, b"c")])
        self.answer(frame(4, b"rsp", b"200 OK"), frame(3, b"rsp", b"200 OK"))
        assert self.owner.events[1:] == []  # the first is not answered yet
        self.answer(frame(2, b"rsp", b"200 OK"))
        assert self.owner.events[1:] == [("delivered", 12, 3), "room"]

    def test_an_error_answer_is_reported_and_taken_as_done(self):
        self.opened()
        self.session.send([(10, b"a"), (11, b"b")])
        self.answer(frame(2, b"rsp", b"500 message refused"), frame(3, b"rsp", b"200 OK"))
        assert self.owner.events[1:] == [
            ("refused", 1, "500 message refused"),
            ("delivered", 11, 2),
            "room",
        ]

    def test_transaction_numbers_wrap_from_the_last_to_1(self):
        assert next_txnr(MAX_TXNR - 1) == MAX_TXNR
        assert next_txnr(MAX_TXNR) == 1
        self.opened()
        self.session._txnr = MAX_TXNR - 1  # as after a long session
        self.session.send([(1, b"a"), (2, b"b")])
        assert self.transport.value() == b"999999999 syslog 1 a\n1 syslog 1 b\n"
        self.answer(frame(MAX_TXNR, b"rsp", b"200 OK"), frame(1, b"rsp", b"200 OK"))
        assert ("delivered", 2, 2) in self.owner.events

    def test_an_answer_to_nothing_sent_breaks_the_session(self):
        self.opened()
        self.answer(frame(9, b"rsp", b"200 OK"))
        assert self.transport.disconnecting
        assert "transaction 9" in self.session.reason

    def test_answers_out_of_place_break_the_session(self):
        for answers in (
            [frame(2, b"rsp", b"200 OK")],  # before anything was sent
            [frame(3, b"rsp", b"200 OK"), frame(3, b"rsp", b"200 OK")],  # twice
            [frame(5, b"rsp", b"200 OK")],  # beyond what was sent
        ):
            self.setUp()
            self.opened()
            if answers[0] != frame(2, b"rsp", b"200 OK"):
                self.session.send([(10, b"a"), (11, b"b")])
            self.answer(*answers)
            assert self.transport.disconnecting, answers
            assert "not awaited" in self.session.reason
            assert not [e for e in self.owner.events if e[0] == "delivered"]

    def test_an_open_answered_without_offers_is_refused(self):
        self.answer(frame(1, b"rsp", b"200 OK"))
        assert self.transport.disconnecting
        assert self.session.reason.endswith("the target does not take the syslog command")

    def test_serverclose_ends_the_session(self):
        self.opened()
        self.session.send([(1, b"a")])
        self.answer(frame(0, b"serverclose"))
        assert self.transport.disconnecting
        self.session.connectionLost(Failure(ConnectionDone()))
        assert self.owner.events[-1] == (
            "lost",
            "the target closed the session (serverclose)",
        )

    def test_close_is_sent_and_its_answer_ends_the_session(self):
        self.opened()
        closed = self.session.close()
        assert self.transport.value() == b"2 close 0\n"
        assert self.session.room() == 0
        self.answer(frame(2, b"rsp"))
        assert self.transport.disconnecting
        assert not closed.called
        self.session.connectionLost(Failure(ConnectionDone()))
        assert closed.called

    def test_paused_by_its_transport_it_has_no_room(self):
        assert self.transport.producer is self.session
        self.opened()
        self.session.pauseProducing()
        assert self.session.room() == 0
        self.session.resumeProducing()
        assert self.session.room() == 3
        assert self.owner.events[-1] == "room"
