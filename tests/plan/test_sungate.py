"""The start gate's "has the sun shown up" check (node.plan.sungate): pure, no clock."""
from __future__ import annotations

import math

import pytest

from node.plan.sungate import RecentPv, sun_wait


def test_recent_pv_is_the_time_weighted_mean_of_the_window_only() -> None:
    recent = RecentPv(window_s=1800.0)
    assert recent.mean_w(0.0) is None                      # nothing read yet
    recent.add(0.0, 500.0, 300.0, limited=False)           # 35 min before the question: outside the window
    recent.add(600.0, 0.0, 300.0, limited=False)
    recent.add(1800.0, 100.0, 60.0, limited=False)
    recent.add(1860.0, 400.0, 240.0, limited=False)
    assert recent.mean_w(2100.0) == (0.0 * 300.0 + 100.0 * 60.0 + 400.0 * 240.0) / 600.0
    assert recent.mean_w(2500.0) == (100.0 * 60.0 + 400.0 * 240.0) / 300.0   # the reading at 600 s has left it
    assert recent.mean_w(9000.0) is None                   # the panel not read for longer than the window


def test_a_node_read_every_second_keeps_a_bin_a_minute() -> None:
    recent = RecentPv(window_s=1800.0)
    for t_s in range(3600):
        recent.add(float(t_s), 100.0 if t_s < 3000 else 400.0, 1.0, limited=False)
    assert len(recent._bins) <= 31
    assert recent.mean_w(3600.0) == pytest.approx((100.0 * 1200 + 400.0 * 600) / 1800)


def test_a_charger_holding_pv_back_shows_at_least_the_sun_the_plan_needs() -> None:
    recent = RecentPv(window_s=1800.0)
    recent.add(0.0, 40.0, 300.0, limited=False)
    recent.add(300.0, 60.0, 300.0, limited=True)           # full battery, or at the charge current limit
    assert recent.mean_w(600.0) == math.inf
    assert sun_wait(400.0, 100.0, recent.mean_w(600.0), planned_pv_w=250.0) is None


def test_a_job_the_battery_carries_alone_never_waits_for_the_sun() -> None:
    assert sun_wait(270.0, 300.0, recent_pv_w=None, planned_pv_w=250.0) is None
    assert sun_wait(270.0, 270.0, recent_pv_w=0.0, planned_pv_w=250.0) is None


def test_a_job_that_needs_the_sun_waits_until_the_panel_gives_what_the_plan_counts_on() -> None:
    why = sun_wait(270.0, 120.0, recent_pv_w=40.0, planned_pv_w=180.0)
    assert why is not None
    assert "needs 270 Wh" in why and "120 Wh above the reserve" in why and "40 W" in why and "180 W" in why
    assert sun_wait(270.0, 120.0, recent_pv_w=179.0, planned_pv_w=180.0) is not None
    assert sun_wait(270.0, 120.0, recent_pv_w=180.0, planned_pv_w=180.0) is None
    # below the reserve already: says 0 Wh held, not a negative figure; no reading yet is said so
    why = sun_wait(270.0, -20.0, recent_pv_w=None, planned_pv_w=180.0)
    assert why is not None and "holds 0 Wh" in why and "no PV reading yet" in why
