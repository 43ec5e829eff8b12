"""The motion model: trapezoids, limits from the file, modes, arcs, dwells, tools, look-ahead."""
from __future__ import annotations

import math

import pytest

from node.gcode.analysis import analyze_file
from tests.gcode.conftest import square_layers

MIN_PLANNER_SPEED = 0.05


def trapezoid_s(d: float, a: float, v0: float, vc: float, v1: float) -> float:
    """Independent closed form for one block with a cruise phase."""
    da = (vc**2 - v0**2) / (2 * a)
    dd = (vc**2 - v1**2) / (2 * a)
    assert da + dd <= d
    return (vc - v0) / a + (d - da - dd) / vc + (vc - v1) / a


LIMITS = "M201 X1000 Y1000 Z100 E5000\nM203 X300 Y300 Z10 E60\nM204 P1000 R1000 T1000\nM205 X10 Y10 Z0.4 E5\n"


def test_single_move_is_one_trapezoid_from_jerk_speed_to_a_stop(write, ender3):
    result = analyze_file(write(LIMITS + "G1 X100 F6000\n"), ender3)
    # classic jerk: the block may start at the X jerk (10 mm/s); the last block ends at a stop
    expected = trapezoid_s(100, 1000, 10, 100, MIN_PLANNER_SPEED)
    assert result.motion_seconds == pytest.approx(expected, abs=1e-3)
    assert result.classic_jerk and result.limits_from_file


def test_m203_caps_the_feedrate_and_m201_the_acceleration(write, ender3):
    fast = analyze_file(write(LIMITS + "G1 X1000 F60000\n"), ender3)
    assert fast.motion_seconds == pytest.approx(trapezoid_s(1000, 1000, 10, 300, MIN_PLANNER_SPEED), abs=1e-3)
    slow_accel = analyze_file(write(LIMITS + "M201 X100\nG1 X1000 F60000\n"), ender3)
    assert slow_accel.motion_seconds == pytest.approx(trapezoid_s(1000, 100, 10, 300, MIN_PLANNER_SPEED), abs=1e-3)


def test_diagonal_move_limited_per_axis(write, ender3):
    # 45 degrees: each axis sees speed/sqrt(2); an X limit of 100 mm/s caps the path speed at 141 mm/s
    result = analyze_file(write(LIMITS + "M203 X100 Y1000\nM201 X10000 Y10000\nM204 T10000\n"
                                "G1 X1000 Y1000 F60000\n"), ender3)
    d = 1000 * math.sqrt(2)
    vc = 100 * math.sqrt(2)
    v0 = 10 * math.sqrt(2)  # safe speed: X and Y jerk both limit to 10 per axis
    assert result.motion_seconds == pytest.approx(trapezoid_s(d, 10000, v0, vc, MIN_PLANNER_SPEED), rel=1e-4)


def test_m220_speed_factor_scales_feedrate(write, ender3):
    base = analyze_file(write(LIMITS + "G1 X100 F600\n"), ender3).motion_seconds
    half = analyze_file(write(LIMITS + "M220 S50\nG1 X100 F600\n"), ender3).motion_seconds
    assert half == pytest.approx(trapezoid_s(100, 1000, 5, 5, MIN_PLANNER_SPEED), rel=1e-4)
    assert half > 1.9 * base


def test_relative_and_absolute_modes_agree(write, ender3):
    absolute = "G90\nM82\nG92 E0\nG1 X10 Y0 E1 F1200\nG1 X10 Y10 E2\nG1 X0 Y10 E3\nG92 E0\nG1 X0 Y0 E1\n"
    relative = "G91\nG1 X10 Y0 E1 F1200\nG1 X0 Y10 E1\nG1 X-10 Y0 E1\nG1 X0 Y-10 E1\n"
    mixed = "G90\nM83\nG1 X10 Y0 E1 F1200\nG1 X10 Y10 E1\nG1 X0 Y10 E1\nG1 X0 Y0 E1\n"
    results = [analyze_file(write(LIMITS + text), ender3) for text in (absolute, relative, mixed)]
    for result in results:
        assert result.filament_mm == pytest.approx([4.0])
        assert result.motion_seconds == pytest.approx(results[0].motion_seconds, rel=1e-9)


