"""The native pump over a real pty: what it writes, and when it hands control back to Python."""
from __future__ import annotations

import os
import termios
import tty
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from node.native import streamcore as core

LINES = [(i * 10, b"G1 X%d" % i) for i in range(12)]


@contextmanager
def pty_pair() -> Iterator[tuple[int, int]]:
    """(printer side, host side); the host side blocks in read() for at most 0.1 s, as in streaming mode."""
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    attrs = termios.tcgetattr(slave)
    attrs[6][termios.VMIN], attrs[6][termios.VTIME] = 0, 1
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    try:
        yield master, slave
    finally:
        for fd in (master, slave):
            try:
                os.close(fd)
            except OSError:
                pass


def drain(fd: int) -> bytes:
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return b""
    finally:
        os.set_blocking(fd, True)


def test_pump_writes_the_window_and_reports_silence_events_and_the_end() -> None:
    with pty_pair() as (printer, host):
        sender = core.Sender(4, 128)
        sender.push(list(LINES))
        pump = core.Pump(sender, host, 96, 32)
        status, events = pump.run(0.05, 0)
        assert status == core.PUMP_SILENT and events is None  # nothing answered within the read timeout
        assert drain(printer).count(b"\n") == 4 and pump.writes == 1

        os.write(printer, b"ok\nT:200.0 /200.0 B:60.0 /60.0 @:40 B@:20\n")
        status, events = pump.run(0.05, 0)
        assert status == core.PUMP_EVENTS and events[0][0] == core.EV_TEMPERATURE
        assert sender.last_acked == 1 and pump.last_rx > 0

        unanswered = 3
        for _ in range(40):  # answer every line: the pump ends with nothing in flight and nothing to send
            unanswered += drain(printer).count(b"\n")
            os.write(printer, b"ok\n" * unanswered)
            unanswered = 0
            status, _ = pump.run(0.05, 0)
            if status == core.PUMP_IDLE:
                break
        assert status == core.PUMP_IDLE and sender.last_acked == len(LINES) and sender.pending == 0


def test_pump_asks_for_more_lines_before_it_blocks() -> None:
    with pty_pair() as (printer, host):
        sender = core.Sender(4, 128)
        sender.push(list(LINES))
        pump = core.Pump(sender, host, 96, 32)
        status, _ = pump.run(0.05, 100)
        assert status == core.PUMP_REFILL and drain(printer).count(b"\n") == 4


def test_pump_hands_resends_to_python() -> None:
    with pty_pair() as (printer, host):
        sender = core.Sender(4, 128)
        sender.push(list(LINES))
        pump = core.Pump(sender, host, 96, 32)
        pump.run(0.05, 0)
        os.write(printer, b"Error:checksum mismatch, Last Line: 0\nResend: 1\nok\n")
        status, events = pump.run(0.05, 0)
        assert status == core.PUMP_EVENTS and [e[0] for e in events] == [core.EV_ERROR, core.EV_RESEND]
        assert events[1][2] == 1 and sender.resends == 1


def test_a_closed_port_is_an_os_error() -> None:
    with pty_pair() as (printer, host):
        sender = core.Sender(4, 128)
        sender.push(list(LINES))
        pump = core.Pump(sender, host, 96, 32)
        os.close(printer)
        with pytest.raises(OSError):
            pump.run(0.05, 0)
