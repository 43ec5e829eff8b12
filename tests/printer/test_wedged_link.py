"""A wedged link never keeps the heaters on: progress is an acknowledged line, not temperature chatter.

Each case wedges the printer in another phase (node/printer/liveness.py) and ends failed safe: the job
fails with the reason and the heaters are off (M112 through the emergency parser) within the phase's
bound; a cancel wins within 5 s whatever the link does.  The tickle and probe settings are the defaults;
the bounds themselves are set small so the suite does not wait the default 30 s.
"""
from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from node.printer.liveness import HeaterPeaks, longest_move_s, phase_of
from node.printer.profile import load_profile
from node.printer.virtual import Faults
from node.printer.worker import CANCEL_WITHIN_S, PrinterFault, PrinterWorker, PrintRequest
from tests.printer.helpers import FAST, RecordingSink, job_lines, print_once, virtual_printer, write_job

BOUND_S = 4.0  # reply_timeout_s: the streaming bound
SETTINGS = dataclasses.replace(FAST, reply_timeout_s=BOUND_S, long_timeout_s=20.0)
SLACK_S = 6.0  # detection runs a few times a second; the rest is the machine under load


def _heating_job(path: Path, moves: int = 50) -> None:
    path.write_text("M104 S200\nM140 S60\nG28\n" + "".join(f"G1 X{i % 50 + 1} Y{i % 30 + 1} F3000\n"
                                                          for i in range(moves)))


def _halted(printer: object, within_s: float = 3.0) -> bool:
    """The firmware acted on M112 (its reader takes the bytes off the pty a moment later)."""
    deadline = time.monotonic() + within_s
    while not printer.halted and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.02)
    return printer.halted  # type: ignore[attr-defined]


def _print_expecting_failure(rig_path: str, job: Path, **worker_kwargs: object) -> tuple[str, float, RecordingSink]:
    sink = RecordingSink()
    worker = PrinterWorker(rig_path, 115200, sink, settings=SETTINGS, **worker_kwargs)  # type: ignore[arg-type]
    try:
        worker._open()
        worker._connect()
        started = time.monotonic()
        with pytest.raises(PrinterFault) as failure:
            worker._stream(PrintRequest(job_id="wedged", path=job))
        return str(failure.value), time.monotonic() - started, sink
    finally:
        worker.link.close()


def test_a_queue_wedged_mid_print_with_temperatures_flowing_fails_safe_within_the_streaming_bound(
        tmp_path: Path) -> None:
    job = tmp_path / "job.gcode"
    _heating_job(job, 400)
    with virtual_printer(tmp_path, time_scale=20.0, faults=Faults(wedge_after_lines=120)) as rig:
        reason, elapsed_s, sink = _print_expecting_failure(rig.path, job)
        assert rig.printer.wedged and _halted(rig.printer)  # M112 reached the emergency parser
        assert rig.printer.hotend.target_c == 0 and rig.printer.bed.target_c == 0
    assert "no line acknowledged" in reason and "streaming" in reason and "M112" in reason
    assert sink.temperatures and sink.emergencies  # the chatter went on; it did not count as progress
    assert elapsed_s < BOUND_S + SLACK_S


def test_a_heater_that_never_reaches_its_target_fails_safe_within_the_thermal_model_bound(tmp_path: Path) -> None:
    profile = load_profile("ender3")
    fast_hotend = profile.hotend.model_copy(update={"heat_capacity_j_per_k": 0.2,  # ~2 s to 200 C on paper
                                                    "settle_s": 0.0})
    profile = profile.model_copy(update={"hotend": fast_hotend})
    job = tmp_path / "job.gcode"
    job.write_text("M104 S200\nM109 S200\nG28\nG1 X10 F3000\n")
    bound_s = phase_of([b"M109 S200"], reply_timeout_s=BOUND_S, long_timeout_s=20.0, profile=profile,
                       temperatures={"hotend": 22.0}).bound_s
    assert bound_s < 20.0  # the thermal model's, not long_timeout_s
    with virtual_printer(tmp_path, time_scale=1.0, faults=Faults(dead_heater=True)) as rig:
        reason, elapsed_s, _ = _print_expecting_failure(rig.path, job, profile=profile)
        assert _halted(rig.printer) and rig.printer.hotend.target_c == 0
    assert "heating" in reason and "M109 S200" in reason and "failed safe" in reason
    assert elapsed_s < bound_s + SLACK_S