def test_g90_keeps_m83_relative_extrusion(write, ender3):
    # Marlin: G90 does not undo M83 (PrusaSlicer writes "G90\nM83" and relies on it)
    result = analyze_file(write("M83\nG90\nG1 X10 E1 F600\nG1 X20 E1\nG1 X30 E1\n"), ender3)
    assert result.filament_mm == pytest.approx([3.0])


def test_m221_flow_scales_material(write, ender3):
    result = analyze_file(write("M83\nM221 S90\nG1 X10 E10 F600\n"), ender3)
    assert result.filament_mm == pytest.approx([9.0])


def test_inches(write, ender3):
    mm = analyze_file(write(LIMITS + "G21\nG1 X25.4 F60\n"), ender3)
    inch = analyze_file(write(LIMITS + "G20\nG1 X1 F2.3622\n"), ender3)
    assert inch.motion_seconds == pytest.approx(mm.motion_seconds, rel=1e-3)


def test_arc_length_and_extrusion(write, ender3):
    # a full circle of radius 10 mm at 10 mm/s: ~62.8 s (accel is negligible at this speed)
    text = LIMITS + "M83\nG1 X10 Y0 F600\nG2 X10 Y0 I-10 J0 E5\n"
    result = analyze_file(write(text), ender3)
    travel = trapezoid_s(10, 1000, 10, 10, 10)
    assert result.motion_seconds - travel == pytest.approx(2 * math.pi * 10 / 10, rel=0.01)
    assert result.filament_mm == pytest.approx([5.0])


def test_arc_r_form_matches_ij_form(write, ender3):
    ij = analyze_file(write(LIMITS + "G1 X0 Y0 F1200\nG3 X20 Y0 I10 J0\n"), ender3)
    r = analyze_file(write(LIMITS + "G1 X0 Y0 F1200\nG3 X20 Y0 R10\n"), ender3)
    assert r.motion_seconds == pytest.approx(ij.motion_seconds, rel=1e-3)
    # half circle of radius 10 at 20 mm/s
    assert ij.motion_seconds == pytest.approx(math.pi * 10 / 20, rel=0.03)


def test_clockwise_quarter_is_shorter_than_counterclockwise_three_quarters(write, ender3):
    cw = analyze_file(write(LIMITS + "G1 X10 Y0 F600\nG2 X0 Y-10 I-10 J0\n"), ender3).motion_seconds
    ccw = analyze_file(write(LIMITS + "G1 X10 Y0 F600\nG3 X0 Y-10 I-10 J0\n"), ender3).motion_seconds
    assert ccw == pytest.approx(cw + (3 - 1) * (math.pi * 10 / 2) / 10, rel=0.02)


def test_g4_dwell_p_milliseconds_and_s_seconds(write, ender3):
    result = analyze_file(write("G4 P1500\nG4 S2\n"), ender3)
    assert result.motion_seconds == pytest.approx(3.5)
    assert result.dwell_seconds == pytest.approx(3.5)


def test_tool_changes_split_filament_per_tool(write, ender3):
    text = "M83\nT0\nG1 X10 E2 F600\nT1\nG1 X20 E3\nG1 X30 E1\nT0\nG1 X40 E0.5\n"
    assert analyze_file(write(text), ender3).filament_mm == pytest.approx([2.5, 4.0])


def test_tool_heaters_are_separate(write, ender3):
    result = analyze_file(write("M104 T1 S240\nM109 T0 S200\nM109 T1 S240\n"), ender3)
    assert result.max_hotend_c == 240
    assert result.heatup_seconds > 0


def test_g92_resets_positions(write, ender3):
    result = analyze_file(write("M82\nG1 X10 E5 F600\nG92 E0\nG1 X20 E5\nG92 X0\nG1 X10 E6\n"), ender3)
    assert result.filament_mm == pytest.approx([11.0])


def test_lookahead_keeps_speed_through_collinear_segments(write, ender3):
    one = analyze_file(write(LIMITS + "G1 X100 F6000\n"), ender3).motion_seconds
    many = analyze_file(write(LIMITS + "".join(f"G1 X{x} F6000\n" for x in range(1, 101))), ender3).motion_seconds
    assert many == pytest.approx(one, rel=1e-3)


