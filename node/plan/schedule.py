"""The energy-aware scheduler: pure (no clock, no I/O), forecast in, plan out.

Inputs: the pessimistic PV forecast at fixed steps (5 min), the battery as an
:class:`~node.plan.energymodel.EnergyModel` and its energy now, the base load and
other loads, the queued jobs with their energy profiles (``[t_s, watts]`` per
minute), priorities and deadlines, the plate-clear gate, and the running print
(committed: its remaining profile is drawn whatever happens, hub cancel aside).

Method (list scheduling on a simulated state of charge):

1. Simulate the battery over the horizon with no new print (``plancore.simulate``).
2. Take the jobs by priority (higher first), then deadline (earlier first),
   then queue order.  Each goes at the earliest step, after the previous job
   ends plus the plate turnaround, at which the battery stays at or above the
   planning reserve for the whole print (``plancore.earliest_start``); then the
   battery is re-simulated with that print's load from its start on.  So no
   planned print crosses the reserve on the forecast it was planned with, by
   construction.
3. The printer is kept busy when energy allows: if the next job must wait
   for energy, another of the next ``lookahead`` jobs that can start sooner
   goes first — among equal priorities the soonest start wins; a lower
   priority only backfills, i.e. if it ends (plus turnaround) before the
   higher-priority job could start and leaves that start feasible.  A small
   print fits in a half-empty battery at night where a big one would cross
   the reserve.  A job queued longer than ``protect_after_s`` is protected
   the same way from jobs of its own priority, and while it has no window in
   the horizon, none of them starts before it (the battery fills for it):
   otherwise a stream of small prints takes every sunny morning and every
   watt a big one needs, and it starves for weeks.  Not while the battery is
   full (``FULL_FRAC``): it cannot fill further, and holding the others
   wastes the sun.  A job that cannot fit in this season even on a clear day
   (a ``waiting_notes`` entry) is not protected: waiting for it would idle
   the printer for months.  Where the
   caller gives the expected forecast (``pv_expected_w``), a plan with such
   a starving job is made again on it: after days of waiting the job is
   worth the risk of an energy pause, which the guard handles (it reads the
   battery, not the plan), while the pessimistic quantile may not show a
   window all winter.
4. Sunshine that would otherwise be lost is preferred: when the battery is
   full and spilling PV at the moment a print can start, the hungriest of the
   equal-priority jobs that can start then goes first, soaking up the surplus.
   Starting each print as early as energy allows also drains the battery
   before the next sunny spell, so less of it is spilled.

Jobs the caller found can never fit the plant (``never_fits``: job id -> the
reason with its figures, :mod:`node.plan.fit`) are not placed: they go to the
waiting list flagged ``never_fits``, held until a person cancels them.

Every job gets a reason a person can read ("needs 310 Wh; first window above
the 30 % reserve is tomorrow 10:05").
"""
from __future__ import annotations

import bisect
import functools
import math
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property
from zoneinfo import ZoneInfo

from node.native import load_core
from node.plan.energymodel import EnergyModel

_core = load_core("plancore")


#: a battery at least this full cannot fill further for a starving job: holding the others would only waste sun
FULL_FRAC = 0.97


class Watts(array):
    """Watts per step (``array('d')``, any buffer the Cython core takes): the planner's arrays without numpy
    (issue #19: numpy was 13.4 MB of the daemon for arrays of a few hundred values).  ``sum()`` adds as numpy
    did (pairwise), so energies, reasons and the study's results are what they were."""

    __slots__ = ()

    def __new__(cls, values: Sequence[float] | array = ()) -> Watts:
        if not isinstance(values, (list, tuple, array)):
            try:
                view = memoryview(values)  # type: ignore[arg-type]
            except TypeError:
                pass  # an iterable
            else:
                if view.format == "d" and view.ndim == 1:
                    values = view.tobytes()  # a float64 numpy array (the study's): copied at C speed
        return super().__new__(cls, "d", values)

    def sum(self) -> float:
        return _core.pairwise_sum(self)

    @classmethod
    def filled(cls, n: int, value: float) -> Watts:
        return cls(array("d", [value]) * n)


