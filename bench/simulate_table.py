"""Benchmark: the 4-policy x 3-file table of docs/benchmarks.md (a full year each, default system).

Run:  .venv/bin/python bench/simulate_table.py [--days 365] [--seed 1]

For each of the three TMY files pvlib ships, the weather and the year's
forecasts are computed once, then the four policies run on them.  Prints a
Markdown table and the wall time, and exits 1 unless, for every file, the
planner has 0 brownouts, completes at least 95 % of the oracle's prints and
more than greedy and threshold, and the whole table took under 20 minutes.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pvlib  # noqa: E402

from node.study.year import POLICIES, SimSettings, run_policies  # noqa: E402

FILES = ["723170TYA.CSV", "703165TY.csv", "12839.tm2"]
COLUMNS = ["prints_completed", "prints_failed", "brownouts", "pauses", "pause_hours", "pv_used_wh", "pv_lost_wh",
           "mean_wait_hours"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    data = Path(pvlib.__file__).parent / "data"
    wall0 = time.perf_counter()
    ok = True
    print("| weather | policy | completed | failed | brownouts | pauses | pause h | PV used kWh | PV lost kWh |"
          " mean wait h | run s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in FILES:
        results = {r.policy: r for r in run_policies(str(data / name), POLICIES,
                                                     SimSettings(days=args.days, seed=args.seed))}
        for policy in POLICIES:
            r = results[policy]
            print(f"| {name} ({r.site}) | {policy} | {r.prints_completed} | {r.prints_failed} | {r.brownouts} | "
                  f"{r.pauses} | {r.pause_hours:.1f} | {r.pv_used_wh / 1000:.1f} | {r.pv_lost_wh / 1000:.1f} | "
                  f"{r.mean_wait_hours:.1f} | {r.runtime_s:.1f} |", flush=True)
        p, o = results["planner"], results["oracle"]
        checks = {
            "planner 0 brownouts": p.brownouts == 0,
            "planner >= 95 % of oracle": p.prints_completed >= 0.95 * o.prints_completed,
            "planner > greedy": p.prints_completed > results["greedy"].prints_completed,
            "planner > threshold": p.prints_completed > results["threshold"].prints_completed,
        }
        for label, passed in checks.items():
            if not passed:
                ok = False
                print(f"FAILED on {name}: {label}", file=sys.stderr)
        print(f"<!-- {name}: planner/oracle = {p.prints_completed / max(1, o.prints_completed):.3f} -->")
    wall_s = time.perf_counter() - wall0
    print(f"\nwhole table: {wall_s:.0f} s wall ({args.days} days per run, seed {args.seed})")
    if wall_s > 20 * 60:
        ok = False
        print("FAILED: the table took over 20 minutes", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
