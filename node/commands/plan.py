"""``printnode plan [--json] [--plot plan.png]``: the energy plan, and why each job waits.

With a daemon running (and no what-if option: ``--soc``, ``--jobs``, ``--at``,
``--cloud``, ``--offline``) it shows the daemon's own last plan, over the
control socket.  Otherwise it builds the plan the daemon's Planner would build, from the config (site,
array, forecast, planner, battery), a state of charge (``--soc``) and a queue:
``--jobs FILE`` (JSON list of ``{"name", "power_profile", "priority",
"deadline_s"}``) or, by default, the next few jobs of the simulation's default
job stream (real prints analysed from slicer files).  The PV forecast runs
pvlib in a worker process, as in the daemon.  matplotlib is imported only when
``--plot`` is given.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from node.commands.common import add_config_arguments, config_from_args, print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("plan", help="show the energy plan: forecast, SoC, windows, why jobs wait")
    add_config_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the plan summary as JSON")
    parser.add_argument("--plot", type=Path, default=None, metavar="PNG", help="draw the plan to a PNG file")
    parser.add_argument("--soc", type=float, default=None,
                        help="what-if: battery state of charge now, percent (offline plan; default 80)")
    parser.add_argument("--offline", action="store_true", help="plan from the config even if a daemon runs")
    parser.add_argument("--jobs", type=Path, default=None, help="JSON list of jobs (default: 5 jobs of the default mix)")
    parser.add_argument("--at", default=None, help="plan as of this ISO 8601 UTC time (default: now)")
    parser.add_argument("--cloud", type=float, default=None,
                        help="assume this cloud cover (percent) over the whole horizon instead of the config's source")
    parser.set_defaults(func=run)


def _load_jobs(path: Path | None, printer_profile: str) -> list[Any]:
    from node.plan.schedule import PlanJob

    if path is None:
        from node.printer.profile import load_profile
        from node.study.jobstream import JobStream

        stream = JobStream(load_profile(printer_profile), seed=1)
        return [PlanJob(j.job_id, j.name, j.power_profile, queue_seq=j.queue_seq)
                for j in (stream.next_job(0.0) for _ in range(5))]
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"printnode plan: --jobs {path}: {exc}") from None
    jobs = []
    for i, row in enumerate(rows):
        try:
            jobs.append(PlanJob(str(row.get("id", f"job{i + 1}")), str(row["name"]), row["power_profile"],
                                int(row.get("priority", 0)), row.get("deadline_s"), i))
        except (KeyError, TypeError, ValueError) as exc:
            raise SystemExit(f"printnode plan: --jobs {path}: job {i}: {exc!r}") from None
    return jobs


def build_plan(config: Any, soc_pct: float, jobs: list[Any], now_s: float,
               cloud_cover_pct: float | None = None) -> tuple[Any, Any, Any]:
    """The plan, its summary and the forecast, as the daemon's Planner would make them."""
    from node.plan.energymodel import EnergyModel
    from node.plan.fit import check_fit
    from node.plan.forecast import PvForecastRequest, forecast_pv, pessimistic_pv_w
    from node.plan.guard import EnergyGuard
    from node.plan.planner import plan_summary
    from node.plan.schedule import PlanInputs, plan

    section = config.planner
    step_s = section.step_s
    start_s = now_s // step_s * step_s
    n_steps = round(section.horizon_h * 3600 / step_s)
    cloud = None if cloud_cover_pct is None else [cloud_cover_pct] * n_steps
    source = "cloud cover given" if cloud is not None else "clear sky"
    stale = False
    if cloud is None and config.forecast.source == "file" and config.forecast.file:
        from node.plan.forecast import load_cloud_forecast

        try:
            cloud_forecast = load_cloud_forecast(Path(config.forecast.file).read_text())
        except (OSError, ValueError) as exc:
            raise SystemExit(f"printnode plan: forecast.file {config.forecast.file}: {exc}") from None
        times = [start_s + (k + 0.5) * step_s for k in range(n_steps)]
        cloud = cloud_forecast.cloud_cover_at(times, now_s, config.forecast, config.site.latitude,
                                              config.site.longitude)
        source, stale = f"file {config.forecast.file}", cloud_forecast.is_stale(now_s, config.forecast.stale_after_h)
    forecast = forecast_pv(PvForecastRequest(site=config.site, array=config.array, start_s=start_s, step_s=step_s,
                                             n_steps=n_steps, cloud_cover_pct=cloud, with_best_day=True))
    pv_w = pessimistic_pv_w(forecast.pv_w, step_s, config.forecast)
    model = EnergyModel.from_params(config.battery.plant_params())
    guard = EnergyGuard.from_config(section, model)
    never_fits = {}
    if forecast.best_day is not None:
        for job in jobs:
            check = check_fit(job.steps_w(step_s), forecast.best_day, step_s, model, section.reserve_pct / 100,
                              section.base_load_w)
            if not check.fits:
                never_fits[job.job_id] = check.reason(section.reserve_pct)
    result = plan(PlanInputs(
        t0_s=start_s, step_s=step_s, pv_w=pv_w, energy=model, energy_wh=soc_pct / 100 * model.capacity_wh,
        reserve_frac=section.reserve_pct / 100, jobs=jobs, plate_turnaround_s=section.plate_turnaround_s,
        timezone=config.site.timezone,
        guard_band_wh=guard.plan_band_wh, never_fits=never_fits))
    summary = plan_summary(result, trigger="cli", soc_pct=soc_pct, forecast_source=source,
                           forecast_stale=stale, bias_factor=1.0)
    return result, summary, forecast


