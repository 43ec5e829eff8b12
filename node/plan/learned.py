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
``w(L) = exp(-L / persistence_tau_h)``.  ``kc_recent`` forgets with a half-life
of one hour: on the year study's cloudy sites (20 Ah) the planner completed
~40 % more prints than with two hours, for the same interruptions
(docs/benchmarks.md), and the day-ahead error is still below clear sky's.

Where the battery was full the charger throttled PV, so the measurement is not
the sun's: such steps are left out (``valid=False``) of everything learnt.

The quantile the planner plans on is not this module's: it is calibrated by
lead time from the node's own forecast-vs-actual errors (:mod:`node.plan.quantile`).

Pure Python on ``array('d')`` (no numpy: the daemon keeps this resident, issue #19), no pvlib: the clear-sky
PV comes from the forecast worker.  The arithmetic is numpy's as it was (the same sums and quantiles; only
``exp`` may differ in the last bit where numpy has its own AVX-512 routine), so the study's results stand.
"""
from __future__ import annotations

import math
from array import array
from collections.abc import Sequence

from node.native import load_core
from node.plan.schedule import Watts

_core = load_core("plancore")

#: the climatology tables: months 1..12 (row 0 unused) by hours 0..23, flat (row-major)
MONTHS, HOURS = 13, 24


class LearnedForecast:
    """Clear-sky-index persistence blended with the node's own climatology; see the module docstring."""

    MIN_CLEAR_W = 20.0

    def __init__(self, step_s: float, persistence_tau_h: float = 6.0, recent_halflife_h: float = 1.0,
                 climate_halflife_days: float = 60.0, prior_kc: float = 0.6, prior_weight_h: float = 3.0) -> None:
        self.step_s = step_s
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
        return {"version": 2, "step_s": self.step_s, "daylight_s_seen": self.daylight_s_seen,
                "clim_measured": _rows(self.clim_measured), "clim_clear": _rows(self.clim_clear),
                "recent_measured": self.recent_measured, "recent_clear": self.recent_clear}

    def load_state(self, state: dict) -> None:
        """Take back what :meth:`to_state` gave; a state from another step size or shape is refused
        (ValueError naming why) and nothing is changed.  Version 1 (with the old day-ahead calibration, now
        :mod:`node.plan.quantile`'s job) is read without it."""
        if state.get("version") not in (1, 2) or float(state.get("step_s", -1)) != self.step_s:
            raise ValueError(f"learned forecast state of version {state.get('version')} at step "
                             f"{state.get('step_s')} s does not fit this planner (version 2, step {self.step_s} s)")
        # read everything first: a snapshot that fails half-way changes nothing
        measured, clear = _table(state["clim_measured"]), _table(state["clim_clear"])
        if measured is None or clear is None:
            raise ValueError("learned forecast state: climatology tables of the wrong shape")
        daylight_s = float(state["daylight_s_seen"])
        recent = float(state["recent_measured"]), float(state["recent_clear"])
        self.clim_measured, self.clim_clear = measured, clear
        self.daylight_s_seen = daylight_s
        self.recent_measured, self.recent_clear = recent

    def age(self, hours: float) -> None:
        """Time passed with no readings (the node was off): persistence fades as it would have."""
        decay = 0.5 ** (max(0.0, hours) / self.recent_halflife_h)
        self.recent_measured *= decay
        self.recent_clear *= decay

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
    learned = LearnedForecast(step_s)
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
