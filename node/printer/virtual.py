"""A Marlin-like printer on a pseudo-terminal, for development, tests and benchmarks.

It speaks the host protocol the way Marlin 2 does (``src/gcode/queue.cpp``,
marlinfw.org "G-code host protocol"):

* bytes land in a receive buffer of ``rx_buffer_bytes`` (Marlin's RX_BUFFER_SIZE,
  128 by default); bytes that arrive while it is full are lost, as on the board;
* complete lines move into a command queue of ``command_queue`` entries
  (BUFSIZE, 4) after the line-number and XOR-checksum checks; a bad line
  answers ``Error:... Last Line: k`` / ``Resend: k+1`` / ``ok`` and flushes the
  receive buffer (the lines behind it get no answer);
* a command is acknowledged with ``ok`` once processed: a move once it is in the
  planner (``planner_depth`` moves, 16), not when executed; with ``advanced_ok`` the
  ``ok`` carries ``N<last line> P<free planner> B<free queue>``;
* long waits (G28, M109, M190, M400, G4) print ``echo:busy: processing`` every
  ``busy_interval_s``; M109/M190 also print temperatures; M112 is honoured even
  while blocked (EMERGENCY_PARSER);
* M0/M1/M600 wait for the user (:meth:`VirtualPrinter.press_button`, or ``M108``
  through the emergency parser) saying ``echo:busy: paused for user``; M600 also
  sends ``//action:paused``;
* the link can run at an emulated baud rate (host-to-printer bytes are taken no
  faster than ``baud / 10`` per second);
* fault switches (:class:`Faults`) corrupt bytes in either direction, drop ``ok``s,
  reset mid-print or when the port is opened (DTR), halt with thermal runaway,
  kill the heater, fall silent, or drop the port.

Moves spend simulated time on the shared clock (``distance / feedrate``); heaters
follow the profile's first-order model.  With ``time_scale = 0`` (instant) moves
execute at once and nothing sleeps, so the printer is never the bottleneck of a
benchmark.  :class:`VirtualPrinter` is the firmware (no port); :func:`serve_pty`
puts it on a pty.
"""
from __future__ import annotations

import logging
import math
import os
import random
import re
import select
import threading
import time
import tty
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

from node.clock import Clock
from node.native import streamcore
from node.printer.profile import PrinterProfile

log = logging.getLogger(__name__)

PWM_MAX = 127  # Marlin reports heater power as 0..127
_WORD = re.compile(rb"([A-Z])\s*(-?\d*\.?\d+)")
_LINE_NUMBER = re.compile(rb"N(-?\d+)\s*")
FIRMWARE_BANNER = b"start\necho:Marlin 2.1.2 (printnode virtual printer)\necho: Free Memory: 4096\n"
_MOVES = frozenset((b"G0", b"G1", b"G2", b"G3"))
_NO_OPS = frozenset((b"M117", b"M73", b"M201", b"M203", b"M204", b"M205", b"M220", b"M221", b"M900",
                     b"M907", b"M17", b"T0", b"M862.3", b"M862.1", b"M300", b"G21", b"M486", b"M413",
                     b"G29", b"M420", b"M122", b"M593", b"M572", b"G80", b"M75", b"M76", b"M77", b"M1001",
                     b"M555", b"M142", b"M302", b"G64", b"M592", b"M591"))


@dataclass
class Faults:
    """Fault switches; each may be flipped at any time (tests) or from CLI flags."""

    corrupt_in: float = 0.0          # probability a received line gets one byte flipped
    corrupt_out: float = 0.0         # probability a reply line gets one byte flipped
    drop_ok: float = 0.0             # probability an ``ok`` is never sent
    reset_after_lines: int = 0       # reboot after this many numbered lines (0: never)
    reset_on_open: bool = False      # reboot when a host opens the port (DTR on 8-bit boards)
    runaway_at_c: float = 0.0        # halt with thermal runaway when the hotend passes this (0: never)
    dead_heater: bool = False        # the hotend heater produces no heat (and the firmware does not notice)
    silence_after_lines: int = 0     # stop answering after this many numbered lines (0: never)
    silence_s: float = 0.0           # ... for this many real seconds (0 with silence_after_lines: forever)
    disconnect_after_lines: int = 0  # drop the port after this many numbered lines (0: never)
    #: the command queue stops after this many numbered lines (0: never): nothing more is executed or
    #: answered, while temperature reports keep coming and the emergency parser (M112) still acts
    wedge_after_lines: int = 0
    #: line numbers lost whole on the wire once each (as real Marlin's Linux HAL loses the odd line while a
    #: timer signal lands in its serial thread): the next line is refused, "Resend:" asks for the lost one
    lose_lines: tuple[int, ...] = ()
    seed: int = 0

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass
class Heater:
    model_name: str
    temp_c: float
    target_c: float = 0.0
    pwm: float = 0.0


