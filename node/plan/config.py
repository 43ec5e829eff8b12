"""Config sections of the energy planner: ``[forecast]``, ``[planner]`` (the PV array, ``[array]``,
is the plant's: :mod:`node.power.config`).

Light on purpose (pydantic only): ``node.config`` imports this module, and the
daemon must not pull numpy, let alone pvlib, in through its config.

The default system (documented in ``config/node.example.toml``): 400 Wp of
panels at latitude tilt facing south, a 1.2 kWh LiFePO4 bank (4S, ~94 Ah), an
Ender-3-class printer, no other loads.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from node.section import Section


class ForecastSection(Section):
    """Where cloud-cover forecasts come from, when they go stale, and how pessimistic to plan."""

    source: Literal["auto", "hub", "learned", "clear_sky", "file"] = Field(
        "auto",
        description="auto: the best available, named in status and each plan -- the hub's cloud forecast while "
                    "fresh, else the forecast learnt from this node's own PV once it has learned_min_days of "
                    "history, else clear sky; hub / learned / clear_sky / file: that one only")
    file: str | None = Field(None, description="a cloud-cover forecast JSON file when source = 'file'")
    stale_after_h: float = Field(12.0, gt=0, description="a forecast issued longer ago is stale")
    stale_cloud_cover_pct: float = Field(
        70.0, ge=0, le=100,
        description="the cloud cover assumed where the forecast is stale or missing (climatological pessimism)")
    quantile: float = Field(0.2, gt=0, lt=1, description="the planner plans on this quantile of PV (0.2 = P80) "
                            "under the normal error model (clear sky, a forecast file, and a calibrated forecast "
                            "until it has samples)")
    calibrated_quantile: float = Field(
        0.05, gt=0, lt=1,
        description="the quantile of the node's own measured errors that a calibrated forecast (the learned one, the "
                    "hub's) plans on: an empirical quantile, so a low one keeps energy pauses rare at little cost in "
                    "prints (docs/benchmarks.md, #15)")
    error_sigma_0: float = Field(0.20, ge=0, le=2, description="relative PV forecast error sd at lead 0")
    error_sigma_per_h: float = Field(0.006, ge=0, le=0.1, description="its growth per hour of lead time")
    error_sigma_max: float = Field(0.6, ge=0, le=2)
    bias_halflife_h: float = Field(48.0, gt=0, description="how fast the measured/forecast bias factor adapts")
    learned_min_days: float = Field(
        7.0, ge=0, le=365, description="days of the node's own PV history before 'auto' trusts the learned forecast")


class PlannerSection(Section):
    """The energy-aware scheduler and its pause policy."""

    enabled: bool = True
    reserve_pct: float = Field(30.0, ge=5, le=90, description="planning reserve: no print is planned across it")
    horizon_h: float = Field(72.0, ge=24, le=168)
    step_s: float = Field(300.0, ge=60, le=3600)
    replan_interval_s: float = Field(3600.0, ge=60, description="re-plan cadence (also on queue changes)")
    deviation_soc_pct: float = Field(3.0, gt=0, le=50,
                                     description="re-plan when measured SoC departs this far from the plan")
    plate_turnaround_s: float = Field(600.0, ge=0, description="assumed time to clear the plate between jobs")
    warm_hold_max_s: float = Field(
        3600.0, ge=0,
        description="longest energy pause with the bed kept warm before the printer is switched off")
    resume_margin_pct: float = Field(5.0, ge=0, le=50, description="SoC above the reserve needed to resume")
    finish_allowance_pct: float = Field(
        5.0, ge=0, le=15,
        description="a print whose rest can be carried with no sun to at most this far below the reserve (points of "
                    "SoC) finishes instead of pausing: a pause near the end often fails the print (a bed switched off "
                    "loses the part) to save a few watt-hours (0 = always pause at the reserve)")
    sun_shown_window_min: float = Field(
        30.0, ge=0, le=180,
        description="a print the battery cannot carry alone above the reserve starts only once the PV measured over "
                    "this many minutes reaches what the plan counts on now: a morning's cloud the forecast missed "
                    "holds the start instead of pausing the print (0 = start on the plan alone)")
    soc_error_pct_per_sqrt_h: float = Field(
        0.35, ge=0, le=5,
        description="how fast the SoC reading's error grows after a full charge (points per square root of an "
                    "hour): planned prints keep that much more above the reserve, so a reading that drifted high "
                    "does not end in an energy pause (0 = trust the reading)")
    soc_error_max_pct: float = Field(
        6.0, ge=0, le=30,
        description="the largest SoC reading error planned for (also the margin until the battery is first seen "
                    "full)")
    protect_after_h: float = Field(
        24.0, gt=0,
        description="a job queued this long is protected from starving: a job of the same priority goes before "
                    "it only if it leaves its start where it is")
    expected_forecast_after_h: float = Field(
        72.0, ge=0,
        description="a protected job that has waited this long with no window on the pessimistic forecast is "
                    "planned on the expected one (the energy guard pauses it if the sun fails)")
    ambient_c: float = Field(20.0, ge=-30, le=50, description="room temperature for heat-loss estimates")
    base_load_w: float = Field(4.0, ge=0, description="the node itself: Raspberry Pi + charge controller")
    other_loads_w_by_hour: list[float] | None = Field(
        None, min_length=24, max_length=24,
        description="other loads on the battery: average W for each local hour 0..23 (an RV's fridge)")

    @model_validator(mode="after")
    def _horizon_in_steps(self) -> PlannerSection:
        if self.horizon_h * 3600 < 10 * self.step_s:
            raise ValueError("horizon_h must cover at least 10 steps")
        if self.finish_allowance_pct >= self.reserve_pct:
            raise ValueError(f"finish_allowance_pct ({self.finish_allowance_pct}) must be below reserve_pct "
                             f"({self.reserve_pct}): a print may finish below the reserve, never down to empty")
        return self
