"""How long a printer may go without acknowledging a line before the worker acts: the phase bounds.

Progress is an acknowledged line, never a reply alone: temperature reports, ``busy:`` and ``wait``
keep coming from a firmware whose command queue is wedged (a line it cannot parse, a heater that never
reaches its target), so they say nothing about the job.  What the lines in flight ask for decides
how long their acknowledgement may take:

* **heating** (M109, M190, M191): the profile's first-order thermal model from the last reported
  temperature to the target, times 2, plus the heater's settle time (the PID's final approach and
  the firmware's residency) and the ordinary bound as a margin; without a profile, for a
  target the model cannot reach, or for a heater above its target (it may have to cool first: an
  ``R`` wait, or Marlin's residency window after an overshoot), ``long_timeout_s``;
* **long** (G28, G29, M400, M303, G4 without a time): ``long_timeout_s``; ``G4 P<ms>``/``S<s>``: its
  dwell plus the ordinary bound;
* **waiting for the user** (M0, M1, M600, or the firmware saying ``paused for user`` or
  ``//action:paused``): no bound; the operator sees the state;
* **streaming** (anything else): ``reply_timeout_s``, plus twice the longest move the firmware may
  still be executing (the moves acknowledged into its planner ahead of the oldest line in flight,
  timed from their lengths, feed rates and the profile's axis limits: :func:`longest_move_s`): the
  oldest line waits for a free planner slot, which the slowest move queued may hold (a 100 mm Z lift
  at F60 holds it for 100 s). The probes at ``tickle_s`` find lost replies long before.

Past a bound the worker probes, then fails safe (see worker.PrinterWorker._fail_safe).  Pure: no I/O.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from node.printer.profile import MotionLimits, PrinterProfile
from node.printer.resume import ModalState, apply, command_words

HEATING = {b"M109": "hotend", b"M190": "bed", b"M191": "chamber"}
LONG = (b"G28", b"G29", b"M400", b"M303", b"G4")
USER = (b"M0", b"M1", b"M600")
#: the thermal model's estimate times this, plus the ordinary bound: a margin for a tired heater, a
#: generic profile, and an off-grid supply sagging under load (heater power goes with the voltage squared)
HEATING_FACTOR = 2.0
#: the ambient the model assumes when it has no better figure (a cool room heats slower: the safe side)
MODEL_AMBIENT_C = 15.0

#: a move's estimated time times this: acceleration ramps, a segmenting firmware, a slower machine
MOTION_FACTOR = 2.0
#: the feed rate assumed before a file names one (Marlin starts slower than most files print)
DEFAULT_FEED_MM_S = 10.0

PhaseName = Literal["streaming", "heating", "long", "waiting_user"]


@dataclass(frozen=True)
class Phase:
    name: PhaseName
    bound_s: float  # math.inf: no bound (waiting for the user)
    detail: str


def head_of(command: bytes) -> bytes:
    """``M109 S200`` -> ``M109`` (upper-cased, ``G04`` read as ``G4``)."""
    word = command.split(None, 1)[0].upper() if command.strip() else b""
    if len(word) > 1 and word[:1] in (b"G", b"M") and word[1:].isdigit():
        return word[:1] + str(int(word[1:])).encode()
    return word


def _param(command: bytes, letter: bytes) -> float | None:
    for word in command.split()[1:]:
        if word[:1].upper() == letter:
            try:
                return float(word[1:])
            except ValueError:
                return None
    return None


def longest_move_s(commands: list[bytes], profile: PrinterProfile | None, *, timed_from: int = 0) -> tuple[float, str]:
    """The longest time one move among ``commands[timed_from:]`` may take, and that move.

    ``commands`` are consecutive lines in file order; those before ``timed_from`` only establish the
    modal state (resume.apply, the resume's own reading: G90/G91, M82/M83, G92, G28, the feed rate,
    where each axis is).  A move's time is its length over its feed rate, each axis capped by the
    profile's maximum feed rate, plus the time to reach that speed; an axis whose starting point is not
    known yet (an absolute move before any line placed it) is taken at the whole bed (the safe side: a
    longer bound), an extruder move of unknown length is ignored.  Arcs (G2/G3) count their full
    circle.  Pure.
    """
    limits = profile.motion if profile is not None else None
    extent = (profile.bed_x_mm, profile.bed_y_mm, profile.max_z_mm, 0.0) if profile is not None \
        else (300.0, 300.0, 300.0, 0.0)
    state = ModalState(feedrate_mm_min=DEFAULT_FEED_MM_S * 60.0)
    placed: set[str] = set()  # axes a line has put somewhere known
    longest, which = 0.0, ""
    for index, command in enumerate(commands):
        head = head_of(command)
        words = command_words(command)
        before = (state.x, state.y, state.z, state.e)
        absolute = (state.absolute_xyz,) * 3 + (state.absolute_e,)
        apply(state, command)
        if head == b"G92":
            placed |= {axis for axis in "XYZE" if axis in words} or set("XYZE")
        elif head == b"G28":
            placed |= {axis for axis in "XYZ" if f" {axis}".encode() in command.upper()} or set("XYZ")
        if head not in (b"G0", b"G1", b"G2", b"G3"):
            continue
        after = (state.x, state.y, state.z, state.e)
        deltas = []
        for axis, letter in enumerate("XYZE"):
            if letter not in words:
                deltas.append(0.0)
            elif absolute[axis] and letter not in placed:
                deltas.append(extent[axis])
                placed.add(letter)
            else:
                deltas.append(abs(after[axis] - before[axis]))
        if head in (b"G2", b"G3"):
            radius = words.get("R", math.hypot(words.get("I", 0.0), words.get("J", 0.0)))
            arc_mm = 2 * math.pi * abs(radius)  # the path in the XY plane, on the X axis's limits
            deltas[0], deltas[1] = max(math.hypot(deltas[0], deltas[1]), arc_mm), 0.0
        if index >= timed_from:
            seconds = _move_s(deltas, state.feedrate_mm_min / 60.0, limits)
            if seconds > longest:
                longest, which = seconds, command.decode(errors="replace")
    return longest, which


def _move_s(deltas_mm: list[float], feed_mm_s: float, limits: MotionLimits | None) -> float:
    """One move's time: the slowest axis at the feed rate (capped per axis), plus the ramp up to it."""
    length = math.sqrt(sum(d * d for d in deltas_mm[:3])) or deltas_mm[3]
    if length <= 0:
        return 0.0
    max_feed = getattr(limits, "max_feedrate_mm_s", (math.inf,) * 4)
    max_accel = getattr(limits, "max_accel_mm_s2", (math.inf,) * 4)
    speed = max(feed_mm_s, 1e-3)
    ramp_s = 0.0
    for delta, axis_feed in zip(deltas_mm, max_feed):
        if delta > 0:
            axis_speed = speed * delta / length
            if axis_speed > axis_feed:  # this axis caps the whole move
                speed *= axis_feed / axis_speed
    for delta, axis_accel in zip(deltas_mm, max_accel):
        if delta > 0:
            ramp_s = max(ramp_s, (speed * delta / length) / axis_accel)
    return length / speed + ramp_s


