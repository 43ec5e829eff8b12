"""G-code analysis: print time from a motion model, energy profile, material, layer index.

``analyze_file(path, profile, ambient_c)`` streams the file once through the
Cython core (``ext/analysiscore.pyx``: parser, firmware-like planner, event
timeline) in 1 MiB chunks, then integrates power over the (sparse) event
timeline (``node.gcode.energy``).  Memory is flat for any file size.
``analyze_cached`` keeps results in the store keyed by the file's sha256, the
profile (name and content) and the ambient temperature, and applies the
learned per-printer correction (``node.gcode.correction``).

Heat-up waits (M109/M190) are modelled separately and reported in
``heatup_seconds``: slicers leave them out of their estimates, so
``motion_seconds`` is the figure to compare with the slicer's.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from node.gcode import energy, metadata
from node.gcode.correction import load_correction
from node.native import load_core
from node.printer.profile import PrinterProfile

if TYPE_CHECKING:
    from node.store.db import Store

log = logging.getLogger(__name__)
core = load_core("analysiscore")

#: bump when the model changes so cached results are recomputed
ANALYSIS_VERSION = 1
CHUNK_BYTES = 1 << 20
MAX_LINE_BYTES = 4096
#: temperature/fan/stepper changes and layer starts kept (~200 B each); a real print has a few thousand
MAX_EVENTS = 200_000
#: a file whose model time exceeds this is refused (hostile dwells or feedrates, not a print)
MAX_PRINT_S = 90 * 86400.0


class GcodeError(ValueError):
    """The file cannot be analysed (unreadable, or not G-code at all)."""


class Analysis(BaseModel):
    """Everything the queue, the planner and the streamer need to know about one file."""

    model_config = ConfigDict(extra="forbid")

    estimated_seconds: float = Field(description="total: (motion + heat-up) x learned correction")
    motion_seconds: float = Field(description="motion model, including G4 dwells; compare with the slicer")
    heatup_seconds: float = Field(description="M109/M190 waits from the thermal model")
    dwell_seconds: float = 0.0
    slicer_estimated_seconds: float | None = None
    slicer: str | None = None
    slicer_version: str | None = None
    slicer_filament_mm: list[float] | None = None
    layers: int
    filament_mm: list[float] = Field(description="net filament pushed per tool (M221 flow applied)")
    max_hotend_c: float
    max_bed_c: float
    max_z_mm: float
    energy_wh: float
    heatup_wh: float
    peak_w: float
    power_profile: list[tuple[float, float]] = Field(description="[[t_s, mean wall watts]] per minute, raw model "
                                                         "(the learned correction scales only the totals)")
    layer_index: list[tuple[int, float, int, float]] = Field(description="[[layer, z_mm, byte_offset, t_s]], raw model clock")
    correction_factor: float = 1.0
    file_sha256: str | None = Field(None, description="set by analyze_cached (the cache key); None from "
                                    "analyze_file, which does not hash")
    file_bytes: int
    lines: int
    moves: int
    printer_profile: str
    ambient_c: float
    limits_from_file: bool
    classic_jerk: bool
    ignored_commands: int = Field(0, description="well-formed commands with no effect on time or energy "
                                  "(M73, M117, G29, ...)")
    skipped_lines: dict[str, int] = Field(default_factory=dict,
                                          description="bad lines skipped, by reason (documented skips)")
    warnings: list[str] = Field(default_factory=list)
    analysis_version: int = ANALYSIS_VERSION


def motion_limits(profile: PrinterProfile) -> dict:
    """The firmware defaults the core starts from (the file's M201/M203/M204/M205 override)."""
    m = profile.motion
    return {
        "max_feedrate": list(m.max_feedrate_mm_s),
        "max_accel": list(m.max_accel_mm_s2),
        "print_accel": m.print_accel_mm_s2,
        "retract_accel": m.retract_accel_mm_s2,
        "travel_accel": m.travel_accel_mm_s2,
        "jerk": list(m.jerk_mm_s),
        "junction_deviation_mm": m.junction_deviation_mm,
        "classic_jerk": m.classic_jerk,
        "min_feedrate": m.min_feedrate_mm_s,
        "min_travel_feedrate": m.min_travel_feedrate_mm_s,
    }


def profile_key(profile: PrinterProfile) -> str:
    """Profile name plus a digest of its content: an edited profile misses the cache."""
    digest = hashlib.sha256(profile.model_dump_json().encode()).hexdigest()[:12]
    return f"{profile.name}:{digest}"


def _build(raw: dict, profile: PrinterProfile, ambient_c: float, sha256: str | None) -> Analysis:
    """Turn the core's result into an Analysis: waits, energy, layer times."""
    integ = energy.PowerIntegrator(profile, ambient_c)
    layer_index: list[list[float]] = []
    events = sorted(raw["events"], key=lambda ev: ev[0])  # stable: same-time events keep file order
    for t_motion_s, kind, a, b, c in events:
        if kind == core.EV_LAYER:  # no power change: only its place on the total clock
            layer_index.append([len(layer_index), round(b, 4), int(a), round(integ.total_s(t_motion_s), 3)])
            continue
        integ.advance_to(t_motion_s)
        if kind == core.EV_HOTEND_TARGET:
            integ.set_hotend(int(a), b)
        elif kind == core.EV_HOTEND_WAIT:
            integ.set_hotend(int(a), b)
            integ.wait(integ.hotend(int(a)), bool(c), f"hotend T{int(a)}")
        elif kind == core.EV_BED_TARGET:
            integ.set_bed(b)
        elif kind == core.EV_BED_WAIT:
            integ.set_bed(b)
            integ.wait(integ.bed, bool(c), "bed")
        elif kind == core.EV_FAN:
            integ.fan = b
        elif kind == core.EV_STEPPERS:
            integ.steppers_on = b > 0.5
        elif kind == core.EV_PAUSE:
            integ.out.warnings.append(f"M0/M1/M600 at byte {int(a)} waits for a person: not in the estimate")
    integ.advance_to(raw["motion_s"])
    out = integ.out
    total_s = integ.t_s
    skipped = {reason: raw[key] for reason, key in (
        ("unparseable", "garbage_lines"),
        ("overlong", "overlong_lines"), ("absurd_number", "absurd_lines")) if raw[key]}
    warnings = list(dict.fromkeys(out.warnings))[:50]
    if raw["absurd_lines"]:
        warnings.append(f"{raw['absurd_lines']} line(s) with an absurd number (|value| >= 1e7) or tool skipped; "
                        f"first at byte {raw['first_absurd_offset']}")
    if raw["arcs_coarse"]:
        warnings.append(f"{raw['arcs_coarse']} arc(s) beyond the work budget planned as one chord each")
    if raw["overlong_lines"]:
        warnings.append(f"{raw['overlong_lines']} line(s) longer than {MAX_LINE_BYTES} bytes skipped; "
                        f"first at byte {raw['first_overlong_offset']}")
    return Analysis(
        estimated_seconds=round(total_s, 3),
        motion_seconds=round(raw["motion_s"], 3),
        heatup_seconds=round(out.heatup_s, 3),
        dwell_seconds=round(raw["dwell_s"], 3),
        layers=len(layer_index),
        filament_mm=[round(max(0.0, e), 3) for e in raw["extruded_mm"]],
        max_hotend_c=out.max_hotend_c,
        max_bed_c=out.max_bed_c,
        max_z_mm=round(raw["max_z_mm"], 4),
        energy_wh=round(out.energy_wh, 3),
        heatup_wh=round(out.heatup_wh, 3),
        peak_w=round(out.peak_w, 3),
        power_profile=energy.per_minute(out.minute_j, total_s),
        layer_index=layer_index,
        file_sha256=sha256,
        file_bytes=raw["bytes"],
        lines=raw["lines"],
        moves=raw["moves"],
        printer_profile=profile.name,
        ambient_c=ambient_c,
        limits_from_file=raw["limits_from_file"],
        classic_jerk=raw["classic_jerk"],
        ignored_commands=raw["unknown_commands"],
        skipped_lines=skipped,
        warnings=warnings,
    )


def analyze_file(path: str | Path, profile: PrinterProfile, ambient_c: float = 22.0, *,
                 file_sha256: str | None = None) -> Analysis:
    """Analyse one G-code file (blocking: run it in a thread or worker from the daemon).

    Raises ``GcodeError`` for a file that cannot be read or holds no G-code;
    bad lines inside a G-code file are skipped and counted (``skipped_lines``).
    Hashing is the cache's business (``analyze_cached``), which passes the
    digest it computed as ``file_sha256`` to be recorded in the result.
    """
    path = Path(path)
    if not -60.0 <= ambient_c <= 60.0:
        raise ValueError(f"ambient_c must be within -60..60 C, got {ambient_c!r}")
    analyzer = core.Analyzer(motion_limits(profile), profile.planner_depth, MAX_LINE_BYTES, MAX_EVENTS)
    head = tail = b""
    size = 0
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(CHUNK_BYTES):
                analyzer.feed(chunk)
                if size == 0:
                    head = chunk[:metadata.HEAD_BYTES]
                size += len(chunk)
                tail = (tail + chunk)[-metadata.TAIL_BYTES:] if len(chunk) < metadata.TAIL_BYTES \
                    else chunk[-metadata.TAIL_BYTES:]
    except OSError as exc:
        raise GcodeError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    meta = metadata.parse_bytes(head, tail if size > metadata.HEAD_BYTES else b"")
    raw = analyzer.finish()
    if raw["bytes"] == 0:
        raise GcodeError(f"{path}: empty file")
    if raw["commands"] == 0 and (raw["garbage_lines"] or raw["overlong_lines"]):
        raise GcodeError(f"{path}: no G-code command found ({raw['garbage_lines'] + raw['overlong_lines']} "
                         "unparseable lines): not a G-code file?")
    if raw["garbage_lines"] > max(100, raw["commands"]):
        raise GcodeError(f"{path}: {raw['garbage_lines']} unparseable lines against {raw['commands']} commands: "
                         "corrupted or not G-code")
    if raw["events_dropped"]:
        raise GcodeError(f"{path}: more than {MAX_EVENTS} temperature, fan, stepper and layer changes: "
                         "not a print this analysis accepts")
    if raw["motion_s"] > MAX_PRINT_S:
        raise GcodeError(f"{path}: the motion alone takes {raw['motion_s'] / 86400:.0f} days "
                         f"(limit {MAX_PRINT_S / 86400:.0f}): absurd dwells, distances or feedrates")
    try:
        result = _build(raw, profile, ambient_c, file_sha256)
    except energy.TimelineTooLong as exc:
        raise GcodeError(f"{path}: {exc}") from None
    result.slicer = meta.slicer
    result.slicer_version = meta.slicer_version
    result.slicer_estimated_seconds = meta.estimated_seconds
    result.slicer_filament_mm = meta.filament_mm
    return result


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(CHUNK_BYTES):
                digest.update(chunk)
    except OSError as exc:
        raise GcodeError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return digest.hexdigest()


def analyze_cached(store: Store, path: str | Path, profile: PrinterProfile, ambient_c: float = 22.0) -> Analysis:
    """``analyze_file`` through the store's cache, with the learned correction applied.

    Blocking (hashing, analysis, store calls): the daemon runs it in a thread.
    The cached result is the raw model; the correction for ``profile.name`` is
    applied on every read, so it follows the print history.
    """
    sha256 = file_sha256(path)
    key = (sha256, profile_key(profile), round(float(ambient_c), 1), ANALYSIS_VERSION)

    def _get(conn):
        row = conn.execute("SELECT result_json FROM gcode_analysis WHERE file_sha256 = ? AND profile_key = ?"
                           " AND ambient_c = ? AND analysis_version = ?", key).fetchone()
        return row[0] if row else None

    cached = store.run_sync(_get)
    if cached is not None:
        result = Analysis.model_validate_json(cached)
    else:
        result = analyze_file(path, profile, ambient_c, file_sha256=sha256)
        payload = result.model_dump_json()

        def _put(conn):
            conn.execute("INSERT OR REPLACE INTO gcode_analysis(file_sha256, profile_key, ambient_c,"
                         " analysis_version, created_s, result_json) VALUES (?, ?, ?, ?, ?, ?)",
                         (*key[:4], time.time(), payload))

        store.run_sync(_put)
    correction = store.run_sync(lambda conn: load_correction(conn, profile.name))
    return apply_correction(result, correction.time_factor, correction.energy_factor)


def apply_correction(result: Analysis, time_factor: float, energy_factor: float = 1.0) -> Analysis:
    """The raw model result with the learned factors applied to its totals."""
    if time_factor == 1.0 and energy_factor == 1.0:
        return result
    return result.model_copy(update={
        "estimated_seconds": round((result.motion_seconds + result.heatup_seconds) * time_factor, 3),
        "energy_wh": round(result.energy_wh * energy_factor, 3),
        "correction_factor": time_factor,
    })


def summary_text(result: Analysis) -> str:
    """A short human summary (``printnode analyze`` without ``--json``)."""
    def hms(seconds: float | None) -> str:
        if seconds is None:
            return "-"
        s = int(round(seconds))
        return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s"

    slicer = f"{result.slicer or 'unknown slicer'}" + (f" {result.slicer_version}" if result.slicer_version else "")
    lines = [
        f"printer profile  {result.printer_profile} (ambient {result.ambient_c:.0f} C); file from {slicer}",
        f"estimated time   {hms(result.estimated_seconds)}  = motion {hms(result.motion_seconds)}"
        f" + heat-up {hms(result.heatup_seconds)}"
        + (f"  (x{result.correction_factor:.3f} learned)" if result.correction_factor != 1.0 else ""),
        f"slicer estimate  {hms(result.slicer_estimated_seconds)}"
        + (f"  (motion model / slicer = {result.motion_seconds / result.slicer_estimated_seconds:.3f})"
           if result.slicer_estimated_seconds else ""),
        f"layers           {result.layers}, max Z {result.max_z_mm:.2f} mm",
        f"filament         {', '.join(f'{mm / 1000:.2f} m' for mm in result.filament_mm)}",
        f"temperatures     hotend {result.max_hotend_c:.0f} C, bed {result.max_bed_c:.0f} C",
        f"energy           {result.energy_wh:.0f} Wh (heat-up {result.heatup_wh:.0f} Wh), peak {result.peak_w:.0f} W",
    ]
    if result.skipped_lines:
        lines.append("skipped lines    " + ", ".join(f"{k}: {v}" for k, v in result.skipped_lines.items()))
    lines += [f"warning          {w}" for w in result.warnings[:5]]
    return "\n".join(lines)


def to_json(result: Analysis) -> str:
    return json.dumps(result.model_dump(), separators=(",", ":"))