def plot_plan(result: Any, forecast: Any, path: Path, timezone: str, title: str = "") -> None:
    """Draw :func:`plan_figure` to a PNG file."""
    import matplotlib.pyplot as plt

    fig = plan_figure(result, forecast, timezone, title)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plan_figure(result: Any, forecast: Any, timezone: str, title: str = "") -> Any:
    """Forecast PV and load (top), planned SoC with the reserve and the print windows (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    tz = ZoneInfo(timezone)
    n = len(result.pv_w)
    times = [datetime.fromtimestamp(result.t0_s + k * result.step_s, tz=UTC).astimezone(tz) for k in range(n + 1)]
    fig, (ax_pv, ax_soc) = plt.subplots(2, 1, figsize=(12, 7), sharex=True,
                                        gridspec_kw={"height_ratios": [1, 1.2]})
    ax_pv.fill_between(times[:-1], forecast.pv_w[:n], step="post", alpha=0.25, color="gold",
                       label="PV forecast (expected)")
    ax_pv.step(times[:-1], result.pv_w, where="post", color="darkorange", label="PV planned on (pessimistic quantile)")
    ax_pv.step(times[:-1], result.load_w, where="post", color="tab:blue", label="planned load (node + prints)")
    ax_pv.set_ylabel("power (W)")
    ax_pv.legend(loc="upper right", fontsize=8)
    ax_pv.grid(alpha=0.3)
    ax_soc.plot(times, result.soc_pct, color="tab:green", label="planned state of charge")
    ax_soc.axhline(result.reserve_pct, color="tab:red", linestyle="--", label=f"reserve {result.reserve_pct:.0f} %")
    for start_s, end_s in result.surplus_windows:
        ax_soc.axvspan(datetime.fromtimestamp(start_s, tz=UTC).astimezone(tz),
                       datetime.fromtimestamp(end_s, tz=UTC).astimezone(tz), color="gold", alpha=0.15)
    for i, job in enumerate(result.planned):
        a = datetime.fromtimestamp(job.start_s, tz=UTC).astimezone(tz)
        b = datetime.fromtimestamp(job.end_s, tz=UTC).astimezone(tz)
        ax_soc.axvspan(a, b, color="tab:purple", alpha=0.25, label="planned print" if i == 0 else None)
        ax_soc.text(a, 3 + 7 * (i % 3), job.name[:14], fontsize=7, rotation=0)
    ax_soc.plot([], [], color="gold", alpha=0.4, linewidth=8, label="battery full: sunshine spilled in this plan")
    ax_soc.set_ylim(0, 105)
    ax_soc.set_ylabel("state of charge (%)")
    ax_soc.set_xlabel(f"local time ({timezone})")
    ax_soc.legend(loc="lower right", fontsize=8)
    ax_soc.grid(alpha=0.3)
    ax_soc.xaxis.set_major_formatter(mdates.DateFormatter("%a %H:%M", tz=tz))
    fig.suptitle(title or "Energy plan")
    fig.tight_layout()
    return fig


def _live_plan(config: Any) -> tuple[Any, Any, Any] | None:
    """The running daemon's last plan as (result, summary, forecast), or None if no daemon answers."""
    from types import SimpleNamespace

    import numpy as np

    from node.controlclient import ControlClient, ControlError
    from node.events import PlanSummary

    try:
        snapshot = ControlClient(config.control_socket, timeout_s=10).request({"cmd": "plan"})
    except ControlError as exc:
        if "no printnode daemon" in str(exc):
            return None
        raise SystemExit(f"printnode plan: {exc}") from None
    trajectory = snapshot["trajectory"]
    result = SimpleNamespace(
        t0_s=trajectory["t0_s"], step_s=trajectory["step_s"], reserve_pct=trajectory["reserve_pct"],
        soc_pct=np.array(trajectory["soc_pct"]), pv_w=np.array(trajectory["pv_w"]),
        load_w=np.array(trajectory["load_w"]), surplus_windows=[tuple(w) for w in trajectory["surplus_windows"]],
        planned=[SimpleNamespace(**job) for job in trajectory["planned"]])
    return result, PlanSummary.model_validate(snapshot["summary"]), SimpleNamespace(pv_w=trajectory["forecast_pv_w"])


