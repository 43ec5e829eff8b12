"""How long a printer may go without acknowledging a line before the worker acts: the phase bounds.

Progress is an acknowledged line, never a reply alone: temperature reports, ``busy:`` and ``wait``
keep coming from a firmware whose command queue is wedged (a line it cannot parse, a heater that never
reaches its target), so they say nothing about the job.  What the lines in flight ask for decides
how long their acknowledgement may take:

* **heating** (M109, M190, M191): the profile's first-order thermal model from the last reported
  temperature to the target, times 2, plus the heater's settle time (the PID's final approach and
  the firmware's residency) and the ordinary bound as a margin; without a profile, for a
  target the model cannot reach, or for an ``R`` wait that must cool first, ``long_timeout_s``;
* **long** (G28, G29, M400, M303, G4 without a time): ``long_timeout_s``; ``G4 P<ms>``/``S<s>``: its
  dwell plus the ordinary bound;
* **waiting for the user** (M0, M1, M600, or the firmware saying ``paused for user`` or
  ``//action:paused``): no bound; the operator sees the state;
* **streaming** (anything else): ``reply_timeout_s``, the time one planner-paced move may hold the
  queue with a margin (the probes at ``tickle_s`` find lost replies long before).

Past a bound the worker probes, then fails safe (see worker.PrinterWorker._fail_safe).  Pure: no I/O.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from node.printer.profile import PrinterProfile

HEATING = {b"M109": "hotend", b"M190": "bed", b"M191": "chamber"}
LONG = (b"G28", b"G29", b"M400", b"M303", b"G4")
USER = (b"M0", b"M1", b"M600")
#: the thermal model's estimate times this, plus the ordinary bound: a margin for a tired heater, a
#: generic profile, and an off-grid supply sagging under load (heater power goes with the voltage squared)
HEATING_FACTOR = 2.0
#: the ambient the model assumes when it has no better figure (a cool room heats slower: the safe side)
MODEL_AMBIENT_C = 15.0

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


def phase_of(in_flight: list[bytes], *, reply_timeout_s: float, long_timeout_s: float,
             profile: PrinterProfile | None = None, temperatures: dict[str, float] | None = None,
             user_wait: bool = False) -> Phase:
    """The phase the commands in flight (unacknowledged, oldest first) put the printer in, and its bound:
    the oldest one's."""
    if user_wait:
        return Phase("waiting_user", math.inf, "the printer waits for the user")
    bound, name, detail = reply_timeout_s, "streaming", "no acknowledged line"
    # replies come in order: the oldest line in flight is the one the firmware is busy with, the others
    # wait behind it (their own time counts once it is acknowledged)
    for command in in_flight[:1]:
        head = head_of(command)
        if head in USER:
            return Phase("waiting_user", math.inf, f"{head.decode()}: the printer waits for the user")
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
    waits_both_ways = target is None
    if target is None:
        target = _param(command, b"R")
    if target is None:
        return long_timeout_s
    if waits_both_ways and temperatures.get(heater, MODEL_AMBIENT_C) > target + 1.0:
        return long_timeout_s  # R waits for cooling too, which the heating model cannot time (fans, room)
    model = profile.hotend if heater == "hotend" else profile.bed
    start_c = min(temperatures.get(heater, MODEL_AMBIENT_C), target)
    seconds = model.heatup_s(start_c, target, MODEL_AMBIENT_C)
    if not math.isfinite(seconds):
        return long_timeout_s
    return seconds * HEATING_FACTOR + model.settle_s + reply_timeout_s
