"""The energy guard of a running print: one rule, one set of constants, for the node and the year study.

Why one module: the Planner component (:mod:`node.plan.planner`) and the study
(:mod:`node.study.year`) used to carry their own copies of the guard's margin
and of its decisions; a study that runs another rule than the node measures
nothing about the node.  Both now build an :class:`EnergyGuard` with
:meth:`EnergyGuard.from_config` and ask :func:`energy_action` what to do
(tests/study/test_same_code.py checks they do).

The rule: on each reading while a job prints, if two more planning steps at
the printer's draw (with half the PV just measured) would take the battery
below the reserve, pause at the next layer boundary with the bed kept warm.  If
the warm bed itself would cross the reserve, or the warm pause has lasted
``warm_hold_max_s``, switch the printer off.  A paused print resumes when the
plan puts it first (a baseline without a plan: whenever) and the guard passes
with ``resume_margin_pct`` to spare; nothing starts unless it passes with that
margin either.

A print near its end is not paused for a few watt-hours: if its rest, drawn
with no sun at all, leaves the battery no more than ``finish_allowance_pct``
below the reserve, it finishes (:meth:`EnergyGuard.finishes`).  A pause there
rarely ends well: the battery is at the reserve, so the warm bed soon crosses
it too, the printer is switched off, and a part left on a cold bed for hours
is lost (docs/benchmarks.md, #15's sixth pass: most prints paused that near
their end failed).  Below the allowance the node's own low-battery cut
(:mod:`node.power.power_guard`, ``critical_soc_pct``) still switches the
printer off, whatever the planner says.

Plans keep a band above the reserve (:attr:`EnergyGuard.plan_band_wh`) so the
guard does not pause what the plan placed, widened by the SoC reading's likely
error (:meth:`EnergyGuard.soc_margin_wh`): every state of charge the node reads
(its own estimator, a BMV, a shunt monitor) is a coulomb count, exact at a full
charge and drifting after it, so a print planned to end just above the reserve
on a reading a few points high is paused near its end.  The error grows as the
square root of the time since the battery was last seen full (a random walk of
the current sensor's error; node/power/battery.py measures 3 points after three
grey days and 4-6 points cycled to half) up to ``soc_error_max_pct``.

Pure: no clock, no I/O.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from node.plan.config import PlannerSection
from node.plan.energymodel import EnergyModel
from node.plan.schedule import would_cross_reserve

#: the guard's own margin, a fraction of capacity: the planner's energy bucket and the plant differ by ~1 % of a
#: step's energy
GUARD_MARGIN_FRAC = 0.005
#: a typical print's draw (W): plans keep two steps of it clear of the guard, and a print with no energy profile
#: is assumed to draw it
TYPICAL_PRINT_W = 150.0
#: a reading at or above this SoC (%), or a charger in float, is a full battery: the SoC counters resync there
FULL_SOC_PCT = 99.0
#: steps ahead the guard looks: a pause decided now still prints up to the next layer boundary during the coming
#: step, so the step after it must be affordable too
GUARD_STEPS = 2

Action = Literal["pause", "off", "resume"]


@dataclass(frozen=True)
class EnergyGuard:
    """The guard's numbers for one plant and one ``[planner]`` section."""

    model: EnergyModel
    reserve_frac: float
    resume_margin_frac: float
    base_load_w: float
    step_s: float
    warm_hold_max_s: float
    #: the SoC reading's error growth after a full charge and its cap, fractions of capacity (see soc_margin_wh)
    soc_error_per_sqrt_h: float = 0.0
    soc_error_max: float = 0.0
    #: how far below the reserve (fraction of capacity) a print may go to finish (see finishes)
    finish_allowance_frac: float = 0.0

    @classmethod
    def from_config(cls, planner: PlannerSection, model: EnergyModel, base_load_w: float | None = None
                    ) -> EnergyGuard:
        return cls(model=model, reserve_frac=planner.reserve_pct / 100.0,
                   resume_margin_frac=planner.resume_margin_pct / 100.0,
                   base_load_w=planner.base_load_w if base_load_w is None else base_load_w,
                   step_s=planner.step_s, warm_hold_max_s=planner.warm_hold_max_s,
                   soc_error_per_sqrt_h=planner.soc_error_pct_per_sqrt_h / 100.0,
                   soc_error_max=planner.soc_error_max_pct / 100.0,
                   finish_allowance_frac=planner.finish_allowance_pct / 100.0)

    @property
    def reserve_wh(self) -> float:
        return self.reserve_frac * self.model.capacity_wh

    @property
    def plan_band_wh(self) -> float:
        """What planned prints keep above the reserve, so the guard does not pause what the plan placed."""
        return GUARD_MARGIN_FRAC * self.model.capacity_wh + GUARD_STEPS * self.step_s / 3600.0 * TYPICAL_PRINT_W

    def soc_margin_wh(self, last_full_s: float | None, t_s: float) -> float:
        """The SoC reading's likely error (Wh) at ``t_s`` if the battery was last read full at ``last_full_s``
        (None: not read full since the node started: the largest error)."""
        if last_full_s is None:
            frac = self.soc_error_max
        else:
            hours = max(0.0, t_s - last_full_s) / 3600.0
            frac = min(self.soc_error_max, self.soc_error_per_sqrt_h * math.sqrt(hours))
        return frac * self.model.capacity_wh

    def ok(self, energy_wh: float, draw_w: float, pv_w: float, *, resume: bool = False) -> bool:
        """May the printer draw ``draw_w`` for the next steps (``resume``: with the margin a start needs)?"""
        margin_wh = (GUARD_MARGIN_FRAC + (self.resume_margin_frac if resume else 0.0)) * self.model.capacity_wh
        return not would_cross_reserve(energy_wh - margin_wh, self.reserve_wh, draw_w + self.base_load_w,
                                       0.5 * pv_w, GUARD_STEPS * self.step_s, self.model)

    def finishes(self, energy_wh: float, remaining_wh: float, remaining_s: float) -> bool:
        """Can the print's rest (``remaining_wh`` over ``remaining_s``, plus the node's base load, with no sun)
        be drawn leaving the battery at most the finish allowance below the reserve?"""
        if self.finish_allowance_frac <= 0.0 or not 0.0 < remaining_s < math.inf:
            return False
        draw_w = remaining_wh * 3600.0 / remaining_s + self.base_load_w
        after_wh, _ = self.model.step_wh(energy_wh - GUARD_MARGIN_FRAC * self.model.capacity_wh, -draw_w,
                                         remaining_s)
        return after_wh >= self.reserve_wh - self.finish_allowance_frac * self.model.capacity_wh


