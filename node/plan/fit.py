"""Jobs that can never fit this plant: found when they are queued, held with the figures, never silently dropped.

Why: a job whose print outlasts what the battery above the reserve and the sun
can carry is never placed by the scheduler, so without a flag it waits for
ever, and a person reads only "no window within the 72 h horizon" day after
day.  The rule (issue #15): a job **never fits** when, started with a full
battery at the best hour of a clear-sky day in the site's best month, it would
still cross the planning reserve before it ends.

The best day (:class:`BestClearDay`) is the clear-sky PV of the forecast chain
(pvlib, in the worker process: :func:`node.plan.forecast.compute_best_clear_day`)
on the clearest day of the month with the most clear-sky energy.  The check
gives the job the benefit of every doubt, because a flag tells a person to
cancel a job or change the plant: PV times :data:`SUN_HEADROOM` (a cold clear
day and a clean sky give more than the model's 20 C climatological sky), the
battery without the Peukert derating, the bare reserve without the guard's
band, every start step of the clearest day of every month tried (a long print
may fit better on June's longer day than on May's sunnier one), the day
repeated for prints that span the night, and a shortfall of up to an hour of
the job's own average draw forgiven (its start and end may land anywhere in an
hour).  The study's bound (:func:`node.study.bound.single_print_fits`)
checks, with the true weather of a whole year and perfect foresight, that
every job flagged here is one no policy could print above the reserve either
(tests/plan/test_fit.py).

A job that fits some months but not this one, even on its clearest day, is not
flagged; its waiting reason says when it can print ("even the clearest day of
December cannot carry it with this plant; it fits from February on a clear
day"), so a long wait reads as the season's, not the planner's.

The job is held (it stays queued, with a reason that names the figures, in
``status``, ``plan`` and on the page); a person cancels it, or changes the
plant (a bigger battery, more panels), after which the next plan checks again.

Pure: no clock, no I/O, no numpy (the daemon runs it: issue #19); the trials run in the Cython plancore.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from node.native import load_core
from node.plan.energymodel import EnergyModel
from node.plan.schedule import Watts, interp_at

_core = load_core("plancore")

#: clear-sky PV is multiplied by this before a job is called never fitting (cold cells, a cleaner sky than the
#: climatological Linke turbidity, cloud-edge enhancement): a flag must never be wrong about a job that fits
SUN_HEADROOM = 1.25
#: how many copies of the best day a print may span (longer prints are judged on that many clear days in a row)
DAYS_TRIED = 3


class BestClearDay(BaseModel):
    """The clear-sky PV of the clearest day of each month, per step from local midnight (from the worker).

    The best day is the clearest day of the month with the most clear-sky energy; the clearest day of every
    other month is kept too, because a long print may fit better on a longer day with less energy (June's
    against May's), and a flag must not be wrong about a job that fits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dates: list[str] = Field(min_length=1, description="ISO dates (local), the best day first")
    step_s: float = Field(gt=0)
    pv_w: list[list[float]] = Field(min_length=1, description="W at the battery per step from local midnight, "
                                                              "one list per date")

    @property
    def date(self) -> str:
        return self.dates[0]

    def label(self, index: int = 0) -> str:
        from datetime import date

        return f"a clear {date.fromisoformat(self.dates[index]):%d %b}"

    @property
    def energy_wh(self) -> float:
        return sum(self.pv_w[0]) * self.step_s / 3600.0

    def resampled(self, step_s: float, index: int = 0) -> list[float]:
        """A day at another step (energy kept per step; steps that are multiples or divisors)."""
        pv_w = self.pv_w[index]
        if math.isclose(step_s, self.step_s):
            return list(pv_w)
        n = round(len(pv_w) * self.step_s / step_s)
        cum, total = [0.0], 0.0
        for w in pv_w:
            total += w
            cum.append(total * self.step_s)
        knots = [k * self.step_s for k in range(len(pv_w) + 1)]
        at = [interp_at(k * step_s, knots, cum) for k in range(n + 1)]
        return [(at[k + 1] - at[k]) / step_s for k in range(n)]


@dataclass(frozen=True)
class FitCheck:
    """The figures of one job against the best day."""

    fits: bool
    needs_wh: float             # the print's energy
    duration_h: float
    above_reserve_wh: float     # a full battery above the reserve
    best_start_s: float         # seconds after local midnight of the best start
    lowest_above_reserve_wh: float   # at the best start: lowest energy above the reserve (negative: below)
    sun_wh: float               # PV during the print at the best start (with the headroom)
    day_label: str
    #: (month 1..12, whether it fits on that month's clearest day), one per clear day checked
    month_fits: tuple[tuple[int, bool], ...] = ()

    def season_note(self, month_now: int) -> str | None:
        """For a job that fits some months but not this one even on a clear day: when it can, in words (a
        person then knows the wait is the season's, not the planner's)."""
        fits = dict(self.month_fits)
        if not self.fits or fits.get(month_now, True) or not any(fits.values()):
            return None
        from calendar import month_name

        ahead = next(m for m in ((month_now + k - 1) % 12 + 1 for k in range(1, 13)) if fits.get(m))
        return (f"even the clearest day of {month_name[month_now]} cannot carry it with this plant; it fits from "
                f"{month_name[ahead]} on a clear day")

    def reason(self, reserve_pct: float) -> str:
        """The waiting reason a person reads (status, plan, the page)."""
        hh, mm = divmod(int(self.best_start_s // 60), 60)
        return (f"never fits this plant: needs {self.needs_wh:.0f} Wh over {self.duration_h:.1f} h; even started "
                f"with a full battery ({self.above_reserve_wh:.0f} Wh above the {reserve_pct:.0f} % reserve) at "
                f"{hh:02d}:{mm:02d} on {self.day_label}, with {self.sun_wh:.0f} Wh of sun "
                f"during the print, it would fall {-self.lowest_above_reserve_wh:.0f} Wh below the reserve. "
                "It is held: cancel it, or give the node a bigger battery or more panels")


def check_fit(job_w: Sequence[float], best_day: BestClearDay, step_s: float, model: EnergyModel,
              reserve_frac: float, base_load_w: float, other_loads_w: Sequence[float] | None = None) -> FitCheck:
    """Start ``job_w`` (W per planning step) with a full battery at every step of each clear day; the best day
    and start decide.  ``other_loads_w``: the other loads per step of a day from local midnight (an RV's fridge)."""
    job = Watts(job_w)
    # every clear day at once, from local midnight, with the headroom: (days, steps of a day)
    day_pv = [[w * SUN_HEADROOM for w in best_day.resampled(step_s, i)] for i in range(len(best_day.dates))]
    n_days, per_day = len(day_pv), len(day_pv[0])
    load = [float(base_load_w)] * per_day
    if other_loads_w is not None:
        load = [base + float(other) for base, other in zip(load, list(other_loads_w)[:per_day], strict=False)]
    repeats = max(DAYS_TRIED, math.ceil(len(job) / per_day) + 1)
    pv = Watts([w for day in day_pv for _ in range(repeats) for w in day])
    net = Watts([w - load[k % per_day] for k, w in enumerate(pv)])
    dt_h = step_s / 3600.0
    capacity_wh, reserve_wh = model.capacity_wh, reserve_frac * model.capacity_wh
    lowest, sun = Watts.filled(n_days * per_day, 0.0), Watts.filled(n_days * per_day, 0.0)
    _core.fit_lowest(net, pv, job, n_days, per_day, capacity_wh, model.charge_efficiency, model.max_charge_w, dt_h,
                     lowest, sun)
    best_at = max(range(len(lowest)), key=lowest.__getitem__)   # the first of the highest, as numpy's argmax
    day, best = divmod(best_at, per_day)
    # in the job's favour: its start and end may land anywhere in an hour (what the bound allows), so it is
    # called never fitting only when it falls short by more than an hour of its own average draw
    tolerance_wh = job.sum() / len(job) if len(job) else 0.0
    low = float(lowest[best_at])
    fits_by_day = [max(lowest[d * per_day:(d + 1) * per_day]) >= reserve_wh - tolerance_wh for d in range(n_days)]
    from datetime import date

    month_fits = tuple((date.fromisoformat(d).month, bool(f)) for d, f in zip(best_day.dates, fits_by_day, strict=True))
    return FitCheck(fits=bool(low >= reserve_wh - tolerance_wh), needs_wh=float(job.sum() * dt_h),
                    duration_h=len(job) * step_s / 3600.0, above_reserve_wh=capacity_wh - reserve_wh,
                    best_start_s=float(best) * step_s, lowest_above_reserve_wh=low - reserve_wh,
                    sun_wh=float(sun[best_at]), day_label=best_day.label(int(day)), month_fits=month_fits)
