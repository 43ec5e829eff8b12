"""A Marlin-like printer on a pseudo-terminal, for development, tests and ``make run``.

It speaks the host protocol the way Marlin 2 does (line numbers and XOR
checksums with ``Error:``/``Resend:``/``ok``, ``ok`` once a command is in the
planner, M105/M155 temperature reports with heater PWM ``@:``/``B@:``) and
spends simulated time: moves take ``distance / feedrate`` on the shared clock
and heaters follow the printer profile's first-order thermal model, so heating
takes as long as on the real machine (divided by the clock's time scale).

Structure: :class:`VirtualPrinter` is the firmware (bytes in, bytes out, no
port); :func:`serve_pty` puts it on a pty with a reader thread, a planner
thread that executes moves, and a thermal thread.
"""
from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
import tty
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from node.clock import Clock
from node.profile import PrinterProfile

log = logging.getLogger(__name__)

PWM_MAX = 127  # Marlin reports heater power as 0..127
_WORD = re.compile(rb"([A-Z])\s*(-?\d*\.?\d+)")
FIRMWARE_BANNER = b"start\necho:Marlin 2.1.2 (printnode virtual printer)\necho: Free Memory: 4096\n"


def _checksum(data: bytes) -> int:
    value = 0
    for byte in data:
        value ^= byte
    return value


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


class VirtualPrinter:
    """The firmware: give it received bytes with :meth:`receive`; it writes replies via ``write``."""

    def __init__(self, profile: PrinterProfile, clock: Clock, write: Callable[[bytes], None],
                 ambient_c: float = 22.0, planner_depth: int | None = None,
                 command_log: Path | None = None) -> None:
        self.profile = profile
        self.clock = clock
        self._write = write
        self.ambient_c = ambient_c
        self.planner_depth = planner_depth or profile.planner_depth
        self.hotend = Heater("hotend", ambient_c)
        self.bed = Heater("bed", ambient_c)
        self.state = MachineState()
        self.last_line = 0
        self.halted = False
        self.autoreport_s = 0.0
        self._rx = bytearray()
        self._planner: deque[tuple[bytes, float]] = deque()
        self._planner_cv = threading.Condition()
        self._stop = threading.Event()
        self._thermal_t_s = clock.time()
        self._last_report_wall = time.monotonic()
        self._command_log = open(command_log, "ab", buffering=0) if command_log else None  # noqa: SIM115

    # --- input ------------------------------------------------------------------------------
    def receive(self, data: bytes) -> None:
        """Bytes from the host; every complete line is processed in order (blocking as Marlin does)."""
        self._rx += data
        while True:
            newline = self._rx.find(b"\n")
            if newline < 0:
                break
            raw = bytes(self._rx[:newline]).strip(b"\r \t\0")
            del self._rx[: newline + 1]
            if raw:
                self._process_line(raw)

    def _reply(self, text: str) -> None:
        self._write(text.encode() + b"\n")

    def _process_line(self, raw: bytes) -> None:
        if self.halted:
            self._reply("Error:Printer halted. kill() called!")
            return
        command = raw
        if raw.startswith(b"N"):
            star = raw.rfind(b"*")
            match = re.match(rb"N(-?\d+)\s*", raw)
            if match is None:
                self._reply(f"Error:Line Number is not Last Line Number+1, Last Line: {self.last_line}")
                self._request_resend()
                return
            number = int(match.group(1))
            if star < 0:
                self._reply(f"Error:No Checksum with line number, Last Line: {self.last_line}")
                self._request_resend()
                return
            body = raw[:star]
            try:
                expected = int(raw[star + 1:])
            except ValueError:
                expected = -1
            command = body[match.end():]
            is_m110 = command.startswith(b"M110")
            if number != self.last_line + 1 and not is_m110:
                self._reply(f"Error:Line Number is not Last Line Number+1, Last Line: {self.last_line}")
                self._request_resend()
                return
            if _checksum(body) != expected:
                self._reply(f"Error:checksum mismatch, Last Line: {self.last_line}")
                self._request_resend()
                return
            self.last_line = number
        self._execute(command.strip())

    def _request_resend(self) -> None:
        self._reply(f"Resend: {self.last_line + 1}")
        self._reply("ok")

    # --- commands ---------------------------------------------------------------------------
    def _words(self, command: bytes) -> dict[str, float]:
        return {m.group(1).decode(): float(m.group(2)) for m in _WORD.finditer(command[1:] if command else b"")}

    def _execute(self, command: bytes) -> None:
        head = command.split(b" ", 1)[0].upper()
        words = self._words(command.split(b";", 1)[0])
        if head in (b"G0", b"G1", b"G2", b"G3"):
            self._enqueue(command, self._move_duration_s(words))
        elif head == b"G28":
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
            self._write(b"ok " + self.temperature_report() + b"\n")
            self._log_executed(command)
            return
        elif head == b"M155":
            self.autoreport_s = words.get("S", 0.0)
        elif head == b"M110":
            self.last_line = int(words.get("N", 0))
        elif head == b"M115":
            self._reply("FIRMWARE_NAME:Marlin 2.1.2 (printnode virtual printer) SOURCE_CODE_URL:local "
                        "PROTOCOL_VERSION:1.0 MACHINE_TYPE:" + self.profile.name + " EXTRUDER_COUNT:1")
            for cap in ("AUTOREPORT_TEMP:1", "EEPROM:0", "HOST_ACTION_COMMANDS:1", "EMERGENCY_PARSER:1"):
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
        elif head in (b"M117", b"M73", b"M201", b"M203", b"M204", b"M205", b"M220", b"M221",
                      b"M900", b"M907", b"M17", b"T0", b"M862.3", b"M862.1", b"M115", b"M300"):
            pass
        else:
            self._reply(f'echo:Unknown command: "{command.decode(errors="replace")}"')
        self._log_executed(command)
        self._reply("ok")

    def _log_executed(self, command: bytes) -> None:
        if self._command_log is not None:
            self._command_log.write(command + b"\n")

    def _move_duration_s(self, words: dict[str, float]) -> float:
        s = self.state
        if "F" in words and words["F"] > 0:
            s.feedrate_mm_min = words["F"]
        target = {}
        for axis in "XYZ":
            current = getattr(s, axis.lower())
            value = words.get(axis)
            target[axis] = current if value is None else (value if s.absolute_xyz else current + value)
        e_value = words.get("E")
        new_e = s.e if e_value is None else (e_value if s.absolute_e else s.e + e_value)
        distance = math.dist((s.x, s.y, s.z), (target["X"], target["Y"], target["Z"]))
        if distance == 0:
            distance = abs(new_e - s.e)
        s.x, s.y, s.z, s.e = target["X"], target["Y"], target["Z"], new_e
        s.steppers_on = True
        return distance / max(s.feedrate_mm_min / 60.0, 0.1)

    def _enqueue(self, command: bytes, duration_s: float) -> None:
        """Put a move in the planner; like Marlin, ``ok`` waits while the planner is full."""
        with self._planner_cv:
            self._planner_cv.wait_for(lambda: len(self._planner) < self.planner_depth or self._stop.is_set())
            self._planner.append((command, duration_s))
            self._planner_cv.notify_all()

    def _wait_planner_empty(self) -> None:
        with self._planner_cv:
            self._planner_cv.wait_for(lambda: not self._planner or self._stop.is_set())

    def _wait_for_heater(self, heater: Heater, cool_too: bool) -> None:
        """Block like M109/M190, printing a report every second (real time) while waiting."""
        if self.clock.time_scale == 0:
            heater.temp_c = max(heater.temp_c, heater.target_c) if not cool_too else heater.target_c
            return
        last_report_sim, last_report_wall = self.clock.time(), time.monotonic()
        while not self._stop.is_set() and not self.halted:
            self.update_thermal()
            if abs(heater.temp_c - heater.target_c) <= 1.0 or (not cool_too and heater.temp_c >= heater.target_c):
                return
            # Marlin reports once a second while waiting; at high time scales at most 10 times a real second
            if self.clock.time() - last_report_sim >= 1.0 and time.monotonic() - last_report_wall >= 0.1:
                self._write(self.temperature_report() + b" W:?\n")
                last_report_sim, last_report_wall = self.clock.time(), time.monotonic()
            time.sleep(0.02)

    def halt(self, why: str) -> None:
        self.halted = True
        self.hotend.target_c = self.bed.target_c = 0.0
        self._reply(f"Error:Printer halted. {why}")

    # --- time-driven parts ------------------------------------------------------------------
    def planner_step(self) -> bool:
        """Execute the oldest planned move (spending its sim time); False if nothing is planned."""
        with self._planner_cv:
            if not self._planner:
                return False
            command, duration_s = self._planner[0]
        self.clock.sleep_blocking(duration_s)
        with self._planner_cv:
            self._planner.popleft()
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
                if dt_s > 0:
                    heater.temp_c = model.step_c(heater.temp_c, heater.pwm, self.ambient_c, dt_s / steps)

    def temperature_report(self) -> bytes:
        h, b = self.hotend, self.bed
        return (f"T:{h.temp_c:.2f} /{h.target_c:.2f} B:{b.temp_c:.2f} /{b.target_c:.2f} "
                f"@:{round(h.pwm * PWM_MAX)} B@:{round(b.pwm * PWM_MAX)}").encode()

    def autoreport_due(self) -> bool:
        if self.autoreport_s <= 0:
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
            self._command_log.close()