def test_a_line_longer_than_the_receive_buffer_never_hangs_the_print_with_heaters_on(tmp_path: Path) -> None:
    job = tmp_path / "job.gcode"
    job.write_text("M104 S200\nM140 S60\nG28\nM117 " + "x" * 133 + "\nG1 X1 F3000\n")  # 138 > 128 bytes
    with virtual_printer(tmp_path, time_scale=20.0) as rig:
        reason, elapsed_s, _ = _print_expecting_failure(rig.path, job)
        assert _halted(rig.printer) and rig.printer.hotend.target_c == 0 and rig.printer.bed.target_c == 0
    assert "failed safe" in reason
    assert elapsed_s < BOUND_S + SLACK_S + 30  # the resend streak may end it first; never an hour


def test_a_binary_file_never_hangs_the_print(tmp_path: Path) -> None:
    job = tmp_path / "job.bin"
    job.write_bytes(b"M104 S200\n" + os.urandom(20000))
    with virtual_printer(tmp_path, time_scale=20.0) as rig:
        sink = RecordingSink()
        worker = PrinterWorker(rig.path, 115200, sink, settings=SETTINGS)
        started = time.monotonic()
        try:
            worker._open()
            worker._connect()
            try:
                outcome = worker._stream(PrintRequest(job_id="binary", path=job))
                assert outcome.status in ("completed", "failed"), outcome.reason
            except PrinterFault as exc:
                assert "failed safe" in str(exc) or "printer reported" in str(exc)
        finally:
            worker.link.close()
    assert time.monotonic() - started < 120