def test_reversals_cost_time(write, ender3):
    straight = analyze_file(write(LIMITS + "G1 X100 F6000\n"), ender3).motion_seconds
    zigzag = analyze_file(write(LIMITS + "".join(f"G1 X{10 * (i % 2)} F6000\n" for i in range(1, 11))),
                          ender3).motion_seconds
    # the same 100 mm, but every reversal is taken at the jerk speed (10 mm/s), the last block stops
    expected = 9 * trapezoid_s(10, 1000, 10, 100, 10) + trapezoid_s(10, 1000, 10, 100, MIN_PLANNER_SPEED)
    assert zigzag == pytest.approx(expected, abs=1e-3)
    assert zigzag > 1.5 * straight


def test_junction_deviation_when_file_sets_j(write, ender3):
    square = "".join(f"G1 X{x} Y{y} F6000\n" for x, y in ((50, 0), (50, 50), (0, 50), (0, 0)) * 5)
    jd_tight = analyze_file(write("M205 J0.01\n" + square), ender3)
    jd_loose = analyze_file(write("M205 J0.3\n" + square), ender3)
    assert not jd_tight.classic_jerk and not jd_loose.classic_jerk
    assert jd_loose.motion_seconds < jd_tight.motion_seconds


def test_profile_limits_used_without_file_limits(write, ender3):
    result = analyze_file(write("G1 X100 F600\n"), ender3)
    assert not result.limits_from_file
    assert result.motion_seconds == pytest.approx(100 / 10, rel=0.01)


def test_layer_index_points_at_layer_starts(write, ender3):
    text = square_layers(5)
    path = write(text)
    result = analyze_file(path, ender3)
    assert result.layers == 5
    data = path.read_bytes()
    times = [row[3] for row in result.layer_index]
    assert times == sorted(times)
    for layer, z_mm, offset, _t_s in result.layer_index:
        assert z_mm == pytest.approx(0.2 + 0.2 * layer)
        assert data[int(offset):].startswith(f"G1 Z{z_mm:.3f}".encode())
    # equal layers take equal time (layer 0 also travels from the origin)
    durations = [b - a for a, b in zip(times, times[1:])]
    assert durations[0] > durations[1]
    assert max(durations[1:]) - min(durations[1:]) < 2e-3


def test_z_hop_is_not_a_layer(write, ender3):
    text = "M83\nG1 Z0.2 F600\nG1 X10 E1 F600\nG1 Z0.6\nG1 X0\nG1 Z0.2\nG1 X10 E1\nG1 Z0.4\nG1 X0 E1\n"
    result = analyze_file(write(text), ender3)
    assert [row[1] for row in result.layer_index] == [0.2, 0.4]


def test_layer_times_shift_by_heatup(write, ender3):
    text = "M104 S200\n" + square_layers(2) + "M109 S210\n" + square_layers(2, start_z_mm=0.6)
    result = analyze_file(write(text), ender3)
    motion_only = analyze_file(write(square_layers(2) + square_layers(2, start_z_mm=0.6)), ender3)
    assert result.layers == 4
    # layers after the M109 wait start later by the wait; before it, same times
    assert result.layer_index[1][3] == pytest.approx(motion_only.layer_index[1][3], abs=1e-6)
    assert result.layer_index[3][3] > motion_only.layer_index[3][3] + 1.0


def test_layer_starts_after_a_heatup_wait(write, ender3):
    text = "G28\nG1 Z5 F600\nM109 S200\nG1 Z0.2\nG1 X10 E1 F600\n"
    path = write(text)
    result = analyze_file(path, ender3)
    (layer, z_mm, offset, t_s), = result.layer_index
    assert path.read_bytes()[offset:].startswith(b"G1 Z0.2")
    assert t_s >= result.heatup_seconds


def test_m204_legacy_s_t_form_sets_retract_not_travel(write, ender3):
    base = "M201 X10000 Y10000 E10000\nM205 X10 Y10 E5\nM83\n"
    travel = "G1 X100 F6000\n"
    legacy = analyze_file(write(base + "M204 S1000 T100\n" + travel), ender3).motion_seconds
    modern = analyze_file(write(base + "M204 P1000 T100\n" + travel), ender3).motion_seconds
    assert legacy == pytest.approx(trapezoid_s(100, 1000, 10, 100, MIN_PLANNER_SPEED), abs=1e-3)
    assert modern == pytest.approx(trapezoid_s(100, 100, 10, 100, MIN_PLANNER_SPEED), abs=1e-3)
