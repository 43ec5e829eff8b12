"""Thermal runaway and a dead heater end in a safe failed state, with the reason."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from node.printer.config import SafetySection
from node.printer.safety import ThermalWatchdog
from node.printer.virtual import Faults
from node.printer.worker import PrinterFault
from tests.conftest import wait_for
from tests.printer.helpers import FAST, print_once, virtual_printer


def heating_job(path: Path) -> Path:
    path.write_text("G28\nM104 S210\nM109 S210\n" + "".join(f"G1 X{i} Y1\n" for i in range(1, 50)))
    return path


def test_firmware_thermal_runaway_fails_the_job_with_the_reason(tmp_path: Path) -> None:
    job = heating_job(tmp_path / "j.gcode")
    with virtual_printer(tmp_path, time_scale=50.0, faults=Faults(runaway_at_c=120.0)) as rig:
        with pytest.raises(PrinterFault, match="Thermal Runaway"):
            print_once(rig.path, job)
        # the firmware reports the runaway, then halts (as Marlin does): the host may be faster
        wait_for(lambda: rig.printer.halted, timeout_s=5, what="the printer to halt")
        assert rig.printer.hotend.target_c == 0


def test_dead_heater_is_caught_by_the_host_watchdog(tmp_path: Path) -> None:
    job = heating_job(tmp_path / "j.gcode")
    safety = SafetySection(heating_check_s=20.0)
    settings = dataclasses.replace(FAST, long_timeout_s=60)
    with virtual_printer(tmp_path, time_scale=50.0, faults=Faults(dead_heater=True)) as rig:
        with pytest.raises(PrinterFault, match="full power .* without rising") as caught:
            print_once(rig.path, job, settings, safety=safety, clock=rig.printer.clock)
        assert "host thermal watchdog" in str(caught.value)
        # the M112 reaches the firmware while it is blocked in M109 (its emergency parser)
        wait_for(lambda: rig.printer.halted, timeout_s=5, what="the printer to halt")
        assert rig.printer.hotend.target_c == 0


def test_watchdog_rules() -> None:
    dog = ThermalWatchdog(SafetySection(max_hotend_c=260, overshoot_c=15, confirmations=2, report_timeout_s=10))
    assert dog.observe("hotend", 900.0, 210, 0.5, 0, 0) is None  # one garbled report is not a fire
    assert dog.observe("hotend", 212.0, 210, 0.5, 1, 1) is None
    assert dog.observe("hotend", 250.0, 210, 0.5, 2, 2) is None
    violation = dog.observe("hotend", 251.0, 210, 0.5, 3, 3)
    assert violation is not None and "above the limit" in violation.reason
    assert dog.check_silence(5.0) is None
    silent = dog.check_silence(14.0)
    assert silent is not None and "no temperature report" in silent.reason
    idle = ThermalWatchdog(SafetySection())
    idle.observe("hotend", 22, 0, 0, 0, 0)
    idle.observe("bed", 22, 0, 0, 0, 0)
    assert idle.check_silence(1e6) is None  # heaters off: silence is not dangerous
