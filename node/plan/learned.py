"""A PV forecast the node learns offline from its own history (no weather service, no network).

Why: in the field most nodes have no cloud forecast (the hub may be offline for
weeks); clear sky then promises sun on every cloudy day.  The node does measure
its own PV, and two things in that history forecast tomorrow better than clear
sky does:

* **persistence** — the clear-sky index (measured / clear-sky PV) of the last
  few daylight hours: weather lasts;
* **climatology** — the mean clear-sky index of this month and hour of the
  day, from every day the node has seen (forgotten slowly, half-life
  ``climate_halflife_days``), starting from a neutral prior.

The forecast for a step at lead ``L`` hours is the clear-sky PV times
``w(L) * kc_recent + (1 - w(L)) * kc_climate[month, hour]`` with
``w(L) = exp(-L / persistence_tau_h)``.

Where the battery was full the charger throttled PV, so the measurement is not
the sun's: such steps are left out (``valid=False``) of everything learnt.

The quantile the planner plans on is calibrated from the node's own errors:
each day's forecast (issued at local midnight for that day and the next two)
is compared with what was measured over the valid steps; the planner
multiplies the forecast at lead day ``d`` by the ``quantile`` of the last
``calibration_days`` ratios measured/forecast (until enough exist, by the
normal-error model of :mod:`node.plan.forecast`).

Pure Python on ``array('d')`` (no numpy: the daemon keeps this resident, issue #19), no pvlib: the clear-sky
PV comes from the forecast worker.  The arithmetic is numpy's as it was (the same sums and quantiles; only
``exp`` may differ in the last bit where numpy has its own AVX-512 routine), so the study's results stand.
"""
from __future__ import annotations

import math
from array import array
from collections import deque
from collections.abc import Sequence

from node.native import load_core
from node.plan.schedule import Watts, wsum

_core = load_core("plancore")

LEAD_DAYS = 3
#: the climatology tables: months 1..12 (row 0 unused) by hours 0..23, flat (row-major)
MONTHS, HOURS = 13, 24


def quantile(samples: Sequence[float], q: float) -> float:
    """numpy.quantile(samples, q) (its default, linear method) with numpy's arithmetic."""
    ordered = sorted(float(x) for x in samples)
    virtual = (len(ordered) - 1) * q
    if virtual >= len(ordered) - 1:
        return ordered[-1]
    if virtual < 0:
        return ordered[0]
    below = math.floor(virtual)
    lo, hi = ordered[below], ordered[below + 1]
    gamma = virtual - below
    diff = hi - lo
    return hi - diff * (1.0 - gamma) if gamma >= 0.5 else lo + diff * gamma