def wsum(values: Sequence[float] | array) -> float:
    """The sum numpy's ``.sum()`` gives (pairwise), of any sequence of floats."""
    return _core.pairwise_sum(values if isinstance(values, array) and values.typecode == "d" else array("d", values))


def profile_energy_wh(power_profile: Sequence[Sequence[float]]) -> float:
    return float(profile_to_steps(power_profile, 60.0).sum() * 60.0 / 3600.0)


def profile_duration_s(power_profile: Sequence[Sequence[float]]) -> float:
    """Samples are ``[t_s, watts]``; each holds until the next, the last for the gap before it (60 s if alone)."""
    if not power_profile:
        return 0.0
    last_t = float(power_profile[-1][0])
    gap = last_t - float(power_profile[-2][0]) if len(power_profile) > 1 else 60.0
    return last_t + (gap if gap > 0 else 60.0)


def interp_at(x: float, knots: Sequence[float], values: Sequence[float]) -> float:
    """numpy.interp(x, knots, values, left=0.0) for one point, the same arithmetic (knots non-decreasing)."""
    j = bisect.bisect_right(knots, x) - 1
    if j < 0:
        return 0.0
    last = len(knots) - 1
    if j >= last:
        return values[last]
    if knots[j] == x:
        return values[j]
    slope = (values[j + 1] - values[j]) / (knots[j + 1] - knots[j])
    out = slope * (x - knots[j]) + values[j]
    if math.isnan(out):
        out = slope * (x - knots[j + 1]) + values[j + 1]
        if math.isnan(out) and values[j] == values[j + 1]:
            out = values[j]
    return out


def profile_rest(power_profile: Sequence[Sequence[float]], elapsed_s: float) -> list[list[float]]:
    """The part of a print's profile still to come after ``elapsed_s`` of it, times counted from now."""
    rest = [[max(0.0, float(t) - elapsed_s), float(w)] for t, w in power_profile if float(t) + 60.0 > elapsed_s]
    return rest or [[0.0, 0.0]]


def rest_wh_s(power_profile: Sequence[Sequence[float]], elapsed_s: float) -> tuple[float, float]:
    """What printing to the end takes after ``elapsed_s``: (Wh, s) -- the energy guard's finish allowance."""
    rest = profile_rest(power_profile, elapsed_s)
    return profile_energy_wh(rest), profile_duration_s(rest)


def profile_to_steps(power_profile: Sequence[Sequence[float]], step_s: float) -> Watts:
    """Average watts in each planning step, energy preserved (the last step may be partial)."""
    duration_s = profile_duration_s(power_profile)
    n_steps = max(1, math.ceil(duration_s / step_s - 1e-9))
    if not len(power_profile):
        return Watts.filled(n_steps, 0.0)
    t_s = [float(sample[0]) for sample in power_profile]
    watts = [float(sample[1]) for sample in power_profile]
    for i, w in enumerate(watts):
        if w < 0:
            raise ValueError(f"power_profile[{i}]: negative watts {w}")
    ends = [*t_s[1:], duration_s]
    for i, (start, end) in enumerate(zip(t_s, ends, strict=True)):
        if end < start:
            raise ValueError(f"power_profile[{i}]: times must increase")
    # energy is piecewise linear in time: integrate to every sample time, read it at the step edges
    cumulative_ws = [0.0]
    total = 0.0
    for start, end, w in zip(t_s, ends, watts, strict=True):
        total += w * (end - start)
        cumulative_ws.append(total)
    knots = [*t_s, duration_s]
    at_edges = [interp_at(min(k * step_s, duration_s), knots, cumulative_ws) for k in range(n_steps + 1)]
    return Watts([(at_edges[k + 1] - at_edges[k]) / step_s for k in range(n_steps)])


