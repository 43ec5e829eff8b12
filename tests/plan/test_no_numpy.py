"""The daemon's planner keeps numpy, pandas, pvlib and scipy out of the resident process (issue #19: numpy alone
was 13.4 MB of a daemon that must fit 50 MB); they live in the forecast worker and in the tools.

A child process imports the daemon (every component's module), then runs what the Planner runs after start —
a plan with a running print, the never-fits check, the learned forecast learning, issuing, scoring a day and
being saved and loaded — and reports the modules it loaded.  No timing is asserted (bench/footprint.py
measures the megabytes).
"""
from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("numpy", "pandas", "pvlib", "scipy", "matplotlib")

CHILD = """
import json, math, sys
import node.daemon  # every component the daemon builds
from node.plan.energymodel import EnergyModel
from node.plan.fit import BestClearDay, check_fit
from node.plan.learned import LearnedForecast
from node.plan.quantile import LeadCalibration, hourly_wh
from node.plan.schedule import PlanInputs, PlanJob, RunningPrint, plan, profile_to_steps
from node.power.plant import BatteryParams

model = EnergyModel.from_params(BatteryParams(chemistry="lifepo4", cells=4, capacity_ah=40.0, max_charge_a=20.0))
day = [max(0.0, 300.0 * math.sin(((k + 0.5) / 12 - 6) / 12 * math.pi)) for k in range(288)]
job = PlanJob("a", "a", [[60.0 * m, 120.0] for m in range(90)])
result = plan(PlanInputs(t0_s=0.0, step_s=300.0, pv_w=day * 2, energy=model, energy_wh=0.8 * model.capacity_wh,
                         reserve_frac=0.3, jobs=[job], running=RunningPrint("r", "r", [100.0] * 6)))
summary = (result.pv_lost_wh, min(result.soc_pct), result.load_w.tolist(), result.surplus_windows)
best = BestClearDay(dates=["2025-06-01", "2025-12-01"], step_s=300.0, pv_w=[day, [w / 2 for w in day]])
check_fit(profile_to_steps(job.power_profile, 300.0), best, 300.0, model, 0.3, 4.0)
learned = LearnedForecast(300.0)
for k in range(288):
    learned.observe(6, k // 12, 0.5 * day[k], day[k], True)
hours = [k // 12 % 24 for k in range(864)]
expected = learned.expected_w(day * 3, [6] * 864, hours, [k / 12 for k in range(864)])
calibration = LeadCalibration(0.2, lambda lead_h: 0.8)
calibration.issue(0, hourly_wh(list(expected), 300.0))
for hour in range(24):
    calibration.close_hour(hour, sum(day[hour * 12:(hour + 1) * 12]) / 24, True)
calibration.factors([k / 12 for k in range(576)])
learned.load_state(json.loads(json.dumps(learned.to_state())))
print(json.dumps(sorted(sys.modules)))
"""


def test_the_daemon_and_its_planner_load_no_numpy() -> None:
    result = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    modules = set(json.loads(result.stdout.splitlines()[-1]))
    assert "node.plan.planner" in modules and "node.plan.fit" in modules
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert not heavy, heavy
