"""Year-long simulation: the real scheduler, plant and job stream against recorded weather.

``printnode simulate --weather FILE --policy POLICY [--battery-ah A --array-w W]``

The world (per 5-minute step; what the hourly file does not say is :mod:`node.study.world`):

* **Sun**: the array's output from the weather file's measured irradiance
  (pvlib chain in :func:`node.plan.forecast.compute_weather_year`; TMY3, TMY2,
  EPW, PVGIS), hourly averages downscaled to 5 minutes with intra-hour
  variability (each hour's energy kept).
* **Battery**: :class:`node.plan.energymodel.PlantSim` (the one plant model);
  policies read it through a drifting SoC estimator; brownouts are counted on
  the true SoC against the cutoff, reserve crossings separately.
* **Jobs**: :class:`node.study.jobstream.JobStream` keeps ``queue_target`` jobs
  queued.  After a print (or a failure) the plate must be cleared by a person:
  at the earliest ``plate_clear_delay_s`` later, only between 07:00 and 22:00
  local time.  Waits count every job queued, started or not.
* **Printer**: draws its job's energy profile while printing; paused (bed kept
  warm, hotend off, motors holding) it draws
  :func:`~node.plan.energymodel.pause_hold_w`; suspended it is switched off.
  Resuming from cold re-heats first.  A print suspended cold for more than 4 h
  has lost adhesion: failed.

What each policy sees (all share the same safety pause, below):

* ``planner`` — the scheduler on the hub-fed forecast: issued every 6 h from
  the file's effective cloud cover with the world's structured errors (bias,
  timing, errors shared between issues, growth with lead), through the
  forecast chain (a per-hour table of PV by cloud cover, at 20 C and 1 m/s like
  the live node), times the bias factor tracked against measured PV (hours with
  a full battery left out), at the pessimistic quantile of ``[forecast]``;
* ``planner-learned`` — on the forecast learnt from the node's own measured PV
  (:mod:`node.plan.learned`), its quantile calibrated on its own errors;
* ``planner-clearsky`` — on clear sky times the bias factor and the quantile;
* ``fit-greedy`` — starts the first queued job whose energy fits in the
  battery above the reserve (no forecast);
* ``greedy`` — starts a queued job as soon as the plate is clear;
* ``threshold`` — starts when the SoC is above 60 %;
* ``oracle`` — the same scheduler fed the real future PV with no margin (not
  a bound: :mod:`node.study.bound` is, see :func:`bound_for`).

The shared safety pause is the node's own (:mod:`node.plan.guard`, one
:class:`~node.plan.guard.EnergyGuard` built as the Planner builds it, decisions
by :func:`~node.plan.guard.energy_action`): a print whose next two steps, at its
draw and half the PV just measured, would take the battery below the planning
reserve is paused at the next layer boundary (switched off when the warm bed
would cross it too, or after ``warm_hold_max_s``).  Nothing starts or resumes
unless that guard passes with a ``resume_margin_pct`` margin.  A paused print
resumes when the guard allows (baselines) or when the plan schedules it (the
scheduler's policies).

Jobs that can never fit the plant (:mod:`node.plan.fit`, the node's check on
the site's clearest days from the same pvlib code) are held when queued, as the
node holds them: counted in ``never_fits``, kept out of the queue and the waits
(the person queues another), and added to the jobs the bound knows were handed
out.

Re-planning: hourly, on every event (print finished, failed, paused, plate
cleared, job queued) and when the estimated SoC departs from the planned
trajectory by more than ``deviation_soc_pct``.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Literal
from zoneinfo import ZoneInfo

import numpy as np

from node.plan.config import ForecastSection, PlannerSection
from node.plan.energymodel import EnergyModel, EnergyThresholds, LoadModel, PlantSim, pause_hold_w, printer_standby_w
from node.plan.fit import BestClearDay, FitCheck, check_fit
from node.plan.forecast import CLOUD_TABLE_PCT, BiasTracker, quantile_factors
from node.plan.guard import EnergyGuard, energy_action, reads_full
from node.plan.learned import LearnedForecast
from node.plan.quantile import LeadCalibration, spill_factor
from node.plan.schedule import (
    DEVIATION_INTERVAL_S,
    Plan,
    PlanInputs,
    PlanJob,
    RunningPrint,
    plan,
    plan_deviation,
    profile_to_steps,
    rest_wh_s,
)
from node.plan.sungate import RecentPv, sun_wait
from node.power.plant import BatteryParams
from node.printer.profile import PrinterProfile, load_profile
from node.study.bound import Bound, feasible_start_hours, upper_bound
from node.study.jobstream import JobStream, SimJob
from node.study.world import HARDER, SocEstimator, World, downscale, hub_forecast_cloud_pct

Policy = Literal["planner", "planner-learned", "planner-clearsky", "fit-greedy", "greedy", "threshold", "oracle"]
POLICIES: tuple[Policy, ...] = ("planner", "planner-learned", "planner-clearsky", "fit-greedy", "greedy", "threshold",
                                "oracle")
#: the policies that run the scheduler (and re-plan); the rest are baselines without a plan
PLANNING: tuple[Policy, ...] = ("planner", "planner-learned", "planner-clearsky", "oracle")
#: the policies whose quantile is calibrated on their own forecast's errors (node.plan.quantile)
CALIBRATED: tuple[Policy, ...] = ("planner", "planner-learned")

#: the default system of config/node.example.toml: 1.2 kWh LiFePO4, 4S, ~94 Ah
DEFAULT_BATTERY = BatteryParams(chemistry="lifepo4", cells=4, capacity_ah=94.0, internal_resistance_ohm=0.02,
                                charge_efficiency=0.97, peukert_exponent=1.03, max_charge_a=30.0)

SUSPENDED_FAIL_S = 4 * 3600.0
THRESHOLD_START_SOC = 0.60
#: the longest wait the issue accepts (#15: "no job waits over 7 days unless flagged as never fitting")
WEEK_H = 7 * 24.0
FORECAST_ISSUE_EVERY_H = 6


# --- weather and forecasts, computed once per file -------------------------------------------------
@dataclass
class WeatherYear:
    """Everything pvlib said about one weather file, as numpy arrays (hourly), and the site."""

    path: str
    site: dict
    start_s: float
    pv_w: np.ndarray              # (hours,) truth
    cloud_cover_pct: np.ndarray   # (hours,) effective
    pv_by_cloud_w: np.ndarray     # (11, hours)
    timezone: str

    array: dict = field(default_factory=dict)
    best_day: BestClearDay | None = None   # the site's best clear-sky day (node.plan.fit), from the worker
    #: per-step series computed once and shared by every policy and seed of a run (see true_pv_steps)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def load(cls, path: str, array: dict | None = None) -> WeatherYear:
        """Run pvlib on ``path`` (TMY3, TMY2, EPW, PVGIS CSV/JSON) for ``array`` (an ArraySection dump)."""
        from node.plan.forecast import run_in_worker
        from node.power.config import ArraySection

        array = ArraySection.model_validate(array or {}).model_dump()
        raw = run_in_worker(_load_in_worker, path, array, timeout_s=600)
        return cls(path=path, site=raw["site"], start_s=raw["start_s"], pv_w=np.asarray(raw["pv_w"]),
                   cloud_cover_pct=np.asarray(raw["cloud_cover_pct"]),
                   pv_by_cloud_w=np.asarray(raw["pv_by_cloud_w"]), timezone=fixed_offset_zone(raw["site"]),
                   array=array, best_day=BestClearDay.model_validate(raw["best_day"]))

    @property
    def hours(self) -> int:
        return len(self.pv_w)

    def truth_5min(self, step_s: float) -> np.ndarray:
        """The hourly averages interpolated at step mid-points, over the year (wrapping)."""
        return self._interp(self.pv_w, step_s)

    @property
    def clear_pv_w(self) -> np.ndarray:
        """The forecast chain's clear-sky PV per hour (what ``forecast.source = "clear_sky"`` plans on)."""
        return self.pv_by_cloud_w[0]

    def clear_5min(self, step_s: float) -> np.ndarray:
        key = ("clear", step_s)
        if key not in self._cache:
            self._cache[key] = self._interp(self.clear_pv_w, step_s)
        return self._cache[key]

    def _interp(self, hourly: np.ndarray, step_s: float) -> np.ndarray:
        n = int(self.hours * 3600 / step_s)
        t_h = (np.arange(n) + 0.5) * step_s / 3600.0
        hour_mid = np.arange(self.hours + 2) - 0.5  # hour h covers [h, h+1); wrap on both sides
        values = np.concatenate([[hourly[-1]], hourly, [hourly[0]]])
        return np.maximum(0.0, np.interp(t_h, hour_mid, values))

    def describe_plant(self) -> str:
        a = self.array
        return (f"{a.get('peak_w', 0):.0f} Wp at {a.get('tilt_deg', 0):.0f} deg tilt facing "
                f"{a.get('azimuth_deg', 0):.0f} deg, {a.get('losses_pct', 0):.0f} % losses; site "
                f"{self.site['name']} ({self.site['latitude']:.2f}, {self.site['longitude']:.2f}), "
                f"{self.site.get('format', '?')} file")

    def pv_from_cloud(self, hour_index: np.ndarray, cloud_pct: np.ndarray) -> np.ndarray:
        """The forecast chain's PV at each (hour, cloud cover), interpolated in the table."""
        position = np.clip(cloud_pct, 0.0, 100.0) / (CLOUD_TABLE_PCT[1] - CLOUD_TABLE_PCT[0])
        lo = np.minimum(position.astype(int), len(CLOUD_TABLE_PCT) - 2)
        frac = position - lo
        h = hour_index % self.hours
        return self.pv_by_cloud_w[lo, h] * (1.0 - frac) + self.pv_by_cloud_w[lo + 1, h] * frac


