"""The planner's quantile, calibrated by lead time from the node's own forecast-vs-actual errors."""
from __future__ import annotations

import random

import pytest

from node.plan.quantile import LEAD_EDGES_H, LeadCalibration


def _fed(hours: int = 24 * 40, valid=lambda hour: True) -> LeadCalibration:
    """Hourly issues against a known truth (100 Wh every hour).  Each issue knows its first 4 hours to about
    5 % (persistence) and is off by one factor drawn per issue, uniform in 0.3..1.2 of the truth, after that
    (a day-ahead forecast that misjudges the weather)."""
    rng = random.Random(5)
    calib = LeadCalibration(0.2, lambda lead_h: 0.5, min_samples=20)
    for hour in range(hours):
        off = rng.uniform(0.3, 1.2)
        calib.issue(hour, [100.0 / (1.0 + rng.gauss(0.0, 0.05)) if lead < 4 else 100.0 / off
                           for lead in range(LEAD_EDGES_H[-1])])
        calib.close_hour(hour, 100.0, valid(hour))
    return calib


def test_the_fallback_answers_until_a_bin_has_its_samples() -> None:
    calib = LeadCalibration(0.2, lambda lead_h: 0.9 - 0.01 * lead_h, min_samples=20)
    assert calib.factor(1.0) == pytest.approx(0.89)
    assert calib.factor(30.0) == pytest.approx(0.6)
    for hour in range(10):
        calib.issue(hour, [100.0] * 72)
        calib.close_hour(hour, 50.0, True)
    assert calib.samples(0) == 9 and calib.factor(1.0) == pytest.approx(0.89)   # 9 < 20: still the fallback


def test_each_lead_gets_the_quantile_of_its_own_errors() -> None:
    calib = _fed()
    near, far = calib.factor(1.0), calib.factor(30.0)
    # a day ahead, measured / forecast is the issue's factor: its 20 % quantile is 0.3 + 0.2 * 0.9 = 0.48 (the
    # window from the issue to 48 h holds 4 near hours too: a little higher)
    assert 0.45 < far < 0.6, calib.describe()
    # the next hours are known to 5 %: the factor there is its own, not the day-ahead one
    assert 0.9 < near < 1.0, calib.describe()
    assert calib.factors([1.0, 30.0]) == [near, far]
    # the battery full and the sun spilled: the expected forecast, not the quantile (sun that is lost anyway)
    assert calib.factors([1.0, 30.0], spilling=True) == [1.0, 1.0]


def test_hours_with_a_full_battery_are_not_scored() -> None:
    every = _fed(hours=24 * 10, valid=lambda hour: hour % 2 == 0)
    # a battery full every other hour: the windows of 2 h and more are half valid, still scored; with the
    # battery full all the time nothing is
    never = _fed(hours=24 * 10, valid=lambda hour: False)
    assert every.samples(0) > 0 and all(never.samples(b) == 0 for b in range(never.bins))


def test_an_issue_shorter_than_a_bin_does_not_score_it() -> None:
    calib = LeadCalibration(0.2, lambda lead_h: 0.5, min_samples=1)
    for hour in range(30):
        calib.issue(hour, [100.0] * 6)      # six hours ahead only
        calib.close_hour(hour, 80.0, True)
    assert calib.samples(calib.bin_of(1.0)) > 0 and calib.samples(calib.bin_of(3.0)) > 0
    # [4, 8) ends past the issue's six hours: a window of six hours is not a sample of eight
    assert calib.samples(calib.bin_of(5.0)) == 0 and calib.factor(5.0) == 0.5


def test_the_state_survives_a_restart_and_a_foreign_one_changes_nothing() -> None:
    calib = _fed(hours=24 * 8)
    again = LeadCalibration(0.2, lambda lead_h: 0.5, min_samples=20)
    again.load_state(calib.to_state())
    leads = [0.5, 3.0, 6.0, 10.0, 20.0, 30.0, 60.0]
    # the snapshot keeps ratios to 1e-4 (its size in the store): the same factors to that
    assert again.factors(leads) == pytest.approx(calib.factors(leads), abs=1e-3)
    # the pending issues came along: the next hour is scored in both alike
    for c in (calib, again):
        c.close_hour(24 * 8, 90.0, True)
    assert [again.samples(b) for b in range(again.bins)] == [calib.samples(b) for b in range(calib.bins)]
    assert again.factors(leads) == pytest.approx(calib.factors(leads), abs=1e-3)
    foreign = calib.to_state() | {"edges_h": [0, 1, 2]}
    before = again.to_state()
    with pytest.raises(ValueError, match="does not fit"):
        again.load_state(foreign)
    assert again.to_state() == before
