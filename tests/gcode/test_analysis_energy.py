"""Energy model: heat-up waits, physical sanity, per-minute profile, PWM power, calibration."""
from __future__ import annotations

import random

import pytest

from node.gcode.analysis import analyze_file
from node.gcode.energy import PowerSample, calibrate, marlin_pwm_fraction, printer_w_from_pwm, standby_wall_w
from tests.gcode.conftest import square_layers


def test_heatup_time_from_the_thermal_model(write, ender3):
    result = analyze_file(write("M190 S60\nM109 S200\n"), ender3, ambient_c=22.0)
    expected = ender3.bed.heatup_s(22, 60, 22) + ender3.hotend.heatup_s(22, 200, 22)
    assert result.heatup_seconds == pytest.approx(expected, rel=1e-4)
    assert result.motion_seconds == 0
    assert result.estimated_seconds == pytest.approx(expected, rel=1e-4)
    assert result.max_bed_c == 60 and result.max_hotend_c == 200


def test_heating_in_parallel_is_faster_than_in_sequence(write, ender3):
    sequential = analyze_file(write("M190 S60\nM109 S200\n"), ender3).heatup_seconds
    parallel = analyze_file(write("M104 S200\nM190 S60\nM109 S200\n"), ender3).heatup_seconds
    assert parallel < sequential
    assert parallel == pytest.approx(max(ender3.bed.heatup_s(22, 60, 22), ender3.hotend.heatup_s(22, 200, 22)),
                                     rel=1e-3)


def test_heatup_excluded_from_motion_time(write, ender3):
    body = square_layers(3)
    plain = analyze_file(write(body), ender3)
    heated = analyze_file(write("M140 S60\nM104 S200\nM190 S60\nM109 S200\n" + body), ender3)
    assert heated.motion_seconds == pytest.approx(plain.motion_seconds)
    assert heated.heatup_seconds > 60


def test_m109_r_waits_for_cooling(write, ender3):
    heat = analyze_file(write("M109 S220\n"), ender3).heatup_seconds
    both = analyze_file(write("M109 S220\nM109 R170\n"), ender3).heatup_seconds
    only_heat = analyze_file(write("M109 S220\nM109 S170\n"), ender3).heatup_seconds
    assert only_heat == pytest.approx(heat)
    assert both > heat + 10


def test_colder_room_longer_heatup(write, ender3):
    text = "M190 S60\nM109 S200\n"
    assert analyze_file(write(text), ender3, ambient_c=10).heatup_seconds > \
        analyze_file(write(text), ender3, ambient_c=30).heatup_seconds


def test_hotter_bed_more_energy(write, ender3):
    body = square_layers(20, loops_per_layer=5)
    warm = analyze_file(write("M140 S50\nM104 S200\nM190 S50\nM109 S200\n" + body), ender3)
    hot = analyze_file(write("M140 S90\nM104 S200\nM190 S90\nM109 S200\n" + body), ender3)
    assert hot.energy_wh > warm.energy_wh
    assert hot.heatup_wh > warm.heatup_wh


def test_longer_print_more_energy(write, ender3):
    start = "M140 S60\nM104 S200\nM190 S60\nM109 S200\n"
    short = analyze_file(write(start + square_layers(10, loops_per_layer=3)), ender3)
    long = analyze_file(write(start + square_layers(40, loops_per_layer=3)), ender3)
    assert long.motion_seconds > short.motion_seconds
    assert long.energy_wh > short.energy_wh


def test_power_profile_integrates_to_total_energy(write, ender3):
    result = analyze_file(write("M140 S60\nM104 S200\nM190 S60\nM109 S200\nM106 S255\n"
                                + square_layers(30, loops_per_layer=4) + "M107\nM104 S0\nM140 S0\nM84\n"), ender3)
    profile = result.power_profile
    assert [row[0] for row in profile] == [60.0 * i for i in range(len(profile))]
    total_s = result.estimated_seconds
    wh = sum(w * min(60.0, total_s - t) for t, w in profile) / 3600
    assert wh == pytest.approx(result.energy_wh, rel=1e-3)
    assert result.peak_w >= max(w for _, w in profile)
    # heating at full power at the start: bed + hotend through the supply
    full_w = ender3.electrical_w(1.0, 1.0, steppers_on=False, hotend_fan_on=False)
    assert profile[0][1] == pytest.approx(full_w, rel=0.05)
    # holding at temperature costs much less than heating up
    assert profile[-1][1] < 0.6 * profile[0][1]


def test_pwm_power_estimate(ender3):
    idle = printer_w_from_pwm(ender3, 0.0, 0.0, steppers_on=False, hotend_fan_on=False)
    assert idle == pytest.approx(ender3.power.electronics_w / ender3.power.psu_efficiency + ender3.power.psu_idle_w)
    half_bed = printer_w_from_pwm(ender3, 0.0, 0.5)
    full_bed = printer_w_from_pwm(ender3, 0.0, 1.0)
    assert full_bed - half_bed == pytest.approx(0.5 * ender3.bed.heater_w / ender3.power.psu_efficiency)
    assert marlin_pwm_fraction(127) == 1.0 and marlin_pwm_fraction(0) == 0.0
    assert ender3.power.psu_idle_w < standby_wall_w(ender3) < printer_w_from_pwm(ender3, 0.0, 0.0)
    with pytest.raises(ValueError):
        printer_w_from_pwm(ender3, 1.5, 0.0)


def test_calibration_recovers_known_parameters(ender3):
    data = ender3.model_dump()
    data["bed"]["heater_w"] = 250.0
    data["hotend"]["heater_w"] = 50.0
    data["power"]["part_fan_w"] = 3.0
    data["power"]["steppers_w"] = 7.0
    data["power"]["electronics_w"] = 6.0
    truth = type(ender3).model_validate(data)
    rng = random.Random(4)
    samples = []
    for _ in range(300):
        h, b, f, s = rng.random(), rng.random(), rng.choice([0.0, 0.5, 1.0]), rng.random() < 0.8
        watts = truth.electrical_w(h, b, f, steppers_on=s) + rng.gauss(0, 0.5)
        samples.append(PowerSample(hotend_pwm=h, bed_pwm=b, part_fan=f, steppers_on=s, measured_w=watts))
    fitted = calibrate(ender3, samples)
    assert fitted.bed.heater_w == pytest.approx(250.0, rel=0.01)
    assert fitted.hotend.heater_w == pytest.approx(50.0, rel=0.03)
    assert fitted.power.steppers_w == pytest.approx(7.0, abs=0.5)
    assert fitted.power.part_fan_w == pytest.approx(3.0, abs=0.5)
    assert fitted.power.electronics_w == pytest.approx(6.0, abs=0.5)


def test_calibration_keeps_what_the_samples_cannot_tell(ender3):
    samples = [PowerSample(hotend_pwm=h, bed_pwm=b, measured_w=ender3.electrical_w(h, b) * 1.1)
               for h, b in ((0.1, 0.2), (0.5, 0.9), (0.9, 0.1), (0.3, 0.3))]
    fitted = calibrate(ender3, samples)
    assert fitted.power.part_fan_w == ender3.power.part_fan_w
    assert fitted.power.steppers_w == ender3.power.steppers_w
    assert fitted.bed.heater_w == pytest.approx(1.1 * ender3.bed.heater_w, rel=1e-6)
    with pytest.raises(ValueError, match="at least 3"):
        calibrate(ender3, samples[:2])