def phase_of(in_flight: list[bytes], *, reply_timeout_s: float, long_timeout_s: float,
             profile: PrinterProfile | None = None, temperatures: dict[str, float] | None = None,
             user_wait: bool = False, queued_move: tuple[float, str] = (0.0, "")) -> Phase:
    """The phase the commands in flight (unacknowledged, oldest first) put the printer in, and its bound:
    the oldest one's.  ``queued_move``: the longest move still in the firmware's planner ahead of them
    (:func:`longest_move_s`), which the oldest may wait for."""
    oldest = head_of(in_flight[0]) if in_flight else b""
    if oldest in USER:
        return Phase("waiting_user", math.inf, f"{oldest.decode()}: the printer waits for the user")
    if user_wait:
        return Phase("waiting_user", math.inf, "the printer waits for the user")
    bound, name, detail = reply_timeout_s, "streaming", "no acknowledged line"
    move_s, move = queued_move
    bound += MOTION_FACTOR * move_s
    if move_s >= 1.0:
        detail = f"no acknowledged line; the longest move queued ahead takes ~{move_s:.0f} s ({move})"
    # replies come in order: the oldest line in flight is the one the firmware is busy with, the others
    # wait behind it (their own time counts once it is acknowledged)
    for command in in_flight[:1]:
        head = head_of(command)
        if head in HEATING:
            heating_s = _heating_bound_s(command, HEATING[head], reply_timeout_s, long_timeout_s, profile,
                                         temperatures or {})
            if heating_s > bound or name == "streaming":
                bound, name, detail = heating_s, "heating", f"{command.decode(errors='replace')} not done"
        elif head in LONG:
            long_s = long_timeout_s
            if head == b"G4":
                dwell_s = _param(command, b"S")
                if dwell_s is None and (ms := _param(command, b"P")) is not None:
                    dwell_s = ms / 1000.0
                if dwell_s is not None:
                    long_s = dwell_s + reply_timeout_s
            if long_s > bound or name == "streaming":
                bound, name, detail = long_s, "long", f"{command.decode(errors='replace')} not done"
    return Phase(name, bound, detail)  # type: ignore[arg-type]


