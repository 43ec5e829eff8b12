"""ADVANCED_OK over a real pty: the firmware's reported free slots (B) grow the window past the
configured 4 commands, and a full command queue (B0) never makes the host overrun the receive buffer."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from node.printer.virtual import Faults
from tests.printer.helpers import FAST, job_lines, print_once, virtual_printer, write_job


def moves(job: list[bytes]) -> list[bytes]:
    """Moves are logged when the planner executes them, other commands when processed: compare moves."""
    return [c for c in job if c.startswith(b"G1 X")]


def test_a_bigger_firmware_queue_keeps_more_lines_in_flight_each_executed_once(tmp_path: Path) -> None:
    # moves take (scaled) time and the planner is short, so the firmware's 16-command queue fills up
    job = write_job(tmp_path / "job.gcode", 300)
    with virtual_printer(tmp_path, time_scale=1000.0, planner_depth=2, advanced_ok=True,
                         command_queue=16, rx_buffer_bytes=128) as rig:
        outcome, worker, _ = print_once(rig.path, tmp_path / "job.gcode", FAST)  # max_commands 4, RX 128
        counters = rig.printer.counters
        engine = worker.engine
    assert outcome.status == "completed", outcome.reason
    assert job_lines(rig.log, moves(job)) == moves(job)  # every move once, in order
    assert engine.firmware_bufsize == 16  # learnt from B at the handshake (idle firmware: B = 15)
    assert engine.max_inflight > 4 and counters.max_queue > 4  # more than the configured window
    assert engine.queue_free_min == 0  # the firmware reported a full queue...
    assert counters.rx_overflow_bytes == 0  # ... and the host never overran its receive buffer
    assert counters.checksum_errors == counters.line_number_errors == 0 and outcome.resends == 0


def test_without_advanced_ok_the_configured_window_holds(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.gcode", 200)
    with virtual_printer(tmp_path, time_scale=1000.0, planner_depth=2, command_queue=16) as rig:
        outcome, worker, _ = print_once(rig.path, tmp_path / "job.gcode", FAST)
    assert outcome.status == "completed", outcome.reason
    assert job_lines(rig.log, moves(job)) == moves(job)
    assert worker.engine.firmware_bufsize == 0 and worker.engine.max_inflight <= 4
    assert rig.printer.counters.max_queue <= 4


def test_a_grown_window_survives_corruption_both_ways(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.gcode", 600)
    faults = Faults(corrupt_in=0.04, corrupt_out=0.04, seed=11)
    with virtual_printer(tmp_path, time_scale=1000.0, planner_depth=2, advanced_ok=True, command_queue=16,
                         faults=faults) as rig:
        outcome, worker, _ = print_once(rig.path, tmp_path / "job.gcode", dataclasses.replace(FAST, tickle_s=0.5))
        counters = rig.printer.counters
    assert outcome.status == "completed", outcome.reason
    assert job_lines(rig.log, moves(job)) == moves(job)
    assert counters.corrupted_in > 10 and counters.corrupted_out > 10 and outcome.resends > 0
    assert worker.engine.max_inflight > 4