def serve_pty(printer_factory: Callable[[Callable[[bytes], None]], VirtualPrinter],
              stop: threading.Event) -> tuple[str, VirtualPrinter, list[threading.Thread]]:
    """Open a pty, attach a printer to its master side, start its threads; return the slave path.

    The slave end stays open here too, so a host closing and reopening the
    port (a reconnect) does not end the session.
    """
    master_fd, slave_fd = os.openpty()
    tty.setraw(slave_fd)
    tty.setraw(master_fd)
    path = os.ttyname(slave_fd)
    write_lock = threading.Lock()

    def write(data: bytes) -> None:
        with write_lock:
            view = memoryview(data)
            while view:
                try:
                    written = os.write(master_fd, view)
                except BlockingIOError:
                    time.sleep(0.001)
                    continue
                except OSError:
                    return
                view = view[written:]

    printer = printer_factory(write)
    write(FIRMWARE_BANNER)

    def reader() -> None:
        while not stop.is_set():
            try:
                data = os.read(master_fd, 4096)
            except OSError:
                time.sleep(0.05)
                continue
            if data:
                printer.receive(data)

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

    threads = [threading.Thread(target=fn, name=f"virtual-{fn.__name__}", daemon=True)
               for fn in (reader, planner, thermal)]
    for thread in threads:
        thread.start()

    def closer() -> None:
        stop.wait()
        printer.stop()
        for fd in (master_fd, slave_fd):
            try:
                os.close(fd)
            except OSError:
                pass

    threading.Thread(target=closer, name="virtual-closer", daemon=True).start()
    return path, printer, threads