@dataclass
class MachineState:
    x: float = 0.0
    y: float = 0.0
    z: float = 0.0
    e: float = 0.0
    feedrate_mm_min: float = 3000.0
    absolute_xyz: bool = True
    absolute_e: bool = True
    fan: float = 0.0
    steppers_on: bool = False
    homed: bool = False


@dataclass
class Counters:
    lines_ok: int = 0
    checksum_errors: int = 0
    line_number_errors: int = 0
    rx_overflow_bytes: int = 0
    flushed_bytes: int = 0
    resets: int = 0
    oks_dropped: int = 0
    corrupted_in: int = 0
    corrupted_out: int = 0
    max_queue: int = 0               # most commands ever waiting in the command queue at once
    extra: dict[str, int] = field(default_factory=dict)


class VirtualPrinter:
    """The firmware: :meth:`feed` it received bytes, :meth:`service` processes them."""

    def __init__(self, profile: PrinterProfile, clock: Clock, write: Callable[[bytes], None],
                 ambient_c: float = 22.0, planner_depth: int | None = None,
                 command_log: Path | None = None, *, command_queue: int | None = None,
                 rx_buffer_bytes: int | None = None, advanced_ok: bool = False, baud: int = 0,
                 busy_interval_s: float = 2.0, faults: Faults | None = None) -> None:
        self.profile = profile
        self.clock = clock
        self._raw_write = write
        self.ambient_c = ambient_c
        self.planner_depth = planner_depth or profile.planner_depth
        self.command_queue = command_queue or profile.command_queue
        self.rx_buffer_bytes = rx_buffer_bytes or profile.rx_buffer_bytes
        self.advanced_ok = advanced_ok
        self.baud = baud
        self.busy_interval_s = busy_interval_s
        self.faults = faults or Faults()
        self.counters = Counters()
        self._rng = random.Random(self.faults.seed)
        self.hotend = Heater("hotend", ambient_c)
        self.bed = Heater("bed", ambient_c)
        self.state = MachineState()
        self.last_line = 0
        self.numbered_lines = 0
        self.halted = False
        self.autoreport_s = 0.0
        self._rx = bytearray()
        self._queue: deque[tuple[int, bytes]] = deque()  # (line number or -1, command)
        self._current_number = -1
        self._planner: deque[tuple[bytes, float]] = deque()
        self._planner_cv = threading.Condition()
        self._stop = threading.Event()
        self._thermal_t_s = clock.time()
        self._last_report_wall = time.monotonic()
        self._silent_until = 0.0
        self.wedged = False
        self._wire_free_at = 0.0
        self._booting_until = 0.0
        self.disconnect_requested = threading.Event()
        self.user_answered = threading.Event()  # the knob, or M108 through the emergency parser
        self.waiting_for_user = False
        self._pump: Callable[[], None] | None = None  # reads more input while blocked (set by serve_pty)
        self._command_log = open(command_log, "ab", buffering=0) if command_log else None  # noqa: SIM115
        self._log_lock = threading.Lock()

    @property
    def instant(self) -> bool:
        return self.clock.time_scale == 0

    # --- output -----------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        if self.faults.corrupt_out and self._rng.random() < self.faults.corrupt_out and len(data) > 1:
            data = _flip_one_byte(data, self._rng)
            self.counters.corrupted_out += 1
        self._raw_write(data)

    def _reply(self, text: str) -> None:
        self._write(text.encode() + b"\n")

    def host_action(self, action: str) -> None:
        """Ask the host something, as Marlin does with HOST_ACTION_COMMANDS (a runout sensor, the knob):
        ``//action:pause``, ``//action:resume``, ``//action:cancel``."""
        self._reply(f"//action:{action}")

    def _ok(self, number: int | None = None) -> None:
        """``ok``; with ADVANCED_OK as Marlin's ``ok_to_send``: ``N`` is the acknowledged command's own
        line number, ``P`` the free planner blocks, ``B`` = BUFSIZE minus the commands queued, the
        acknowledged one still counted (it leaves its slot only after the ok): an idle firmware says
        ``B<BUFSIZE-1>``.  The ``ok`` that closes a resend request (``number=-1``) acknowledges no
        queued command."""
        if self.faults.drop_ok and self._rng.random() < self.faults.drop_ok:
            self.counters.oks_dropped += 1
            return
        if self.advanced_ok:
            free_planner = self.planner_depth - len(self._planner)
            holding = 0 if number == -1 else 1
            free_queue = self.command_queue - len(self._queue) - holding
            number = self._current_number if number is None else number
            if number >= 0:
                self._write(b"ok N%d P%d B%d\n" % (number, free_planner, free_queue))
            else:
                self._write(b"ok P%d B%d\n" % (free_planner, free_queue))
        else:
            self._write(b"ok\n")

    # --- input ------------------------------------------------------------------------------
    def arrival_delay_s(self, size: int, written_at: float | None = None) -> float:
        """Real seconds until ``size`` bytes just read have crossed the emulated link (0 without baud).

        The wire is a queue: bytes start crossing when they were written (``written_at``, stamped by
        serve_pty's reader; else when they were read) or when the previous ones finished, whichever is
        later, at ``baud / 10`` bytes per second (8N1).  A UART receives while the firmware's loop is
        busy: when this thread is late, the bytes were still crossing meanwhile.
        """
        if self.baud <= 0:
            return 0.0
        now = time.monotonic()
        if written_at is not None:
            start = max(self._wire_free_at, written_at)
        else:
            # bytes read less than half a millisecond after the previous ones finished were already
            # waiting (our sleep overshot): the wire was busy, not idle, so no gap is counted
            start = self._wire_free_at if now - self._wire_free_at < 0.0005 else now
        self._wire_free_at = start + size * 10.0 / self.baud
        return self._wire_free_at - now

    def feed(self, data: bytes) -> None:
        """Bytes off the wire into the receive buffer; what does not fit is lost, as on the board."""
        if self._booting_until and time.monotonic() < self._booting_until:
            return  # the bootloader does not listen
        if b"M112" in data:  # EMERGENCY_PARSER: acted on as the bytes arrive
            self.halt("kill() called!")
        if b"M108" in data:  # EMERGENCY_PARSER: ends a wait for the user (and, on Marlin, a heating wait)
            self.user_answered.set()
        room = self.rx_buffer_bytes - len(self._rx)
        if len(data) > room:
            self.counters.rx_overflow_bytes += len(data) - max(room, 0)
            data = data[:max(room, 0)]
        self._rx += data

    def receive(self, data: bytes) -> None:
        """Feed and process everything that can be processed now (the reader thread's call)."""
        self.feed(data)
        self.service()

    def service(self) -> None:
        """Move complete lines into the command queue and execute queued commands, like Marlin's loop."""
        while not self._stop.is_set():
            if self._silent_until and time.monotonic() < self._silent_until or self.wedged:
                return
            self._take_lines()
            if not self._queue:
                return
            self._current_number, command = self._queue.popleft()
            self._execute(command)

    def _take_lines(self) -> None:
        while len(self._queue) < self.command_queue:
            newline = self._rx.find(b"\n")
            if newline < 0:
                return
            raw = bytes(self._rx[:newline])
            del self._rx[: newline + 1]
            if self.faults.corrupt_in and self._rng.random() < self.faults.corrupt_in and len(raw) > 0:
                raw = _flip_one_byte(raw + b"\n", self._rng)[:-1]
                self.counters.corrupted_in += 1
            raw = raw.split(b";", 1)[0].strip(b"\r \t\0")
            if raw and self.faults.lose_lines and (match := _LINE_NUMBER.match(raw)) is not None \
                    and int(match.group(1)) in self.faults.lose_lines:
                self.faults.lose_lines = tuple(n for n in self.faults.lose_lines if n != int(match.group(1)))
                self.counters.extra["lost_lines"] = self.counters.extra.get("lost_lines", 0) + 1
                continue
            if raw:
                numbered = raw.startswith(b"N")
                command = self._check_line(raw)
                if command is not None:
                    self._queue.append((self.last_line if numbered else -1, command))
                    if len(self._queue) > self.counters.max_queue:
                        self.counters.max_queue = len(self._queue)

    def _check_line(self, raw: bytes) -> bytes | None:
        """Line number and checksum checks; the command, or None after an error reply."""
        if self.halted:
            self._reply("Error:Printer halted. kill() called!")
            return None
        star = raw.rfind(b"*")
        if not raw.startswith(b"N"):
            if star >= 0:
                self._line_error(f"Error:No Line Number with checksum, Last Line: {self.last_line}", "checksum")
                return None
            return raw
        match = _LINE_NUMBER.match(raw)
        if match is None:
            self._line_error(f"Error:Line Number is not Last Line Number+1, Last Line: {self.last_line}", "number")
            return None
        number = int(match.group(1))
        if star < 0:
            self._line_error(f"Error:No Checksum with line number, Last Line: {self.last_line}", "checksum")
            return None
        body = raw[:star]
        command = body[match.end():].strip()
        if number != self.last_line + 1 and not command.startswith(b"M110"):
            self._line_error(f"Error:Line Number is not Last Line Number+1, Last Line: {self.last_line}", "number")
            return None
        try:
            expected = int(raw[star + 1:])
        except ValueError:
            expected = -1
        if streamcore.checksum(body) != expected:
            self._line_error(f"Error:checksum mismatch, Last Line: {self.last_line}", "checksum")
            return None
        self.last_line = number
        self.numbered_lines += 1
        return command

    def _line_error(self, message: str, kind: str) -> None:
        if kind == "checksum":
            self.counters.checksum_errors += 1
        else:
            self.counters.line_number_errors += 1
        self._reply(message)
        self._reply(f"Resend: {self.last_line + 1}")
        self._ok(-1)
        # Marlin's flush_and_request_resend(): what is already buffered is thrown away
        self.counters.flushed_bytes += len(self._rx)
        self._rx.clear()

    # --- commands ---------------------------------------------------------------------------
    @staticmethod
    def _words(command: bytes) -> dict[str, float]:
        words = {}
        for m in _WORD.finditer(command, 1):
            try:
                words[m.group(1).decode()] = float(m.group(2))
            except ValueError:
                continue
        return words

    def _execute(self, command: bytes) -> None:
        head = command.split(b" ", 1)[0].upper()
        if self.halted:
            self._reply("Error:Printer halted. kill() called!")
            return
        words = self._words(command) if len(command) > len(head) else {}
        if head in _MOVES:
            self._enqueue(command, self._move_duration_s(words))
        elif head == b"G28":
            self._wait_planner_empty()
            self.state.homed = True
            named = [axis for axis in "XYZ" if f" {axis}".encode() in command]
            for axis in named or "XYZ":
                setattr(self.state, axis.lower(), 0.0)
            self._enqueue(command, 4.0)
        elif head == b"G4":
            self._wait_planner_empty()
            self._enqueue(command, words.get("S", 0.0) + words.get("P", 0.0) / 1000.0)
        elif head == b"G90":
            self.state.absolute_xyz = self.state.absolute_e = True
        elif head == b"G91":
            self.state.absolute_xyz = self.state.absolute_e = False
        elif head == b"M82":
            self.state.absolute_e = True
        elif head == b"M83":
            self.state.absolute_e = False
        elif head == b"G92":
            for axis in "XYZE":
                if axis in words:
                    setattr(self.state, axis.lower(), words[axis])
        elif head in (b"M104", b"M109"):
            self.hotend.target_c = words.get("S", words.get("R", 0.0))
            if head == b"M109":
                self._wait_for_heater(self.hotend, "R" in words)
        elif head in (b"M140", b"M190"):
            self.bed.target_c = words.get("S", words.get("R", 0.0))
            if head == b"M190":
                self._wait_for_heater(self.bed, "R" in words)
        elif head == b"M105":
            self._log_executed(command)
            self._write(b"ok " + self.temperature_report() + b"\n")
            self._after_line()
            return
        elif head == b"M155":
            self.autoreport_s = words.get("S", 0.0)
        elif head == b"M110":
            self.last_line = int(words.get("N", 0))
        elif head == b"M115":
            self._reply("FIRMWARE_NAME:Marlin 2.1.2 (printnode virtual printer) SOURCE_CODE_URL:local "
                        "PROTOCOL_VERSION:1.0 MACHINE_TYPE:" + self.profile.name + " EXTRUDER_COUNT:1")
            for cap in ("AUTOREPORT_TEMP:1", "EEPROM:0", "HOST_ACTION_COMMANDS:1", "EMERGENCY_PARSER:1",
                        f"ADVANCED_OK:{int(self.advanced_ok)}"):
                self._reply("Cap:" + cap)
        elif head == b"M114":
            s = self.state
            self._reply(f"X:{s.x:.2f} Y:{s.y:.2f} Z:{s.z:.2f} E:{s.e:.2f} Count X:0 Y:0 Z:0")
        elif head == b"M400":
            self._wait_planner_empty()
        elif head == b"M106":
            self.state.fan = min(1.0, words.get("S", 255.0) / 255.0)
        elif head == b"M107":
            self.state.fan = 0.0
        elif head in (b"M84", b"M18"):
            self._wait_planner_empty()
            self.state.steppers_on = False
        elif head == b"M112":
            self.halt("kill() called!")
            return
        elif head in (b"M0", b"M1", b"M600"):
            self._wait_for_user(head, words)
        elif head in _NO_OPS or head.startswith(b"T"):
            pass
        else:
            self._reply(f'echo:Unknown command: "{command.decode(errors="replace")}"')
        if head not in _MOVES and head != b"G28" and head != b"G4":
            self._log_executed(command)
        self._ok()
        self._after_line()

    def _after_line(self) -> None:
        """Faults that strike after a given number of numbered lines."""
        f, n = self.faults, self.numbered_lines
        if f.reset_after_lines and n >= f.reset_after_lines:
            f.reset_after_lines = 0
            self.reset()
        elif f.silence_after_lines and n >= f.silence_after_lines:
            f.silence_after_lines = 0
            self._silent_until = time.monotonic() + (f.silence_s if f.silence_s > 0 else 1e9)
        elif f.wedge_after_lines and n >= f.wedge_after_lines:
            f.wedge_after_lines = 0
            self.wedged = True
        elif f.disconnect_after_lines and n >= f.disconnect_after_lines:
            f.disconnect_after_lines = 0
            self.disconnect_requested.set()

    def _log_executed(self, command: bytes) -> None:
        if self._command_log is not None:
            with self._log_lock:
                self._command_log.write(command + b"\n")

    def _move_duration_s(self, words: dict[str, float]) -> float:
        s = self.state
        if "F" in words and words["F"] > 0:
            s.feedrate_mm_min = words["F"]
        tx, ty, tz = s.x, s.y, s.z
        if "X" in words:
            tx = words["X"] if s.absolute_xyz else s.x + words["X"]
        if "Y" in words:
            ty = words["Y"] if s.absolute_xyz else s.y + words["Y"]
        if "Z" in words:
            tz = words["Z"] if s.absolute_xyz else s.z + words["Z"]
        e_value = words.get("E")
        new_e = s.e if e_value is None else (e_value if s.absolute_e else s.e + e_value)
        distance = math.dist((s.x, s.y, s.z), (tx, ty, tz)) or abs(new_e - s.e)
        s.x, s.y, s.z, s.e = tx, ty, tz, new_e
        s.steppers_on = True
        return distance / max(s.feedrate_mm_min / 60.0, 0.1)

    def _enqueue(self, command: bytes, duration_s: float) -> None:
        """Put a move in the planner; like Marlin, ``ok`` waits while the planner is full."""
        if self.instant:
            self._log_executed(command)
            return
        with self._planner_cv:
            while len(self._planner) >= self.planner_depth and not self._stop.is_set() and not self.halted:
                self._planner_cv.wait(0.05)
                self._pump_while_blocked()
            if self.halted:
                return
            self._planner.append((command, duration_s))
            self._planner_cv.notify_all()

    def _pump_while_blocked(self) -> None:
        if self._pump is not None:
            self._pump()

    def _wait_planner_empty(self) -> None:
        if self.instant:
            return
        last_busy = time.monotonic()
        with self._planner_cv:
            while self._planner and not self._stop.is_set() and not self.halted:
                self._planner_cv.wait(0.05)
                if time.monotonic() - last_busy >= self.busy_interval_s:
                    last_busy = time.monotonic()
                    self._write(b"echo:busy: processing\n")
                self._pump_while_blocked()

    def press_button(self) -> None:
        """The person at the printer pressed the knob: a wait for the user (M0/M1/M600) ends."""
        self.user_answered.set()

    def _wait_for_user(self, head: bytes, words: dict[str, float]) -> None:
        """M0/M1/M600 as Marlin: the moves before it finish, then it waits for the knob (or ``M108``
        through the emergency parser), saying ``busy: paused for user`` meanwhile; M600 (filament
        change) also tells the host ``//action:paused``.  ``M0 S<s>``/``P<ms>`` waits at most that long."""
        self._wait_planner_empty()
        limit_s = words.get("S", words.get("P", 0.0) / 1000.0) if head != b"M600" else 0.0
        if limit_s and self.instant:
            return
        deadline = time.monotonic() + limit_s / max(self.clock.time_scale, 1e-9) if limit_s else math.inf
        self.user_answered.clear()
        self.waiting_for_user = True
        if head == b"M600":
            self.host_action("paused")
        last_busy = -math.inf
        while not (self.user_answered.is_set() or self._stop.is_set() or self.halted) \
                and time.monotonic() < deadline:
            if time.monotonic() - last_busy >= self.busy_interval_s:
                last_busy = time.monotonic()
                self._write(b"echo:busy: paused for user\n")
            self._pump_while_blocked()
            self.user_answered.wait(0.02)
        self.waiting_for_user = False

    def _wait_for_heater(self, heater: Heater, cool_too: bool) -> None:
        """Block like M109/M190, printing a report every second (real time at most 10/s) while waiting."""
        if self.instant and not self.faults.dead_heater:
            heater.temp_c = max(heater.temp_c, heater.target_c) if not cool_too else heater.target_c
            return
        last_report_sim, last_report_wall = self.clock.time(), time.monotonic()
        while not self._stop.is_set() and not self.halted:
            self.update_thermal()
            if abs(heater.temp_c - heater.target_c) <= 1.0 or (not cool_too and heater.temp_c >= heater.target_c):
                return
            if (self.clock.time() - last_report_sim >= 1.0 or self.instant) \
                    and time.monotonic() - last_report_wall >= 0.1:
                self._write(self.temperature_report() + b" W:?\n")
                last_report_sim, last_report_wall = self.clock.time(), time.monotonic()
            self._pump_while_blocked()
            time.sleep(0.02)

    def halt(self, why: str, first: str | None = None) -> None:
        """Stop like Marlin's kill(): heaters off, planner flushed, then the error lines (after the
        state changed: whoever reads them may look at this printer at once)."""
        if self.halted:
            return
        self.halted = True
        self.hotend.target_c = self.bed.target_c = 0.0
        if first:
            self._reply(first)
        self._reply(f"Error:Printer halted. {why}")
        with self._planner_cv:
            self._planner.clear()
            self._planner_cv.notify_all()

    def reset(self, boot_s: float = 0.0) -> None:
        """A reboot: everything in the receive buffer, queue and planner is lost; the banner again.

        ``boot_s``: real seconds of bootloader during which received bytes are lost.
        """
        self.counters.resets += 1
        if boot_s > 0:
            self._booting_until = time.monotonic() + boot_s
        with self._planner_cv:
            self._planner.clear()
            self._planner_cv.notify_all()
        self._queue.clear()
        self._rx.clear()
        self.last_line = 0
        self.halted = False
        self.wedged = False
        self.autoreport_s = 0.0
        self.hotend.target_c = self.bed.target_c = 0.0
        self.state = MachineState(z=self.state.z, e=0.0)
        self.state.homed = False
        if boot_s > 0:
            time.sleep(boot_s)
            self._rx.clear()
        self._raw_write(FIRMWARE_BANNER)

    # --- time-driven parts ------------------------------------------------------------------
    def planner_step(self) -> bool:
        """Execute the oldest planned move (spending its sim time); False if nothing is planned."""
        with self._planner_cv:
            if not self._planner:
                return False
            command, duration_s = self._planner[0]
        self.clock.sleep_blocking(duration_s)
        with self._planner_cv:
            if self._planner and self._planner[0][0] is command:
                self._planner.popleft()
                self._log_executed(command)
            self._planner_cv.notify_all()
        return True

    def update_thermal(self) -> None:
        """Advance both heaters to the clock's now (1 s sub-steps, P control around holding power)."""
        now_s = self.clock.time()
        dt_s = min(now_s - self._thermal_t_s, 3600.0)
        self._thermal_t_s = now_s
        steps = max(1, min(2000, math.ceil(dt_s)))
        for heater, model in ((self.hotend, self.profile.hotend), (self.bed, self.profile.bed)):
            for _ in range(steps):
                if heater.target_c <= 0:
                    heater.pwm = 0.0
                else:
                    hold = model.holding_w(heater.target_c, self.ambient_c) / model.heater_w
                    heater.pwm = min(1.0, max(0.0, hold + (heater.target_c - heater.temp_c) * 0.2))
                effective_pwm = 0.0 if (heater is self.hotend and self.faults.dead_heater) else heater.pwm
                if dt_s > 0:
                    heater.temp_c = model.step_c(heater.temp_c, effective_pwm, self.ambient_c, dt_s / steps)
        runaway_c = self.faults.runaway_at_c
        if runaway_c and self.hotend.target_c > 0 and self.hotend.temp_c >= runaway_c and not self.halted:
            self.halt("kill() called!", first="Error:Thermal Runaway, system stopped! Heater_ID: 0")

    def temperature_report(self) -> bytes:
        h, b = self.hotend, self.bed
        return (f"T:{h.temp_c:.2f} /{h.target_c:.2f} B:{b.temp_c:.2f} /{b.target_c:.2f} "
                f"@:{round(h.pwm * PWM_MAX)} B@:{round(b.pwm * PWM_MAX)}").encode()

    def autoreport_due(self) -> bool:
        if self.autoreport_s <= 0:
            return False
        if self._silent_until and time.monotonic() < self._silent_until:
            return False
        now = time.monotonic()
        if now - self._last_report_wall >= self.autoreport_s:
            self._last_report_wall = now
            return True
        return False

    def stop(self) -> None:
        self._stop.set()
        with self._planner_cv:
            self._planner_cv.notify_all()
        if self._command_log is not None:
            with self._log_lock:
                self._command_log.close()
                self._command_log = None


