"""The G-code policy, read the strictest way any firmware could: a refusal names the line and
the reason, and no spelling of a forbidden command or an out-of-limit value gets through."""
from __future__ import annotations

from pathlib import Path

import pytest

from node.printer.config import SafetySection
from node.printer.policy import PolicyRules, PolicyViolation, check_command, check_file


def _rules(**safety: object) -> PolicyRules:
    return PolicyRules.from_config(SafetySection(**safety), max_wire_bytes=128)


@pytest.mark.parametrize("line, reason", [
    ("M997", "M997 is not allowed"), ("M500", "M500 is not allowed"), ("M502 ; reset", "M502 is not allowed"),
    ("M104 S320", "hotend temperature 320"), ("M109 R300", "hotend temperature 300"),
    ("M190 S130", "bed temperature 130"),
])
def test_refusal_names_line_and_reason(tmp_path: Path, line: str, reason: str) -> None:
    path = tmp_path / "j.gcode"
    path.write_text("; start\nG28\n\nM104 S200\n" + line + "\nG1 X1\n")
    with pytest.raises(PolicyViolation) as caught:
        check_file(path, _rules())
    assert caught.value.line_number == 5 and reason in caught.value.reason


def test_lists_are_configurable(tmp_path: Path) -> None:
    path = tmp_path / "j.gcode"
    path.write_text("G28\nM500\nM42 P4 S255\n")
    check_file(path, _rules(allowed_commands=["M500"]))
    with pytest.raises(PolicyViolation, match="M42"):
        check_file(path, _rules(allowed_commands=["M500"], extra_forbidden_commands=["M42"]))


def test_a_clean_file_passes(tmp_path: Path) -> None:
    path = tmp_path / "j.gcode"
    path.write_text("M140 S60\nM190 S60\nM104 S215\nM109 S215\nG28\nG1 X1 Y1 E1\nM84 X Y E\nM117 Done...Clean Me Up!\n"
                    "G1 X.5 Y-1. E+0.02 F1200\nM106 S242.25\nT0\nm104 s200\nG1X10Y10\n")
    assert check_file(path, _rules()) == 13


# --- finding 2 of issue #14: every spelling a firmware reads as the forbidden command ---------
@pytest.mark.parametrize("line, read_as", [
    (b"M500S1", "M500"), (b"M500\tS1", "M500"), (b"M 500", "M500"), (b"M0500", "M500"), (b"M00", "M0"),
    (b"m500", "M500"), (b"M502.1", "M502"), (b"N10 M500", "M500"),
    (b"G4 P0\rM502\rM500", "M502"), (b"G1 X1 M500", "M500"), (b"G1 X1 M 0500", "M500"),
])
def test_forbidden_command_under_any_spelling(line: bytes, read_as: str) -> None:
    why = check_command(line, _rules())
    assert why is not None and read_as in why


@pytest.mark.parametrize("line", [b"M104S400", b"M104 S 400", b"M104 T0 S400", b"M109 B400 S200", b"M140 S0 R150",
                                  b"G10 P0 S400", b"M568 P0 S400"])
def test_temperature_over_the_limit_in_any_spelling(line: bytes) -> None:
    why = check_command(line, _rules())
    assert why is not None and "temperature" in why


@pytest.mark.parametrize("line", [b"M104 S0x190", b"M104 Snan", b"M104 S nan", b"M104 SNaN", b"M104 Sinf",
                                  b"M104 S4e2", b"M104 S1E3", b"G1 X1.2.3", b"G1 X1e5"])
def test_parameters_must_be_plain_decimal_numbers(line: bytes) -> None:
    why = check_command(line, _rules())
    assert why is not None and "not a plain decimal number" in why


@pytest.mark.parametrize("line, reason", [
    (b"M117 " + b"x" * 133, "receive buffer"), (b"root:x:0:0:root:/root:/bin/bash", "not a G-code command"),
    (b"G1 X1\x00", "binary data"), (b"G1 X{300+100}", "not plain G-code"), (b"G1 X1*57", "checksum"),
    (b"G1 X1 \xc3\xa9", "non-ASCII"), (b"M99999999 S1", "out of range"),
])
def test_what_is_not_gcode_is_refused(line: bytes, reason: str) -> None:
    why = check_command(line, _rules())
    assert why is not None and reason in why


def test_binary_and_empty_files_are_refused(tmp_path: Path) -> None:
    bgcode = tmp_path / "a.bgcode"
    bgcode.write_bytes(b"GCDE\x01\x00\x00\x00" + bytes(range(256)))
    with pytest.raises(PolicyViolation, match="bgcode"):
        check_file(bgcode, _rules())
    empty = tmp_path / "empty.gcode"
    empty.write_text("; only a comment\n\n")
    with pytest.raises(PolicyViolation, match="no G-code command"):
        check_file(empty, _rules())
    random = tmp_path / "random.gcode"
    random.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(PolicyViolation):
        check_file(random, _rules())


def test_a_message_longer_than_the_receive_buffer_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "j.gcode"
    path.write_text("G28\nM117 " + "a" * 133 + "\nG1 X1\n")
    with pytest.raises(PolicyViolation) as caught:
        check_file(path, _rules())
    assert caught.value.line_number == 2 and "128 bytes" in caught.value.reason
