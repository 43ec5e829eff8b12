"""The quantile a planner plans on, calibrated by lead time from the node's own forecast-vs-actual errors.

Why by lead time: a forecast learnt from the node's own PV (:mod:`node.plan.learned`)
is good for the next hours (persistence: the weather now lasts) and poor a day
ahead (climatology only).  One factor for every lead — the pessimistic quantile
of day-ahead errors, ~0.45 at a cloudy site — made the planner believe in less
than half the sun even for the next hour, so a big print never fitted and the
node sat with a full battery spilling sun (docs/benchmarks.md, issue #15).
Safety does not come from this number: the guard (:mod:`node.plan.guard`)
reads the battery, not the forecast.

How: every hour the forecast in use is *issued* (its expected energy per hour
for the hours ahead, before any quantile); when an hour is over, its measured
energy closes it.  For each issue and each lead bin ``[a, b)`` (``LEAD_EDGES_H``),
once hour ``b`` after the issue is over, the ratio measured / forecast of the
energy *from the issue to hour b*, over the valid hours (the battery was not
full, so the charger did not throttle the sun), is one sample of that bin.
Cumulative on purpose: a plan fails when the sun from now to some hour falls
short, not when one hour is dull — hourly ratios are noisier than the energy a
print leans on (measured on the study: Amsterdam, 20 Ah, a year, 489 prints
with disjoint bins, 659 with cumulative windows, pauses 2 and 4).  The factor
of a step at lead ``L`` is the ``quantile`` of the last samples of ``L``'s bin
(at most ``calibration_days`` × 12 of them), clamped to ``[MIN_FACTOR,
MAX_FACTOR]``; until a bin has ``min_samples``, the fallback (the
normal-error model of :mod:`node.plan.forecast`) answers.

Pure Python (no numpy): the daemon calls it once an hour; the year study at
every hour of every run.  One instance per forecast source (the errors of a
hub's forecast and of the learned one are not the same): the Planner keeps
both in the learned forecast's store snapshot.  They plan on ``[forecast]
calibrated_quantile`` (0.05): an empirical quantile of measured errors, where
the normal model's ``quantile`` (0.2) is a model's (docs/benchmarks.md, #15).
"""
from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Callable, Sequence

#: lead bins, hours after the issue: [0, 2), [2, 4), ... [48, 72); past 72 h the last bin answers
LEAD_EDGES_H: tuple[int, ...] = (0, 2, 4, 8, 12, 24, 48, 72)
MIN_FACTOR = 0.05
MAX_FACTOR = 1.2
STATE_VERSION = 1


