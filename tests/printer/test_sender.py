"""The compiled sender, pure: window bounds, acknowledgements, resends, probes, reply parsing."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.native import streamcore as core

LINES = [(i * 10, b"G1 X%d" % i) for i in range(40)]


def sender(max_commands: int = 4, rx_bytes: int = 128) -> core.Sender:
    s = core.Sender(max_commands, rx_bytes)
    s.push(list(LINES))
    return s


def test_window_bounded_by_commands_and_bytes() -> None:
    s = sender(4, 1000)
    out = s.fill()
    assert out.count(b"\n") == 4 and s.inflight == 4 and s.fill() == b""
    s2 = sender(16, 40)  # ~12-byte frames: three fit in 40 bytes
    assert s2.fill().count(b"\n") == 3 and s2.inflight_bytes <= 40


def test_plain_oks_acknowledge_in_order_and_report_offsets() -> None:
    s = sender()
    s.fill()
    assert s.receive(b"ok\nok\n") == [] and s.last_acked == 2 and s.job_lines_acked == 2
    assert s.acked_job_offsets(5) == [10, 0]
    assert s.fill() == b"N5 G1 X4*%d\nN6 G1 X5*%d\n" % (core.checksum(b"N5 G1 X4"), core.checksum(b"N6 G1 X5"))


def test_verified_resend_rewinds_and_stale_duplicates_are_ignored() -> None:
    s = sender()
    s.fill()
    s.receive(b"ok\n")
    events = s.receive(b"Error:checksum mismatch, Last Line: 1\nResend: 2\nok\n")
    assert [e[0] for e in events] == [core.EV_ERROR, core.EV_RESEND] and events[1][2] == 2
    assert s.last_acked == 1 and s.resends == 1
    assert s.fill().startswith(b"N2 G1 X1*")
    stale = s.receive(b"Error:Line Number is not Last Line Number+1, Last Line: 1\nResend: 2\nok\n")
    assert stale[1][2] is None and s.resends == 1 and s.last_acked == 1  # its ok was swallowed too


def test_resend_not_confirmed_by_last_line_resends_from_the_oldest_unacknowledged_line() -> None:
    s = sender()
    s.fill()
    events = s.receive(b"Error:checksum mismatch, Last Line: 0\nResend: 3\nok\n")  # 'Resend: 1' garbled to 3
    assert events[1][2] == 1 and s.last_acked == 0  # nothing skipped, nothing acknowledged
    assert s.fill().startswith(b"N1 G1 X0*")


def test_resend_below_the_acknowledged_line_takes_acks_back() -> None:
    s = sender()
    s.fill()
    s.receive(b"ok\nok\nok\n")  # one of these was not ours (the firmware knows better)
    s.receive(b"Error:Line Number is not Last Line Number+1, Last Line: 1\nResend: 2\nok\n")
    assert s.last_acked == 1 and s.job_lines_acked == 1 and s.fill().startswith(b"N2 ")


def test_advanced_ok_acknowledges_by_number_and_survives_a_lost_ok() -> None:
    s = sender()
    s.fill()
    s.receive(b"ok N1 P15 B3\n")
    assert s.last_acked == 1 and s.advanced_ok_seen and (s.planner_free, s.queue_free) == (15, 3)
    s.receive(b"ok N3 P14 B3\n")  # the ok for 2 was lost: counted as one until confirmed
    assert s.last_acked == 2
    s.receive(b"ok N4 P13 B3\n")
    assert s.last_acked == 4


def test_garbled_ok_still_counts_and_other_replies_become_events() -> None:
    s = sender()
    s.fill()
    events = s.receive(b"oK\nT:210.5 /210.0 B:60.1 /60.0 @:64 B@:12\necho:busy: processing\n"
                       b"//action:pause\nError:Printer halted. kill() called!\nstart\nok\nok\n")
    assert s.last_acked == 1 and s.garbled_oks == 1  # nothing after 'start' moves the counters
    kinds = [e[0] for e in events]
    assert kinds == [core.EV_TEMPERATURE, core.EV_BUSY, core.EV_ACTION, core.EV_FATAL, core.EV_START]
    assert events[0][2] == (210.5, 210.0, 60.1, 60.0, 64.0, 12.0) and events[2][2] == b"pause"


def test_replies_split_across_chunks() -> None:
    s = sender()
    s.fill()
    assert s.receive(b"o") == [] and s.receive(b"k\nok") == [] and s.last_acked == 1
    s.receive(b"\n")
    assert s.last_acked == 2


def test_long_commands_are_flagged() -> None:
    s = core.Sender(4, 128)
    s.push([(0, b"G28"), (4, b"G1 X1")])
    s.fill()
    assert s.long_in_flight()
    s.receive(b"ok\n")
    assert not s.long_in_flight()


# --- ADVANCED_OK: B (free command slots) sizes the window ------------------------------------
def framed_bytes(first: int, count: int) -> int:
    return sum(len(core.frame(n, LINES[n - 1][1])) for n in range(first, first + count))


def test_advanced_ok_b_grows_the_window_and_frees_receive_buffer_bytes() -> None:
    s = sender(4, 128)
    s.fill()
    assert s.window == 4 and s.inflight == 4
    s.receive(b"ok N1 P15 B15\n")  # BUFSIZE is at least B + 1 = 16: believed once a second ok agrees
    assert s.window == 4
    s.receive(b"ok N2 P15 B15\n")
    assert s.firmware_bufsize == 16 and s.window == core.LINE_CAP
    s.fill()
    assert s.rx_bytes <= 128  # nothing is known to be queued yet: the byte bound alone
    s.receive(b"ok N3 P14 B10\n")  # 16 - 10 - 1 = 5 lines after N3 sit in the command queue
    assert s.rx_bytes == s.inflight_bytes - framed_bytes(4, 5)
    s.fill()
    assert s.rx_bytes <= 128 and s.inflight > 4  # more lines in flight than the configured window
    s.receive(b"ok N4 P0 B0\n")  # a full queue: 15 lines after N4 queued, only what follows is in RX
    queued = min(15, s.inflight)
    assert s.rx_bytes == s.inflight_bytes - framed_bytes(5, queued)
    s.fill()
    assert s.rx_bytes <= 128 and s.queue_free_min == 0
    s.receive(b"ok N5 P0 B1\nok\n")  # an ok without B: the lines queued stay queued until acknowledged
    assert s.rx_bytes == s.inflight_bytes - framed_bytes(7, min(13, s.inflight))


def test_only_a_well_formed_in_order_ok_is_believed() -> None:
    s = sender(4, 4096)
    s.fill()
    s.receive(b"ok N1 P15 B9999\n")  # no firmware has that many slots
    assert s.firmware_bufsize == 0 and s.window == 4
    s.receive(b"ok N2 P15 B93\n")  # 'B3' with one byte flipped into a digit: not believed alone
    assert s.firmware_bufsize == 0 and s.window == 4
    s.receive(b"ok N3 P15 B3\n")  # the next ok says 4: the smaller of the two
    assert s.firmware_bufsize == 4
    s2 = sender(4, 128)
    s2.fill()
    s2.receive(b"ok N1 P15 B15\nok N2 P15 B15\n")
    s2.fill()
    for garbled in (b"ok N3 P15 B1\x8a", b"ok N3 P15 \xc2B1", b"ok N3 P1\xb55 B1", b"ok N3 P15 B1 x"):
        s3 = sender(4, 128)
        s3.fill()
        s3.receive(b"ok N1 P15 B15\nok N2 P15 B15\n")
        s3.fill()
        s3.receive(garbled + b"\n")
        assert s3.last_acked == 3 and s3.rx_bytes == s3.inflight_bytes, garbled  # acknowledged, B ignored
    s2.receive(b"ok N4 P15 B1\n")  # out of order (the ok for 3 was lost): acknowledged, B not trusted
    assert s2.rx_bytes == s2.inflight_bytes


def test_reported_buffer_cannot_claim_more_queued_lines_than_are_in_flight() -> None:
    s = sender(4, 128)
    s.fill()
    s.receive(b"ok N1 P15 B31\nok N2 P15 B31\n")  # BUFSIZE 32
    s.receive(b"ok N3 P15 B0\n")  # says 31 queued; only what was sent can be
    assert s.rx_bytes == 0 and s.inflight_bytes > 0


def test_ping_pong_ignores_the_reported_buffer() -> None:
    s = sender(1, 128)
    s.fill()
    s.receive(b"ok N1 P15 B15\n")
    s.fill()
    s.receive(b"ok N2 P15 B15\n")
    assert s.window == 1 and s.fill().count(b"\n") == 1


def test_resend_forgets_what_the_queue_held() -> None:
    s = sender(4, 128)
    s.fill()
    s.receive(b"ok N1 P15 B15\nok N2 P15 B15\n")
    s.fill()
    s.receive(b"ok N3 P15 B12\n")
    assert s.rx_bytes < s.inflight_bytes
    s.receive(b"Error:checksum mismatch, Last Line: 3\nResend: 4\nok\n")
    assert s.inflight_bytes == 0 and s.rx_bytes == 0
    s.fill()
    assert s.rx_bytes == s.inflight_bytes <= 128  # nothing after the resend is known to be queued


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 24), st.integers(64, 512), st.booleans(),
       st.lists(st.sampled_from(["take", "run", "reply", "host"]), min_size=50, max_size=400))
def test_marlin_like_firmware_never_overflows_and_runs_every_line_once(
        bufsize: int, rx_size: int, handshake: bool, steps: list[str]) -> None:
    """A pure model of Marlin's receive buffer and command ring (B = BUFSIZE - length, the
    acknowledged command still counted), driven in random orders: the host never sends more bytes
    than the receive buffer holds, and every line runs once, in order."""
    lines = [(i * 20, b"G1 X%d Y%d E%d" % (i, i * 7 % 300, i * 13)) for i in range(120)]
    s = core.Sender(4, rx_size)
    rx = bytearray()
    ring: list[bytes] = []
    replies: list[bytes] = []
    executed: list[bytes] = []
    if handshake:  # M115 on an idle firmware: B + 1 is BUFSIZE exactly
        s.inject(b"M115")
        rx += s.fill()
        ring.append(bytes(rx).rstrip(b"\n"))
        rx.clear()
    s.push(list(lines))


    def run_one() -> None:
        framed = ring[0]
        number = int(framed.split(b" ", 1)[0][1:])
        body = framed.rsplit(b"*", 1)[0].split(b" ", 1)[1]
        if not body.startswith(b"M115"):
            executed.append(body)
        replies.append(b"ok N%d P15 B%d\n" % (number, bufsize - len(ring)))
        ring.pop(0)

    for step in steps + ["host", "take", "run", "reply"] * 400:
        if step == "take" and len(ring) < bufsize and b"\n" in rx:
            line, _, rest = bytes(rx).partition(b"\n")
            ring.append(line)
            rx[:] = rest
        elif step == "run" and ring:
            run_one()
        elif step == "reply" and replies:
            s.receive(replies.pop(0))
        elif step == "host":
            rx += s.fill()
            assert len(rx) <= rx_size, "the host overran the firmware's receive buffer"
            assert s.inflight <= core.LINE_CAP
    assert executed == [c for _, c in lines]
    assert s.firmware_bufsize <= bufsize


def test_octoprint_refusals_after_a_resend_are_served_once_and_their_oks_acknowledge_nothing() -> None:
    """OctoPrint's Virtual Printer does not flush its buffer: every line after the refused one is
    refused in turn (``expected line 2 got 3``), each with ``Resend: 2`` and an ``ok``."""
    s = sender()
    s.fill()  # N1..N4
    s.receive(b"ok\n")
    events = s.receive(b"Error: Missing checksum\nResend:2\nok\n")
    assert events[1][2] == 2 and s.last_acked == 1 and s.resends == 1
    resent = s.fill()
    assert resent.startswith(b"N2 ")
    stale = s.receive(b"Error: expected line 2 got 3\nResend:2\nok\nError: expected line 2 got 4\nResend:2\nok\n")
    assert [e[2] for e in stale if e[0] == core.EV_RESEND] == [None, None]
    assert s.resends == 1 and s.last_acked == 1 and s.fill() == b""  # nothing resent twice, no ok counted
    assert resent.count(b"\n") == 4  # 2, 3, 4 again and the new 5
    s.receive(b"ok\nok\nok\n")
    assert s.last_acked == 4 and s.fill().startswith(b"N6 ")


def test_expected_line_confirms_where_the_firmware_stands() -> None:
    s = sender()
    s.fill()
    s.receive(b"ok\nok\n")  # the second ok was not for line 2 (an ok the host misattributed)
    events = s.receive(b"Error: expected line 2 got 3\nResend:2\nok\n")
    assert events[1][2] == 2 and s.last_acked == 1 and s.job_lines_acked == 1


def test_rs_and_skip_wordings() -> None:
    s = sender()
    s.fill()
    events = s.receive(b"rs N1\nok\n")  # Smoothieware / RepRapFirmware wording, no number confirmed
    assert events[0][2] == 1 and s.last_acked == 0
    s.fill()
    s.receive(b"skip 1\nok\n")  # Repetier: line 1 was already there
    assert s.last_acked == 1 and s.job_lines_acked == 1


def test_a_refused_copy_rewinds_nothing_unless_acknowledgements_ran_ahead() -> None:
    s = sender()
    s.fill()  # N1..N4
    s.receive(b"ok\n")
    assert s.probe().startswith(b"N2 ")  # a probe: the oldest unacknowledged line again
    events = s.receive(b"ok\nError: expected line 3 got 2\nResend:3\nok\n")  # 2 done; the probe's copy refused
    assert events[1][2] is None and s.last_acked == 2 and s.resends == 0  # 3 and 4 are still coming
    t = sender()
    t.fill()
    t.receive(b"ok\nok\nok\n")  # three oks counted, but the firmware has only line 1
    events = t.receive(b"Error: expected line 2 got 1\nResend:2\nok\n")
    assert events[1][2] == 2 and t.last_acked == 1 and t.fill().startswith(b"N2 ")


@pytest.mark.parametrize("refusal", [b"Error:Line Number is not Last Line Number+1, Last Line: 8\nResend: 9\nok\n",
                                     b"Error: expected line 9 got %d\nResend:9\nok\n"])
def test_a_confirmed_refusal_beyond_a_rewind_moves_the_host_forward(refusal: bytes) -> None:
    """An unconfirmed resend (a garbled number) rewinds behind the firmware; the refusal of the
    first line sent again says where the firmware stands, beyond what was resent: believe it."""
    s = sender(4, 1000)
    s.fill()  # N1..N4
    s.receive(b"ok\nok\nok\nok\n")
    s.fill()  # N5..N8, all accepted
    s.receive(b"Resend: 1\n")  # garbled on the way back (no error before it confirms it)
    assert s.fill().startswith(b"N1 ")  # nothing confirmed: from the oldest line the host is unsure of
    events = s.receive(refusal.replace(b"%d", b"1"))
    assert s.last_acked == 8 and s.rx_bytes == s.inflight_bytes == 0
    assert s.fill() == b"".join(core.frame(n, b"G1 X%d" % (n - 1)) for n in range(9, 13))  # not N2... again
    stale = s.receive(refusal.replace(b"%d", b"2"))
    assert [e[2] for e in events + stale if e[0] == core.EV_RESEND] == [9, None]  # N2's refusal: served once
    assert s.resends == 2 and s.fill() == b""


class MarlinModel:
    """A pure model of Marlin's serial side, for the sender to talk to: a receive buffer (lines in, maybe
    garbled), a command queue of ``bufsize`` (a line is accepted into it when it is next in number and its
    checksum holds, else refused with ``Error:... Last Line: k``, ``Resend: k+1``, ``ok``), and replies
    sent as each command runs (``ok``, or with ADVANCED_OK ``ok N<line> P15 B<free slots>`` with the
    running command still counted; an M105 answers ``ok T:...``).  Faults are armed one at a time: the
    next line written arrives garbled, the next ok is lost, the next reply has one byte garbled."""

    def __init__(self, sender: core.Sender, bufsize: int, advanced_ok: bool = False,
                 rnd: random.Random | None = None, check_acks: bool = False) -> None:
        self.s, self.bufsize, self.advanced_ok, self.rnd = sender, bufsize, advanced_ok, rnd
        #: after every reply: the host never counts a line as processed before the firmware ran it
        self.check_acks = check_acks
        self.rx: list[tuple[bytes, bool]] = []   # (frame, garbled)
        self.queue: list[tuple[int, bytes]] = []
        self.replies: list[bytes] = []
        self.executed: list[bytes] = []         # the job's moves, as run
        self.accepted = self.processed = 0
        self.faults = {"garble_in": False, "garble_out": False, "lose": False}

    def write(self, data: bytes) -> None:
        for framed in data.split(b"\n")[:-1]:
            self.rx.append((framed, self.faults["garble_in"]))
            self.faults["garble_in"] = False

    def take(self) -> None:
        framed, garbled = self.rx.pop(0)
        number = int(framed.split(b" ", 1)[0][1:])
        body = framed.rsplit(b"*", 1)[0].split(b" ", 1)[1]
        if garbled or number != self.accepted + 1:
            why = b"checksum mismatch" if garbled else b"Line Number is not Last Line Number+1"
            self.replies.extend([b"Error:%s, Last Line: %d\n" % (why, self.accepted),
                                 b"Resend: %d\n" % (self.accepted + 1), b"ok\n"])
        else:
            self.accepted = number
            self.queue.append((number, body))

    def run(self) -> None:
        number, body = self.queue[0]
        self.processed = number
        if body == b"M105":
            self.replies.append(b"ok T:20.0 /0.0\n")
        else:
            if body.startswith(b"G"):
                self.executed.append(body)
            self.replies.append(b"ok N%d P15 B%d\n" % (number, self.bufsize - len(self.queue)) if self.advanced_ok
                                else b"ok\n")
        self.queue.pop(0)

    def reply(self) -> None:
        line = self.replies.pop(0)
        if self.faults["lose"] and line.startswith(b"ok"):
            self.faults["lose"] = False
            return
        if self.faults["garble_out"] and self.rnd is not None:
            self.faults["garble_out"] = False
            at = self.rnd.randrange(len(line) - 1)
            line = line[:at] + bytes([self.rnd.choice(b"0123456789:,N #\xff")]) + line[at + 1:]
        self.s.receive(line)
        if self.check_acks:
            assert self.s.last_acked <= self.processed, "a line counted as processed before it ran"

    def handshake(self, command: bytes) -> None:
        """One command sent, run and answered on an idle firmware (M105: the ok's form; M115: B + 1 is BUFSIZE)."""
        self.s.inject(command)
        self.write(self.s.fill())
        self.take()
        self.run()
        self.reply()

    def step(self, name: str) -> None:
        if name == "take" and self.rx and len(self.queue) < self.bufsize:
            self.take()
        elif name == "run" and self.queue:
            self.run()
        elif name == "reply" and self.replies:
            self.reply()
        elif name == "host":
            self.write(self.s.fill())
        elif name == "probe":
            self.write(self.s.probe())
        elif name in self.faults:
            self.faults[name] = True

    def finish_on_a_clean_link(self, rounds: int) -> None:
        """No more faults: the host writes what its window allows and probes only on silence."""
        self.faults = dict.fromkeys(self.faults, False)
        for _ in range(rounds):
            self.write(self.s.fill())
            if self.rx and len(self.queue) < self.bufsize:
                self.take()
            elif self.queue:
                self.run()
            elif self.replies:
                self.reply()
            elif self.s.inflight or self.s.pending:
                self.write(self.s.probe())
            else:
                return


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 4), st.booleans(),
       st.lists(st.sampled_from(["take", "run", "reply", "host", "host", "lose", "garble_in", "probe"]),
                min_size=50, max_size=400))