def _heating_bound_s(command: bytes, heater: str, reply_timeout_s: float, long_timeout_s: float,
                     profile: PrinterProfile | None, temperatures: dict[str, float]) -> float:
    if profile is None or heater == "chamber":
        return long_timeout_s
    target = _param(command, b"S")
    if target is None:
        target = _param(command, b"R")
    if target is None:
        return long_timeout_s
    if temperatures.get(heater, MODEL_AMBIENT_C) > target + 1.0:
        # above the target the wait may have to cool, which the heating model cannot time (fans, room):
        # R waits both ways, and an S wait on Marlin still holds until the heater has stayed within its
        # hysteresis of the target for the residency time (a bang-bang bed that overshot by 12 degrees
        # kept real Marlin's `M190 S50` waiting for minutes)
        return long_timeout_s
    model = profile.hotend if heater == "hotend" else profile.bed
    start_c = min(temperatures.get(heater, MODEL_AMBIENT_C), target)
    seconds = model.heatup_s(start_c, target, MODEL_AMBIENT_C)
    if not math.isfinite(seconds):
        return long_timeout_s
    return seconds * HEATING_FACTOR + model.settle_s + reply_timeout_s


class HeaterPeaks:
    """Each heater's highest reading since the last acknowledged line.

    The heating bound is re-read at every check against the silence since that line.  A wait whose
    heater overshot its target may have to cool first (the long bound); read from the latest report
    alone, one low reading or the heater back under its target would restart the heating model's
    clock at the last acknowledged line (real Marlin, cura: a bed 16 degrees over `M190 S50`, one
    report of 46 degrees from the simulation, and a healthy wait failed safe at 250 s on a 130 s
    bound).  The highest reading keeps the wait what it was."""

    def __init__(self) -> None:
        self._peak_c: dict[str, float] = {}

    def observe(self, heater: str, reading_c: float | None) -> None:
        if reading_c is not None and math.isfinite(reading_c):
            self._peak_c[heater] = max(self._peak_c.get(heater, reading_c), reading_c)

    def clear(self) -> None:
        """A line was acknowledged (or nothing is in flight): the next wait starts afresh."""
        self._peak_c.clear()

    def applied_to(self, readings_c: dict[str, float]) -> dict[str, float]:
        """The readings with each heater raised to its peak: what phase_of should judge by."""
        merged = dict(readings_c)
        for heater, peak_c in self._peak_c.items():
            merged[heater] = max(merged.get(heater, peak_c), peak_c)
        return merged