@dataclass(frozen=True)
class PlanJob:
    """A queued job as the planner sees it."""

    job_id: str
    name: str
    power_profile: Sequence[Sequence[float]]
    priority: int = 0
    deadline_s: float | None = None
    queue_seq: int = 0
    #: when it was queued (s since the epoch); with :attr:`PlanInputs.protect_after_s`, no starvation
    queued_s: float | None = None
    _steps: dict = field(default_factory=dict, repr=False, compare=False)

    @cached_property
    def energy_wh(self) -> float:
        return profile_energy_wh(self.power_profile)

    def steps_w(self, step_s: float) -> Watts:
        """Its draw per planning step (:func:`profile_to_steps`), computed once per step size and kept: a caller
        that keeps its PlanJobs between plans (the year study) does not convert the profile at every re-plan."""
        if step_s not in self._steps:
            self._steps[step_s] = profile_to_steps(self.power_profile, step_s)
        return self._steps[step_s]

    @cached_property
    def duration_s(self) -> float:
        return profile_duration_s(self.power_profile)


@dataclass(frozen=True)
class RunningPrint:
    """The print on the printer: committed.  ``remaining_w`` is its draw per planning step from now."""

    job_id: str
    name: str
    remaining_w: Sequence[float]
    paused: bool = False


@dataclass
class PlanInputs:
    t0_s: float
    step_s: float
    pv_w: Sequence[float]
    energy: EnergyModel
    energy_wh: float
    reserve_frac: float
    jobs: Sequence[PlanJob]
    base_load_w: float = 4.0
    other_loads_w: Sequence[float] | None = None
    plate_clear: bool = True
    plate_turnaround_s: float = 600.0
    running: RunningPrint | None = None
    timezone: str = "UTC"
    lookahead: int = 8
    guard_band_wh: float = 0.0   # planned prints keep this much above the reserve (the safety guard's band)
    #: jobs that can never fit this plant (node.plan.fit), job id -> the reason with its figures: held, not placed
    never_fits: Mapping[str, str] = field(default_factory=dict)
    #: job id -> a note added to its reason if it must wait (e.g. "it fits from March": node.plan.fit)
    waiting_notes: Mapping[str, str] = field(default_factory=dict)
    #: a job queued this long ago (s) is protected like a higher priority: a job of its priority goes before it
    #: only if it leaves its start where it is (see the module docstring, 3.)
    protect_after_s: float = math.inf
    #: the expected PV (no quantile) per step, where the caller has it: a protected job with no window on
    #: ``pv_w`` is then planned on it (see the module docstring, 3.)
    pv_expected_w: Sequence[float] | None = None
    #: ... once it has waited this long (s)
    expected_after_s: float = 0.0


@dataclass
class PlannedJob:
    job_id: str
    name: str
    start_s: float
    end_s: float
    energy_wh: float
    min_soc_pct: float
    reason: str


@dataclass
class WaitingJob:
    job_id: str
    name: str
    energy_wh: float
    reason: str
    never_fits: bool = False   # held: it can never fit this plant (node.plan.fit); a person cancels it


