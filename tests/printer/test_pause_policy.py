"""Pauses per reason over a real pty: heaters as the policy says, restored on resume; a suspension
ends the print with an exact checkpoint and the power-loss resume repeats nothing; the firmware's
own ``//action:pause|resume``."""
from __future__ import annotations

import threading
from pathlib import Path

from node.clock import Clock
from node.printer.config import PausePolicies
from node.printer.pausing import HeaterPlan
from node.printer.resume import resume_script, state_at
from node.printer.worker import PrinterWorker, PrintOutcome, PrintRequest
from tests.conftest import wait_for
from tests.printer.helpers import FAST, RecordingSink, job_lines, virtual_printer, write_job

HEADER = "G28\nG90\nM82\nM140 S60\nM104 S200\nM190 S60\nM109 S200\nG92 E0\n"


def _start(rig, tmp_path: Path, job_id: str = "p", clock: Clock | None = None, **kwargs: object):
    sink = RecordingSink()
    worker = PrinterWorker(rig.path, 115200, sink, settings=FAST, clock=clock, **kwargs)  # type: ignore[arg-type]
    worker._open()
    worker._connect()
    request = PrintRequest(job_id=job_id, path=tmp_path / "job.gcode")
    outcome: list[PrintOutcome] = []
    thread = threading.Thread(target=lambda: outcome.append(worker._stream(request)), daemon=True)
    thread.start()
    return worker, sink, thread, outcome


def _after(log: Path, marker: bytes) -> list[bytes]:
    lines = log.read_bytes().splitlines()
    return lines[len(lines) - 1 - lines[::-1].index(marker) + 1:] if marker in lines else []


def test_energy_pause_drops_the_hotend_keeps_the_bed_and_reheats_both_on_resume(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.gcode", 1500, header=HEADER)
    with virtual_printer(tmp_path, time_scale=300.0, planner_depth=16) as rig:
        worker, sink, thread, outcome = _start(rig, tmp_path)
        wait_for(lambda: worker.engine.job_lines_acked > 300, what="300 lines acknowledged")
        worker.pause(HeaterPlan.from_policy(PausePolicies().energy))
        wait_for(lambda: ("paused", "p") in sink.states, what="the pause")
        wait_for(lambda: rig.printer.hotend.target_c == 0.0, what="the hotend off")
        assert rig.printer.bed.target_c == 60.0  # the part stays stuck
        worker.resume()
        thread.join(60)
        worker.link.close()
        assert outcome and outcome[0].status == "completed", outcome
        after_park = _after(rig.log, b"M104 S0")
        assert after_park.index(b"M190 S60") < after_park.index(b"M109 S200")  # bed first, both waited for
        moves = [c for c in job if c.startswith(b"G1 X")]
        assert job_lines(rig.log, moves) == moves


def test_a_kept_hotend_goes_off_after_the_policy_timeout(tmp_path: Path) -> None:
    write_job(tmp_path / "job.gcode", 1500, header=HEADER)
    with virtual_printer(tmp_path, time_scale=300.0, planner_depth=16) as rig:
        # node time runs 1000x: the 1800 s of the user policy pass in under two real seconds
        worker, sink, thread, outcome = _start(rig, tmp_path, clock=Clock(1000.0))
        wait_for(lambda: worker.engine.job_lines_acked > 300, what="300 lines acknowledged")
        worker.pause(HeaterPlan.from_policy(PausePolicies().user))
        wait_for(lambda: ("paused", "p") in sink.states, what="the pause")
        assert rig.printer.hotend.target_c == 200.0
        wait_for(lambda: rig.printer.hotend.target_c == 0.0, timeout_s=30, what="the hotend timeout")
        assert rig.printer.bed.target_c == 60.0
        worker.cancel()
        thread.join(60)
        worker.link.close()
        assert outcome and outcome[0].status == "cancelled"


def test_suspend_ends_exactly_and_the_power_loss_resume_repeats_nothing(tmp_path: Path) -> None:
    path = tmp_path / "job.gcode"
    job = write_job(path, 1500, header=HEADER)
    with virtual_printer(tmp_path, time_scale=300.0, planner_depth=16) as rig:
        worker, sink, thread, outcome = _start(rig, tmp_path)
        wait_for(lambda: worker.engine.job_lines_acked > 400, what="400 lines acknowledged")
        worker.pause(HeaterPlan.from_policy(PausePolicies().low_battery))
        worker.suspend()
        thread.join(60)
        assert outcome and outcome[0].status == "suspended", outcome
        checkpoint = outcome[0].checkpoint
        assert checkpoint is not None and sink.checkpoints[-1] == checkpoint
        assert (rig.printer.hotend.target_c, rig.printer.bed.target_c) == (0.0, 0.0)
        assert not rig.printer.state.steppers_on
        # the job's own targets, not the zeros of the suspension; the head parked above the part
        assert (checkpoint.hotend_target_c, checkpoint.bed_target_c) == (200.0, 60.0)
        assert checkpoint.resume_offset > checkpoint.byte_offset
        assert checkpoint.head_z_mm is not None and checkpoint.head_z_mm >= state_at(path, checkpoint.resume_offset).z + 9

        # the printer is switched off and on: it forgets everything
        rig.printer.state.homed = False
        worker._paused.clear()  # what ``submit`` does for a new request
        worker._suspend.clear()
        state = state_at(path, checkpoint.resume_offset)
        second = worker._stream(PrintRequest(
            job_id="p", path=path, start_offset=checkpoint.resume_offset,
            prologue=resume_script(state, checkpoint.hotend_target_c, checkpoint.bed_target_c,
                                   checkpoint.head_z_mm)))
        worker.link.close()
        assert second.status == "completed", second.reason
        moves = [c for c in job if c.startswith(b"G1 X")]
        assert job_lines(rig.log, moves) == moves  # every move once: nothing lost, nothing repeated
        executed = rig.log.read_bytes().splitlines()
        assert b"G92 Z%.3f" % checkpoint.head_z_mm in executed


def test_the_firmware_pauses_and_resumes_the_print_itself(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.gcode", 1500, header=HEADER)
    with virtual_printer(tmp_path, time_scale=300.0, planner_depth=16) as rig:
        worker, sink, thread, outcome = _start(rig, tmp_path, action_pause=HeaterPlan(hotend_off=True))
        wait_for(lambda: worker.engine.job_lines_acked > 300, what="300 lines acknowledged")
        rig.printer.host_action("pause")  # its runout sensor, say
        wait_for(lambda: ("paused", "p") in sink.states, what="the pause")
        wait_for(lambda: rig.printer.hotend.target_c == 0.0, what="the hotend off per the printer policy")
        acked = worker.engine.job_lines_acked
        rig.printer.host_action("resume")  # the person pressed the knob
        thread.join(60)
        worker.link.close()
        assert outcome and outcome[0].status == "completed", outcome
        assert sink.states.index(("paused", "p")) < len(sink.states) - 1 and ("printing", "p") in \
            sink.states[sink.states.index(("paused", "p")):]
        assert worker.engine.job_lines_acked > acked
        moves = [c for c in job if c.startswith(b"G1 X")]
        assert job_lines(rig.log, moves) == moves
