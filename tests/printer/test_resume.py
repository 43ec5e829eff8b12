"""A firmware reset mid-print (planner depth 16, moves taking time): resume loses nothing, repeats little."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from node.printer.resume import resume_script, state_at
from node.printer.virtual import Faults
from node.printer.worker import FirmwareReset, PrinterWorker, PrintRequest
from tests.conftest import wait_for
from tests.printer.helpers import FAST, RecordingSink, job_lines, virtual_printer, write_job

REWIND = 24


def check_resumed_log(executed: list[bytes], job: list[bytes], bound: int) -> int:
    """``executed`` = a prefix of the job, then the job again from a point no later than where it stopped."""
    for cut in range(1, len(executed)):
        before, after = executed[:cut], executed[cut:]
        if before == job[:cut] and after and after == job[job.index(after[0]):] and job.index(after[0]) <= cut:
            repeats = cut - job.index(after[0])
            if repeats <= bound:
                return repeats
    raise AssertionError(f"log is not prefix + resumed suffix within {bound} repeats "
                         f"({len(executed)} executed of {len(job)})")


@pytest.mark.parametrize("advanced_ok", [False, True])
def test_reset_mid_print_then_resume_completes_with_bounded_repeats(tmp_path: Path, advanced_ok: bool) -> None:
    job = write_job(tmp_path / "job.gcode", 700, header="G28\nG90\nM83\nM104 S200\nM140 S60\n")
    with virtual_printer(tmp_path, time_scale=400.0, faults=Faults(reset_after_lines=420),
                         planner_depth=16, advanced_ok=advanced_ok) as rig:
        sink = RecordingSink()
        worker = PrinterWorker(rig.path, 115200, sink, settings=dataclasses.replace(FAST, tickle_s=1.0),
                               rewind_moves=REWIND)
        worker._open()
        worker._connect()
        request = PrintRequest(job_id="j", path=tmp_path / "job.gcode")
        with pytest.raises(FirmwareReset):
            worker._stream(request)
        checkpoint = worker.checkpoint(request)
        assert checkpoint is not None and 0 < checkpoint.resume_offset < checkpoint.byte_offset
        assert rig.printer.counters.resets == 1
        lost_in_planner = job_lines(rig.log, job)
        acked = checkpoint.lines_acked
        assert len(lost_in_planner) < acked  # 'ok' meant planned: some acknowledged moves never ran

        state = state_at(tmp_path / "job.gcode", checkpoint.resume_offset)
        assert not state.absolute_e and state.hotend_c == 200 and state.bed_c == 60
        worker.link.close()
        worker._open()
        worker._connect()
        outcome = worker._stream(PrintRequest(job_id="j", path=tmp_path / "job.gcode",
                                              start_offset=checkpoint.resume_offset,
                                              prologue=resume_script(state)))
        worker.link.close()
        assert outcome.status == "completed", outcome.reason
        # moves are logged when the planner executes them, other commands when processed: compare moves
        moves = [c for c in job if c.startswith(b"G1 X")]
        executed = job_lines(rig.log, moves)
        repeats = check_resumed_log(executed, moves, bound=REWIND + 1)
        assert executed[-1] == moves[-1]
        assert repeats >= 0
        executed_all = rig.log.read_bytes().splitlines()
        assert b"G28 X Y" in executed_all and any(line.startswith(b"G92 Z") for line in executed_all)


def test_state_at_follows_modes_positions_and_temperatures(tmp_path: Path) -> None:
    path = tmp_path / "s.gcode"
    path.write_text("M140 S55\nM104 S205\nG90\nM82\nG1 Z0.2 F300\nG1 X10 Y20 E1.5 F1200\nM106 S128\n"
                    ";LAYER_CHANGE\nG92 E0\nG91\nG1 X5 E0.5\nT1\nG1 X99 ; not reached\n")
    offset = path.read_bytes().index(b"G1 X99")
    state = state_at(path, offset)
    assert (state.x, state.y, state.z, state.e) == (15.0, 20.0, 0.2, 0.5)
    assert not state.absolute_xyz and not state.absolute_e and state.feedrate_mm_min == 1200
    assert (state.hotend_c, state.bed_c, state.fan_pwm, state.tool, state.layer) == (205, 55, 128, 1, 1)
    script = resume_script(state)
    assert script.index(b"G91") < script.index(b"G1 Z0.200 F600") or b"G91" in script
    assert script[-2:] == (b"M106 S128", b"T1")


def test_pause_parks_and_resume_restores_modes_without_losing_a_line(tmp_path: Path) -> None:
    import threading

    job = write_job(tmp_path / "job.gcode", 1500, header="G28\nG90\nM82\nG92 E0\n")
    with virtual_printer(tmp_path, time_scale=300.0, planner_depth=16) as rig:
        sink = RecordingSink()
        worker = PrinterWorker(rig.path, 115200, sink, settings=FAST)
        worker._open()
        worker._connect()
        request = PrintRequest(job_id="p", path=tmp_path / "job.gcode")
        outcome: list[object] = []
        thread = threading.Thread(target=lambda: outcome.append(worker._stream(request)))
        thread.start()
        wait_for(lambda: worker.engine.job_lines_acked > 300, what="300 lines acknowledged")
        worker.pause()
        wait_for(lambda: ("paused", "p") in sink.states, what="the pause script to run")
        parked = (rig.printer.state.x, rig.printer.state.y, rig.printer.state.z)
        rig.printer.state.absolute_e = False  # as if someone left it in M83 while paused
        worker.resume()
        thread.join(60)
        assert parked[:2] == (0.0, 0.0) and parked[2] >= 10  # parked front left, lifted
        assert outcome and outcome[0].status == "completed"  # type: ignore[attr-defined]
        worker.link.close()
        moves = [c for c in job if c.startswith(b"G1 X")]
        assert job_lines(rig.log, moves) == moves
        assert rig.printer.state.absolute_e  # M82 restored after the relative-E prime
