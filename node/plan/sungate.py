"""A print that needs the sun starts once the sun has shown up: the start gate's nowcast check.

Why: a plan places a print on a forecast, and a forecast made last night cannot see this morning's cloud.  In
the year study (docs/benchmarks.md, #15's seventh pass) the learned planner's energy pauses mostly came from
such a start (at 40 Ah, five sites and five seeds: 127 of 146 pauses were of prints begun between 06 and 12 h):
a print begun on a part-charged battery, which needed the forecast's sun to stay above the reserve; the sun did
not come, the print was paused at the reserve and, the battery too low to keep the bed warm, the printer was
switched off.  What the panel gave over the last half hour is the best forecast there is for the next hour or
two (persistence; e.g. Antonanzas et al., "Review of photovoltaic power forecasting", Solar Energy 136, 2016),
so the gate compares it with what the plan counts on.

The rule, for the job the plan starts now:

* if the battery alone holds the job's energy above the reserve, the sun does not matter: no check;
* else the PV measured over the last ``window_s`` (time-weighted) must be at least the plan's PV for this
  step; a reading while the charger limited PV (battery full, absorbing, at its current limit) shows at least
  that much sun, so such a window passes.

The plan is not changed: the start waits, the plan is made again each hour, and the print starts on the step
the panel catches up.  Pure: no clock, no I/O (the Planner and the study feed it their readings).
"""
from __future__ import annotations

import math
from collections import deque


class RecentPv:
    """The PV measured over a trailing window, weighted by each reading's duration.

    Readings less than ``BIN_S`` apart share one entry, so a node read every second keeps ~30 entries, not 1800
    (the study's 5-minute steps keep one each)."""

    BIN_S = 60.0

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        #: [start t_s, W x s, seconds, charger limited] per bin
        self._bins: deque[list] = deque()

    def add(self, t_s: float, pv_w: float, dt_s: float, limited: bool) -> None:
        """One reading of ``pv_w`` covering ``dt_s`` from ``t_s``; ``limited``: the charger held PV back."""
        last = self._bins[-1] if self._bins else None
        if last is not None and 0.0 <= t_s - last[0] < self.BIN_S:
            last[1] += pv_w * dt_s
            last[2] += dt_s
            last[3] = last[3] or limited
        else:
            self._bins.append([t_s, pv_w * dt_s, dt_s, limited])
        while self._bins and self._bins[0][0] < t_s - self.window_s:
            self._bins.popleft()

    def mean_w(self, now_s: float) -> float | None:
        """Mean PV of the readings in the window ending ``now_s`` (inf if the charger limited any; None: none)."""
        total_ws = total_s = 0.0
        for t_s, ws, seconds, limited in self._bins:
            if t_s >= now_s - self.window_s and seconds > 0.0:
                if limited:
                    return math.inf
                total_ws += ws
                total_s += seconds
        return total_ws / total_s if total_s > 0.0 else None


def sun_wait(job_energy_wh: float, battery_above_reserve_wh: float, recent_pv_w: float | None,
             planned_pv_w: float) -> str | None:
    """Why a job the plan starts now waits for the sun, in words (None: it may start).

    ``job_energy_wh``: the job's energy; ``battery_above_reserve_wh``: what the battery holds above the reserve;
    ``recent_pv_w``: :meth:`RecentPv.mean_w`; ``planned_pv_w``: the plan's PV for this step."""
    if job_energy_wh <= battery_above_reserve_wh:
        return None
    if recent_pv_w is not None and recent_pv_w >= planned_pv_w:
        return None
    shown = "no PV reading yet" if recent_pv_w is None else f"the panel gives {recent_pv_w:.0f} W"
    return (f"needs {job_energy_wh:.0f} Wh and the battery holds {max(0.0, battery_above_reserve_wh):.0f} Wh above "
            f"the reserve, so it needs the sun: {shown} where the plan counts on {planned_pv_w:.0f} W; it starts "
            "when the sun shows up")
