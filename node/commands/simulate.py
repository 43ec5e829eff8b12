"""``printnode simulate --weather FILE --policy P``: a year (or ``--days``) of printing on recorded weather.

See :mod:`node.study.year` for the world, the policies and the forecast
error model.  ``--weather`` takes a TMY3 (.csv), TMY2 (.tm2) or PVGIS TMY
(.json, or a name containing "pvgis") file; pvlib ships three real ones in
``pvlib/data`` (723170TYA.CSV, 703165TY.csv, 12839.tm2).  ``--policy all``
runs the four policies on the same weather and forecasts.
"""
from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from node.commands.common import print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("simulate", help="simulate printing on recorded weather under a policy")
    parser.add_argument("--weather", required=True, help="TMY3/TMY2/PVGIS file, or a file name in pvlib/data")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--start", default=None, help="first day, e.g. 2025-06-01 (the TMY year is arbitrary)")
    parser.add_argument("--policy", default="planner", choices=["planner", "greedy", "threshold", "oracle", "all"])
    parser.add_argument("--seed", type=int, default=1, help="seeds the job stream and the forecast errors")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=run)


def resolve_weather(name: str) -> str:
    path = Path(name)
    if path.exists():
        return str(path)
    import importlib.util

    spec = importlib.util.find_spec("pvlib")
    if spec is not None and spec.origin:
        shipped = Path(spec.origin).parent / "data" / name
        if shipped.exists():
            return str(shipped)
    raise SystemExit(f"printnode simulate: --weather {name}: no such file (nor in pvlib/data)")


def run(args: argparse.Namespace) -> int:
    from node.study.year import POLICIES, SimSettings, run_policies

    if args.days < 1:
        raise SystemExit("printnode simulate: --days must be at least 1")
    start_day = 0
    if args.start:
        try:
            start_day = datetime.fromisoformat(args.start).timetuple().tm_yday - 1
        except ValueError as exc:
            raise SystemExit(f"printnode simulate: --start {args.start}: {exc}") from None
    policies = POLICIES if args.policy == "all" else (args.policy,)
    settings = SimSettings(days=args.days, start_day=start_day, seed=args.seed)
    try:
        results = run_policies(resolve_weather(args.weather), policies, settings)
    except ValueError as exc:
        raise SystemExit(f"printnode simulate: {exc}") from None
    if args.json:
        out = [r.as_json() for r in results]
        print_json(out[0] if len(out) == 1 else out)
        return 0
    for r in results:
        print(f"{r.policy:>9} on {r.weather} ({r.site}), {r.days} days: {r.prints_completed} completed, "
              f"{r.prints_failed} failed, {r.brownouts} brownouts, {r.pauses} pauses ({r.pause_hours:.1f} h), "
              f"PV used {r.pv_used_wh / 1000:.1f} kWh, lost {r.pv_lost_wh / 1000:.1f} kWh, "
              f"mean wait {r.mean_wait_hours:.1f} h", file=sys.stdout)
    return 0