@pytest.mark.parametrize("phase", ["streaming", "heating"])
def test_cancel_wins_within_5_s_whatever_the_link_does(tmp_path: Path, phase: str) -> None:
    job = tmp_path / "job.gcode"
    if phase == "streaming":
        write_job(job, 3000)
        faults = Faults(wedge_after_lines=200)
    else:
        job.write_text("M104 S200\nM109 S200\n" + "G1 X1 F3000\n" * 100)
        faults = Faults(dead_heater=True)
    with virtual_printer(tmp_path, time_scale=20.0 if phase == "streaming" else 1.0, faults=faults) as rig:
        sink = RecordingSink()
        worker = PrinterWorker(rig.path, 115200, sink, settings=dataclasses.replace(SETTINGS, reply_timeout_s=600,
                                                                                     long_timeout_s=600))
        worker._open()
        worker._connect()
        result: dict[str, object] = {}
        thread = threading.Thread(target=lambda: result.update(outcome=worker._stream(
            PrintRequest(job_id="cancel", path=job))), daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not (rig.printer.wedged or rig.printer.hotend.target_c > 0 and phase == "heating") \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # well inside the wedge: nothing acknowledged any more
        asked = time.monotonic()
        worker.cancel()
        thread.join(10)
        took_s = time.monotonic() - asked
        worker.link.close()
        outcome = result.get("outcome")
        assert outcome is not None and outcome.status == "cancelled", outcome
        if "M112" in outcome.reason:
            assert _halted(rig.printer)
        assert rig.printer.hotend.target_c == 0 and rig.printer.bed.target_c == 0
    assert took_s < 5.0 and CANCEL_WITHIN_S < 5.0
    assert "M112" in outcome.reason or outcome.reason == "cancelled"


def test_a_wait_that_must_cool_gets_the_long_bound_not_the_heating_model() -> None:
    """Real Marlin (bench/marlin.py, benchy): ``M109 R170`` with the hotend at 200 °C waits for it to
    cool, which the heating model cannot time; it got a 45 s bound and failed a healthy print."""
    profile = load_profile("ender3")
    cooling = phase_of([b"M109 R170"], reply_timeout_s=30.0, long_timeout_s=900.0, profile=profile,
                       temperatures={"hotend": 200.0})
    heating = phase_of([b"M109 R170"], reply_timeout_s=30.0, long_timeout_s=900.0, profile=profile,
                       temperatures={"hotend": 25.0})
    assert cooling.bound_s == 900.0 and 30.0 < heating.bound_s < 900.0
    # real Marlin, cura file: a bang-bang bed that overshot to 62 C kept `M190 S50` waiting (the residency
    # window holds an S wait too); it failed a healthy print on a 90 s bound
    overshot = phase_of([b"M190 S50"], reply_timeout_s=30.0, long_timeout_s=900.0, profile=profile,
                        temperatures={"bed": 62.0})
    assert overshot.bound_s == 900.0
    # the last ten degrees: nothing on paper at full power, a minute and more for a PID and its residency
    near = phase_of([b"M109 S170"], reply_timeout_s=30.0, long_timeout_s=900.0, profile=profile,
                    temperatures={"hotend": 160.0})
    assert near.bound_s >= 30.0 + profile.hotend.settle_s


def test_the_streaming_bound_covers_the_longest_move_the_planner_holds() -> None:
    """A slow move (a Z lift at F60) holds the planner slot the next line waits for: the bound grows
    with it instead of failing a healthy print at reply_timeout_s."""
    profile = load_profile("ender3")
    lines = [b"G21", b"G90", b"M83", b"G28", b"G1 Z5 F600", b"G1 X10 Y10 E0.5 F1800", b"G1 Z65 F60",
             b"G1 X20 E0.4 F1800"]
    move_s, move = longest_move_s(lines, profile, timed_from=4)
    assert move == "G1 Z65 F60" and 60.0 <= move_s < 62.0  # 60 mm at 1 mm/s, plus its short ramp
    streaming = phase_of([b"G1 X30 F1800"], reply_timeout_s=30.0, long_timeout_s=900.0, profile=profile,
                         queued_move=(move_s, move))
    assert streaming.name == "streaming" and streaming.bound_s >= 30.0 + 2 * 60.0 and "G1 Z65 F60" in streaming.detail
    # ordinary printing moves leave about the ordinary bound (the 5 mm Z hop at the ender3's 5 mm/s: ~1 s)
    quick = longest_move_s(lines[:6], profile, timed_from=4)[0]
    assert 1.0 <= quick < 1.2
    assert phase_of([b"G1 X1"], reply_timeout_s=30.0, long_timeout_s=900.0,
                    queued_move=(quick, "")).bound_s == pytest.approx(30.0 + 2 * quick)


def test_the_motion_estimate_follows_modes_units_limits_and_arcs() -> None:
    profile = load_profile("ender3")  # Z at most profile.motion.max_feedrate_mm_s[2]
    z_max = profile.motion.max_feedrate_mm_s[2]
    # a Z move asking for more than the axis can: capped by the profile
    fast_z = longest_move_s([b"G28", b"G1 Z10 F6000"], profile)[0]
    assert fast_z >= 10.0 / z_max
    # relative mode: 25.4 mm at 25.4 mm/s from wherever the head was
    relative = longest_move_s([b"G91", b"G1 X25.4 F1524"], profile)[0]
    assert 1.0 <= relative < 1.2
    # an absolute move before anything placed the axis: the whole bed, the safe side
    unplaced = longest_move_s([b"G1 X5 F600"], profile)[0]
    assert unplaced >= profile.bed_x_mm / 10.0
    # G92 places an axis; a full circle of radius 10 at 10 mm/s is ~6.3 s
    arc = longest_move_s([b"G92 X0 Y0", b"G2 X0 Y0 I10 J0 F600"], profile)[0]
    assert 6.2 <= arc < 7.0
    # garbage is no move and no crash
    assert longest_move_s([b"G1 Xnan Yinf F-5", b"G1 X\xff", b""], profile) == (0.0, "")


def test_a_slow_move_that_holds_the_planner_past_reply_timeout_does_not_fail_the_print(tmp_path: Path) -> None:
    """Real time on the virtual printer's planner: a 6 s move at the head of a full planner keeps the
    next line unacknowledged past a 4 s reply bound; the print completes."""
    job = tmp_path / "slow.gcode"
    shuffle = "".join(f"G1 Y{i % 9 + 1} F6000\n" for i in range(40))  # fills the planner behind the slow move
    job.write_text("G92 X0 Y0 Z0\nG90\nG1 X2 F6000\nG1 X42 F400\n" + shuffle)
    with virtual_printer(tmp_path, time_scale=1.0) as rig:
        outcome, _, _ = print_once(rig.path, job, settings=SETTINGS)
    assert outcome.status == "completed", outcome.reason


def test_a_probe_refused_behind_a_long_wait_does_not_count_the_queued_heating_wait_as_done(tmp_path: Path) -> None:
    """Real Marlin, the cura file: a probe sent during a long command is refused once it ends with
    ``Last Line: k`` — the last line the firmware *accepted*, not the last it ran.  The M109 among those
    lines was still to run; counted as done, the lines behind it got the streaming bound and a healthy
    print failed safe 30 s into the heat-up.  Here: G28 X behind a dwell (probed), then M107 and an
    M109 from cold already in the firmware's queue."""
    job = tmp_path / "job.gcode"
    job.write_text("G28\nG4 S20\nG28 X\nM107\nM109 S200\nG1 X1 F3000\nG1 X2\nG1 X3\nG1 X4\n")
    settings = dataclasses.replace(SETTINGS, reply_timeout_s=3.0, long_timeout_s=6.0)
    with virtual_printer(tmp_path, time_scale=10.0) as rig:
        outcome, _, _ = print_once(rig.path, job, settings=settings, profile=load_profile("ender3"))
        counters = rig.printer.counters
    assert outcome.status == "completed", outcome.reason
    assert counters.line_number_errors >= 1  # the probe was refused behind the wait, as on real Marlin
    commands = [line.encode() for line in job.read_text().splitlines()]
    assert Counter(job_lines(rig.log, commands)) == Counter(commands)  # each once (the planner logs moves late)


def test_an_overshot_heating_wait_keeps_its_long_bound_through_a_low_reading() -> None:
    """Real Marlin, cura: `M190 S50` with the bed overshot to 66 degrees (Marlin holds the wait until
    the bed has stayed near its target), then one report of 46 degrees: judged by the latest reading,
    the bound fell to the heating model's ~2 minutes while the silence since the last acknowledged
    line was already 4; the wait is judged by the highest reading since that line."""
    profile = load_profile("ender3")
    in_flight = [b"M190 S50", b"M104 S200", b"M105", b"M109 S200"]
    peaks = HeaterPeaks()
    for reading_c in (45.4, 66.4, 61.9, 58.5, 46.1):
        peaks.observe("bed", reading_c)
    latest = {"hotend": 19.4, "bed": 46.1}
    by_latest = phase_of(in_flight, reply_timeout_s=30.0, long_timeout_s=900.0, profile=profile,
                         temperatures=latest)
    by_peak = phase_of(in_flight, reply_timeout_s=30.0, long_timeout_s=900.0, profile=profile,
                       temperatures=peaks.applied_to(latest))
    assert by_latest.bound_s < 250.0 and by_peak.bound_s == 900.0
    peaks.clear()  # a line acknowledged: the next wait is judged afresh
    assert peaks.applied_to(latest) == latest