@dataclass
class Plan:
    t0_s: float
    step_s: float
    reserve_pct: float
    capacity_wh: float
    planned: list[PlannedJob]
    waiting: list[WaitingJob]
    soc_pct: Watts               # H + 1 values: at the start of each step and at the horizon's end (percent)
    pv_w: Watts                  # H values: the forecast planned on
    load_w: Watts                # H values: base + other loads + prints
    lost_w: Watts                # H values: PV spilled with this plan
    surplus_windows: list[tuple[float, float]] = field(default_factory=list)

    @property
    def horizon_s(self) -> float:
        return len(self.pv_w) * self.step_s

    @property
    def pv_lost_wh(self) -> float:
        return float(self.lost_w.sum() * self.step_s / 3600.0)

    def start_of(self, job_id: str) -> float | None:
        for job in self.planned:
            if job.job_id == job_id:
                return job.start_s
        return None

    def step_at(self, t_s: float) -> int | None:
        """The index of the step holding ``t_s`` (None outside the horizon)."""
        k = math.floor((t_s - self.t0_s) / self.step_s)
        return k if 0 <= k < len(self.pv_w) else None

    def pv_w_at(self, t_s: float) -> float:
        """The PV this plan counts on for the step holding ``t_s`` (0 outside the horizon)."""
        k = self.step_at(t_s)
        return 0.0 if k is None else float(self.pv_w[k])

    def soc_pct_at(self, t_s: float) -> float:
        k = round((t_s - self.t0_s) / self.step_s)
        return float(self.soc_pct[min(max(k, 0), len(self.soc_pct) - 1)])


#: at most one re-plan for a departure from the plan in this many seconds (the node and the study)
DEVIATION_INTERVAL_S = 900.0


def plan_deviation(current: Plan, t_s: float, soc_pct: float | None, pv_w: float | None, *,
                   deviation_soc_pct: float, array_peak_w: float, pv_held_back: bool = False) -> str | None:
    """Why the battery or the sun departs from what ``current`` expected at ``t_s``, in words (None: neither
    does): a re-plan is due.  The SoC by more than ``deviation_soc_pct`` points; the PV by more than 50 W or a
    quarter of the array's peak, whichever is more (a passing cloud is not worth a new plan, a grey morning is).
    ``pv_held_back``: the charger was limiting PV (a full battery), so ``pv_w`` only says the sun gave at least
    that: less than planned is no departure (it re-planned a full battery every 15 min, all day)."""
    if soc_pct is not None:
        planned_pct = current.soc_pct_at(t_s)
        if abs(planned_pct - soc_pct) > deviation_soc_pct:
            return f"SoC {soc_pct:.0f} % departs from the planned {planned_pct:.0f} %"
    if pv_w is not None and current.step_at(t_s) is not None:
        expected_w = current.pv_w_at(t_s)
        departs_w = pv_w - expected_w if pv_held_back else abs(pv_w - expected_w)
        if departs_w > max(50.0, 0.25 * array_peak_w):
            return f"PV {pv_w:.0f} W departs from the {expected_w:.0f} W planned on"
    return None


@functools.lru_cache(maxsize=8)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


# --- time words for reasons ----------------------------------------------------------------------
def when_words(t_s: float, now_s: float, timezone: str) -> str:
    """'today 14:05', 'tomorrow 10:05', 'Mon 09:30' in the site's local time."""
    tz = _zone(timezone)
    when = datetime.fromtimestamp(t_s, tz=UTC).astimezone(tz)
    today = datetime.fromtimestamp(now_s, tz=UTC).astimezone(tz).date()
    days = (when.date() - today).days
    day = {0: "today", 1: "tomorrow"}.get(days, when.strftime("%a %d %b"))
    return f"{day} {when:%H:%M}"


# --- the scheduler -------------------------------------------------------------------------------
@dataclass
class _Trajectory:
    net_w: Watts
    soc_wh: Watts
    lost_w: Watts

    def copy(self) -> _Trajectory:
        return _Trajectory(Watts(self.net_w), Watts(self.soc_wh), Watts(self.lost_w))


