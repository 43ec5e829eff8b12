"""The "never fits" check (node.plan.fit) on clear days made here: its figures, and the season's note."""
from __future__ import annotations

import math

from node.plan.energymodel import EnergyModel
from node.plan.fit import SUN_HEADROOM, BestClearDay, check_fit
from node.plan.schedule import Plan, PlanInputs, PlanJob, plan
from node.study.year import battery_of

STEP_S = 300.0


def _day(peak_w: float, daylight_h: float) -> list[float]:
    """A clear day: a sine of ``peak_w`` over ``daylight_h`` hours centred on noon, per 5-minute step."""
    out = []
    for k in range(288):
        t_h = (k + 0.5) * STEP_S / 3600.0 - (12.0 - daylight_h / 2)
        out.append(peak_w * math.sin(math.pi * t_h / daylight_h) if 0 < t_h < daylight_h else 0.0)
    return out


DAYS = BestClearDay(dates=["2025-06-21", "2025-12-21"], step_s=STEP_S, pv_w=[_day(340.0, 15.0), _day(150.0, 8.0)])
MODEL = EnergyModel.from_params(battery_of(40.0))   # ~530 Wh, 370 Wh above the 30 % reserve


def _steady(hours: float, watts: float = 120.0) -> list[float]:
    return [watts] * round(hours * 3600 / STEP_S)


def test_a_print_longer_than_a_summer_day_and_the_battery_never_fits_with_its_figures() -> None:
    check = check_fit(_steady(30.0), DAYS, STEP_S, MODEL, 0.3, 4.0)
    assert not check.fits
    assert check.needs_wh == 3600.0 and check.duration_h == 30.0
    assert check.lowest_above_reserve_wh < -120.0   # short by more than the hour of its own draw forgiven
    assert check.day_label == "a clear 21 Jun"       # the longest, sunniest day was the best try
    reason = check.reason(30.0)
    assert reason.startswith("never fits this plant: needs 3600 Wh over 30.0 h")
    assert f"{-check.lowest_above_reserve_wh:.0f} Wh below the reserve" in reason


def test_a_print_that_fits_only_in_summer_says_so_in_winter_and_waits() -> None:
    check = check_fit(_steady(12.0), DAYS, STEP_S, MODEL, 0.3, 4.0)
    assert check.fits and dict(check.month_fits) == {6: True, 12: False}
    assert check.season_note(6) is None
    note = check.season_note(12)
    assert note == "even the clearest day of December cannot carry it with this plant; it fits from June on a clear day"
    # the scheduler adds the note to the waiting reason, and holds a never-fitting job with its own
    job, huge = PlanJob("a", "twelve hours", [[60.0 * m, 120.0] for m in range(720)]), PlanJob("b", "huge", [[0, 9]])
    winter = [w * SUN_HEADROOM for w in DAYS.pv_w[1]] * 3
    result: Plan = plan(PlanInputs(t0_s=0.0, step_s=STEP_S, pv_w=winter, energy=MODEL, energy_wh=MODEL.capacity_wh,
                                   reserve_frac=0.3, jobs=[job, huge], waiting_notes={"a": note},
                                   never_fits={"b": "never fits this plant: …"}))
    waiting = {w.job_id: w for w in result.waiting}
    assert not result.planned and waiting["a"].reason.endswith(note) and not waiting["a"].never_fits
    assert waiting["b"].never_fits and waiting["b"].reason == "never fits this plant: …"