def fixed_offset_zone(site: dict) -> str:
    """TMY files carry a fixed UTC offset (no daylight saving): a fixed-offset zone."""
    offset_h = site["utc_offset_h"]
    return f"Etc/GMT{'+' if offset_h <= 0 else '-'}{abs(int(offset_h))}" if offset_h else "UTC"


def _load_in_worker(path: str, array: dict) -> dict:
    """Worker entry: the weather year and the site's best clear-sky day, by the node's own code
    (:func:`node.plan.forecast.compute_best_clear_day`), in one spawned process."""
    from node.plan.forecast import BestDayRequest, compute_best_clear_day, compute_weather_year
    from node.power.config import ArraySection, SiteSection

    raw = compute_weather_year(path, array)
    site = SiteSection(latitude=raw["site"]["latitude"], longitude=raw["site"]["longitude"],
                       altitude_m=raw["site"]["altitude_m"], timezone=fixed_offset_zone(raw["site"]))
    raw["best_day"] = compute_best_clear_day(BestDayRequest(site=site, array=ArraySection.model_validate(array))
                                             .model_dump(mode="json"))
    return raw


@dataclass
class ForecastArchive:
    """Every hub-fed forecast of the year, issued every 6 h, hourly values for ``lead_hours`` ahead.

    Cloud cover with the structured errors of :mod:`node.study.world` (bias, timing, errors shared between
    issues, lead-time growth), then the forecast chain's PV at that cover (no future temperature or wind)."""

    issue_every_h: int
    lead_hours: int
    pv_w: np.ndarray  # (issues, lead_hours)

    @classmethod
    def build(cls, weather: WeatherYear, seed: int, lead_hours: int = 80,
              issue_every_h: int = FORECAST_ISSUE_EVERY_H, world: World = HARDER) -> ForecastArchive:
        cc = hub_forecast_cloud_pct(weather.cloud_cover_pct, world, seed, issue_every_h, lead_hours)
        valid_hour = np.arange(cc.shape[0])[:, None] * issue_every_h + np.arange(lead_hours)[None, :]
        return cls(issue_every_h, lead_hours, weather.pv_from_cloud(valid_hour, cc))

    def latest(self, hours_since_start: float) -> tuple[int, float]:
        """The index of the latest issued forecast and its issue hour."""
        issue = int(hours_since_start // self.issue_every_h)
        return issue, issue * self.issue_every_h

    def pv_steps(self, hours_since_start: float, n_steps: int, step_s: float) -> np.ndarray:
        issue, issue_h = self.latest(hours_since_start)
        t_h = hours_since_start - issue_h + (np.arange(n_steps) + 0.5) * step_s / 3600.0
        lead_mid = np.arange(self.lead_hours) + 0.5
        return np.interp(t_h, lead_mid, self.pv_w[issue])


# --- the simulated world ---------------------------------------------------------------------------
@dataclass
class SimSettings:
    days: int = 365
    start_day: int = 0
    step_s: float = 300.0
    seed: int = 1
    queue_target: int = 3
    initial_soc: float = 0.8
    plate_clear_delay_s: float = 600.0
    attended_hours: tuple[int, int] = (7, 22)
    cooldown_standby_s: float = 600.0
    battery: BatteryParams = DEFAULT_BATTERY
    thresholds: EnergyThresholds = field(default_factory=EnergyThresholds)
    planner: PlannerSection = field(default_factory=PlannerSection)
    forecast: ForecastSection = field(default_factory=ForecastSection)
    loads: LoadModel = field(default_factory=LoadModel)
    printer_profile: str = "ender3"
    world: World = HARDER


@dataclass
class ActivePrint:
    job: SimJob
    job_w: np.ndarray                  # per-step W of the whole profile
    started_s: float
    progress_s: float = 0.0            # seconds of the profile done
    state: Literal["printing", "paused", "suspended"] = "printing"
    paused_since_s: float = 0.0
    suspended_since_s: float = 0.0
    reheat_left_s: float = 0.0
    pause_at_s: float | None = None    # profile seconds of the layer boundary a pending pause waits for
    brownout: bool = False
    reserve_crossed: bool = False
    pause_positions_s: list[float] = field(default_factory=list)

    def draw_w(self, step_s: float) -> float:
        if self.reheat_left_s > 0:
            return self.job.heatup_w
        k = min(int(self.progress_s // step_s), len(self.job_w) - 1)
        return float(self.job_w[k])

    def remaining_w(self, step_s: float) -> np.ndarray:
        """Per-step draw from now to the end (re-heat first if cold)."""
        k = min(int(self.progress_s // step_s), len(self.job_w))
        rest = self.job_w[k:]
        if self.state == "suspended":
            reheat_steps = math.ceil(self.job.heatup_s / step_s)
            rest = np.concatenate([np.full(reheat_steps, self.job.heatup_w), rest])
        return rest

    def next_layer_boundary_s(self) -> float:
        """Profile seconds of the next layer boundary (heat-up counts as layer 0)."""
        printed_s = self.progress_s - self.job.heatup_s
        if printed_s <= 0:
            return self.progress_s
        layer_s = self.job.layer_s
        return self.job.heatup_s + math.ceil(printed_s / layer_s - 1e-9) * layer_s


@dataclass
class SimResult:
    policy: str
    weather: str
    site: str
    days: int
    prints_completed: int = 0
    prints_failed: int = 0
    brownouts: int = 0                 # prints during which the true SoC fell below the battery's cutoff
    reserve_crossings: int = 0         # prints during which the true SoC fell below the planning reserve
    pauses: int = 0                    # energy interruptions: a pause at a layer boundary
    suspensions: int = 0               # ... escalated to the printer switched off
    pause_hours: float = 0.0
    pv_used_wh: float = 0.0
    pv_lost_wh: float = 0.0
    pv_available_wh: float = 0.0
    print_energy_wh: float = 0.0
    mean_wait_hours: float = 0.0       # every job queued, started or not (never started: until the end)
    worst_wait_hours: float = 0.0
    p95_wait_hours: float = 0.0
    never_started: int = 0
    never_fits: int = 0                # jobs flagged as never fitting this plant when queued (node.plan.fit): held
    waits_over_week: int = 0           # jobs (started or not) that waited over WEEK_H
    waits_over_week_forced: int = 0    # ... of which no policy could have started uninterrupted within WEEK_H
    plant: str = ""
    replans: int = 0
    min_soc_pct_printing: float = 100.0
    resumed_after_pause: int = 0
    runtime_s: float = 0.0
    events: list[tuple[float, str, str, float]] = field(default_factory=list)   # (t_s, kind, job id, SoC)
    pauses_at: list[tuple[str, float, float, float]] = field(default_factory=list)  # job, at_s, heatup_s, layer_s
    #: with record_events: every job queued, (job id, wait h, forced wait h: ForcedWaits), never started
    #: ones until the run's end
    job_waits: list[tuple[str, float, float]] = field(default_factory=list)

    def as_json(self) -> dict:
        keys = ["policy", "weather", "site", "plant", "days", "prints_completed", "prints_failed", "brownouts",
                "reserve_crossings", "pauses", "suspensions", "pause_hours", "pv_used_wh", "pv_lost_wh",
                "pv_available_wh", "print_energy_wh", "mean_wait_hours", "worst_wait_hours", "p95_wait_hours",
                "never_started", "never_fits", "waits_over_week", "waits_over_week_forced",
                "replans", "min_soc_pct_printing", "resumed_after_pause", "runtime_s"]
        out = {k: getattr(self, k) for k in keys}
        for k, v in out.items():
            if isinstance(v, float):
                out[k] = round(v, 3)
        return out


class Simulation:
    """One policy, one weather year, one seed."""

    def __init__(self, weather: WeatherYear, policy: Policy, settings: SimSettings,
                 archive: ForecastArchive | None = None, record_events: bool = False) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r} (one of {', '.join(POLICIES)})")
        self.weather = weather
        self.policy = policy
        self.s = settings
        self.profile: PrinterProfile = load_profile(settings.printer_profile)
        self.archive = archive if archive is not None or policy != "planner" else ForecastArchive.build(
            weather, settings.seed, world=settings.world)
        self.record_events = record_events
        self.step_s = settings.step_s
        self.clear_w = weather.clear_5min(self.step_s)
        self.truth_w = true_pv_steps(weather, settings)
        self.model = EnergyModel.from_params(settings.battery)
        self.reserve_frac = settings.planner.reserve_pct / 100.0
        self.cutoff_frac = settings.thresholds.cutoff_pct / 100.0
        self.reserve_wh = self.reserve_frac * self.model.capacity_wh
        # the node's own guard (node.plan.guard), at the study's step
        self.guard = EnergyGuard.from_config(settings.planner.model_copy(update={"step_s": self.step_s}),
                                             self.model, settings.loads.base_load_w)
        self._fit_by_name: dict[str, FitCheck] = {}
        self._plan_jobs: dict[str, PlanJob] = {}
        self.low_battery = settings.thresholds.low_battery_pct / 100.0
        self.horizon_steps = int(settings.planner.horizon_h * 3600 / self.step_s)
        self.quantile = np.asarray(quantile_factors(self.horizon_steps, self.step_s, settings.forecast))
        self.tz = ZoneInfo(weather.timezone)
        self.utc_offset_s = float(weather.site.get("utc_offset_h", 0.0)) * 3600.0
        self.standby_w = printer_standby_w(self.profile)

    # --- helpers ------------------------------------------------------------------------------
    def _local_hour(self, t_s: float) -> int:
        return datetime.fromtimestamp(t_s, tz=UTC).astimezone(self.tz).hour

    def _log(self, t_s: float, kind: str, detail: str) -> None:
        if self.record_events:
            self.result.events.append((t_s, kind, detail, self.plant.soc))

    def _forecast(self, k: int, t_s: float) -> tuple[np.ndarray, np.ndarray | None]:
        """The PV the plan is made on (the policy's quantile), and the expected PV it came from (None for the
        oracle, which knows the truth)."""
        n = self.horizon_steps
        idx = (k + np.arange(n)) % len(self.truth_w)
        if self.policy == "oracle":
            return self.truth_w[idx], None
        if self.policy == "planner-clearsky":
            expected = self.clear_w[idx] * self.bias.factor
            return expected * self.quantile, expected
        expected = self._calibrated_expected_w(k, t_s, n)
        if self.last_throttled:   # the battery is full, the sun spilled: node.plan.quantile.spill_factor
            return expected * spill_factor(), expected
        return expected * self._lead_factors((np.arange(n) + 0.5) * self.step_s / 3600.0), expected

    def _lead_factors(self, lead_h: np.ndarray) -> np.ndarray:
        """The calibrated quantile per step (node.plan.quantile), recomputed only when a sample was added."""
        if self._factors_version != self.calibration.version:
            if self._lead_bins is None:   # the plan's steps always have the same leads: bins and fallback once
                self._lead_bins = np.array([self.calibration.bin_of(x) for x in lead_h.tolist()])
                self._lead_fallback = np.array([self.calibration.fallback(x) for x in lead_h.tolist()])
            table = self.calibration.bin_table()
            own = np.array([np.nan if f is None else f for f in table])[self._lead_bins]
            self._factors = np.where(np.isnan(own), self._lead_fallback, own)
            self._factors_version = self.calibration.version
        return self._factors

    def _learned_expected_w(self, k: int, t_s: float, n: int) -> np.ndarray:
        """The learned forecast's expected PV for ``n`` steps from step ``k`` (time ``t_s``), no quantile."""
        idx = (k + np.arange(n)) % len(self.truth_w)
        months, hours = self._month_hour(t_s + np.arange(n) * self.step_s)
        lead_h = (np.arange(n) + 0.5) * self.step_s / 3600.0
        return np.asarray(self.learned.expected_w(self.clear_w[idx], months, hours, lead_h))

    def _hub_expected_w(self, t_s: float, n: int) -> np.ndarray:
        """The hub's latest forecast issued before ``t_s`` times the bias factor, for ``n`` steps, no quantile."""
        assert self.archive is not None
        return self.archive.pv_steps((t_s - self.weather.start_s) / 3600.0, n, self.step_s) * self.bias.factor

    def _calibrated_expected_w(self, k: int, t_s: float, n: int) -> np.ndarray:
        """The expected PV (no quantile) of the calibrated source this policy plans on: the learned forecast, or
        the hub's (CALIBRATED)."""
        if self.policy == "planner-learned":
            return self._learned_expected_w(k, t_s, n)
        return self._hub_expected_w(t_s, n)

    def _issue_forecast(self, k: int, t_s: float) -> None:
        """At the top of an hour: the expected PV of the forecast in use (learned, or the hub's latest issue
        with the bias factor) for the calibration's horizon, issued."""
        per_h = round(3600 / self.step_s)
        n = self.calibration.horizon_h * per_h
        expected_wh = self._calibrated_expected_w(k, t_s, n) * self.step_s / 3600.0
        self.calibration.issue(int(t_s // 3600), expected_wh.reshape(-1, per_h).sum(axis=1).tolist())

    def _month_hour(self, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Local (fixed-offset) month 1..12 and hour 0..23 of each instant."""
        local = np.asarray(t_s) + self.utc_offset_s
        days = np.floor(local / 86400.0).astype("datetime64[D]")
        months = (days.astype("datetime64[M]").astype(int) % 12) + 1
        hours = ((local % 86400.0) // 3600.0).astype(int)
        return months, hours

    def _plan(self, k: int, t_s: float) -> Plan:
        self.result.replans += 1
        jobs = [self._plan_job(j) for j in self.queue]
        pv_w, expected_w = self._forecast(k, t_s)
        month = datetime.fromtimestamp(t_s, tz=ZoneInfo(self.weather.timezone)).month
        notes = {j.job_id: note for j in self.queue
                 if (check := self.fit_check(j)) is not None and (note := check.season_note(month)) is not None}
        running = None
        if self.active is not None:
            running = RunningPrint(self.active.job.job_id, self.active.job.name,
                                   self.active.remaining_w(self.step_s), paused=self.active.state != "printing")
        other = None
        if self.s.loads.other_loads_w_by_hour is not None:
            other = [self.s.loads.other_w(self._local_hour(t_s + i * self.step_s)) for i in range(self.horizon_steps)]
        inputs = PlanInputs(
            t0_s=t_s, step_s=self.step_s, pv_w=pv_w, pv_expected_w=expected_w, energy=self.model,
            energy_wh=self.soc_seen * self.model.capacity_wh, reserve_frac=self.reserve_frac, jobs=jobs,
            base_load_w=self.s.loads.base_load_w, other_loads_w=other, plate_clear=self.plate_clear,
            plate_turnaround_s=self.s.planner.plate_turnaround_s, running=running,
            timezone=self.weather.timezone,
            guard_band_wh=self.guard.plan_band_wh + self.guard.soc_margin_wh(self.full_seen_s, t_s),
            waiting_notes=notes, protect_after_s=self.s.planner.protect_after_h * 3600.0,
            expected_after_s=self.s.planner.expected_forecast_after_h * 3600.0)
        return plan(inputs)

    def _plan_job(self, job: SimJob) -> PlanJob:
        """The job as the scheduler sees it, kept while it is queued (its per-step draw is converted once)."""
        cached = self._plan_jobs.get(job.job_id)
        if cached is None:
            if len(self._plan_jobs) > 64:
                queued = {j.job_id for j in self.queue}
                self._plan_jobs = {k: v for k, v in self._plan_jobs.items() if k in queued}
            cached = self._plan_jobs[job.job_id] = PlanJob(job.job_id, job.name, job.power_profile, job.priority,
                                                           job.deadline_s, job.queue_seq, queued_s=job.queued_s)
        return cached

    def _guard_ok(self, draw_w: float, resume: bool = False) -> bool:
        """The node's guard (:class:`node.plan.guard.EnergyGuard`) on the estimated SoC and the PV just measured."""
        return self.guard.ok(self.soc_seen * self.model.capacity_wh, draw_w, self.last_pv_w, resume=resume)

    def fit_check(self, job: SimJob) -> FitCheck | None:
        """The node's "never fits" check (node.plan.fit) of a job when it is queued, once per kind of job."""
        if self.weather.best_day is None:
            return None
        if job.name not in self._fit_by_name:
            other = None
            if self.s.loads.other_loads_w_by_hour is not None:
                other = [self.s.loads.other_w(int(k * self.step_s // 3600)) for k in range(round(86400 / self.step_s))]
            self._fit_by_name[job.name] = check_fit(profile_to_steps(job.power_profile, self.step_s),
                                                    self.weather.best_day, self.step_s, self.model, self.reserve_frac,
                                                    self.s.loads.base_load_w, other)
        return self._fit_by_name[job.name]

    def _hold_w(self, job: SimJob) -> float:
        return pause_hold_w(self.profile, job.bed_c, self.s.planner.ambient_c)

    # --- the run --------------------------------------------------------------------------------
    def run(self, on_step: Callable[[Simulation, int, float], None] | None = None) -> SimResult:
        wall0 = time.perf_counter()
        s = self.s
        self.result = SimResult(self.policy, self.weather.path.rsplit("/", 1)[-1], self.weather.site["name"], s.days)
        self.plant = PlantSim(s.battery, s.initial_soc)
        self.stream = JobStream(self.profile, seed=s.seed, ambient_c=s.planner.ambient_c)
        self.bias = BiasTracker(s.forecast.bias_halflife_h)
        self.estimator = SocEstimator(s.world, s.seed, self.step_s)
        self.soc_seen = self.estimator.read(self.plant.soc)
        self.full_seen_s: float | None = None
        self.learned = LearnedForecast(self.step_s)
        normal = self.quantile
        self.calibration = LeadCalibration(
            s.forecast.calibrated_quantile,
            lambda lead_h: float(normal[min(len(normal) - 1, int(lead_h * 3600 / self.step_s))]))
        self._factors_version = -1
        self._lead_bins: np.ndarray | None = None
        hour_wh, hour_valid = 0.0, True
        self.result.plant = (f"{s.battery.capacity_ah:.0f} Ah {s.battery.chemistry} ({s.battery.cells} cells, "
                             f"{self.model.capacity_wh:.0f} Wh, {s.battery.max_charge_a:.0f} A charge); "
                             f"{self.weather.describe_plant()}")
        self.queue: list[SimJob] = []
        self.active: ActivePrint | None = None
        self.plate_clear = True
        self.plate_dirty_since_s = 0.0
        self.cooldown_until_s = 0.0
        self.last_pv_w = 0.0
        self.recent_pv = RecentPv(s.planner.sun_shown_window_min * 60.0)
        self.last_throttled = False
        self.base_w = s.loads.base_load_w
        current_plan: Plan | None = None
        next_replan_s = -math.inf
        last_deviation_s = -math.inf
        waits_h: list[float] = []
        steps_per_day = int(86400 / self.step_s)
        k0 = s.start_day * steps_per_day
        n_steps = s.days * steps_per_day
        uses_plan = self.policy in PLANNING
        dt = self.step_s
        pause_s_total = 0.0
        queued_at: dict[str, float] = {}
        started: list[tuple[SimJob, float]] = []
        learned = self.policy == "planner-learned"
        calibrated = self.policy in CALIBRATED

        for i in range(n_steps):
            k = (k0 + i) % len(self.truth_w)
            t_s = self.weather.start_s + (k0 + i) * dt
            self.soc_seen = self.estimator.read(self.plant.soc)
            if reads_full(100.0 * self.soc_seen):
                self.full_seen_s = t_s
            replan = False
            if calibrated and t_s % 3600.0 < dt / 2:
                # the top of an hour: the last one is scored, the next forecast issued (node.plan.quantile)
                if i > 0:
                    self.calibration.close_hour(int(t_s // 3600) - 1, hour_wh, hour_valid)
                self._issue_forecast(k, t_s)
                hour_wh, hour_valid = 0.0, True
            # 1. the queue stays non-empty
            while len(self.queue) < s.queue_target:
                new_job = self.stream.next_job(t_s)
                check = self.fit_check(new_job)
                if check is not None and not check.fits:
                    # held with its reason, as the node does; the person queues another (it never counts as waiting)
                    self.result.never_fits += 1
                    self._log(t_s, "never_fits", new_job.job_id)
                    continue
                self.queue.append(new_job)
                queued_at[new_job.job_id] = t_s
                replan = True
            # 2. a person clears the plate (not at night)
            if not self.plate_clear and t_s >= self.plate_dirty_since_s + s.plate_clear_delay_s:
                hour = self._local_hour(t_s)
                if s.attended_hours[0] <= hour < s.attended_hours[1]:
                    self.plate_clear = True
                    replan = True
                    self._log(t_s, "plate_cleared", "")
            # 3. plans
            if uses_plan:
                # the node's rule: SoC or PV departing from the plan re-plans, at most every 15 min
                if current_plan is not None and t_s - last_deviation_s >= DEVIATION_INTERVAL_S and plan_deviation(
                        current_plan, t_s, self.soc_seen * 100.0, self.last_pv_w, pv_held_back=self.last_throttled,
                        deviation_soc_pct=s.planner.deviation_soc_pct, array_peak_w=self.weather.array["peak_w"]):
                    last_deviation_s = t_s
                    replan = True
                if replan or t_s >= next_replan_s:
                    current_plan = self._plan(k, t_s)
                    next_replan_s = t_s + s.planner.replan_interval_s
            # 4. safety guard and resume for the active print
            ap = self.active
            if ap is not None:
                if uses_plan:
                    start_s = current_plan.start_of(ap.job.job_id) if current_plan is not None else None
                    wants = start_s is not None and start_s <= t_s + dt / 2
                else:
                    wants = True
                action, _ = energy_action(
                    self.guard, ap.state, energy_wh=self.soc_seen * self.model.capacity_wh, pv_w=self.last_pv_w,
                    draw_w=ap.draw_w(dt), hold_w=self._hold_w(ap.job),
                    resume_w=ap.job.heatup_w if ap.state == "suspended" else ap.draw_w(dt),
                    paused_for_s=t_s - ap.paused_since_s, switched_off=ap.state == "suspended",
                    plan_starts_it=wants,
                    rest=partial(rest_wh_s, ap.job.power_profile, ap.progress_s) if ap.state == "printing" else None)
                if action == "pause":
                    ap.state = "paused"
                    ap.paused_since_s = t_s
                    ap.pause_at_s = ap.next_layer_boundary_s()
                    ap.pause_positions_s.append(ap.pause_at_s)
                    self.result.pauses_at.append((ap.job.job_id, ap.pause_at_s, ap.job.heatup_s, ap.job.layer_s))
                    self.result.pauses += 1
                    replan = True
                    self._log(t_s, "pause", ap.job.job_id)
                elif action == "off":
                    ap.state = "suspended"
                    ap.suspended_since_s = t_s
                    self.result.suspensions += 1
                    self._log(t_s, "suspend", ap.job.job_id)
                elif action == "resume":
                    if ap.state == "suspended":
                        ap.reheat_left_s = ap.job.heatup_s
                    ap.state = "printing"
                    ap.pause_at_s = None
                    self.result.resumed_after_pause += 1
                    self._log(t_s, "resume", ap.job.job_id)
                elif ap.state == "suspended" and t_s - ap.suspended_since_s >= SUSPENDED_FAIL_S:
                    self._finish(ap, t_s, failed=True)
                    replan = True
            # 5. starting a job
            if self.active is None and self.plate_clear and self.queue:
                job = self._choose_start(current_plan, t_s)
                if job is not None:
                    job_w = np.asarray(self._plan_job(job).steps_w(dt))   # converted once per job, not per try
                    if self._guard_ok(float(job_w[0]), resume=True):
                        self.queue.remove(job)
                        self.active = ActivePrint(job, job_w, started_s=t_s)
                        waits_h.append((t_s - job.queued_s) / 3600.0)
                        queued_at.pop(job.job_id, None)
                        started.append((job, t_s))
                        self._log(t_s, "start", job.job_id)
                        replan = True
            # 6. the step itself: loads, plant, progress
            load_w = self.base_w + (s.loads.other_w(self._local_hour(t_s))
                                    if s.loads.other_loads_w_by_hour is not None else 0.0)
            printer_on = False
            ap = self.active
            print_w = 0.0
            if ap is not None:
                if ap.state == "printing":
                    printer_on = True
                    print_w = self._advance_print(ap, dt)
                elif ap.state == "paused":
                    printer_on = True
                    print_w = self._finish_layer_then_hold(ap, dt)
                    pause_s_total += dt
                else:
                    pause_s_total += dt
            elif t_s < self.cooldown_until_s:
                print_w = self.standby_w
            pv_w = float(self.truth_w[k])
            step = self.plant.step(pv_w, load_w + print_w, dt)
            self.result.pv_available_wh += pv_w * dt / 3600.0
            self.result.print_energy_wh += print_w * dt / 3600.0 if printer_on else 0.0
            # what the node measures: the charger's PV (throttled when the battery is full)
            measured_pv_w = step.pv_used_w
            throttled = step.pv_lost_w > 1.0
            if self.policy == "planner" and not throttled:
                self.bias.add(t_s, measured_pv_w,
                              float(self.archive.pv_steps((t_s - self.weather.start_s) / 3600.0, 1, dt)[0]), dt)
            elif self.policy == "planner-clearsky" and not throttled:
                self.bias.add(t_s, measured_pv_w, float(self.clear_w[k]), dt)
            elif learned:
                month, hour = self._month_hour(np.array([t_s]))
                self.learned.observe(int(month[0]), int(hour[0]), measured_pv_w, float(self.clear_w[k]),
                                     not throttled)
            if calibrated:
                hour_wh += measured_pv_w * dt / 3600.0
                hour_valid = hour_valid and not throttled
            self.last_pv_w = measured_pv_w
            self.recent_pv.add(t_s, measured_pv_w, dt, limited=throttled)
            self.last_throttled = throttled
            if ap is not None and printer_on:
                self.result.min_soc_pct_printing = min(self.result.min_soc_pct_printing, 100.0 * step.soc)
                if step.soc < self.reserve_frac - 1e-9 and not ap.reserve_crossed:
                    ap.reserve_crossed = True
                    self.result.reserve_crossings += 1
                    self._log(t_s, "reserve_crossed", ap.job.job_id)
                if step.soc < self.cutoff_frac - 1e-9 and not ap.brownout:
                    ap.brownout = True
                    self.result.brownouts += 1
                    self._log(t_s, "brownout", ap.job.job_id)
            if ap is not None and ap.state == "printing" and ap.progress_s >= ap.job.duration_s - 1e-6:
                self._finish(ap, t_s + dt, failed=False)
                replan = True
            if replan and uses_plan:
                next_replan_s = -math.inf
            if on_step is not None:
                on_step(self, i, t_s)

        self.result.pv_used_wh = self.plant.pv_used_wh
        self.result.pv_lost_wh = self.plant.pv_lost_wh
        self.result.pause_hours = pause_s_total / 3600.0
        end_s = self.weather.start_s + (k0 + n_steps) * dt
        never = [(end_s - q) / 3600.0 for q in queued_at.values()]
        all_waits = np.asarray(waits_h + never) if waits_h or never else np.zeros(1)
        self.result.never_started = len(never)
        self.result.mean_wait_hours = float(np.mean(all_waits))
        self.result.worst_wait_hours = float(np.max(all_waits))
        self.result.p95_wait_hours = float(np.percentile(all_waits, 95))
        every_wait = started + [(job, end_s) for job in self.queue]
        forced = ForcedWaits(self.weather, self.s)
        long_waits = [forced.hours(job) for job, at in every_wait if at - job.queued_s > WEEK_H * 3600.0]
        self.result.waits_over_week = len(long_waits)
        self.result.waits_over_week_forced = sum(h > WEEK_H for h in long_waits)
        if self.record_events:   # every job's (the feasible hours are kept per kind: no second computation)
            self.result.job_waits = [(job.job_id, (at - job.queued_s) / 3600.0, forced.hours(job))
                                     for job, at in every_wait]
        self.result.runtime_s = time.perf_counter() - wall0
        return self.result

    def _choose_start(self, current_plan: Plan | None, t_s: float) -> SimJob | None:
        if self.policy == "greedy":
            return self.queue[0]
        if self.policy == "threshold":
            return self.queue[0] if self.soc_seen > THRESHOLD_START_SOC else None
        if self.policy == "fit-greedy":
            # the 15-line rule: the first queued job whose energy fits in the battery above the reserve
            above_wh = (self.soc_seen - self.reserve_frac) * self.model.capacity_wh
            for job in self.queue:
                if job.energy_wh <= above_wh:
                    return job
            return None
        if current_plan is None or not current_plan.planned:
            return None
        first = current_plan.planned[0]
        if first.start_s > t_s + self.step_s / 2:
            return None
        if self.s.planner.sun_shown_window_min > 0 and self.policy != "oracle":   # the oracle plans on the truth
            above_wh = (self.soc_seen - self.reserve_frac) * self.model.capacity_wh
            if sun_wait(first.energy_wh, above_wh, self.recent_pv.mean_w(t_s), current_plan.pv_w_at(t_s)):
                return None
        for job in self.queue:
            if job.job_id == first.job_id:
                return job
        return None

    def _advance_print(self, ap: ActivePrint, dt: float) -> float:
        """Advance one step; return the average draw.  A pending pause lands on a layer boundary."""
        energy_ws = 0.0
        left = dt
        if ap.reheat_left_s > 0:
            used = min(left, ap.reheat_left_s)
            energy_ws += used * ap.job.heatup_w
            ap.reheat_left_s -= used
            left -= used
        while left > 1e-9 and ap.progress_s < ap.job.duration_s - 1e-9:
            k = min(int(ap.progress_s // dt), len(ap.job_w) - 1)
            chunk = min(left, (k + 1) * dt - ap.progress_s, ap.job.duration_s - ap.progress_s)
            chunk = max(chunk, 1e-6)
            energy_ws += chunk * float(ap.job_w[k])
            ap.progress_s += chunk
            left -= chunk
        return energy_ws / dt

    def _finish_layer_then_hold(self, ap: ActivePrint, dt: float) -> float:
        """A pause lands on the next layer boundary: print up to it, hold the bed warm for the rest."""
        printed_ws = 0.0
        left = dt
        if ap.pause_at_s is not None and ap.pause_at_s > ap.progress_s + 1e-9:
            chunk = min(left, ap.pause_at_s - ap.progress_s)
            printed_ws = chunk * ap.draw_w(dt)
            ap.progress_s += chunk
            left -= chunk
        if ap.pause_at_s is not None and ap.progress_s >= ap.pause_at_s - 1e-9:
            ap.pause_at_s = None
        return (printed_ws + left * self._hold_w(ap.job)) / dt

    def _finish(self, ap: ActivePrint, t_s: float, failed: bool) -> None:
        if failed:
            self.result.prints_failed += 1
            self._log(t_s, "failed", ap.job.job_id)
        else:
            self.result.prints_completed += 1
            self._log(t_s, "completed", ap.job.job_id)
            self.cooldown_until_s = t_s + self.s.cooldown_standby_s
        self.active = None
        self.plate_clear = False
        self.plate_dirty_since_s = t_s


def true_pv_steps(weather: WeatherYear, settings: SimSettings) -> np.ndarray:
    """The PV the plant gets per step over the whole file: hourly values downscaled by the world (computed once
    per weather file, step, world and seed: every policy of a run shares it)."""
    key = ("truth", settings.step_s, settings.world, settings.seed)
    if key not in weather._cache:
        weather._cache[key] = downscale(weather.pv_w, weather.clear_pv_w, settings.step_s, settings.world,
                                        settings.seed, weather.truth_5min(settings.step_s))
    return weather._cache[key]


class ForcedWaits:
    """How long any policy must keep a job waiting to print it uninterrupted: from its queueing to the first hour
    of the run at which it could start and end above the reserve less the guard's finish allowance (the lowest a
    print goes without a pause, node.plan.guard) (:func:`node.study.bound.feasible_start_hours`: perfect
    foresight, the battery as full as it can be then); to the run's end if there is none.  A lower bound on its
    wait, unless a policy starts it and pauses it.  The run's hours are read once, the feasible hours once per
    job kind (name)."""

    def __init__(self, weather: WeatherYear, settings: SimSettings) -> None:
        self.weather, self.settings = weather, settings
        self._run: tuple[np.ndarray, np.ndarray, float, float] | None = None
        self._feasible: dict[str, np.ndarray] = {}

    def hours(self, job: SimJob) -> float:
        s = self.settings
        if job.name not in self._feasible:
            if self._run is None:
                self._run = hourly_run_inputs(self.weather, s)
            pv_hourly_wh, base_wh, _, _ = self._run
            floor_frac = (s.planner.reserve_pct - s.planner.finish_allowance_pct) / 100.0
            self._feasible[job.name] = feasible_start_hours(job.power_profile, pv_hourly_wh, base_wh, s.battery,
                                                            floor_frac, s.step_s)
        queued_h = (job.queued_s - (self.weather.start_s + s.start_day * 86400.0)) / 3600.0
        feasible = self._feasible[job.name]
        i = int(np.searchsorted(feasible, math.floor(queued_h)))
        first_h = float(feasible[i]) if i < len(feasible) else s.days * 24.0
        return max(0.0, first_h - queued_h)


def hourly_run_inputs(weather: WeatherYear, settings: SimSettings) -> tuple[np.ndarray, np.ndarray, float, float]:
    """The run's hours as the bound sees them: PV (Wh per hour, seed-free, see below), base load (Wh per hour),
    the run's first second and the site's UTC offset (s)."""
    steps_per_hour = round(3600 / settings.step_s)
    truth = true_pv_steps(weather, settings)
    k0 = settings.start_day * 24 * steps_per_hour
    n = settings.days * 24 * steps_per_hour
    steps = (k0 + np.arange(n)) % len(truth)
    pv_hourly_wh = truth[steps].reshape(-1, steps_per_hour).sum(axis=1) * settings.step_s / 3600.0
    # the world's downscaling keeps each hour's energy, so every seed has the same hourly PV but for rounding:
    # the bound takes the seed-free hours, raised by a hair (more sun only raises a bound), so its hours' LP is
    # shared by every seed (node.study.bound._TimePart); where a seed's hour is higher still, that one counts
    smooth = weather.truth_5min(settings.step_s)
    seed_free = smooth[steps].reshape(-1, steps_per_hour).sum(axis=1) * settings.step_s / 3600.0 * (1 + 1e-9) + 1e-9
    pv_hourly_wh = seed_free if np.all(pv_hourly_wh <= seed_free) else np.maximum(pv_hourly_wh, seed_free)
    start_s = weather.start_s + k0 * settings.step_s
    offset_s = float(weather.site.get("utc_offset_h", 0.0)) * 3600.0
    local_hours = ((start_s + np.arange(settings.days * 24) * 3600.0 + offset_s) % 86400.0 // 3600.0).astype(int)
    base_wh = np.array([settings.loads.base_load_w + settings.loads.other_w(int(h)) for h in local_hours])
    return pv_hourly_wh, base_wh, start_s, offset_s


def bound_for(weather: WeatherYear, settings: SimSettings, failed: int, resumed: int, tight_passes: int = 0,
              never_fits: int = 0, decomposed: bool = True) -> Bound:
    """The LP upper bound (:mod:`node.study.bound`) on prints completed in this run by a policy that failed
    at most ``failed`` prints and resumed at most ``resumed`` paused ones.  ``never_fits``: jobs of the stream
    held as never fitting (node.plan.fit); the policy drew that many more jobs from the stream, so the bound's
    count of jobs handed out grows by as many (they are counted like failures)."""
    pv_hourly_wh, base_wh, start_s, offset_s = hourly_run_inputs(weather, settings)
    return upper_bound(pv_hourly_wh, base_wh, start_s, offset_s, settings.battery, settings.initial_soc,
                       seed=settings.seed, queue_target=settings.queue_target, failed=failed + never_fits,
                       resumed=resumed,
                       start_step_s=settings.step_s,
                       attended=settings.attended_hours, plate_clear_delay_s=settings.plate_clear_delay_s,
                       printer_profile=settings.printer_profile, ambient_c=settings.planner.ambient_c,
                       tight_passes=tight_passes, decomposed=decomposed)


# --- several policies on one file ------------------------------------------------------------------
def battery_of(capacity_ah: float) -> BatteryParams:
    """The default bank resized: same chemistry and cells, charge current 1 C at most (the 30 A charger)."""
    return DEFAULT_BATTERY.model_copy(update={"capacity_ah": capacity_ah,
                                              "max_charge_a": min(DEFAULT_BATTERY.max_charge_a, capacity_ah)})


def run_policies(weather_path: str, policies: tuple[Policy, ...] = POLICIES,
                 settings: SimSettings | None = None, array: dict | None = None) -> list[SimResult]:
    """Compute the weather and the forecast archive once, then run each policy."""
    settings = settings or SimSettings()
    weather = WeatherYear.load(weather_path, array)
    archive = ForecastArchive.build(weather, settings.seed, world=settings.world) if "planner" in policies else None
    return [Simulation(weather, policy, settings, archive).run() for policy in policies]
