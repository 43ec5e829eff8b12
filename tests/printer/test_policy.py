"""The G-code safety policy: a refusal names the line and the reason."""
from __future__ import annotations

from pathlib import Path

import pytest

from node.printer.config import SafetySection
from node.printer.safety import PolicyViolation, check_file


@pytest.mark.parametrize("line, reason", [
    ("M997", "M997 is not allowed"), ("M500", "M500 is not allowed"), ("M502 ; reset", "M502 is not allowed"),
    ("M104 S320", "hotend temperature 320"), ("M109 R300", "hotend temperature 300"),
    ("M190 S130", "bed temperature 130"),
])
def test_refusal_names_line_and_reason(tmp_path: Path, line: str, reason: str) -> None:
    path = tmp_path / "j.gcode"
    path.write_text("; start\nG28\n\nM104 S200\n" + line + "\nG1 X1\n")
    with pytest.raises(PolicyViolation) as caught:
        check_file(path, SafetySection())
    assert caught.value.line_number == 5 and reason in caught.value.reason


def test_lists_are_configurable(tmp_path: Path) -> None:
    path = tmp_path / "j.gcode"
    path.write_text("G28\nM500\nM42 P4 S255\n")
    check_file(path, SafetySection(allowed_commands=["M500"]))
    with pytest.raises(PolicyViolation, match="M42"):
        check_file(path, SafetySection(allowed_commands=["M500"], extra_forbidden_commands=["M42"]))


def test_a_clean_file_passes(tmp_path: Path) -> None:
    path = tmp_path / "j.gcode"
    path.write_text("M140 S60\nM190 S60\nM104 S215\nM109 S215\nG28\nG1 X1 Y1 E1\n")
    check_file(path, SafetySection())