def reads_full(soc_pct: float | None, charge_state: str | None = None) -> bool:
    """A full battery as the node reads it (where every SoC counter resyncs): the SoC margin starts again."""
    return (soc_pct is not None and soc_pct >= FULL_SOC_PCT) or charge_state == "float"


def energy_action(guard: EnergyGuard, state: Literal["printing", "paused", "suspended"], *, energy_wh: float,
                  pv_w: float, draw_w: float, hold_w: float, resume_w: float, paused_for_s: float,
                  switched_off: bool, plan_starts_it: bool,
                  rest: Callable[[], tuple[float, float]] | None = None) -> tuple[Action | None, str]:
    """What the guard does now to a print in ``state`` (see the module docstring), and why in words.

    ``draw_w``: the print's draw now; ``hold_w``: a warm pause's; ``resume_w``: what resuming draws first;
    ``switched_off``: the printer was already switched off for this pause; ``plan_starts_it``: the plan (or a
    baseline's rule) would start this print now; ``rest``: gives the printing print's remaining (Wh, s), where its
    energy profile is known (:func:`node.plan.schedule.rest_wh_s`); asked only when the guard would pause."""
    if state == "printing":
        if guard.ok(energy_wh, draw_w, pv_w):
            return None, ""
        rest_wh, rest_s = rest() if rest is not None else (math.inf, math.inf)
        if guard.finishes(energy_wh, rest_wh, rest_s):
            return None, (f"the rest needs {rest_wh:.0f} Wh: it finishes within the allowance below the reserve "
                          "rather than pause so near its end")
        return "pause", "printing on would cross the reserve; pause at the next layer, bed kept warm"
    if state == "paused" and not switched_off:
        if paused_for_s >= guard.warm_hold_max_s:
            return "off", "the warm pause has lasted the configured maximum: switch the printer off"
        if not guard.ok(energy_wh, hold_w, pv_w):
            return "off", "keeping the bed warm would cross the reserve: switch the printer off"
    if plan_starts_it and guard.ok(energy_wh, resume_w, pv_w, resume=True):
        return "resume", "the plan can carry the rest of the print above the reserve"
    return None, ""
