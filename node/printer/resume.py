"""Resume after a reset or power loss: the machine state at a file offset, and the script that restores it.

Why recompute instead of storing every mode in the checkpoint: the file is the
truth.  Scanning it up to the resume offset gives exactly the modes (G90/G91,
M82/M83), position (including G92 shifts), feedrate, temperatures, fan, tool and
layer the next line expects, with no per-line bookkeeping while streaming.  The
checkpoint stores the offsets (and the temperatures last reported) so the scan
knows where to stop.  See docs/resume.md for the whole argument.

:func:`state_at` runs the scan natively (``streamcore.ModalScan``: deep in a
200 MB file the Python scan took most of a minute on a Pi-class CPU);
:func:`apply` and :func:`state_at_reference` are the same rules in Python, kept as
the reference the tests compare the native scan against.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from node.native import streamcore


@dataclass
class ModalState:
    absolute_xyz: bool = True
    absolute_e: bool = True
    x: float = 0.0
    y: float = 0.0
    z: float = 0.0
    e: float = 0.0
    feedrate_mm_min: float = 1500.0
    hotend_c: float = 0.0
    bed_c: float = 0.0
    fan_pwm: int = 0
    tool: int = 0
    layer: int = 0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def command_words(command: bytes) -> dict[str, float]:
    """Letter -> value of the words after the head; unreadable and non-finite values are skipped."""
    words: dict[str, float] = {}
    for part in command.split()[1:]:
        if not part:
            continue
        letter = chr(part[0]).upper()
        try:
            value = float(part[1:]) if len(part) > 1 else 0.0
        except ValueError:
            continue
        if math.isfinite(value):
            words[letter] = value
    return words


def apply(state: ModalState, command: bytes) -> None:
    """Advance ``state`` over one cleaned command."""
    head = command.split(b" ", 1)[0].upper()
    if head in (b"G0", b"G1", b"G2", b"G3"):
        w = command_words(command)
        for axis in ("X", "Y", "Z"):
            if axis in w:
                current = getattr(state, axis.lower())
                setattr(state, axis.lower(), w[axis] if state.absolute_xyz else current + w[axis])
        if "E" in w:
            state.e = w["E"] if state.absolute_e else state.e + w["E"]
        if "F" in w and w["F"] > 0:
            state.feedrate_mm_min = w["F"]
    elif head == b"G92":
        w = command_words(command)
        for axis in ("X", "Y", "Z", "E"):
            if axis in w:
                setattr(state, axis.lower(), w[axis])
    elif head == b"G90":
        state.absolute_xyz = state.absolute_e = True
    elif head == b"G91":
        state.absolute_xyz = state.absolute_e = False
    elif head == b"M82":
        state.absolute_e = True
    elif head == b"M83":
        state.absolute_e = False
    elif head in (b"M104", b"M109"):
        w = command_words(command)
        state.hotend_c = w.get("S", w.get("R", state.hotend_c))
    elif head in (b"M140", b"M190"):
        w = command_words(command)
        state.bed_c = w.get("S", w.get("R", state.bed_c))
    elif head == b"M106":  # Marlin clamps S to 0..255
        state.fan_pwm = int(min(max(command_words(command).get("S", 255.0), 0.0), 255.0))
    elif head == b"M107":
        state.fan_pwm = 0
    elif head == b"G28":
        named = [a for a in ("X", "Y", "Z") if f" {a}".encode() in command.upper()]
        for axis in named or ["X", "Y", "Z"]:
            setattr(state, axis.lower(), 0.0)
    elif len(head) >= 2 and head[:1] == b"T" and head[1:].isdigit() and int(head[1:]) < 256:
        state.tool = int(head[1:])


def _prefix_chunks(path: Path, end_offset: int, chunk_bytes: int) -> Iterator[bytes]:
    """The file's bytes before ``end_offset``, in chunks of at most ``chunk_bytes`` (flat memory)."""
    remaining = end_offset
    with path.open("rb") as handle:
        while remaining > 0:
            chunk = handle.read(min(chunk_bytes, remaining))
            if not chunk:
                return
            remaining -= len(chunk)
            yield chunk


def state_at(path: Path, end_offset: int, chunk_bytes: int = 1 << 20) -> ModalState:
    """The machine state just before the line starting at ``end_offset`` runs (streamed: flat memory).

    A line cut by ``end_offset`` has not run: the scan keeps it pending and never applies it.
    """
    scan = streamcore.ModalScan()
    for chunk in _prefix_chunks(path, end_offset, chunk_bytes):
        scan.feed(chunk)
    return ModalState(**scan.state())


LAYER_MARKERS = (b";LAYER_CHANGE", b";LAYER:")  # PrusaSlicer/Bambu/Orca, Cura


def state_at_reference(path: Path, end_offset: int, chunk_bytes: int = 64 * 1024) -> ModalState:
    """:func:`state_at` in Python (LineSplitter + :func:`apply`): the reference for the native scan."""
    state = ModalState()
    splitter = streamcore.LineSplitter()
    for chunk in _prefix_chunks(path, end_offset, chunk_bytes):
        for _, command in splitter.feed(chunk):
            if command is not None:
                apply(state, command)
    # a line cut by end_offset has not run; the splitter keeps it pending and we drop it
    state.layer = _count_layers(path, end_offset)
    return state


def _count_layers(path: Path, end_offset: int) -> int:
    """Layer number: the complete lines before the offset that start with a slicer's layer marker."""
    count = 0
    carry = b""
    for chunk in _prefix_chunks(path, end_offset, 1 << 16):
        *lines, carry = (carry + chunk).split(b"\n")
        count += sum(1 for line in lines if line.startswith(LAYER_MARKERS))
    return count


LIFT_MM = 2.0
PRIME_MM = 4.0


def resume_script(state: ModalState, hotend_c: float = 0.0, bed_c: float = 0.0,
                  head_z_mm: float | None = None) -> tuple[bytes, ...]:
    """Heat, lift, home X/Y only (Z would crash into the part), restore Z by G92, prime, restore modes.

    ``hotend_c``/``bed_c`` from the checkpoint win when the file's own targets are zero at that point
    (e.g. a resume point inside the start script).  ``head_z_mm``: where the nozzle is when it is
    not at the file's Z (parked above a suspended print); None after a power cut mid-move.
    """
    hot = state.hotend_c or hotend_c
    bed = state.bed_c or bed_c
    script: list[bytes] = []
    if bed > 0:
        script.append(b"M190 S%.0f" % bed)
    if hot > 0:
        script.append(b"M109 S%.0f" % hot)
    script += [
        b"G92 Z%.3f" % (state.z if head_z_mm is None else head_z_mm),  # the printer forgot Z; the head did not move
        b"G91", b"G1 Z%.2f F600" % LIFT_MM, b"G90",
        b"G28 X Y",                           # X/Y only: homing Z would drive the nozzle into the part
        b"G1 X%.3f Y%.3f F6000" % (state.x, state.y),
        b"G1 Z%.3f F600" % state.z,
        b"M83", b"G1 E%.2f F200" % PRIME_MM,  # prime what oozed while the printer was off
        b"G92 E%.5f" % state.e,
        b"G90" if state.absolute_xyz else b"G91",  # G90/G91 set E's mode too (Marlin 2): M82/M83 after
        b"M82" if state.absolute_e else b"M83",
        b"G1 F%.0f" % state.feedrate_mm_min,
    ]
    script.append(b"M106 S%d" % state.fan_pwm if state.fan_pwm else b"M107")
    if state.tool:
        script.append(b"T%d" % state.tool)
    return tuple(script)
