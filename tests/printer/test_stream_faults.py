"""Every command executed exactly once, in order, over a real pty, whatever the link does to the bytes."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from node.printer.virtual import Faults
from tests.printer.helpers import FAST, job_lines, print_once, virtual_printer, write_job

CASES = {
    "clean window": (Faults(), {}, {}),
    "clean ADVANCED_OK": (Faults(), {"advanced_ok": True}, {}),
    "corrupt host->printer": (Faults(corrupt_in=0.08, seed=1), {}, {}),
    "corrupt printer->host": (Faults(corrupt_out=0.05, seed=2), {}, {}),
    "corrupt both, ADVANCED_OK": (Faults(corrupt_in=0.05, corrupt_out=0.04, seed=3), {"advanced_ok": True}, {}),
    "dropped oks": (Faults(drop_ok=0.03, seed=4), {}, {}),
    "dropped oks, ADVANCED_OK": (Faults(drop_ok=0.05, seed=5), {"advanced_ok": True}, {}),
    "silence": (Faults(silence_after_lines=700, silence_s=1.0), {}, {}),
    # whole lines lost on the wire, as real Marlin's Linux HAL loses them (bench/marlin.py), back to back too
    "lost lines": (Faults(lose_lines=(50, 51, 300, 999)), {}, {}),
    "ping-pong, corrupt both": (Faults(corrupt_in=0.05, corrupt_out=0.05, seed=6), {}, {"ping_pong": True}),
    "big buffers, corrupt both": (Faults(corrupt_in=0.02, corrupt_out=0.02, seed=7),
                                  {"advanced_ok": True, "rx_buffer_bytes": 1024, "command_queue": 16},
                                  {"max_commands": 16, "rx_buffer_bytes": 1024}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_command_executed_exactly_once_in_order(tmp_path: Path, case: str) -> None:
    faults, printer_kwargs, settings_changes = CASES[case]
    job = write_job(tmp_path / "job.gcode", 1000)
    settings = dataclasses.replace(FAST, **settings_changes)
    with virtual_printer(tmp_path, faults=dataclasses.replace(faults), **printer_kwargs) as rig:
        outcome, worker, _ = print_once(rig.path, tmp_path / "job.gcode", settings)
        counters = rig.printer.counters
        assert outcome.status == "completed", outcome.reason
        executed = job_lines(rig.log, job)
        assert executed == job
        assert outcome.lines_sent == len(job)
        if not faults.silence_after_lines:  # (probes during a silence may overrun it: checksums catch that)
            assert counters.rx_overflow_bytes == 0  # the window never overran the receive buffer
        if faults.corrupt_in:
            assert counters.corrupted_in > 10 and counters.checksum_errors + counters.line_number_errors > 0
            assert outcome.resends > 0
        if faults.corrupt_out:
            assert counters.corrupted_out > 10
        if faults.drop_ok:
            assert counters.oks_dropped > 10
        if faults.lose_lines:  # (recovered by a resend request, or by a probe when nothing followed the lost line)
            assert counters.extra["lost_lines"] == len(faults.lose_lines)
        assert worker.engine.advanced_ok_seen == bool(printer_kwargs.get("advanced_ok"))


def test_a_printer_that_stays_silent_fails_the_job_with_a_reason(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.gcode", 800)
    settings = dataclasses.replace(FAST, tickle_s=0.2, max_probes=3)
    with virtual_printer(tmp_path, faults=Faults(silence_after_lines=300)) as rig:
        outcome, _, _ = None, None, None
        from node.printer.worker import PrinterFault
        with pytest.raises(PrinterFault, match="stopped answering"):
            print_once(rig.path, tmp_path / "job.gcode", settings)
        executed = job_lines(rig.log, job)
        assert executed == job[: len(executed)]  # nothing skipped, nothing repeated before the silence


def test_overlong_line_fails_the_job_by_position(tmp_path: Path) -> None:
    path = tmp_path / "job.gcode"
    path.write_text("G28\nG1 X1\n" + "G1 X" + "1" * 5000 + "\nG1 X2\n")
    with virtual_printer(tmp_path) as rig:
        outcome, _, _ = print_once(rig.path, path)
    assert outcome.status == "failed" and "byte 10" in outcome.reason
