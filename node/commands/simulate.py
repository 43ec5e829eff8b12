"""``printnode simulate --weather FILE --policy P``: a year (or ``--days``) of printing on recorded weather.

See :mod:`node.study.year` for the world, the policies and the forecast
error model.  ``--weather`` takes a TMY3, TMY2, EPW or PVGIS TMY (CSV or JSON,
as PVGIS serves them) file, recognised by its content
(:mod:`node.plan.weatherfiles`); pvlib ships three real ones in ``pvlib/data``
(723170TYA.CSV, 703165TY.csv, 12839.tm2).  ``--battery-ah`` and ``--array-w``
size the plant; the output names the plant it assumed.  ``--policy all`` runs
every policy on the same weather and forecasts.
"""
from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from node.commands.common import print_json

#: kept here (not imported from node.study.year) so building the parser imports no numpy
POLICY_NAMES = ["planner", "planner-learned", "planner-clearsky", "fit-greedy", "greedy", "threshold", "oracle"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("simulate", help="simulate printing on recorded weather under a policy")
    parser.add_argument("--weather", required=True,
                        help="TMY3/TMY2/EPW/PVGIS (CSV or JSON) file, or a file name in pvlib/data")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--start", default=None, help="first day, e.g. 2025-06-01 (the TMY year is arbitrary)")
    parser.add_argument("--policy", default="planner", choices=[*POLICY_NAMES, "all"],
                        help="planner = the scheduler on the hub-fed forecast; planner-learned / planner-clearsky: "
                             "on the node's own offline forecasts")
    parser.add_argument("--battery-ah", type=float, default=94.0, help="LiFePO4 4S bank capacity (default 94 Ah)")
    parser.add_argument("--array-w", type=float, default=400.0, help="PV array nameplate watts (default 400 Wp)")
    parser.add_argument("--tilt", type=float, default=30.0, help="array tilt in degrees (default 30)")
    parser.add_argument("--azimuth", type=float, default=180.0, help="array azimuth, 180 = south (default)")
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
    from pydantic import ValidationError

    from node.power.config import ArraySection
    from node.study.year import POLICIES, SimSettings, battery_of, run_policies

    if args.days < 1:
        raise SystemExit("printnode simulate: --days must be at least 1")
    start_day = 0
    if args.start:
        try:
            start_day = datetime.fromisoformat(args.start).timetuple().tm_yday - 1
        except ValueError as exc:
            raise SystemExit(f"printnode simulate: --start {args.start}: {exc}") from None
    policies = POLICIES if args.policy == "all" else (args.policy,)
    if not 1.0 <= args.battery_ah <= 10_000:
        raise SystemExit(f"printnode simulate: --battery-ah {args.battery_ah}: between 1 and 10000 Ah")
    try:
        array = ArraySection(peak_w=args.array_w, tilt_deg=args.tilt, azimuth_deg=args.azimuth).model_dump()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise SystemExit(f"printnode simulate: array: {problems}") from None
    settings = SimSettings(days=args.days, start_day=start_day, seed=args.seed, battery=battery_of(args.battery_ah))
    try:
        results = run_policies(resolve_weather(args.weather), policies, settings, array=array)
    except ValueError as exc:
        raise SystemExit(f"printnode simulate: {exc}") from None
    if args.json:
        out = [r.as_json() for r in results]
        print_json(out[0] if len(out) == 1 else out)
        return 0
    print(f"plant: {results[0].plant}", file=sys.stdout)
    for r in results:
        print(f"{r.policy:>16} on {r.weather} ({r.site}), {r.days} days: {r.prints_completed} completed, "
              f"{r.prints_failed} failed, {r.brownouts} brownouts (cutoff), {r.pauses} pauses "
              f"({r.suspensions} switched off, {r.pause_hours:.1f} h), PV used {r.pv_used_wh / 1000:.1f} kWh, "
              f"lost {r.pv_lost_wh / 1000:.1f} kWh, wait mean {r.mean_wait_hours:.1f} h / p95 "
              f"{r.p95_wait_hours:.1f} h / worst {r.worst_wait_hours:.1f} h ({r.never_started} never started)",
              file=sys.stdout)
    return 0
