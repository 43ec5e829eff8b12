"""Jobs flagged as never fitting (node.plan.fit) are jobs no policy could print above the reserve, even knowing
the whole year's true weather (the bound's relaxed plant, node.study.bound.single_print_fits)."""
from __future__ import annotations

import pytest

from node.plan.energymodel import EnergyModel
from node.plan.fit import check_fit
from node.plan.schedule import profile_to_steps
from node.printer.profile import load_profile
from node.study.bound import single_print_fits
from node.study.jobstream import JobStream
from node.study.year import SimSettings, battery_of

#: steady prints of 1 to 40 hours at a typical draw, and the job stream's real prints
HOURS = (1, 2, 4, 8, 12, 13, 14, 15, 16, 18, 20, 24, 28, 40)
STEADY = {f"steady {h} h": [[60.0 * m, 120.0] for m in range(h * 60)] for h in HOURS}


def _jobs() -> dict[str, list[list[float]]]:
    stream = JobStream(load_profile("ender3"))
    return STEADY | {t.name: stream._built[t.name][0] for t in stream.templates}


@pytest.mark.parametrize("battery_ah", [20.0, 40.0, 94.0])
def test_every_flagged_job_is_infeasible_for_the_bound(weather, battery_ah) -> None:
    settings = SimSettings(battery=battery_of(battery_ah))
    model = EnergyModel.from_params(settings.battery)
    reserve = settings.planner.reserve_pct / 100.0
    flagged, fitting = 0, 0
    for name, year in weather.items():
        assert year.best_day is not None
        base_wh = year.pv_w * 0.0 + settings.loads.base_load_w
        for job, profile in _jobs().items():
            node_says = check_fit(profile_to_steps(profile, settings.step_s), year.best_day, settings.step_s, model,
                                  reserve, settings.loads.base_load_w)
            bound_fits, _ = single_print_fits(profile, year.pv_w, base_wh, settings.battery, reserve)
            if not node_says.fits:
                flagged += 1
                assert not bound_fits, (name, battery_ah, job, node_says)
            else:
                fitting += 1
    # neither side empty: the rule flags the long prints and lets the short ones through
    assert flagged > 0 and fitting > 0