def test_marlin_queue_semantics_with_lost_oks_and_early_probes(
        bufsize: int, markers: bool, steps: list[str]) -> None:
    """Marlin without ADVANCED_OK: a refusal's ``Last Line`` is the last line it *accepted* into its command
    queue, whose oks come only as each command runs; oks get lost on the way back, lines get garbled on the
    way in, and probes go out at any time (a tickle during a long M190). Every line runs once, in order;
    where the firmware answers M105 with ``ok T:`` the host never counts a line as processed before the
    firmware ran it (real Marlin, bambustudio: three late oks of queued lines were taken as those of the
    M109 behind them)."""
    lines = [(i * 20, b"G1 X%d" % i) for i in range(60)]
    s = core.Sender(4, 128)
    marlin = MarlinModel(s, bufsize, check_acks=markers)
    if markers:  # the handshake's M105 shows the firmware's answer form
        marlin.handshake(b"M105")
        assert s.marker_seen
    s.push(list(lines))
    for step in steps:
        marlin.step(step)
    marlin.finish_on_a_clean_link(4000)
    assert marlin.executed == [c for _, c in lines]
    assert s.last_acked == marlin.processed


@settings(max_examples=600, deadline=None)
@given(st.integers(2, 16), st.integers(96, 256), st.randoms(use_true_random=False),
       st.lists(st.sampled_from(["take", "take", "run", "reply", "reply", "host", "lose", "garble_in",
                                 "garble_out", "probe"]), min_size=50, max_size=600))
def test_advanced_ok_marlin_with_corruption_both_ways_runs_every_line_once(
        bufsize: int, rx_size: int, rnd: random.Random, steps: list[str]) -> None:
    """Marlin with ADVANCED_OK, lines garbled on the way in, replies with a byte garbled on the way back (an
    ``Error`` whose ``Last Line`` no longer reads, a ``Resend`` number off by a digit, an ok's N) and oks
    lost.  The window grows with B far past what the receive buffer holds after a rewind, so a refusal can
    name a line beyond the ones already resent (the CI wedge of 2026-12-03: the firmware at 276, the host
    resending from 262, every probe's answer dismissed).  Every line runs once, in order, and a clean link
    then always finishes the job."""
    lines = [(i * 20, b"G1 X%d Y%d E%d F1800" % (i, i * 7 % 300, i * 13)) for i in range(150)]
    s = core.Sender(4, rx_size)
    marlin = MarlinModel(s, bufsize, advanced_ok=True, rnd=rnd)
    marlin.handshake(b"M115")
    s.push(list(lines))
    for step in steps:
        marlin.step(step)
    marlin.finish_on_a_clean_link(6000)
    assert marlin.executed == [c for _, c in lines]
