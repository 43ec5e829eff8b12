"""`printnode print`: one-shot streaming over a real pty, its JSON summary, refusals with reasons."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import serial

from node.printer.virtual import Faults
from tests.printer.helpers import job_lines, virtual_printer, write_job


def print_cli(path: Path, port: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node", "print", str(path), "--port", port, "--json",
                           "--set", "printer.boot_wait_s=0", "--set", "printer.tickle_s=0.3", *extra],
                          capture_output=True, text=True, timeout=120)


def test_prints_a_file_and_reports_lines_resends_seconds(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.gcode", 800)
    with virtual_printer(tmp_path, faults=Faults(corrupt_in=0.05, seed=9)) as rig:
        result = print_cli(tmp_path / "job.gcode", rig.path)
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        assert summary["lines"] == len(job) and summary["resends"] > 0 and summary["seconds"] > 0
        assert summary["status"] == "completed" and summary["cpu_us_per_line"] > 0
        assert job_lines(rig.log, job) == job


def test_refuses_a_port_another_process_holds(tmp_path: Path) -> None:
    write_job(tmp_path / "job.gcode", 10)
    with virtual_printer(tmp_path) as rig, serial.Serial(rig.path, 115200, exclusive=True):
        result = print_cli(tmp_path / "job.gcode", rig.path)
        assert result.returncode != 0 and "held by another process" in result.stderr
        assert not rig.log.exists() or rig.log.read_bytes() == b""


def test_refuses_a_file_the_safety_policy_rejects(tmp_path: Path) -> None:
    path = tmp_path / "bad.gcode"
    path.write_text("G28\nM104 S200\nM997\n")
    with virtual_printer(tmp_path) as rig:
        result = print_cli(path, rig.path)
    assert result.returncode == 3 and "line 3" in result.stderr and "M997" in result.stderr


def test_fails_with_a_reason_when_the_firmware_halts(tmp_path: Path) -> None:
    path = tmp_path / "j.gcode"
    path.write_text("G28\nM104 S210\nM109 S210\n" + "G1 X1\n" * 20)
    with virtual_printer(tmp_path, time_scale=50.0, faults=Faults(runaway_at_c=100)) as rig:
        result = print_cli(path, rig.path)
    assert result.returncode == 1 and "Thermal Runaway" in result.stderr
