"""Benchmark: one re-plan of a 72 h horizon at 5-minute steps with 50 queued jobs (target < 100 ms).

Run:  .venv/bin/python bench/plan.py [--repeat N]

The jobs are the default job stream's real prints (durations and energy
profiles derived from the slicer files in /work/shared/gcode), the forecast a
real clear-sky pvlib forecast for the default site (computed once, in the
worker, outside the timing), the battery the default 1.2 kWh LiFePO4 at 55 %.
Prints the median and worst time of the re-plans and exits 1 if the median
exceeds 100 ms.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.plan.config import ForecastSection
from node.plan.energymodel import EnergyModel  # noqa: E402
from node.plan.forecast import PvForecastRequest, forecast_pv, pessimistic_pv_w  # noqa: E402
from node.plan.schedule import PlanInputs, PlanJob, plan  # noqa: E402
from node.power.config import ArraySection, SiteSection
from node.printer.profile import load_profile  # noqa: E402
from node.study.jobstream import JobStream  # noqa: E402
from node.study.year import DEFAULT_BATTERY  # noqa: E402

LIMIT_MS = 100.0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    start_s = 1750500000.0 // 300 * 300
    forecast = forecast_pv(PvForecastRequest(site=SiteSection(), array=ArraySection(), start_s=start_s,
                                             step_s=300.0, n_steps=864, cloud_cover_pct=[30.0] * 864))
    pv_w = pessimistic_pv_w(forecast.pv_w, 300.0, ForecastSection())
    stream = JobStream(load_profile("ender3"), seed=7)
    sim_jobs = [stream.next_job(start_s) for _ in range(50)]
    jobs = [PlanJob(j.job_id, j.name, j.power_profile, priority=(i % 7 == 0), queue_seq=i)
            for i, j in enumerate(sim_jobs)]
    model = EnergyModel.from_params(DEFAULT_BATTERY)
    times_ms = []
    result = None
    for _ in range(args.repeat):
        inputs = PlanInputs(t0_s=start_s, step_s=300.0, pv_w=pv_w, energy=model,
                            energy_wh=0.55 * model.capacity_wh, reserve_frac=0.30, jobs=jobs,
                            timezone="America/Phoenix")
        t0 = time.perf_counter()
        result = plan(inputs)
        times_ms.append((time.perf_counter() - t0) * 1000.0)
    median = statistics.median(times_ms)
    assert result is not None
    print(f"re-plan 72 h x 5 min ({len(pv_w)} steps), {len(jobs)} jobs: median {median:.1f} ms, "
          f"worst {max(times_ms):.1f} ms over {args.repeat} runs; {len(result.planned)} planned, "
          f"{len(result.waiting)} waiting (limit {LIMIT_MS:.0f} ms)")
    return 0 if median < LIMIT_MS else 1


if __name__ == "__main__":
    sys.exit(main())
