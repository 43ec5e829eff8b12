"""Hostile files: a clear error or a documented skip, never a crash or a hang."""
from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.gcode.analysis import GcodeError, analyze_file
from node.native import load_core

core = load_core("analysiscore")

from tests.gcode.conftest import square_layers


def check(result) -> None:
    """Whatever came in, what goes out is finite and consistent."""
    for value in (result.motion_seconds, result.heatup_seconds, result.estimated_seconds, result.energy_wh,
                  result.peak_w, *result.filament_mm):
        assert math.isfinite(value)
    assert result.estimated_seconds >= result.motion_seconds >= 0
    assert result.energy_wh >= 0
    assert [row[0] for row in result.layer_index] == list(range(result.layers))


def analyze_or_refuse(path, profile):
    try:
        result = analyze_file(path, profile)
    except GcodeError as exc:
        assert str(path) in str(exc)
        return None
    check(result)
    return result


LINES = st.one_of(
    st.sampled_from(["G1 X10 Y10 E1 F1200", "G0 X0 Y0", "G2 X10 Y0 I5 J0", "G3 X0 Y0 R5", "G91", "G90", "M83",
                     "M82", "G92 E0", "T1", "T0", "M104 S200", "M109 S210", "M190 S60", "M140 S0", "M106 S128",
                     "M107", "M84", "G4 P10", "G28", "M220 S150", "M221 S90", "M205 X8 Y8", "M205 J0.02",
                     "M204 P500 T1000", "M201 X0 Y0", "M203 X0", ";LAYER:1", "", "G1 Z0.4", "G20", "G21",
                     "M600", "N12 G1 X5*57", "G1 X1e5", "G1 F0 X5", "G1 X-5 F-100", "M109 R-40", "T99",
                     "G1 X99999999999 Y1", "M104 S1e9", "G4 S-5", "G2 X0 Y0 I0 J0", "G3 X1 Y1 R0.1"]),
    st.text(max_size=40),
    st.builds(lambda axis, v: f"G1 {axis}{v!r}", st.sampled_from("XYZEF"),
              st.floats(allow_nan=True, allow_infinity=True)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(LINES, max_size=40), crlf=st.booleans(), final_newline=st.booleans())
def test_fuzz_mixed_lines(write, ender3, lines, crlf, final_newline):
    text = ("\r\n" if crlf else "\n").join(lines) + ("\n" if final_newline else "")
    analyze_or_refuse(write(text.encode("utf-8", "surrogatepass")), ender3)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=4000))
def test_fuzz_binary_garbage(write, ender3, data):
    analyze_or_refuse(write(data), ender3)


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=12))
def test_any_chunking_gives_the_same_result(cuts):
    text = ("M140 S60\r\nM104 S200\nM190 S60\n" + square_layers(6) + "G2 X20 Y10 I5 J0 E1\nT1\nG1 X5 E2\n"
            "M106 S100\n; a comment without newline at the end").encode()
    limits = {"max_feedrate": [300, 300, 10, 50], "max_accel": [1000, 1000, 100, 5000], "print_accel": 800,
              "retract_accel": 1000, "travel_accel": 1000, "jerk": [10, 10, 0.4, 5],
              "junction_deviation_mm": None}
    whole = core.Analyzer(limits, 16)
    whole.feed(text)
    expected = whole.finish()
    pieces = core.Analyzer(limits, 16)
    points = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    for a, b in zip(points, points[1:]):
        pieces.feed(text[a:b])
    assert pieces.finish() == expected


def test_ten_megabyte_line_is_skipped_and_reported(write, ender3):
    path = write(b"G1 X10 F600\n" + b"G1 X" + b"1" * (10 * 1024 * 1024) + b"\nG1 X20\n")
    result = analyze_file(path, ender3)
    assert result.skipped_lines == {"overlong": 1}
    assert result.motion_seconds == pytest.approx(2.0, rel=0.05)
    assert any("longer than" in w for w in result.warnings)


def test_nul_bytes_and_crlf(write, ender3):
    clean = analyze_file(write("G1 X10 F600\nG1 X20\n"), ender3)
    dirty = analyze_file(write(b"G1 X10 F600\r\n\x00\x00\x00\r\nG1 X20\r\n"), ender3)
    assert dirty.motion_seconds == pytest.approx(clean.motion_seconds)
    assert dirty.skipped_lines == {"unparseable": 1}


def test_absurd_numbers_are_skipped_with_their_position(write, ender3):
    text = "G1 X10 F600\nG1 X123456789012345678901234567890\nG1 X20\n"
    result = analyze_file(write(text), ender3)
    assert result.skipped_lines == {"absurd_number": 1}
    assert result.motion_seconds == pytest.approx(2.0, rel=0.05)
    assert any("byte 12" in w for w in result.warnings)


def test_no_final_newline(write, ender3):
    assert analyze_file(write("G1 X10 F600\nG1 X20"), ender3).motion_seconds == \
        pytest.approx(analyze_file(write("G1 X10 F600\nG1 X20\n"), ender3).motion_seconds)


def test_unknown_commands_are_counted_not_errors(write, ender3):
    result = analyze_file(write("M73 P0 R10\nM117 Hello\nG29\nM900 K0.5\nG1 X10 F600\n"), ender3)
    assert result.ignored_commands == 4 and result.skipped_lines == {}


@pytest.mark.parametrize("data", [b"", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 50, b"hello world\n" * 100])
def test_not_gcode_is_a_clear_error(write, ender3, data):
    with pytest.raises(GcodeError, match="empty|no G-code"):
        analyze_file(write(data), ender3)


def test_mostly_garbage_is_refused(write, ender3):
    data = b"G28\nG1 X10 F600\n" + b"\x8f\x01garbage\n" * 500
    with pytest.raises(GcodeError, match="corrupted or not G-code"):
        analyze_file(write(data), ender3)


def test_missing_file_is_a_clear_error(tmp_path, ender3):
    with pytest.raises(GcodeError, match="cannot read"):
        analyze_file(tmp_path / "nope.gcode", ender3)


def test_huge_arc_is_bounded(write, ender3):
    result = analyze_file(write("G1 X0 Y0 F60000\nG2 X0 Y0 I9000000 J0\n"), ender3)
    check(result)


def test_endless_dwells_are_refused(write, ender3):
    with pytest.raises(GcodeError, match="days"):
        analyze_file(write("G4 S9999999\n" * 2), ender3)


def test_event_flood_is_bounded(write, ender3):
    from node.gcode import analysis

    text = "".join(f"G1 X{1 + i % 2} F6000\nM106 S{i % 2 * 255}\n" for i in range(400))
    old = analysis.MAX_EVENTS
    analysis.MAX_EVENTS = 100
    try:
        with pytest.raises(GcodeError, match="more than 100"):
            analyze_file(write(text), ender3)
    finally:
        analysis.MAX_EVENTS = old
    assert analyze_file(write(text), ender3).moves == 400


def test_many_heatup_waits_are_refused_not_integrated_forever(write, ender3):
    # every M109 R cooling wait to ambient cannot finish: each is counted as an hour, then the total is refused
    with pytest.raises(GcodeError, match="longer than"):
        analyze_file(write("M109 S250\nM109 R0\n" * 2200), ender3)


def test_arc_work_is_budgeted(write, ender3):
    result = analyze_file(write("G1 X0 Y0 F60000\n" + "G2 X0 Y0 I1000 J0\n" * 100_000), ender3)
    check(result)
    assert any("work budget" in w for w in result.warnings)