def run(args: argparse.Namespace) -> int:
    from datetime import datetime

    config = config_from_args(args)
    what_if = args.offline or args.soc is not None or args.jobs is not None or args.at is not None \
        or args.cloud is not None
    live = None if what_if else _live_plan(config)
    if live is not None:
        result, summary, forecast = live
        title = f"Energy plan of node {config.node.id} ({summary.trigger}), reserve {summary.reserve_pct:.0f} %"
    else:
        soc_pct = 80.0 if args.soc is None else args.soc
        now_s = time.time() if args.at is None else datetime.fromisoformat(args.at).timestamp()
        jobs = _load_jobs(args.jobs, config.printer.profile)
        result, summary, forecast = build_plan(config, soc_pct, jobs, now_s, args.cloud)
        title = f"Energy plan from {soc_pct:.0f} % SoC, reserve {config.planner.reserve_pct:.0f} % (offline)"
    if args.plot is not None:
        plot_plan(result, forecast, args.plot, config.site.timezone, title=title)
    if args.json:
        print_json(summary.model_dump())
        return 0
    from node.plan.schedule import when_words

    print(f"SoC {summary.soc_pct:.0f} %, reserve {summary.reserve_pct:.0f} %, "
          f"PV planned on {summary.pv_forecast_wh / 1000:.2f} kWh over {summary.horizon_h:.0f} h "
          f"({summary.forecast_source}), lowest planned SoC {summary.min_soc_pct:.0f} %")
    for job in summary.planned:
        print(f"  {when_words(job.start_s, result.t0_s, config.site.timezone):>16}  {job.name}: {job.reason}")
    for job in summary.waiting:
        print(f"  {'waiting':>16}  {job.name}: {job.reason}")
    if args.plot is not None:
        print(f"plot: {args.plot}", file=sys.stderr)
    return 0
