"""`printnode print`: one-shot streaming over a real pty, its JSON summary, refusals with reasons."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import serial

from node.printer.virtual import Faults
from tests.printer.helpers import job_lines, virtual_printer, write_job


def print_cli(path: Path, port: str, *extra: str, json_lines: bool = True) -> subprocess.CompletedProcess[str]:
    """``printnode print`` at the default [printer] settings (only the boot wait skipped)."""
    return subprocess.run([sys.executable, "-m", "node", "print", str(path), "--port", port,
                           *(["--json"] if json_lines else []), "--set", "printer.boot_wait_s=0", *extra],
                          capture_output=True, text=True, timeout=120)


def summary_of(result: subprocess.CompletedProcess[str]) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_prints_a_file_and_reports_lines_resends_seconds(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.gcode", 800)
    with virtual_printer(tmp_path, faults=Faults(corrupt_in=0.05, seed=9)) as rig:
        result = print_cli(tmp_path / "job.gcode", rig.path)
        assert result.returncode == 0, result.stderr
        summary = summary_of(result)
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


def test_the_readme_fault_switches_complete_at_the_default_settings(tmp_path: Path) -> None:
    """The README's command line for the virtual printer, as a separate process, and ``printnode print``
    with nothing changed: it completes, every command once, in order."""
    job = write_job(tmp_path / "job.gcode", 1500)
    port_file, log = tmp_path / "port", tmp_path / "executed.log"
    printer = subprocess.Popen([sys.executable, "-m", "node", "virtual-printer", "--time-scale", "0", "--advanced-ok",
                                "--corrupt-in", "0.05", "--drop-ok", "0.01", "--reset-on-open", "--command-log",
                                str(log), "--port-file", str(port_file)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while not port_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert port_file.exists(), "the virtual printer did not start"
        result = subprocess.run([sys.executable, "-m", "node", "print", str(tmp_path / "job.gcode"), "--port",
                                 port_file.read_text().strip(), "--json"], capture_output=True, text=True, timeout=300)
    finally:
        printer.terminate()
        printer.wait(10)
    assert result.returncode == 0, result.stderr[-3000:]
    assert summary_of(result)["resends"] > 0
    assert job_lines(log, job) == job


def test_progress_is_json_lines_with_json_and_plain_lines_without_a_terminal(tmp_path: Path) -> None:
    write_job(tmp_path / "job.gcode", 3000)
    with virtual_printer(tmp_path) as rig:
        as_json = print_cli(tmp_path / "job.gcode", rig.path)
        plain = print_cli(tmp_path / "job.gcode", rig.path, json_lines=False)
    assert as_json.returncode == 0 and plain.returncode == 0, as_json.stderr + plain.stderr
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    progress = [r for r in records if r["type"] == "progress"]
    assert progress and records[-1]["type"] == "summary"
    assert {"percent", "lines", "lines_per_s", "eta_s"} <= set(progress[0])
    assert "\r" not in plain.stderr  # a log gets lines, not a carriage-return flood
    assert any(" lines/s" in line for line in plain.stderr.splitlines())
    assert plain.stderr.strip().splitlines()[-1].startswith("completed:")


def test_a_link_lost_mid_print_exits_non_zero_with_the_reason(tmp_path: Path) -> None:
    write_job(tmp_path / "job.gcode", 2000)
    with virtual_printer(tmp_path, faults=Faults(disconnect_after_lines=300)) as rig:
        result = print_cli(tmp_path / "job.gcode", rig.path)
    assert result.returncode == 1 and "printnode print:" in result.stderr
    assert "Traceback" not in result.stderr