class LeadCalibration:
    """Quantiles of measured / forecast energy per lead bin, from hourly issues; see the module docstring."""

    def __init__(self, quantile: float, fallback: Callable[[float], float], *, calibration_days: int = 60,
                 min_samples: int = 48, min_wh_per_h: float = 20.0,
                 edges_h: Sequence[int] = LEAD_EDGES_H) -> None:
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile {quantile} is not between 0 and 1")
        self.quantile = quantile
        self.fallback = fallback
        self.min_samples = min_samples
        self.min_wh_per_h = min_wh_per_h
        self.edges = tuple(int(e) for e in edges_h)
        self.bins = len(self.edges) - 1
        self.horizon_h = self.edges[-1]
        # daylight issues: ~12 a day per bin
        self.max_samples = calibration_days * 12
        self._samples: list[deque[float]] = [deque() for _ in range(self.bins)]
        self._sorted: list[list[float]] = [[] for _ in range(self.bins)]
        self._issues: dict[int, list[float]] = {}      # issue hour -> expected Wh of hours issue, issue+1, ...
        self._measured: dict[int, tuple[float, bool]] = {}   # hour -> (measured Wh, valid)
        self._table: list[float] | None = None
        #: grows with every new sample: callers that cache per-step factors compare it
        self.version = 0

    # --- learning ---------------------------------------------------------------------------------
    def issue(self, hour: int, expected_wh: Sequence[float]) -> None:
        """The forecast in use at the start of ``hour`` (an hour index, e.g. ``t_s // 3600``): its expected
        energy (Wh, before any quantile) for that hour and the ones after it."""
        self._issues[int(hour)] = [float(x) for x in expected_wh[:self.horizon_h]]

    def close_hour(self, hour: int, measured_wh: float, valid: bool) -> None:
        """``hour`` is over: ``measured_wh`` came in; ``valid`` False when the charger throttled (battery full)
        in it, so it says nothing about the sun.  Scores every bin that ends with this hour."""
        hour = int(hour)
        self._measured[hour] = (float(measured_wh), bool(valid))
        for issued_at in list(self._issues):
            age = hour + 1 - issued_at
            if age > self.horizon_h or age <= 0:
                if age > self.horizon_h:
                    del self._issues[issued_at]
                continue
            for b in range(self.bins):
                if self.edges[b + 1] == age:
                    self._score(b, issued_at)
        for old in [h for h in self._measured if h <= hour - self.horizon_h]:
            del self._measured[old]

    def _score(self, b: int, issued_at: int) -> None:
        forecast = self._issues[issued_at]
        lo, hi = 0, self.edges[b + 1]
        if len(forecast) < hi:
            return      # the issue did not reach the bin's end
        f_wh = m_wh = 0.0
        valid_hours = 0
        for lead in range(lo, hi):
            seen = self._measured.get(issued_at + lead)
            if seen is None or not seen[1]:
                continue
            f_wh += forecast[lead]
            m_wh += seen[0]
            valid_hours += 1
        if valid_hours == 0 or valid_hours * 2 < hi - lo or f_wh < self.min_wh_per_h * valid_hours:
            return      # mostly a full battery, or night: no information
        self._add(b, m_wh / f_wh)

    def _add(self, b: int, ratio: float) -> None:
        samples, ordered = self._samples[b], self._sorted[b]
        samples.append(ratio)
        bisect.insort(ordered, ratio)
        if len(samples) > self.max_samples:
            gone = samples.popleft()
            del ordered[bisect.bisect_left(ordered, gone)]
        self._table = None
        self.version += 1

    # --- the factors ------------------------------------------------------------------------------
    def samples(self, b: int) -> int:
        return len(self._samples[b])

    def bin_of(self, lead_h: float) -> int:
        return min(self.bins - 1, max(0, bisect.bisect_right(self.edges, lead_h) - 1))

    def _bin_factor(self, b: int) -> float | None:
        ordered = self._sorted[b]
        if len(ordered) < self.min_samples:
            return None
        # linear interpolation between order statistics (numpy's default quantile)
        position = self.quantile * (len(ordered) - 1)
        lo = math.floor(position)
        hi = min(lo + 1, len(ordered) - 1)
        value = ordered[lo] + (ordered[hi] - ordered[lo]) * (position - lo)
        return min(MAX_FACTOR, max(MIN_FACTOR, value))

    def bin_table(self) -> list[float | None]:
        """Each bin's calibrated factor, None where the fallback still answers (recomputed after new samples)."""
        if self._table is None:
            self._table = [self._bin_factor(b) for b in range(self.bins)]
        return self._table

    def factor(self, lead_h: float) -> float:
        """The multiplier of the expected PV at ``lead_h`` hours after the forecast was issued."""
        own = self.bin_table()[self.bin_of(lead_h)]
        return own if own is not None else self.fallback(lead_h)

    def factors(self, lead_h: Sequence[float], spilling: bool = False) -> list[float]:
        """The multiplier of each step; ``spilling``: see :func:`spill_factor`."""
        if spilling:
            return [spill_factor()] * len(lead_h)
        return [self.factor(x) for x in lead_h]

    def describe(self) -> dict[str, float | None]:
        """Per lead bin, the calibrated factor (None: not enough samples yet); for status and the bench."""
        return {f"{self.edges[b]}-{self.edges[b + 1]}h": (None if f is None else round(f, 3))
                for b, f in enumerate(self.bin_table())}

    # --- persistence ------------------------------------------------------------------------------
    def to_state(self) -> dict:
        # rounded: a day's snapshot in the node's store stays ~60 kB (72 pending issues of 72 hours, 7 x 720 ratios)
        return {"version": STATE_VERSION, "edges_h": list(self.edges),
                "samples": [[round(x, 4) for x in s] for s in self._samples],
                "issues": {str(h): [round(x, 1) for x in v] for h, v in self._issues.items()},
                "measured": {str(h): [round(v[0], 1), v[1]] for h, v in self._measured.items()}}

    def load_state(self, state: dict) -> None:
        """Take back :meth:`to_state`'s data; another version or other bins: ValueError, nothing changed."""
        if state.get("version") != STATE_VERSION or tuple(state.get("edges_h", ())) != self.edges:
            raise ValueError(f"lead-time calibration of version {state.get('version')} with bins "
                             f"{state.get('edges_h')} does not fit this planner (bins {list(self.edges)})")
        samples = [[float(x) for x in s] for s in state["samples"]]
        if len(samples) != self.bins:
            raise ValueError("lead-time calibration: wrong number of bins")
        issues = {int(h): [float(x) for x in v] for h, v in state["issues"].items()}
        measured = {int(h): (float(v[0]), bool(v[1])) for h, v in state["measured"].items()}
        self._samples = [deque(s[-self.max_samples:]) for s in samples]
        self._sorted = [sorted(s) for s in self._samples]
        self._issues, self._measured = issues, measured
        self._table = None
        self.version += 1


def spill_factor() -> float:
    """The multiplier while the battery is full and the charger throttles the sun (spilling): the expected
    forecast, not its pessimistic quantile.

    Why: sun the full battery cannot take is lost anyway; a print started on the expected forecast risks an
    interruption, which the guard handles (it reads the SoC), while waiting for the quantile to allow it loses
    the sun for sure.  Measured on the year study (Amsterdam / Sand Point, 20 Ah, seed 1): 937 / 700 prints,
    12 / 19 pauses, 1 / 3 failed on the quantile alone; 1505 / 1402 prints, 40 / 61 pauses, 14 / 15 failed
    with this rule (the hub-fed planner: 1480 / 1195, 113 / 114, 21 / 20)."""
    return 1.0


def hourly_wh(step_w: Sequence[float], step_s: float) -> list[float]:
    """Per-step W (from the start of an hour) summed into Wh per whole hour."""
    per_h = round(3600 / step_s)
    dt_h = step_s / 3600.0
    return [sum(step_w[i:i + per_h]) * dt_h for i in range(0, len(step_w) - per_h + 1, per_h)]