class LearnedForecast:
    """Clear-sky-index persistence blended with the node's own climatology; see the module docstring."""

    MIN_CLEAR_W = 20.0
    MIN_SAMPLES = 10

    def __init__(self, step_s: float, quantile: float, fallback_factor_by_day: Sequence[float],
                 persistence_tau_h: float = 6.0, recent_halflife_h: float = 2.0, climate_halflife_days: float = 60.0,
                 prior_kc: float = 0.6, prior_weight_h: float = 3.0, calibration_days: int = 60) -> None:
        self.step_s = step_s
        self.quantile = quantile
        self.fallback = list(fallback_factor_by_day)
        self.persistence_tau_h = persistence_tau_h
        self.recent_halflife_h = recent_halflife_h
        self.climate_halflife_days = climate_halflife_days
        self.daylight_s_seen = 0.0
        dt_h = step_s / 3600.0
        # climatology: decayed measured and clear-sky energy per (month 1..12, hour 0..23), with a prior
        self.clim_measured = Watts.filled(MONTHS * HOURS, prior_kc * prior_weight_h * 300.0 * dt_h)
        self.clim_clear = Watts.filled(MONTHS * HOURS, prior_weight_h * 300.0 * dt_h)
        self.recent_measured = 0.0
        self.recent_clear = 0.0
        self.ratios: list[deque[float]] = [deque(maxlen=calibration_days) for _ in range(LEAD_DAYS)]
        self._issues: dict[int, Watts] = {}     # day index -> expected W per step for 3 days

    # --- learning ---------------------------------------------------------------------------------
    def observe(self, month: int, hour: int, measured_w: float, clear_w: float, valid: bool,
                dt_s: float | None = None) -> None:
        """One telemetry reading standing for ``dt_s`` (default: one step).  ``valid``: the charger was not
        throttling (battery not full)."""
        if clear_w < self.MIN_CLEAR_W:
            return
        dt_s = self.step_s if dt_s is None else dt_s
        recent_decay = 0.5 ** (dt_s / 3600.0 / self.recent_halflife_h)
        self.recent_measured *= recent_decay
        self.recent_clear *= recent_decay
        if not valid:
            return
        dt_h = dt_s / 3600.0
        self.daylight_s_seen += dt_s
        self.recent_measured += measured_w * dt_h
        self.recent_clear += clear_w * dt_h
        climate_decay = 0.5 ** (dt_s / 86400.0 / self.climate_halflife_days)
        _core.scale(self.clim_measured, climate_decay)
        _core.scale(self.clim_clear, climate_decay)
        self.clim_measured[month * HOURS + hour] += measured_w * dt_h
        self.clim_clear[month * HOURS + hour] += clear_w * dt_h

    @property
    def history_days(self) -> float:
        """Days of valid daylight history (12 daylight hours = a day)."""
        return self.daylight_s_seen / (12 * 3600.0)

    def recent_kc(self) -> float | None:
        if self.recent_clear < 3.0 * self.MIN_CLEAR_W * self.step_s / 3600.0:
            return None
        return min(1.2, self.recent_measured / self.recent_clear)

    def expected_w(self, clear_w: Sequence[float], months: Sequence[int], hours: Sequence[int],
                   lead_h: Sequence[float]) -> Watts:
        """The expected PV per step (clear-sky PV times the blended clear-sky index)."""
        if not len(clear_w) == len(months) == len(hours) == len(lead_h):
            raise ValueError("expected_w: clear_w, months, hours and lead_h must be of one length")
        out = Watts.filled(len(clear_w), 0.0)
        recent = self.recent_kc()
        _core.learned_expected(Watts(clear_w), _longs(months), _longs(hours), Watts(lead_h), self.clim_measured,
                               self.clim_clear, recent is not None, recent or 0.0, self.persistence_tau_h, out)
        return out

    # --- persistence (the node's store keeps it across restarts: node.plan.planner) -------------------
    def to_state(self) -> dict:
        """Everything learnt, as plain JSON-able data."""
        return {"version": 1, "step_s": self.step_s, "daylight_s_seen": self.daylight_s_seen,
                "clim_measured": _rows(self.clim_measured), "clim_clear": _rows(self.clim_clear),
                "recent_measured": self.recent_measured, "recent_clear": self.recent_clear,
                "ratios": [list(r) for r in self.ratios],
                "issues": {str(day): issued.tolist() for day, issued in self._issues.items()}}

    def load_state(self, state: dict) -> None:
        """Take back what :meth:`to_state` gave; a state from another step size or shape is refused
        (ValueError naming why) and nothing is changed."""
        if state.get("version") != 1 or float(state.get("step_s", -1)) != self.step_s:
            raise ValueError(f"learned forecast state of version {state.get('version')} at step "
                             f"{state.get('step_s')} s does not fit this planner (version 1, step {self.step_s} s)")
        # read everything first: a snapshot that fails half-way changes nothing
        measured, clear = _table(state["clim_measured"]), _table(state["clim_clear"])
        if measured is None or clear is None:
            raise ValueError("learned forecast state: climatology tables of the wrong shape")
        daylight_s = float(state["daylight_s_seen"])
        recent = float(state["recent_measured"]), float(state["recent_clear"])
        ratios = [[float(x) for x in saved] for saved in state["ratios"]][:LEAD_DAYS]
        issues = {int(day): Watts([float(x) for x in issued]) for day, issued in state["issues"].items()}
        self.clim_measured, self.clim_clear = measured, clear
        self.daylight_s_seen = daylight_s
        self.recent_measured, self.recent_clear = recent
        for target, saved in zip(self.ratios, ratios, strict=False):
            target.clear()
            target.extend(saved)
        self._issues = issues

    def age(self, hours: float) -> None:
        """Time passed with no readings (the node was off): persistence fades as it would have."""
        decay = 0.5 ** (max(0.0, hours) / self.recent_halflife_h)
        self.recent_measured *= decay
        self.recent_clear *= decay

    # --- calibration ------------------------------------------------------------------------------
    def issue(self, day: int, expected_w: Sequence[float]) -> None:
        """The forecast made at the start of ``day`` for it and the next days (steps from local midnight)."""
        self._issues[day] = Watts(expected_w)
        for old in [d for d in self._issues if d < day - LEAD_DAYS]:
            del self._issues[old]

    def close_day(self, day: int, measured_w: Sequence[float], valid: Sequence[bool]) -> None:
        """The day is over: compare each issue that covered it with what was measured on valid steps."""
        per_day = len(measured_w)
        valid = [bool(v) for v in valid]
        measured_wh = wsum([float(w) for w, ok in zip(measured_w, valid, strict=True) if ok])
        for lead_day in range(LEAD_DAYS):
            issued = self._issues.get(day - lead_day)
            if issued is None or len(issued) < (lead_day + 1) * per_day:
                continue
            forecast = issued[lead_day * per_day:(lead_day + 1) * per_day]
            forecast_wh = wsum([w for w, ok in zip(forecast, valid, strict=True) if ok])
            if forecast_wh * self.step_s / 3600.0 < 100.0:   # under ~0.1 kWh of forecast: no information
                continue
            self.ratios[lead_day].append(measured_wh / forecast_wh)

    def factor(self, lead_day: int) -> float:
        """The multiplier at lead day ``lead_day``: the ``quantile`` of measured/forecast, or the fallback."""
        d = min(lead_day, LEAD_DAYS - 1)
        samples = self.ratios[d]
        if len(samples) < self.MIN_SAMPLES:
            return self.fallback[min(d, len(self.fallback) - 1)]
        return float(min(1.2, max(0.05, quantile(samples, self.quantile))))

    def factors(self, lead_h: Sequence[float]) -> Watts:
        # the quantiles change only when a day closes: computed once per set of ratios, not at every re-plan
        key = tuple((len(r), r[-1] if r else None) for r in self.ratios)
        if getattr(self, "_table_key", None) != key:
            self._table = [self.factor(d) for d in range(LEAD_DAYS)]
            self._table_key = key
        table = self._table
        out = Watts.filled(len(lead_h), 0.0)
        _core.lead_factors(Watts(lead_h), Watts(table), out)
        return out