class _Scheduler:
    def __init__(self, inp: PlanInputs) -> None:
        self.inp = inp
        self.model = inp.energy
        self.dt_h = inp.step_s / 3600.0
        self.reserve_wh = inp.reserve_frac * self.model.capacity_wh + max(0.0, inp.guard_band_wh)
        self.n_steps = len(inp.pv_w)
        self.turnaround_steps = math.ceil(inp.plate_turnaround_s / inp.step_s - 1e-9)
        self.job_w = {job.job_id: job.steps_w(inp.step_s) for job in inp.jobs}
        self.lookahead = inp.lookahead
        #: the protected job that found no window in the last list_schedule, if any: the jobs behind it wait
        self.starving: PlanJob | None = None

    def _params(self) -> tuple[float, float, float, float, float]:
        m = self.model
        return m.capacity_wh, m.charge_efficiency, m.discharge_factor, m.max_charge_w, self.dt_h

    def simulate(self, traj: _Trajectory, from_k: int) -> float:
        return _core.simulate(traj.net_w, traj.soc_wh, traj.lost_w, from_k, *self._params())

    def earliest(self, traj: _Trajectory, job_w: Watts, from_k: int, to_k: int | None = None) -> int:
        if from_k > self.n_steps - len(job_w):
            return -1
        last = self.n_steps - len(job_w) if to_k is None else to_k
        return _core.earliest_start(traj.soc_wh, traj.net_w, job_w, from_k, last, self.reserve_wh,
                                    *self._params())

    def place(self, traj: _Trajectory, job_w: Watts, start_k: int) -> None:
        _core.subtract_at(traj.net_w, job_w, start_k)
        self.simulate(traj, start_k)

    def age_words(self, job: PlanJob) -> str:
        """How long ``job`` has been queued, in words."""
        hours = (self.inp.t0_s - (job.queued_s or self.inp.t0_s)) / 3600.0
        return f"{hours / 24:.0f} days" if hours >= 48 else f"{hours:.0f} h"

    def list_schedule(self, base: _Trajectory, order: Sequence[PlanJob], ready_k: int
                      ) -> tuple[_Trajectory, list[_Placement]]:
        """Place the jobs one after another (see the module docstring); -1 starts are unplaceable."""
        traj = base.copy()
        placements: list[_Placement] = []
        remaining = list(order)
        self.starving = None
        while remaining:
            window = remaining[:self.lookahead]
            head = window[0]
            starving = self.starving
            if starving is not None and head.priority <= starving.priority:
                placements.append(_Placement(head, -1, ready_k, f"waits behind {starving.name}, queued "
                                             f"{self.age_words(starving)} ago, so the battery fills for it"))
                remaining.remove(head)
                continue
            head_w = self.job_w[head.job_id]
            head_k = self.earliest(traj, head_w, ready_k)
            choice, choice_k, note = head, head_k, ""
            protected = (head.queued_s is not None and self.inp.t0_s - head.queued_s >= self.inp.protect_after_s
                         and head.job_id not in self.inp.waiting_notes)
            filling = traj.soc_wh[min(ready_k, self.n_steps)] < FULL_FRAC * self.model.capacity_wh
            if protected and head_k < 0 and filling:
                self.starving = head
            elif head_k != ready_k:
                # the head must wait: a job that can start sooner goes first if it does not delay a
                # higher-priority or protected head (backfilling); among equals the soonest start wins
                for job in window[1:]:
                    job_w = self.job_w[job.job_id]
                    limit = choice_k if choice_k >= 0 else None
                    k = self.earliest(traj, job_w, ready_k, limit)
                    if k < 0 or (choice_k >= 0 and k >= choice_k):
                        continue
                    if (job.priority < head.priority or protected) and head_k >= 0:
                        if k + len(job_w) + self.turnaround_steps > head_k:
                            continue
                        trial = traj.copy()
                        self.place(trial, job_w, k)
                        if self.earliest(trial, head_w, head_k, head_k) != head_k:
                            continue
                    choice, choice_k, note = job, k, f"goes before {head.name}, which must wait for energy"
            elif traj.lost_w[ready_k] > 1.0 and not protected:
                # sunshine is being spilled right now: of the equal-priority jobs that can start now,
                # the hungriest soaks up most of it
                for job in window[1:]:
                    if job.priority != head.priority or job.energy_wh <= choice.energy_wh:
                        continue
                    if self.earliest(traj, self.job_w[job.job_id], ready_k, ready_k) == ready_k:
                        choice, note = job, "first: it uses most of the sunshine that would otherwise be lost"
            placements.append(_Placement(choice, choice_k, ready_k, note))
            remaining.remove(choice)
            if choice_k >= 0:
                job_w = self.job_w[choice.job_id]
                self.place(traj, job_w, choice_k)
                ready_k = choice_k + len(job_w) + self.turnaround_steps
        return traj, placements