def _flip_one_byte(data: bytes, rng: random.Random) -> bytes:
    """One byte (never the final newline) XORed with a non-zero value that is not a newline."""
    out = bytearray(data)
    limit = len(out) - 1 if out.endswith(b"\n") else len(out)
    if limit <= 0:
        return data
    pos = rng.randrange(limit)
    while True:
        flipped = out[pos] ^ rng.randrange(1, 256)
        if flipped not in (10, 13):
            break
    out[pos] = flipped
    return bytes(out)


def _holders_of(path: str) -> int:
    """How many other processes hold ``path`` open (how a pty learns that a host opened it)."""
    me = str(os.getpid())
    count = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or pid == me:
            continue
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == path:
                        count += 1
                        break
                except OSError:
                    continue
        except OSError:
            continue
    return count


def serve_pty(printer_factory: Callable[[Callable[[bytes], None]], VirtualPrinter],
              stop: threading.Event, link_path: Path | None = None) -> tuple[str, VirtualPrinter, list[threading.Thread]]:
    """Open a pty, attach a printer to its master side, start its threads; return the port path.

    The slave end stays open here too, so a host closing and reopening the port
    (a reconnect) does not end the session.  With ``link_path`` the port is also
    published as that symlink; the *disconnect* fault removes it, closes the pty
    (the host's reads fail) and, after a second, publishes a fresh pty there, as a
    USB printer that was unplugged and plugged back in.
    """
    fds: dict[str, int] = {}
    write_lock = threading.Lock()

    def open_pty() -> str:
        master_fd, slave_fd = os.openpty()
        tty.setraw(slave_fd)
        tty.setraw(master_fd)
        os.set_blocking(master_fd, False)
        fds["master"], fds["slave"] = master_fd, slave_fd
        path = os.ttyname(slave_fd)
        if link_path is not None:
            tmp = link_path.with_name(link_path.name + ".tmp")
            tmp.unlink(missing_ok=True)
            os.symlink(path, tmp)
            os.replace(tmp, link_path)
        return path

    def write(data: bytes) -> None:
        with write_lock:
            view = memoryview(data)
            while view:
                try:
                    written = os.write(fds["master"], view)
                except BlockingIOError:
                    select.select([], [fds["master"]], [], 0.05)
                    continue
                except OSError:
                    return
                view = view[written:]

    path = open_pty()
    printer = printer_factory(write)
    write(FIRMWARE_BANNER)

    # at an emulated baud rate the host's bytes are taken off the pty as they are written, by their own
    # thread, and stamped: they start across the wire when the host wrote them (or when the wire frees),
    # not when the firmware thread — busy, or waiting for a CPU on a loaded machine — got round to them
    wire: deque[tuple[float, bytes]] = deque()
    wire_ready = threading.Condition()

    def wire_reader() -> None:
        while not stop.is_set():
            try:
                ready, _, _ = select.select([fds["master"]], [], [], 0.05)
                if not ready:
                    continue
                data = os.read(fds["master"], 4096)
            except BlockingIOError:
                continue
            except (OSError, ValueError):
                time.sleep(0.05)
                continue
            if data:
                stamp = time.monotonic()
                with wire_ready:
                    wire.append((stamp, data))
                    wire_ready.notify()

    def read_some(timeout_s: float) -> bool:
        """Take what has crossed the (emulated) link into the printer; False if nothing came."""
        if printer.baud <= 0:
            try:
                ready, _, _ = select.select([fds["master"]], [], [], timeout_s)
                data = os.read(fds["master"], 65536) if ready else b""
            except BlockingIOError:
                return False
            except (OSError, ValueError):
                time.sleep(0.05)
                return False
            if data:
                printer.feed(data)
            return bool(data)
        with wire_ready:
            if not wire and timeout_s > 0:
                wire_ready.wait(timeout_s)
            if not wire:
                return False
            stamp, data = wire[0]
            # a line is usable once its own last byte has arrived: up to the first newline at a time, so
            # its ok is not held back by the bytes of the next line written with it
            newline = data.find(b"\n")
            size = newline + 1 if newline >= 0 else len(data)
            if size < len(data):
                wire[0] = (stamp, data[size:])
            else:
                wire.popleft()
        delay_s = printer.arrival_delay_s(size, written_at=stamp)
        if delay_s > 0:
            time.sleep(delay_s)
        printer.feed(data[:size])
        return True

    printer._pump = lambda: read_some(0)

    def firmware() -> None:
        while not stop.is_set():
            if printer.disconnect_requested.is_set():
                printer.disconnect_requested.clear()
                for key in ("master", "slave"):
                    try:
                        os.close(fds[key])
                    except OSError:
                        pass
                if link_path is not None:
                    link_path.unlink(missing_ok=True)
                time.sleep(1.0)
                with wire_ready:
                    wire.clear()  # what was on the wire went with the cable
                open_pty()
                printer.reset()
                continue
            silent = printer._silent_until and time.monotonic() < printer._silent_until
            if silent:
                time.sleep(0.01)
                continue
            read_some(0.05 if not printer._rx and not wire else 0)
            printer.service()

    def planner() -> None:
        while not stop.is_set():
            if not printer.planner_step():
                time.sleep(0.002)

    def thermal() -> None:
        while not stop.is_set():
            printer.update_thermal()
            if printer.autoreport_due():
                write(printer.temperature_report() + b"\n")
            time.sleep(0.05)

    def dtr_watch() -> None:
        holders = 0
        while not stop.is_set():
            if printer.faults.reset_on_open:
                now = _holders_of(os.ttyname(fds["slave"]) if "slave" in fds else path)
                if now > holders:
                    printer.reset(boot_s=0.3)
                holders = now
            time.sleep(0.02)

    threads = [threading.Thread(target=fn, name=f"virtual-{fn.__name__}", daemon=True)
               for fn in (firmware, planner, thermal, dtr_watch, *((wire_reader,) if printer.baud > 0 else ()))]
    for thread in threads:
        thread.start()

    def closer() -> None:
        stop.wait()
        printer.stop()
        # Close the fds only once no thread can touch them: a closed fd number is reused by the next
        # pty opened in this process, and a thread still running would read or write that one instead.
        for thread in threads:
            thread.join(5.0)
        if any(thread.is_alive() for thread in threads):
            log.error("virtual printer threads did not stop: leaving the pty open rather than risk fd reuse")
            return
        for key in ("master", "slave"):
            try:
                os.close(fds[key])
            except OSError:
                pass
        if link_path is not None:
            link_path.unlink(missing_ok=True)

    threading.Thread(target=closer, name="virtual-closer", daemon=True).start()
    return (str(link_path) if link_path is not None else path), printer, threads
