"""The harder world of the year study: what the hourly weather file does not tell a planner.

Its parameters are fixed here, in one frozen object, and printed by the bench
(``bench/energy_table.py``) before any policy runs, so a planner cannot be
tuned against a world that moves with it.  Three things the old study left
out:

1. **Forecast errors with structure** (the hub-fed forecast,
   :func:`hub_forecast_cloud_pct`).  The error in cloud cover of an issue, for
   a valid hour ``h`` at lead ``L``, is the sum of

   * a *bias* of the forecast provider at this site, drawn once per run
     (normal, ``bias_sd_pct`` points): a model that is always too sunny;
   * a *shared* weather-regime error of the valid hour, the same in every issue
     that covers it (AR(1) in valid time, ``shared_sd_pct``, ``shared_rho``):
     forecasts issued 6 h apart are wrong the same way, as real ones are;
   * an *issue* error growing with lead time (AR(1) along lead,
     ``issue_sd0_pct + issue_sd_per_h * L``, capped) — the old model's noise;

   and the truth is read ``timing error`` hours shifted (a front that comes
   early or late: normal per issue, ``timing_sd_h``, AR(1) across issues).

2. **Minute-level PV variability** (:func:`downscale`): hourly averages become
   5-minute values with cloud-edge dips and enhancements where the sky is
   broken (clear-sky index between ~0.2 and ~0.9), each hour's energy kept:
   the guard can be surprised inside an hour.

3. **The SoC estimator's error in the loop** (:class:`SocEstimator`): the
   planner and the guard read an estimate that drifts (a coulomb counter's
   random walk, ``soc_drift_pct_per_sqrt_h``, capped at ``soc_drift_max_pct``)
   and re-synchronises when the charger reaches full, plus reading noise.
   Brownouts are counted against the true SoC and the battery's cutoff.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class World:
    """Every parameter of the harder world (fixed before the planner was tuned; printed by the bench)."""

    # 1. the hub-fed forecast's cloud-cover error (percentage points) and timing (hours)
    bias_sd_pct: float = 10.0
    shared_sd_pct: float = 15.0
    shared_rho: float = 0.9              # per hour of valid time
    issue_sd0_pct: float = 8.0
    issue_sd_per_h: float = 0.4
    issue_sd_max_pct: float = 30.0
    issue_rho: float = 0.9               # per hour of lead
    timing_sd_h: float = 1.5
    timing_rho: float = 0.6              # per issue (6 h apart)
    # 2. minute-level PV variability inside an hour
    variability: float = 0.6             # relative amplitude at a half-covered sky
    variability_rho: float = 0.5         # per 5-minute step
    # 3. the SoC estimator
    soc_drift_pct_per_sqrt_h: float = 0.4
    soc_drift_max_pct: float = 6.0
    soc_noise_pct: float = 0.5

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self).items())


#: the world of the benchmark table
HARDER = World()
#: the old study's world (no structure in forecast errors, no intra-hour variability, exact SoC)
EASY = World(bias_sd_pct=0.0, shared_sd_pct=0.0, timing_sd_h=0.0, variability=0.0, soc_drift_pct_per_sqrt_h=0.0,
             soc_drift_max_pct=0.0, soc_noise_pct=0.0, issue_sd0_pct=10.0, issue_sd_per_h=0.5, issue_sd_max_pct=40.0)


def _ar1(rng: np.random.Generator, n: int, rho: float) -> np.ndarray:
    z = np.empty(n)
    z[0] = rng.standard_normal()
    noise = rng.standard_normal(n) * math.sqrt(1 - rho * rho)
    for i in range(1, n):
        z[i] = rho * z[i - 1] + noise[i]
    return z


def hub_forecast_cloud_pct(cloud_truth_pct: np.ndarray, world: World, seed: int, issue_every_h: int,
                           lead_hours: int) -> np.ndarray:
    """Cloud cover of every issue of the year, shape (issues, lead_hours): the truth with structured errors."""
    rng = np.random.default_rng([seed, 15])
    hours = len(cloud_truth_pct)
    issues = math.ceil(hours / issue_every_h) + 1
    lead = np.arange(lead_hours)
    valid = np.arange(issues)[:, None] * issue_every_h + lead[None, :]
    bias = world.bias_sd_pct * rng.standard_normal()
    shared = world.shared_sd_pct * _ar1(rng, hours + issues * issue_every_h + lead_hours, world.shared_rho)
    sd = np.minimum(world.issue_sd_max_pct, world.issue_sd0_pct + world.issue_sd_per_h * lead)
    z = np.empty((issues, lead_hours))
    z[:, 0] = rng.standard_normal(issues)
    for j in range(1, lead_hours):
        z[:, j] = world.issue_rho * z[:, j - 1] + math.sqrt(1 - world.issue_rho ** 2) * rng.standard_normal(issues)
    shift_h = np.rint(world.timing_sd_h * _ar1(rng, issues, world.timing_rho)).astype(int) if world.timing_sd_h else \
        np.zeros(issues, dtype=int)
    truth = cloud_truth_pct[(valid + shift_h[:, None]) % hours]
    return np.clip(truth + bias + shared[valid] + sd[None, :] * z, 0.0, 100.0)


def downscale(hourly_w: np.ndarray, clear_hourly_w: np.ndarray, step_s: float, world: World, seed: int,
              smooth_5min_w: np.ndarray) -> np.ndarray:
    """5-minute PV from hourly averages: the smooth interpolation times a mean-one variability, per hour
    renormalised so each hour keeps its energy; never above 1.3x clear sky (cloud-edge enhancement)."""
    if world.variability <= 0:
        return smooth_5min_w
    per_h = round(3600 / step_s)
    n = len(smooth_5min_w)
    rng = np.random.default_rng([seed, 51])
    with np.errstate(divide="ignore", invalid="ignore"):
        kc = np.where(clear_hourly_w > 5.0, hourly_w / clear_hourly_w, 0.0)
    broken = np.clip(4.0 * kc * (1.0 - kc), 0.0, 1.0)          # 0 clear or overcast, 1 half-covered
    amp = world.variability * np.repeat(broken, per_h)[:n]
    factor = np.maximum(0.0, 1.0 + amp * _ar1(rng, n, world.variability_rho))
    out = smooth_5min_w * factor
    cap = 1.3 * np.repeat(clear_hourly_w, per_h)[:n]
    out = np.minimum(out, np.maximum(cap, smooth_5min_w))
    hours = n // per_h
    target = smooth_5min_w[:hours * per_h].reshape(hours, per_h).sum(axis=1)
    got = out[:hours * per_h].reshape(hours, per_h).sum(axis=1)
    scale = np.where(got > 1e-9, target / np.maximum(got, 1e-9), 1.0)
    out[:hours * per_h] = (out[:hours * per_h].reshape(hours, per_h) * scale[:, None]).reshape(-1)
    return out


class SocEstimator:
    """The SoC the node believes: the truth plus a drifting, full-charge-reset error, plus noise (fractions)."""

    def __init__(self, world: World, seed: int, step_s: float) -> None:
        self.rng = np.random.default_rng([seed, 77])
        self.step_sd = world.soc_drift_pct_per_sqrt_h / 100.0 * math.sqrt(step_s / 3600.0)
        self.max_drift = world.soc_drift_max_pct / 100.0
        self.noise = world.soc_noise_pct / 100.0
        self.drift = 0.0
        self._normals: list[float] = []

    def _normal(self) -> float:
        """The generator's next normal, drawn in blocks (the same sequence as one at a time, much faster)."""
        if not self._normals:
            self._normals = self.rng.standard_normal(4096).tolist()[::-1]
        return self._normals.pop()

    def read(self, true_soc: float) -> float:
        if true_soc >= 0.995:
            self.drift = 0.0            # the charger reached float: the counter re-synchronises
        elif self.step_sd > 0:
            self.drift = min(self.max_drift, max(-self.max_drift, self.drift + self.step_sd * self._normal()))
        noise = self.noise * self._normal() if self.noise > 0 else 0.0
        return min(1.0, max(0.0, true_soc + self.drift + noise))
