"""The Planner component: keeps the daemon's plan fresh and guards the running print's energy.

It re-plans on a cadence (``planner.replan_interval_s``), when the queue or the
plate changes, and when telemetry departs from the plan (measured SoC more
than ``deviation_soc_pct`` away from the planned trajectory).  Each plan goes
out as ``plan_updated`` (:class:`~node.events.PlanSummary`).

The forecast comes from :func:`node.plan.forecast.forecast_pv`, which runs
pvlib in a worker process (:mod:`node.plan.worker`); the daemon never imports
pvlib, pandas, numpy or scipy.  It is computed past the horizon and sliced by
the next re-plans, refreshed in the background before that runs out (hourly
with cloud cover), and at once when the site moves (:meth:`Planner.set_site`)
or a new cloud-cover forecast arrives (:meth:`Planner.set_cloud_forecast`).
The planning loop never waits for the worker (seconds of CPU on a Pi): it plans
at once on the forecast it has and again when the new one arrives.  A plan made
on a forecast of other inputs (or on none, at start) is *provisional*: no print
starts or resumes on it (``start_gate`` says it waits for the new forecast);
the energy guard, which reads the battery, not the plan, keeps working.

Which forecast (``forecast.source``; ``auto``, the default, takes the best
available and names it in ``status`` and in every plan): the hub's cloud cover
while it is fresh; else the forecast learnt from this node's own PV
(:mod:`node.plan.learned`: clear-sky-index persistence and climatology, with a
quantile calibrated by lead time on its own errors, :mod:`node.plan.quantile`:
it is issued every hour and scored as the hours pass) once it has ``learned_min_days`` of
history; else clear sky.  The hub's forecast is calibrated the same way on the
hours it was in use (its own :class:`~node.plan.quantile.LeadCalibration`; the
normal error model until it has samples).  Both plan on
``forecast.calibrated_quantile``; clear sky and a forecast file on the normal
model's ``forecast.quantile``.  The learned forecast learns from every telemetry
sample whatever the source in use (not while the battery is full: the charger
throttles PV then).  Its state is saved in the node's store once a day and at
stop (table ``learned_forecast``), and taken back at start: a restart keeps it.

Jobs that can never fit this plant (:mod:`node.plan.fit`: even from a full
battery at the best hour of the site's best clear-sky day they would cross the
reserve) are found when first planned and held in the plan's waiting list with
the figures (``never_fits`` in ``status``, the reason in ``plan`` and on the
page); a person cancels them or changes the plant.  The best day is computed
once per site and array in the pvlib worker.

Energy guard (:mod:`node.plan.guard`, the one rule the year-long simulation
runs for every policy): on each telemetry sample while a job prints, if two
more planning steps at the printer's draw (with half the PV just measured)
would take the battery below the reserve, it asks for a pause at the next layer
boundary
(``energy_pause_requested``): the bed stays warm (a part that cools on the
plate may let go or warp; a warm bed keeps it stuck) while energy is short.
If the warm bed itself would cross the reserve, or the warm pause lasts
``warm_hold_max_s``, it asks again with ``printer_off`` (``suspended``: zero
draw, but the part cools, and a part cold for hours often loses adhesion — the
simulation counts more than 4 h cold as a failed print).  When the plan puts
the paused print first and the guard passes with ``resume_margin_pct`` to
spare, it sends ``energy_resume_allowed``.  The streamer owns the printer and
does the pausing and resuming; the job state machine records the reasons.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

from node.events import (
    EnergyPauseRequested,
    EnergyResumeAllowed,
    JobProgress,
    JobStateChanged,
    PlannedJobSummary,
    PlanSummary,
    PlateCleared,
    QueueChanged,
    TelemetrySample,
    WaitingJobSummary,
)
from node.jobs import ACTIVE_STATES, RUNNABLE_STATES, Job, Jobs, JobState, PauseReason
from node.node import Component, Node
from node.plan.config import ForecastSection, PlannerSection
from node.plan.energymodel import EnergyModel, LoadModel, pause_hold_w
from node.plan.fit import BestClearDay, FitCheck, check_fit
from node.plan.forecast import (
    BiasTracker,
    CloudCoverForecast,
    CloudCoverPoint,
    ForecastSite,
    PvForecast,
    PvForecastRequest,
    forecast_pv,
    pessimistic_pv_w,
    quantile_factors,
)
from node.plan.guard import TYPICAL_PRINT_W, EnergyGuard, energy_action, reads_full
from node.plan.learned import LearnedForecast
from node.plan.quantile import LeadCalibration, hourly_wh
from node.plan.schedule import (
    DEVIATION_INTERVAL_S,
    Plan,
    PlanInputs,
    PlanJob,
    RunningPrint,
    WaitingJob,
    plan,
    plan_deviation,
    profile_rest,
    profile_to_steps,
    rest_wh_s,
)
from node.plan.sungate import RecentPv, sun_wait
from node.power.config import ArraySection, SiteSection
from node.power.plant import BatteryParams
from node.printer.profile import PrinterProfile
from node.runner import GateDecision
from node.store.db import Store, transaction

log = logging.getLogger(__name__)

#: the forecast is computed this far past the horizon (real pvlib work in a worker process), so the
#: re-plans of the next hours slice it instead of spawning a worker every step; the next one is computed in
#: the background once half of it is used: a worker every 6 h without clouds to read (issue #19)
FORECAST_SPARE_S = 12 * 3600.0

EnergyProfileSource = Callable[[Job], Sequence[Sequence[float]] | None]
Forecaster = Callable[[PvForecastRequest], PvForecast]


def plan_summary(result: Plan, *, trigger: str, soc_pct: float, forecast_source: str, forecast_stale: bool,
                 bias_factor: float, extra_waiting: Sequence[WaitingJob] = ()) -> PlanSummary:
    """The event payload of a plan."""
    dt_h = result.step_s / 3600.0
    planned = [PlannedJobSummary(job_id=j.job_id, name=j.name, start_s=j.start_s, end_s=j.end_s,
                                 energy_wh=j.energy_wh, min_soc_pct=j.min_soc_pct, reason=j.reason)
               for j in result.planned]
    waiting = [WaitingJobSummary(job_id=w.job_id, name=w.name, energy_wh=w.energy_wh, reason=w.reason,
                                 never_fits=w.never_fits)
               for w in [*result.waiting, *extra_waiting]]
    return PlanSummary(
        t_s=result.t0_s, trigger=trigger, horizon_h=result.horizon_s / 3600.0, step_s=result.step_s,
        soc_pct=min(100.0, max(0.0, soc_pct)), reserve_pct=result.reserve_pct, forecast_source=forecast_source,
        forecast_stale=forecast_stale, bias_factor=bias_factor, pv_forecast_wh=float(result.pv_w.sum() * dt_h),
        pv_lost_wh=result.pv_lost_wh, min_soc_pct=float(min(result.soc_pct)), planned=planned,
        waiting=waiting, next_start_s=planned[0].start_s if planned else None)


class Planner(Component):
    """Re-plans the queue on the PV forecast and asks for energy pauses; see the module docstring."""

    name = "planner"
    section = "planner"

    def __init__(self, node: Node, config: PlannerSection, *, site: SiteSection, array: ArraySection,
                 forecast: ForecastSection, jobs: Jobs, battery: BatteryParams, printer_profile: PrinterProfile,
                 energy_profile_for: EnergyProfileSource, loads: LoadModel | None = None,
                 forecaster: Forecaster = forecast_pv,
                 clock_problem: Callable[[], str | None] | None = None, store: Store | None = None) -> None:
        super().__init__(node, config)
        self.config: PlannerSection = config
        self.site = site
        self.array = array
        self.forecast_config = forecast
        self.jobs = jobs
        self.battery = battery
        self.profile = printer_profile
        self.energy_profile_for = energy_profile_for
        self.loads = loads or LoadModel(base_load_w=config.base_load_w,
                                        other_loads_w_by_hour=config.other_loads_w_by_hour)
        self.forecaster = forecaster
        #: where the learned forecast is kept across restarts (one snapshot a day and at stop); None: in memory
        self.store = store
        #: the site's best clear-sky day (node.plan.fit), computed once per site and array by the forecast worker
        self.best_day: BestClearDay | None = None
        self._best_day_key: tuple | None = None
        self._fit_checks: dict[str, tuple[int, FitCheck]] = {}   # job id -> (profile length, its check)
        #: why the wall clock cannot be trusted (None: it can); plans made on a stale clock put
        #: prints at the wrong hour of the sun, so the gate refuses to start any while it says so
        self.clock_problem = clock_problem or (lambda: None)
        self.model = EnergyModel.from_params(battery)
        self.guard = EnergyGuard.from_config(config, self.model, self.loads.base_load_w)
        self.bias = BiasTracker(forecast.bias_halflife_h)
        self.cloud_forecast: CloudCoverForecast | None = None
        self.last_plan: Plan | None = None
        self.last_summary: PlanSummary | None = None
        self.soc_pct: float | None = None
        #: when the battery was last read full (the SoC reading's error starts from 0 there: EnergyGuard)
        self.full_seen_s: float | None = None
        self.pv_w = 0.0
        self.printer_w: float | None = None
        self.plate_clear = True
        self.running_job_id: str | None = None
        self.elapsed_s: dict[str, float] = {}
        self.last_replan_s: float | None = None  # real seconds the last re-plan took (bench/footprint.py)
        self.replans = 0
        self.last_replan_trigger: str | None = None
        self.last_replan_parts_ms: dict[str, float] = {}
        self.pause_requested: dict[str, str] = {}   # job id -> "warm" | "off"
        self.paused_since_s: dict[str, float] = {}
        #: prints the guard lets finish within the allowance below the reserve: job id -> why, in words
        self.finishing: dict[str, str] = {}
        self._forecast: PvForecast | None = None   # the horizon the last plan was made on
        self._forecast_sliced_from: PvForecast | None = None
        self._forecast_key: tuple | None = None  # what _forecast_whole was computed for
        self._forecast_inputs: tuple | None = None  # the same without the hour
        self._forecast_whole: PvForecast | None = None  # past the horizon: sliced by the next re-plans
        self._forecast_stale = True
        self._pending_forecast: asyncio.Future[None] | None = None   # the worker running in the background
        self._failed_key: tuple | None = None   # the forecast the worker failed to compute
        self._cloud_version = 0   # counts the hub's cloud forecasts: a new one is a new input
        #: the last plan was made on a forecast of other inputs (or none) while the right one is computed:
        #: no print starts or resumes on it
        self.plan_provisional = False
        self.last_forecast_s: float | None = None  # real seconds the last forecast worker took
        self.learned = LearnedForecast(config.step_s)
        normal = quantile_factors(self._n_steps(), config.step_s, forecast)
        def normal_factor(lead_h: float) -> float:
            return float(normal[min(len(normal) - 1, int(lead_h * 3600 / config.step_s))])

        #: the learned forecast's quantile by lead time, from its own errors (until it has them: the normal model)
        self.calibration = LeadCalibration(forecast.calibrated_quantile, normal_factor)
        #: the same for the hub's forecast, scored on the hours it was in use
        self.hub_calibration = LeadCalibration(forecast.calibrated_quantile, normal_factor)
        self._learned_day: int | None = None
        self._last_learn_s: float | None = None
        self._hour: int | None = None          # the hour being measured for the calibration, its Wh, valid
        self._hour_wh = 0.0
        self._hour_valid = True
        self._spilling = False                 # the last reading: the battery full, the charger throttling
        #: the PV of the last half hour, for the start gate's "has the sun shown up" (node.plan.sungate)
        self.recent_pv = RecentPv(config.sun_shown_window_min * 60.0)
        self._last_pv_s: float | None = None
        self._wake = asyncio.Event()
        self._trigger = "start"
        self._plan_lock = asyncio.Lock()
        self._last_deviation_s = -1e18
        for event, handler in (("telemetry_sample", self._on_telemetry), ("queue_changed", self._on_queue),
                               ("job_state_changed", self._on_job_state), ("plate_cleared", self._on_plate),
                               ("job_progress", self._on_progress),
                               ("job_analysed", lambda _event: self.request_replan("job analysed")),
                               ("cloud_forecast", self._on_cloud_forecast)):
            node.register_event_handler(event, handler)

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        await self._load_learned()
        if self.config.enabled:
            self.node.spawn(self._loop(), "planner.loop")

    async def stop(self) -> None:
        await self._save_learned()
        await super().stop()

    # --- the learned forecast across restarts ----------------------------------------------------
    #: snapshots kept (one a day): the newest is loaded; the rest are there if the newest is damaged
    LEARNED_KEEP_DAYS = 7

    async def _load_learned(self) -> None:
        """Take back what the node learnt before the restart: the newest readable snapshot."""
        if self.store is None:
            return
        rows = await self.store.run(lambda c: c.execute(
            "SELECT day, saved_s, state_json FROM learned_forecast ORDER BY day DESC").fetchall())
        for row in rows:
            try:
                state = json.loads(row["state_json"])
                self.learned.load_state(state)
            except (ValueError, KeyError, TypeError) as exc:   # a damaged or foreign snapshot: try an older one
                log.warning("learned forecast snapshot of day %s not usable (%s)", row["day"], exc)
                continue
            try:
                if "lead_calibration" in state:
                    self.calibration.load_state(state["lead_calibration"])
                if "hub_lead_calibration" in state:
                    self.hub_calibration.load_state(state["hub_lead_calibration"])
            except (ValueError, KeyError, TypeError, IndexError) as exc:   # the forecast is kept; errors relearnt
                log.warning("learned forecast's error calibration of day %s not usable (%s): it is learnt again",
                            row["day"], exc)
            self.learned.age((self.node.clock.time() - row["saved_s"]) / 3600.0)
            log.info("learned forecast: %.1f days of history taken back from the store", self.learned.history_days)
            return

    async def _save_learned(self, day: int | None = None) -> None:
        """One snapshot per local day (the newest replaces the day's earlier one); older ones pruned.  At stop
        (``day`` None) it is the current day's, if anything was learnt since the start."""
        day = day if day is not None else self._learned_day
        if self.store is None or day is None:
            return
        state_json = json.dumps(self.learned.to_state() | {"lead_calibration": self.calibration.to_state(),
                                                           "hub_lead_calibration": self.hub_calibration.to_state()})
        saved_s = self.node.clock.time()
        keep = self.LEARNED_KEEP_DAYS

        def write(conn: Any) -> None:
            with transaction(conn):
                conn.execute("INSERT INTO learned_forecast(day, saved_s, state_json) VALUES(?, ?, ?) "
                             "ON CONFLICT(day) DO UPDATE SET saved_s = excluded.saved_s, "
                             "state_json = excluded.state_json", (day, saved_s, state_json))
                conn.execute("DELETE FROM learned_forecast WHERE day <= ?", (day - keep,))

        try:
            await self.store.run(write)
        except Exception as exc:   # a full card must not stop the planner: it learns on in memory
            log.error("learned forecast not saved (%s): it is kept in memory until the next try", exc)

    def status(self) -> dict[str, Any]:
        summary = self.last_summary
        now_s = self.node.clock.time()
        margin_wh = self.guard.soc_margin_wh(self.full_seen_s, now_s)
        return {"soc_pct": self.soc_pct, "last_full_s": self.full_seen_s,
                "soc_margin_pct": round(100.0 * margin_wh / self.model.capacity_wh, 2),
                "bias_factor": round(self.bias.factor, 3),
                "forecast_source": self.forecast_source(now_s),
                "learned_history_days": round(self.learned.history_days, 2),
                "learned_quantile_by_lead": self.calibration.describe(),
                "hub_quantile_by_lead": self.hub_calibration.describe(),
                "forecast_stale": self._forecast_stale,
                "forecast_pending": self._pending_forecast is not None and not self._pending_forecast.done(),
                "plan_provisional": self.plan_provisional,
                "next_start_s": summary.next_start_s if summary else None,
                "planned": len(summary.planned) if summary else 0,
                "waiting": len(summary.waiting) if summary else 0,
                "never_fits": sum(1 for w in summary.waiting if w.never_fits) if summary else 0,
                "finishing": dict(self.finishing),
                "clock_problem": self.clock_problem(),
                "last_replan_ms": None if self.last_replan_s is None else round(self.last_replan_s * 1000, 1),
                "replans": self.replans, "last_replan_trigger": self.last_replan_trigger,
                "last_replan_parts_ms": self.last_replan_parts_ms,
                "last_forecast_ms": None if self.last_forecast_s is None else round(self.last_forecast_s * 1000)}

    # --- inputs from outside ------------------------------------------------------------------
    def set_site(self, site: SiteSection) -> None:
        """The node moved (an RV): the next re-plan forecasts for the new place."""
        self.site = site
        self.request_replan("site moved")

    def set_cloud_forecast(self, forecast: CloudCoverForecast) -> None:
        self.cloud_forecast = forecast
        self._cloud_version += 1
        self.request_replan("new cloud forecast")

    def request_replan(self, trigger: str) -> None:
        self._trigger = trigger
        self._wake.set()

    def snapshot(self) -> dict[str, Any] | None:
        """The last plan as plain JSON: its summary, and the trajectories ``printnode plan --plot`` draws."""
        plan, summary = self.last_plan, self.last_summary
        if plan is None or summary is None:
            return None
        times = [plan.t0_s + (k + 0.5) * plan.step_s for k in range(len(plan.pv_w))]
        expected = [self._raw_forecast_at(t) for t in times]
        return {
            "summary": summary.model_dump(mode="json"),
            "trajectory": {
                "t0_s": plan.t0_s, "step_s": plan.step_s, "reserve_pct": plan.reserve_pct,
                "soc_pct": plan.soc_pct.tolist(), "pv_w": plan.pv_w.tolist(), "load_w": plan.load_w.tolist(),
                "forecast_pv_w": [p if e is None else e for e, p in zip(expected, plan.pv_w.tolist(), strict=True)],
                "surplus_windows": [list(w) for w in plan.surplus_windows],
                "planned": [{"job_id": j.job_id, "name": j.name, "start_s": j.start_s, "end_s": j.end_s}
                            for j in plan.planned],
            },
        }

    # --- the runner's start gate ---------------------------------------------------------------
    def next_job_id(self) -> str | None:
        """The job the plan starts next (it may not be the queue's head: see planner backfilling)."""
        return self.last_plan.planned[0].job_id if self.last_plan and self.last_plan.planned else None

    async def start_gate(self, job: Job) -> GateDecision:
        """For ``JobRunner.add_start_gate("energy", planner.start_gate)``: may ``job`` start now?"""
        if not self.config.enabled:
            return GateDecision(True)
        problem = self.clock_problem()
        if problem is not None:
            return GateDecision(False, f"clock not synchronised ({problem}): no energy plan on a wrong clock")
        if self.soc_pct is None:
            return GateDecision(False, "no battery reading yet: a print starts only on a known state of charge")
        if self.last_plan is None:
            await self.replan("start gate", wait=False)
        current = self.last_plan
        assert current is not None
        if self.plan_provisional:
            # planned at once on the forecast at hand while the right one is computed: nothing starts on it
            return GateDecision(False, "waiting for the new PV forecast (being computed): no print starts on a "
                                       "plan made without it", "the new PV forecast")
        now_s = self.node.clock.time()
        # what the job waits for, in words that do not move with the forecast: the window the plan
        # gives and the guard's "too close to the reserve" at that window are the same wait (issue #19)
        energy = f"energy above the {self.config.reserve_pct:.0f} % reserve"
        for planned in current.planned:
            if planned.job_id != job.id:
                continue
            if planned is current.planned[0] and planned.start_s <= now_s + self.config.step_s / 2:
                if not self._guard_ok(self._print_draw_w(job, measured=False), resume=True):
                    return GateDecision(False, f"the battery is too close to the {self.config.reserve_pct:.0f} % "
                                               "reserve", energy)
                if self.config.sun_shown_window_min > 0:
                    above_wh = (self._energy_wh() or 0.0) - self.guard.reserve_wh
                    why = sun_wait(planned.energy_wh, above_wh, self.recent_pv.mean_w(now_s), current.pv_w_at(now_s))
                    if why is not None:
                        return GateDecision(False, why, "the sun to show up")
                return GateDecision(True, planned.reason)
            if planned is not current.planned[0]:
                return GateDecision(False, f"the plan starts {current.planned[0].name} first; {planned.reason}",
                                    f"{current.planned[0].name} to print first")
            return GateDecision(False, planned.reason, energy)
        for waiting in current.waiting:
            if waiting.job_id == job.id:
                return GateDecision(False, waiting.reason, energy)
        self.request_replan(f"job {job.id} not in the plan yet")
        return GateDecision(False, "not planned yet: re-planning")

    async def _on_cloud_forecast(self, event: BaseModel) -> None:
        """The hub's cloud cover for this node: as issued and for the place it names (protocol 1.1), or
        taken as issued now for the node's own site (1.0's bare points)."""
        from datetime import UTC, datetime

        points = [CloudCoverPoint(t_utc=datetime.fromtimestamp(t_s, tz=UTC), cloud_cover_pct=pct)
                  for t_s, pct in event.points]  # type: ignore[attr-defined]
        if not points:
            return
        issued_s = event.issued_s if event.issued_s is not None else event.t_s  # type: ignore[attr-defined]
        latitude, longitude = event.latitude, event.longitude  # type: ignore[attr-defined]
        if latitude is None or longitude is None:  # protocol 1.0's form: no place, so the node's own
            latitude, longitude = self.site.latitude, self.site.longitude
        self.set_cloud_forecast(CloudCoverForecast(
            issued_at=datetime.fromtimestamp(issued_s, tz=UTC),
            site=ForecastSite(latitude=latitude, longitude=longitude), points=points))

    # --- event handlers -------------------------------------------------------------------------
    async def _on_telemetry(self, sample: BaseModel) -> None:
        assert isinstance(sample, TelemetrySample)
        if sample.stale or sample.error:
            return
        if sample.soc_pct is not None:
            if self.soc_pct is None:
                self.request_replan("first battery reading")
            self.soc_pct = sample.soc_pct
            if reads_full(sample.soc_pct, sample.charge_state):
                self.full_seen_s = sample.t_s
            elif sample.last_full_s is not None and (self.full_seen_s is None or sample.last_full_s > self.full_seen_s):
                # the SoC source's own anchor (a BMV's "since full", the node's count kept across a restart)
                self.full_seen_s = sample.last_full_s
        limited = self._charger_limited(sample)  # once per sample: the sun gate, the learned forecast, re-plans
        if sample.pv_w is not None:
            self.pv_w = sample.pv_w
            gap_s = 0.0 if self._last_pv_s is None else sample.t_s - self._last_pv_s
            self._last_pv_s = sample.t_s
            self.recent_pv.add(sample.t_s, sample.pv_w, min(self.config.step_s, max(0.0, gap_s)), limited)
            forecast_w = self._raw_forecast_at(sample.t_s)
            if forecast_w is not None:
                self.bias.add(sample.t_s, sample.pv_w, forecast_w, self.config.step_s)
            self._learn(sample, limited)
        if sample.printer_w is not None:
            self.printer_w = sample.printer_w
        await self._check_energy(sample.t_s)
        self._check_deviation(sample, limited)

    def _check_deviation(self, sample: TelemetrySample, pv_held_back: bool) -> None:
        """Re-plan when measured SoC or PV departs from what the plan expected (at most every 15 min);
        ``pv_held_back``: the charger was limiting PV, so the reading is only a lower bound of the sun."""
        current = self.last_plan
        if current is None or sample.t_s - self._last_deviation_s < DEVIATION_INTERVAL_S:
            return
        why = plan_deviation(current, sample.t_s, self.soc_pct, sample.pv_w,
                             deviation_soc_pct=self.config.deviation_soc_pct, array_peak_w=self.array.peak_w,
                             pv_held_back=pv_held_back)
        if why is not None:
            self._last_deviation_s = sample.t_s
            self.request_replan(why)

    async def _on_queue(self, event: BaseModel) -> None:
        assert isinstance(event, QueueChanged)
        self.request_replan(f"queue {event.action}")

    async def _on_plate(self, event: BaseModel) -> None:
        assert isinstance(event, PlateCleared)
        self.plate_clear = True
        self.request_replan("plate cleared")

    async def _on_progress(self, event: BaseModel) -> None:
        assert isinstance(event, JobProgress)
        self.elapsed_s[event.job_id] = event.elapsed_s

    async def _on_job_state(self, event: BaseModel) -> None:
        assert isinstance(event, JobStateChanged)
        to_state = JobState(event.to_state)
        if to_state == JobState.PRINTING:
            self.running_job_id = event.job_id
            self.pause_requested.pop(event.job_id, None)
            self.paused_since_s.pop(event.job_id, None)
        elif to_state in (JobState.PAUSED, JobState.SUSPENDED):
            self.paused_since_s.setdefault(event.job_id, event.t_s)
        elif to_state in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED):
            if event.from_state in {s.value for s in ACTIVE_STATES}:
                self.plate_clear = False
            if self.running_job_id == event.job_id:
                self.running_job_id = None
            self.pause_requested.pop(event.job_id, None)
            self.paused_since_s.pop(event.job_id, None)
            self.elapsed_s.pop(event.job_id, None)
        self.request_replan(f"job {event.job_id} {event.to_state}")

    # --- the energy guard ---------------------------------------------------------------------
    def _energy_wh(self) -> float | None:
        return None if self.soc_pct is None else self.soc_pct / 100.0 * self.model.capacity_wh

    def _guard_ok(self, draw_w: float, resume: bool = False) -> bool:
        energy_wh = self._energy_wh()
        return True if energy_wh is None else self.guard.ok(energy_wh, draw_w, self.pv_w, resume=resume)

    def _rest_of(self, job: Job) -> Callable[[], tuple[float, float]] | None:
        """What printing ``job`` to its end takes from now (Wh, s), asked by the guard only when it would pause;
        None without an energy profile."""
        profile = self.energy_profile_for(job)
        return None if not profile else functools.partial(rest_wh_s, profile, self.elapsed_s.get(job.id, 0.0))

    def _print_draw_w(self, job: Job, measured: bool = True) -> float:
        """The print's draw now: measured while it prints; from its energy profile (at the elapsed
        time) before it starts or resumes, when the measured draw is that of an idle or paused
        printer, far below what heating up takes."""
        if measured and self.printer_w is not None and self.printer_w > 0:
            return self.printer_w
        profile = self.energy_profile_for(job)
        if not profile:
            return TYPICAL_PRINT_W
        elapsed_s = self.elapsed_s.get(job.id, 0.0)
        for t_s, watts in reversed(profile):
            if t_s <= elapsed_s:
                return float(watts)
        return float(profile[0][1])

    async def _check_energy(self, t_s: float) -> None:
        """Pause a print that can no longer go on above the reserve; let an energy pause end."""
        if self.soc_pct is None:
            return
        energy_wh = self.soc_pct / 100.0 * self.model.capacity_wh
        hold_w = pause_hold_w(self.profile, 60.0, self.config.ambient_c)
        active = (await self.jobs.active())[:5]
        self.finishing = {job.id: why for job in active
                          if job.state == JobState.PRINTING and (why := self.finishing.get(job.id)) is not None}
        for job in active:
            if job.state == JobState.PRINTING:
                if job.id in self.pause_requested:
                    continue
                state = "printing"
            elif job.state == JobState.PAUSED and job.pause_reason == PauseReason.ENERGY:
                state = "paused"
            elif job.state == JobState.SUSPENDED and job.id in self.pause_requested:
                state = "suspended"
            else:
                continue
            since_s = self.paused_since_s.setdefault(job.id, t_s) if state == "paused" else t_s
            plan_now = self.last_plan
            start_s = plan_now.start_of(job.id) if plan_now is not None else None
            action, why = energy_action(
                self.guard, state, energy_wh=energy_wh, pv_w=self.pv_w,
                draw_w=self._print_draw_w(job) if state == "printing" else 0.0, hold_w=hold_w,
                resume_w=self._print_draw_w(job, measured=False), paused_for_s=t_s - since_s,
                switched_off=self.pause_requested.get(job.id) == "off",
                plan_starts_it=(start_s is not None and start_s <= t_s + self.config.step_s / 2
                                and not self.plan_provisional),
                rest=self._rest_of(job) if state == "printing" else None)
            if action is None and why and job.id not in self.finishing:
                self.finishing[job.id] = why
                log.info("%s: %s (SoC %.1f %%)", job.name, why, self.soc_pct)
            if action == "pause":
                self.finishing.pop(job.id, None)
                self.pause_requested[job.id] = "warm"
                await self.node.send_event("energy_pause_requested", EnergyPauseRequested(
                    job_id=job.id, t_s=t_s, soc_pct=self.soc_pct, reserve_pct=self.config.reserve_pct,
                    reason=f"SoC {self.soc_pct:.1f} %: printing on would cross the "
                           f"{self.config.reserve_pct:.0f} % reserve; pause at the next layer, bed kept warm"))
            elif action == "off":
                self.pause_requested[job.id] = "off"
                await self.node.send_event("energy_pause_requested", EnergyPauseRequested(
                    job_id=job.id, t_s=t_s, printer_off=True, soc_pct=self.soc_pct,
                    reserve_pct=self.config.reserve_pct, reason=why))
            elif action == "resume":
                self.pause_requested.pop(job.id, None)
                await self.node.send_event("energy_resume_allowed", EnergyResumeAllowed(
                    job_id=job.id, t_s=t_s, soc_pct=self.soc_pct or 0.0,
                    reason=f"SoC {self.soc_pct:.1f} % and the plan can carry the rest of the print above the reserve"))

    # --- planning -------------------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            self._wake.clear()   # before planning: a request made while it plans wakes the next turn at once
            try:
                await self.replan(self._trigger, wait=False)
            except Exception:  # a failed plan must not stop the next one
                log.exception("re-plan failed")
            sleeper = asyncio.ensure_future(self.node.clock.sleep(self.config.replan_interval_s))
            waker = asyncio.ensure_future(self._wake.wait())
            done, pending = await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            if sleeper in done:
                self._trigger = "cadence"

    # --- the forecast learnt from the node's own PV ---------------------------------------------
    def _local(self, t_s: float) -> Any:
        from datetime import UTC, datetime
        from zoneinfo import ZoneInfo

        return datetime.fromtimestamp(t_s, tz=UTC).astimezone(ZoneInfo(self.site.timezone))

    def _clear_sky_at(self, t_s: float) -> float | None:
        fc = self._forecast
        if fc is None:
            return None
        k = int((t_s - fc.start_s) // fc.step_s)
        return fc.clear_sky_pv_w[k] if 0 <= k < len(fc.clear_sky_pv_w) else None

    def _charger_limited(self, sample: TelemetrySample) -> bool:
        """Did the charger hold PV back (battery full or absorbing, or charging at its current limit)?  Then the
        reading shows less than the sun gave."""
        return (sample.charge_state in ("absorption", "float") or (sample.soc_pct or 0.0) >= 99.0
                or (sample.battery_a or 0.0) >= 0.95 * self.battery.max_charge_a)

    def _learn(self, sample: TelemetrySample, throttled: bool) -> None:
        """Feed one PV reading to the learned forecast (``throttled``: the charger held PV back, so it is not the
        sun's); at the top of each hour, score the hour that ended (node.plan.quantile) and issue the forecast; a
        snapshot each local day."""
        clear_w = self._clear_sky_at(sample.t_s)
        if clear_w is None or sample.pv_w is None:
            return
        local = self._local(sample.t_s)
        dt_s = 0.0 if self._last_learn_s is None else min(self.config.step_s, max(0.0, sample.t_s - self._last_learn_s))
        self._last_learn_s = sample.t_s
        self.learned.observe(local.month, local.hour, sample.pv_w, clear_w, not throttled, dt_s)
        self._spilling = throttled
        hour = int(sample.t_s // 3600)
        if hour != self._hour:
            continued = self._hour is not None and hour == self._hour + 1
            if continued:
                self.calibration.close_hour(self._hour, self._hour_wh, self._hour_valid)
                self.hub_calibration.close_hour(self._hour, self._hour_wh, self._hour_valid)
            # after a start or a gap the new hour is measured from its middle: scored as not valid
            self._hour, self._hour_wh, self._hour_valid = hour, 0.0, continued
            self._issue_learned(hour * 3600.0)
            self._issue_hub(hour * 3600.0)
        self._hour_wh += sample.pv_w * dt_s / 3600.0
        self._hour_valid = self._hour_valid and not throttled
        day = local.toordinal()
        if day != self._learned_day:
            if self._learned_day is not None:
                self.node.spawn(self._save_learned(self._learned_day), "planner.save_learned")
            self._learned_day = day

    def _issue_learned(self, hour_start_s: float) -> None:
        """The learned forecast (expected, no quantile) for the whole hours ahead the clear-sky PV covers."""
        fc = self._forecast
        if fc is None or fc.start_s > hour_start_s + self.config.step_s:
            return
        covered_s = fc.start_s + len(fc.clear_sky_pv_w) * fc.step_s - hour_start_s
        hours = min(self.calibration.horizon_h, int(covered_s // 3600))
        if hours <= 0:
            return
        per_h = round(3600 / self.config.step_s)
        self.calibration.issue(int(hour_start_s // 3600),
                               hourly_wh(self._learned_w(hour_start_s, hours * per_h, calibrated=False),
                                         self.config.step_s))

    def _issue_hub(self, hour_start_s: float) -> None:
        """The hub's forecast in use (its PV with the bias factor, no quantile) for the hours ahead, issued for
        its own calibration; nothing while another source plans."""
        whole = self._forecast_whole
        if (whole is None or self._forecast_inputs is None or self._forecast_inputs[3] != "hub"
                or self.forecast_source(hour_start_s) != "hub"):
            return
        first = round((hour_start_s - whole.start_s) / whole.step_s)
        per_h = round(3600 / self.config.step_s)
        hours = min(self.hub_calibration.horizon_h, (len(whole.pv_w) - first) // per_h)
        if first < 0 or hours <= 0:
            return
        ahead_w = [w * self.bias.factor for w in whole.pv_w[first:first + hours * per_h]]
        self.hub_calibration.issue(int(hour_start_s // 3600), hourly_wh(ahead_w, self.config.step_s))

    def _hub_w(self, forecast: PvForecast, expected_w: Sequence[float], now_s: float) -> list[float]:
        """The hub's forecast (``expected_w``: with the bias factor) times its calibrated quantile by lead time
        (the normal model until it has samples; the expected forecast while the sun is spilled: spill_factor)."""
        lead_h = [max(0.0, (forecast.start_s + (k + 0.5) * forecast.step_s - now_s) / 3600.0)
                  for k in range(len(expected_w))]
        factors = self.hub_calibration.factors(lead_h, spilling=self._spilling)
        return [w * f for w, f in zip(expected_w, factors, strict=True)]

    def _learned_w(self, start_s: float, n_steps: int, calibrated: bool = True) -> list[float]:
        """The learned forecast per step from ``start_s`` (expected; times the calibrated quantile if asked)."""
        step_s = self.config.step_s
        times = [start_s + (k + 0.5) * step_s for k in range(n_steps)]
        clear = [self._clear_sky_at(t) or 0.0 for t in times]
        local = [self._local(t) for t in times]
        now_s = self.node.clock.time()
        lead_h = [max(0.0, (t - now_s) / 3600.0) for t in times]
        expected = self.learned.expected_w(clear, [t.month for t in local], [t.hour for t in local], lead_h)
        if calibrated:   # while the battery is full and the sun spilled: the expected forecast (spill_factor)
            factors = self.calibration.factors(lead_h, spilling=self._spilling)
            return [e * f for e, f in zip(expected, factors, strict=True)]
        return expected.tolist()

    def forecast_source(self, now_s: float) -> str:
        """The forecast the next plan uses: hub, file, learned or clear_sky (see the module docstring)."""
        section = self.forecast_config
        if section.source in ("hub", "learned", "clear_sky", "file"):
            return section.source
        if self.cloud_forecast is not None and not self.cloud_forecast.is_stale(now_s, section.stale_after_h):
            return "hub"
        if self.learned.history_days >= section.learned_min_days:
            return "learned"
        return "clear_sky"

    def _n_steps(self) -> int:
        return round(self.config.horizon_h * 3600.0 / self.config.step_s)

    def _raw_forecast_at(self, t_s: float) -> float | None:
        fc = self._forecast
        if fc is None:
            return None
        k = int((t_s - fc.start_s) // fc.step_s)
        return fc.pv_w[k] if 0 <= k < len(fc.pv_w) else None

    def _cloud_cover(self, start_s: float, now_s: float, spare_steps: int = 0) -> tuple[list[float] | None, bool]:
        section = self.forecast_config
        if self.forecast_source(now_s) in ("clear_sky", "learned"):
            return None, False
        forecast = self.cloud_forecast
        if section.source == "file" and section.file:
            try:
                with open(section.file, encoding="utf-8") as handle:
                    forecast = CloudCoverForecast.model_validate_json(handle.read())
            except (OSError, ValueError) as exc:
                log.warning("cloud forecast file %s unusable (%s): planning on %.0f %% cloud", section.file, exc,
                            section.stale_cloud_cover_pct)
                forecast = None
        times = [start_s + (k + 0.5) * self.config.step_s for k in range(self._n_steps() + spare_steps)]
        if forecast is None:
            return [section.stale_cloud_cover_pct] * len(times), True
        stale = forecast.is_stale(now_s, section.stale_after_h)
        return forecast.cloud_cover_at(times, now_s, section, self.site.latitude, self.site.longitude), stale

    def _forecast_keys(self, start_s: float, now_s: float) -> tuple[tuple, tuple, bool]:
        """(key, inputs, hourly): what a forecast from ``start_s`` is computed for.  ``inputs`` leaves out the
        hour: a forecast of the same inputs an hour older is still right for the steps it covers (cloud cover is
        read as of the hour, so hourly sources are recomputed each hour); clear sky and learned ask the worker for
        the same clear-sky PV."""
        source = self.forecast_source(now_s)
        hourly = source not in ("clear_sky", "learned")
        inputs = (self.site, self.array, self._cloud_version if hourly else None, source if hourly else "clear",
                  self.config.step_s)
        return (int(start_s // 3600) if hourly else None, *inputs), inputs, hourly

    def _slice(self, whole: PvForecast, start_s: float) -> PvForecast | None:
        """The horizon from ``start_s`` out of a forecast computed past it; a tail past its end is planned with
        no sun (pessimistic: safe).  None if the forecast does not reach ``start_s``."""
        n_steps = self._n_steps()
        first = round((start_s - whole.start_s) / whole.step_s)
        if first < 0 or first >= len(whole.pv_w):
            return None
        if self._forecast is not None and self._forecast.start_s == start_s and self._forecast_sliced_from is whole:
            return self._forecast
        missing = [0.0] * max(0, first + n_steps - len(whole.pv_w))
        self._forecast_sliced_from = whole
        return PvForecast(start_s=start_s, step_s=whole.step_s, pv_w=whole.pv_w[first:first + n_steps] + missing,
                          clear_sky_pv_w=whole.clear_sky_pv_w[first:first + n_steps] + missing,
                          ghi_w_m2=whole.ghi_w_m2[first:first + n_steps] + missing)

    async def _get_forecast(self, start_s: float, now_s: float, wait: bool) -> tuple[PvForecast, bool]:
        """The PV forecast from ``start_s`` over the horizon, and whether a plan on it is only provisional (made
        on a forecast of other inputs, or on none, while the right one is computed).

        Each computation spawns a pvlib worker (seconds of CPU on a Pi: 6-12 s under the bench's 12 % quota), so
        it is computed past the horizon and sliced for the next re-plans, and it runs in the background: again
        when half the 12 h spare is used (clear sky, learned: every 6 h), hourly (cloud cover), at once when the
        inputs change (site, array, a new cloud forecast).  ``wait`` (an explicit :meth:`replan`) waits for a
        forecast the inputs need; the planning loop does not: it plans at once on the forecast it has, provisional
        if that is not the right one, and plans again when the new one arrives.  The first computation for a site
        and array also brings its best clear days (never-fits flags)."""
        key, inputs, hourly = self._forecast_keys(start_s, now_s)
        whole = self._forecast_whole
        sliced = self._slice(whole, start_s) if whole is not None else None
        if sliced is not None and self._forecast_key == key:
            spare_left_s = (whole.start_s + len(whole.pv_w) * whole.step_s) - (start_s + self.config.horizon_h * 3600)
            if not hourly and spare_left_s < FORECAST_SPARE_S / 2:
                self._start_forecast(start_s, now_s, key)   # the next one, before this one runs out
            self._forecast = sliced
            return sliced, False
        if wait:
            for _ in range(3):   # a computation for older inputs may be running: it ends first
                await asyncio.shield(self._start_forecast(start_s, now_s, key))
                if self._forecast_key == key or self._failed_key == key:
                    break
            if self._forecast_key == key and self._forecast_whole is not None:
                self._forecast = self._slice(self._forecast_whole, start_s)
                if self._forecast is not None:
                    return self._forecast, False
        else:
            self._start_forecast(start_s, now_s, key)
        if not wait and sliced is not None and self._forecast_inputs == inputs:
            self._forecast = sliced   # the same inputs an hour older: still the right forecast
            return sliced, False
        if self._failed_key == key or (wait and self._forecast_key != key):
            # the worker died, pvlib missing, bad site...: plan on the battery alone (safe) until the next try
            zeros = [0.0] * self._n_steps()
            self._forecast_stale = True
            return PvForecast(start_s=start_s, step_s=self.config.step_s, pv_w=zeros, clear_sky_pv_w=zeros,
                              ghi_w_m2=zeros), False
        if sliced is not None:   # the inputs changed: plan on the previous forecast, start nothing on it
            self._forecast = sliced
            return sliced, True
        zeros = [0.0] * self._n_steps()   # none yet (the first one is being computed)
        return PvForecast(start_s=start_s, step_s=self.config.step_s, pv_w=zeros, clear_sky_pv_w=zeros,
                          ghi_w_m2=zeros), True

    def _start_forecast(self, start_s: float, now_s: float, key: tuple) -> asyncio.Future[None]:
        """The background computation of the forecast for ``key`` (one worker at a time: a computation for
        older inputs finishes first, and the re-plan it asks for starts the next)."""
        if self._pending_forecast is not None and not self._pending_forecast.done():
            return self._pending_forecast
        best_day_key = (self.site, self.array, self.config.step_s)
        hourly = key[0] is not None
        spare_steps = round((3600.0 if hourly else FORECAST_SPARE_S) / self.config.step_s)
        cloud, stale = self._cloud_cover(start_s, now_s, spare_steps)
        request = PvForecastRequest(site=self.site, array=self.array, start_s=start_s, step_s=self.config.step_s,
                                    n_steps=self._n_steps() + spare_steps, cloud_cover_pct=cloud,
                                    with_best_day=self._best_day_key != best_day_key)

        async def compute() -> None:
            started = time.monotonic()
            try:
                computed = await asyncio.to_thread(self.forecaster, request)
            except Exception as exc:
                log.error("PV forecast failed (%r): planning with no sun until the next re-plan", exc)
                self._failed_key = key
                return
            self.last_forecast_s = time.monotonic() - started
            self._forecast_whole, self._forecast_key, self._forecast_inputs = computed, key, key[1:]
            self._forecast_stale, self._failed_key = stale, None
            if computed.best_day is not None:
                self.best_day, self._best_day_key = computed.best_day, best_day_key
                self._fit_checks.clear()
            self.request_replan("new PV forecast")

        self._pending_forecast = self.node.spawn(compute(), "planner.forecast")
        return self._pending_forecast

    def _get_best_day(self) -> BestClearDay | None:
        """The site's best clear-sky day for this site and array, or None (no flags) until the forecast worker
        has computed it: a job is called never fitting only on a real computation."""
        return self.best_day if self._best_day_key == (self.site, self.array, self.config.step_s) else None

    def _fit_check(self, job_id: str, profile: Sequence[Sequence[float]], best_day: BestClearDay | None
                   ) -> FitCheck | None:
        """Whether the job can ever fit this plant (node.plan.fit), checked once per job and profile."""
        if best_day is None:
            return None
        cached = self._fit_checks.get(job_id)
        if cached is not None and cached[0] == len(profile):
            return cached[1]
        other = None
        if self.loads.other_loads_w_by_hour is not None:
            other = [self.loads.other_w(int(k * self.config.step_s // 3600))
                     for k in range(round(86400 / self.config.step_s))]
        check = check_fit(profile_to_steps(profile, self.config.step_s), best_day, self.config.step_s, self.model,
                          self.config.reserve_pct / 100.0, self.loads.base_load_w, other)
        self._fit_checks[job_id] = (len(profile), check)
        if not check.fits:
            log.warning("job %s never fits this plant: %s", job_id, check.reason(self.config.reserve_pct))
        return check

    async def replan(self, trigger: str = "manual", wait: bool = True) -> Plan:
        """Plan again now; how long it took (real seconds) is in ``status``.  ``wait``: if the inputs need a new
        PV forecast, wait for it (the planning loop does not: see :meth:`_get_forecast`)."""
        started, cpu_started = time.monotonic(), time.thread_time()
        parts: dict[str, float] = {}
        try:
            return await self._replan(trigger, wait, parts)
        finally:
            self.last_replan_s = time.monotonic() - started
            self.replans += 1
            self.last_replan_trigger = trigger
            # where the time went: waiting for the lock, the forecast, the store's reads, the plan itself, the
            # plan_updated handlers (sync's outbox write), and the loop thread's CPU meanwhile (the re-plan's
            # own and that of whatever else ran at its awaits): bench/footprint.py records them per re-plan
            self.last_replan_parts_ms = {k: round(v * 1000, 1) for k, v in parts.items()}
            self.last_replan_parts_ms["cpu"] = round((time.thread_time() - cpu_started) * 1000, 1)
            if self.last_replan_s > 1.0:
                log.info("re-plan (%s) took %.2f s: %s", trigger, self.last_replan_s, self.last_replan_parts_ms)

    async def _replan(self, trigger: str, wait: bool, parts: dict[str, float]) -> Plan:
        mark = time.monotonic()
        async with self._plan_lock:
            now_s = self.node.clock.time()
            parts["lock"], mark = time.monotonic() - mark, time.monotonic()
            step_s = self.config.step_s
            start_s = now_s // step_s * step_s
            forecast, provisional = await self._get_forecast(start_s, now_s, wait)
            parts["forecast"], mark = time.monotonic() - mark, time.monotonic()
            self.plan_provisional = provisional
            source = self.forecast_source(now_s)
            if source == "learned":
                pv_w = self._learned_w(start_s, len(forecast.pv_w))
                expected_w = self._learned_w(start_s, len(forecast.pv_w), calibrated=False)
            else:
                expected_w = [w * self.bias.factor for w in forecast.pv_w]
                if source == "hub":
                    pv_w = self._hub_w(forecast, expected_w, now_s)
                else:
                    pv_w = [w * self.bias.factor
                            for w in pessimistic_pv_w(forecast.pv_w, step_s, self.forecast_config)]
            jobs, missing, never_fits, notes = [], [], {}, {}
            best_day = self._get_best_day()
            month_now = self._local(now_s).month
            store_mark = time.monotonic()
            runnable = await self.jobs.live(RUNNABLE_STATES)
            active = (await self.jobs.active())[:1]
            parts["store"] = time.monotonic() - store_mark
            for job in runnable:
                profile = self.energy_profile_for(job)
                if not profile:
                    missing.append(WaitingJob(job.id, job.name, 0.0, "no energy profile yet (analysis pending)"))
                    continue
                jobs.append(PlanJob(job.id, job.name, profile, job.priority, job.deadline_s, job.queue_seq,
                                    queued_s=job.created_s))
                check = self._fit_check(job.id, profile, best_day)
                if check is not None and not check.fits:
                    never_fits[job.id] = check.reason(self.config.reserve_pct)
                elif check is not None and (note := check.season_note(month_now)) is not None:
                    notes[job.id] = note
            queued_ids = {job.job_id for job in jobs}
            for gone in [job_id for job_id in self._fit_checks if job_id not in queued_ids]:
                del self._fit_checks[gone]
            running = None
            for job in active:
                profile = self.energy_profile_for(job) or [[0.0, TYPICAL_PRINT_W], [3600.0, TYPICAL_PRINT_W]]
                rest = profile_rest(profile, self.elapsed_s.get(job.id, 0.0))
                remaining_w = list(profile_to_steps(rest, step_s))
                running = RunningPrint(job.id, job.name, remaining_w, paused=job.state != JobState.PRINTING)
            soc_pct = self.soc_pct if self.soc_pct is not None else self.config.reserve_pct
            other = None
            if self.loads.other_loads_w_by_hour is not None:
                from datetime import UTC, datetime
                from zoneinfo import ZoneInfo

                tz = ZoneInfo(self.site.timezone)
                other = [self.loads.other_w(datetime.fromtimestamp(start_s + k * step_s, tz=UTC).astimezone(tz).hour)
                         for k in range(len(pv_w))]
            inputs = PlanInputs(
                t0_s=start_s, step_s=step_s, pv_w=pv_w, energy=self.model,
                energy_wh=soc_pct / 100.0 * self.model.capacity_wh, reserve_frac=self.config.reserve_pct / 100.0,
                jobs=jobs, base_load_w=self.loads.base_load_w, other_loads_w=other, plate_clear=self.plate_clear,
                plate_turnaround_s=self.config.plate_turnaround_s, running=running, timezone=self.site.timezone,
                guard_band_wh=self.guard.plan_band_wh + self.guard.soc_margin_wh(self.full_seen_s, start_s),
                never_fits=never_fits,
                waiting_notes=notes,
                protect_after_s=self.config.protect_after_h * 3600.0, pv_expected_w=expected_w,
                expected_after_s=self.config.expected_forecast_after_h * 3600.0)
            result = plan(inputs)
            self.last_plan = result
            self.last_summary = plan_summary(
                result, trigger=trigger, soc_pct=soc_pct, forecast_source=source,
                forecast_stale=self._forecast_stale or provisional, bias_factor=self.bias.factor,
                extra_waiting=missing)
            parts["plan"] = time.monotonic() - mark - parts["store"]
        mark = time.monotonic()
        await self.node.send_event("plan_updated", self.last_summary)
        parts["deliver"] = time.monotonic() - mark
        return result