@dataclass
class _Placement:
    job: PlanJob
    start_k: int
    ready_k: int
    note: str


def _order(jobs: Sequence[PlanJob]) -> list[PlanJob]:
    return sorted(jobs, key=lambda j: (-j.priority, j.deadline_s if j.deadline_s is not None else math.inf,
                                       j.queue_seq))


def plan(inp: PlanInputs) -> Plan:
    """Schedule the queue on the forecast; see the module docstring for the method."""
    n_steps = len(inp.pv_w)
    if n_steps < 1:
        raise ValueError("the forecast is empty")
    sched = _Scheduler(inp)
    pv_w = Watts(inp.pv_w)
    net_w = Watts.filled(n_steps, 0.0)
    if inp.other_loads_w is not None:
        if len(inp.other_loads_w) != n_steps:
            raise ValueError("other_loads_w must have one value per forecast step")
        fixed_load_w = Watts.filled(n_steps, 0.0)
        _core.add_scalar(Watts(inp.other_loads_w), float(inp.base_load_w), fixed_load_w)
        _core.sub(pv_w, fixed_load_w, net_w)
    else:
        _core.sub_scalar(pv_w, float(inp.base_load_w), net_w)
    base = _Trajectory(net_w, Watts.filled(n_steps + 1, 0.0), Watts.filled(n_steps, 0.0))
    base.soc_wh[0] = min(max(inp.energy_wh, 0.0), sched.model.capacity_wh)

    held = [job for job in inp.jobs if job.job_id in inp.never_fits]
    order = _order([job for job in inp.jobs if job.job_id not in inp.never_fits])
    ready_k = 0
    ready_reason = ""
    running = inp.running
    if running is not None and not running.paused:
        remaining = Watts(running.remaining_w[:n_steps])
        _core.subtract_at(base.net_w, remaining, 0)
        ready_k = len(remaining) + sched.turnaround_steps
        ready_reason = f"after {running.name} finishes and the plate is cleared"
    elif running is not None and running.paused:
        # a paused print resumes before anything else: it goes first, as a job
        paused_job = PlanJob(running.job_id, running.name,
                             [[i * inp.step_s, w] for i, w in enumerate(running.remaining_w)], priority=1 << 30)
        sched.job_w[paused_job.job_id] = Watts(running.remaining_w)
        order = [paused_job, *order]
    elif not inp.plate_clear:
        ready_k = sched.turnaround_steps
        ready_reason = "once the plate is cleared"
    sched.simulate(base, 0)

    traj, placements = sched.list_schedule(base, order, ready_k)
    hungry = sched.starving
    if (inp.pv_expected_w is not None and hungry is not None
            and inp.t0_s - (hungry.queued_s or inp.t0_s) >= inp.expected_after_s):
        again = plan(replace(inp, pv_w=inp.pv_expected_w, pv_expected_w=None))
        note = f"planned on the expected forecast: {hungry.name} has waited {sched.age_words(hungry)}"
        for job in again.planned:
            job.reason += f"; {note}"
        return again

    capacity_wh = sched.model.capacity_wh
    reserve_pct = 100.0 * inp.reserve_frac
    planned: list[PlannedJob] = []
    waiting: list[WaitingJob] = []
    previous_name = running.name if running is not None and not running.paused else None
    for placement in placements:
        job, start, ready = placement.job, placement.start_k, placement.ready_k
        job_w = sched.job_w[job.job_id]
        energy_wh = float(job_w.sum() * sched.dt_h)
        if start < 0:
            if ready + len(job_w) > n_steps:
                why = (f"needs {energy_wh:.0f} Wh over {len(job_w) * inp.step_s / 3600:.1f} h; "
                       f"the printer is booked until past the {n_steps * inp.step_s / 3600:.0f} h horizon")
            else:
                why = (f"needs {energy_wh:.0f} Wh; no window above the {reserve_pct:.0f} % reserve "
                       f"within the {n_steps * inp.step_s / 3600:.0f} h horizon")
            if job.job_id in inp.waiting_notes:
                why += f"; {inp.waiting_notes[job.job_id]}"
            if placement.note:      # it waits behind a protected job (the only note of an unplaced job)
                why = f"{placement.note} (it needs {energy_wh:.0f} Wh)"
            waiting.append(WaitingJob(job.job_id, job.name, energy_wh, why))
            continue
        start_s = inp.t0_s + start * inp.step_s
        end_s = start_s + len(job_w) * inp.step_s
        low_pct = 100.0 * _core.min_energy_during(traj.soc_wh, start, start + len(job_w)) / capacity_wh
        if start == 0:
            why = f"starts now: needs {energy_wh:.0f} Wh, lowest SoC during the print {low_pct:.0f} %"
        elif start == ready:
            after = ready_reason if not planned and ready_reason else f"after {previous_name} and the plate turnaround"
            why = f"needs {energy_wh:.0f} Wh; starts {when_words(start_s, inp.t0_s, inp.timezone)} {after}"
        else:
            why = (f"needs {energy_wh:.0f} Wh; first window above the {reserve_pct:.0f} % reserve is "
                   f"{when_words(start_s, inp.t0_s, inp.timezone)}")
        if placement.note:
            why += f"; {placement.note}"
        if job.deadline_s is not None and end_s > job.deadline_s:
            why += f" (misses its deadline {when_words(job.deadline_s, inp.t0_s, inp.timezone)})"
        planned.append(PlannedJob(job.job_id, job.name, start_s, end_s, energy_wh, low_pct, why))
        previous_name = job.name

    waiting += [WaitingJob(job.job_id, job.name, job.energy_wh, inp.never_fits[job.job_id], never_fits=True)
                for job in held]
    load_w = Watts.filled(n_steps, 0.0)
    _core.sub(pv_w, traj.net_w, load_w)
    soc_pct = Watts.filled(n_steps + 1, 0.0)
    _core.percent_of(traj.soc_wh, capacity_wh, soc_pct)
    return Plan(
        t0_s=inp.t0_s, step_s=inp.step_s, reserve_pct=reserve_pct, capacity_wh=capacity_wh,
        planned=planned, waiting=waiting, soc_pct=soc_pct, pv_w=pv_w,
        load_w=load_w, lost_w=Watts(traj.lost_w),
        surplus_windows=[(inp.t0_s + a * inp.step_s, inp.t0_s + b * inp.step_s)
                         for a, b in _core.runs_above(traj.lost_w, 1.0)])


# --- the shared safety pause ----------------------------------------------------------------------
def would_cross_reserve(energy_wh: float, reserve_wh: float, draw_w: float, pv_w: float, dt_s: float,
                        model: EnergyModel) -> bool:
    """Would one more ``dt_s`` at ``draw_w`` (with ``pv_w`` of sun) take the battery below the reserve?

    The guard every policy shares: it is checked before each step of a print
    and of a warm pause with the step's largest draw and a pessimistic PV, so
    the print is paused (at the next layer boundary, seconds away) before the
    battery can cross the reserve with the printer on.
    """
    after_wh, _ = model.step_wh(energy_wh, pv_w - draw_w, dt_s)
    return after_wh < reserve_wh