def _longs(values: Sequence[int]) -> array:
    """Integers as a C-long buffer for the core (a numpy int64 array is taken as it is)."""
    try:
        view = memoryview(values)  # type: ignore[arg-type]
    except TypeError:
        return array("l", values)
    return values if view.format == "l" and view.ndim == 1 and view.c_contiguous else array("l", values)


def _rows(table: array) -> list[list[float]]:
    """A flat climatology table as its 13 rows of 24 (the stored JSON's shape)."""
    return [table[m * HOURS:(m + 1) * HOURS].tolist() for m in range(MONTHS)]


def _table(rows: object) -> Watts | None:
    """The stored 13 x 24 rows as a flat table, or None if they are not that shape."""
    if not isinstance(rows, list) or len(rows) != MONTHS or any(
            not isinstance(row, list) or len(row) != HOURS for row in rows):
        return None
    return Watts([float(x) for row in rows for x in row])


def fallback_factors(quantile_by_step: Sequence[float], step_s: float) -> list[float]:
    """The normal-model quantile factor at the middle of each lead day (before the node has its own errors)."""
    per_day = round(86400 / step_s)
    out = []
    for d in range(LEAD_DAYS):
        k = min(len(quantile_by_step) - 1, d * per_day + per_day // 2)
        out.append(float(quantile_by_step[k]))
    return out if out else [1.0]


def daily_energy_error(forecast_w: Sequence[float], truth_w: Sequence[float], step_s: float) -> float:
    """Root-mean-square error of daily energy (Wh) between two per-step series of whole days (a tool's:
    numpy is imported here, not by the daemon)."""
    import numpy as np

    forecast_w, truth_w = np.asarray(forecast_w), np.asarray(truth_w)
    per_day = round(86400 / step_s)
    days = min(len(forecast_w), len(truth_w)) // per_day
    if days == 0:
        return math.nan
    f = forecast_w[:days * per_day].reshape(days, per_day).sum(axis=1) * step_s / 3600.0
    t = truth_w[:days * per_day].reshape(days, per_day).sum(axis=1) * step_s / 3600.0
    return float(np.sqrt(np.mean((f - t) ** 2)))


def day_ahead_errors(measured_w: Sequence[float], clear_w: Sequence[float], months: Sequence[int],
                     hours: Sequence[int], step_s: float, bias_halflife_h: float = 48.0) -> dict[str, float]:
    """RMSE of daily PV energy (Wh) of forecasts issued at local midnight for the day ahead, over whole days of
    per-step series starting at local midnight: the learned forecast, bare clear sky, and clear sky times the
    bias factor the shipped ``clear_sky`` source applies (:class:`node.plan.forecast.BiasTracker`)."""
    import numpy as np

    from node.plan.forecast import BiasTracker

    measured_w, clear_w, months, hours = (np.asarray(x) for x in (measured_w, clear_w, months, hours))
    per_day = round(86400 / step_s)
    days = len(measured_w) // per_day
    learned = LearnedForecast(step_s, 0.5, [1.0])
    bias = BiasTracker(bias_halflife_h)
    lead_h = (np.arange(per_day) + 0.5) * step_s / 3600.0
    out: dict[str, list[float]] = {"learned": [], "clear_sky": [], "clear_sky_bias": [], "measured": []}
    for d in range(days):
        day = slice(d * per_day, (d + 1) * per_day)
        if d > 0:   # the first day has no history at all: not scored
            out["learned"].append(float(learned.expected_w(clear_w[day], months[day], hours[day], lead_h).sum()))
            out["clear_sky"].append(float(clear_w[day].sum()))
            out["clear_sky_bias"].append(float(clear_w[day].sum() * bias.factor))
            out["measured"].append(float(measured_w[day].sum()))
        for k in range(day.start, day.stop):
            learned.observe(int(months[k]), int(hours[k]), float(measured_w[k]), float(clear_w[k]), True)
            bias.add(k * step_s, float(measured_w[k]), float(clear_w[k]), step_s)
    truth = np.asarray(out.pop("measured")) * step_s / 3600.0
    return {name: float(np.sqrt(np.mean((np.asarray(v) * step_s / 3600.0 - truth) ** 2))) for name, v in out.items()}
