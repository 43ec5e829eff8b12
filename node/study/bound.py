"""A real upper bound on the prints any policy can complete in a year-study run (perfect foresight).

Why an LP: the old "oracle" was the same list heuristic given the true weather,
which a better policy could beat; a bound must hold for *every* policy.  This
is the linear-programming relaxation of the whole run (all of it at once, not
window by window: a window-by-window optimum is not a bound), solved with HiGHS
through :func:`scipy.optimize.linprog` — scipy already comes with pvlib, and
HiGHS is a maintained, exact LP solver, so the bound is a certificate and not a
search that may stop early.

What is relaxed (each step can only make the bound larger, so it stays valid):

* **hours**: the run is cut in hours; inside an hour PV, loads, charge and
  discharge are summed, so charging and discharging in the same hour cost no
  efficiency and the battery limits are checked only at hour boundaries;
* **the battery** is a bucket in "open-circuit energy" ``E(q) = Ah * integral
  OCV dq``: in that coordinate the plant (:func:`node.power.plant.step_battery`)
  stores ``charge_efficiency`` of every charging watt-hour and loses exactly the
  discharged ones; Peukert's derating, the charger's taper and the node's
  reserve are ignored, the battery may go down to empty, and capacity, starting
  energy and efficiency get a 1 % allowance for the plant's per-step
  discretisation;
* **jobs** become counts per job kind (real numbers, not integers): their
  energy and printing time are spent anywhere in the run, each hour's print
  draw between the lowest and the highest draw of any job minute;
* **the plate**: at most one print overlaps each unattended night window (the
  plate is not cleared between 22:00 and 07:00), and every other print is
  followed by ``plate_clear_delay_s`` without printing;
* **which jobs**: a policy that completed ``C`` prints and failed ``F`` has
  taken them from the first ``C + F + queue_target`` jobs of the seeded stream,
  so it completed at most ``a_k(C + F + queue_target)`` jobs of kind ``k``
  (``a_k(M)``: how many of the first ``M`` are of that kind).  ``a_k`` is a
  step function; each edge of its upper concave hull is a line above it, so
  ``y_k <= slope * (sum of y + F + queue_target) + intercept`` holds for every
  edge: one LP, linear constraints, exact at the hull's corners.

Base and other loads are kept (left unserved only where the battery is empty,
as the plant does); the printer's standby and warm-pause draws are left out (a
relaxation again).

How it is solved (the bound used to be most of the year table's CPU: ~5 LPs of
a year of hours, 5-9 s each, twice per seed): by decomposition (:class:`_TimePart`).
The hours meet the job kinds only through three totals (print energy, printing
hours, turnaround hours); the hours' LP is solved in the few directions the
kinds' dual prices ask for (3 on a year), each solve a cut valid for every
solution, and those cuts serve every seed, failure count and shrink pass of the
same run (the study's hourly PV does not depend on the seed: the bound takes
the seed-free hours raised by a hair, see ``node.study.year.bound_for``).  The
value returned is the relaxation under the cuts — an upper bound on the LP,
whatever the number of cuts — and it is within ``DECOMPOSITION_GAP`` of the
LP's optimum (checked against a restriction to the points found).  The shrink
passes run to their fixed point (each is a bound; the direct LP stopped early
to save time).  ``decomposed=False`` solves the LP directly, as before
(tests/study/test_year.py checks both agree).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from node.plan.schedule import profile_to_steps
from node.power.plant import BatteryParams, open_circuit_v
from node.printer.profile import load_profile
from node.study.jobstream import JobStream

DISCRETISATION_ALLOWANCE = 1.01
MAX_LOOSE_PASSES = 25
STOP_GAIN = 0.005
#: interior point: on a year of hours it solves the LP in ~15 s where the dual simplex took minutes
LP_METHOD = "highs-ipm"


@dataclass
class Bound:
    prints: float          # the LP optimum: no policy completes more
    variables: int
    constraints: int
    solve_s: float
    #: LPs of the whole run's hours solved for this bound (decomposed: 0 when another seed or policy of the same
    #: run already solved enough of them)
    hours_lp_solves: int = 0


def upper_hull_lines(counts: np.ndarray) -> list[tuple[float, float]]:
    """Lines (slope, intercept) of the upper concave hull of the points (m, counts[m]), m = 0..len-1."""
    hull: list[tuple[int, float]] = []
    for m, value in enumerate(counts.tolist()):
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (y2 - y1) * (m - x1) <= (value - y1) * (x2 - x1):  # the middle point is not above the chord
                hull.pop()
            else:
                break
        hull.append((m, value))
    lines = []
    for (x1, y1), (x2, y2) in itertools.pairwise(hull):
        slope = (y2 - y1) / (x2 - x1)
        lines.append((slope, y1 - slope * x1))
    return lines


def ocv_energy_wh(params: BatteryParams, soc: float, points: int = 400) -> float:
    """``Ah * integral_0^soc OCV(q) dq``: the plant's stored energy in the coordinate where it is a bucket."""
    if soc <= 0:
        return 0.0
    q = np.linspace(0.0, soc, points)
    v = np.array([open_circuit_v(params.chemistry, x, params.cells) for x in q])
    return float(params.capacity_ah * np.trapezoid(v, q))


def unattended_windows(start_s: float, hours: int, utc_offset_s: float, attended: tuple[int, int]) -> list[list[int]]:
    """Runs of consecutive hour indices whose local hour is outside ``attended`` (start inclusive, end exclusive)."""
    windows: list[list[int]] = []
    current: list[int] = []
    for t in range(hours):
        local_hour = int(((start_s + t * 3600.0 + utc_offset_s) % 86400.0) // 3600.0)
        if not attended[0] <= local_hour < attended[1]:
            current.append(t)
        elif current:
            windows.append(current)
            current = []
    if current:
        windows.append(current)
    return windows


class _LP:
    """A sparse LP assembled block by block (variables in ranges, constraint rows as triplets)."""

    def __init__(self) -> None:
        self.lo: list[np.ndarray] = []
        self.hi: list[np.ndarray] = []
        self.n = 0
        self.ub: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []   # (rows, cols, vals), rhs separately
        self.ub_rhs: list[np.ndarray] = []
        self.eq: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.eq_rhs: list[np.ndarray] = []
        self.n_ub = 0
        self.n_eq = 0

    def variables(self, count: int, lo: float | np.ndarray = 0.0, hi: float | np.ndarray = np.inf) -> int:
        first = self.n
        self.lo.append(np.broadcast_to(np.asarray(lo, dtype=float), (count,)).copy())
        self.hi.append(np.broadcast_to(np.asarray(hi, dtype=float), (count,)).copy())
        self.n += count
        return first

    def rows(self, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, rhs: np.ndarray, equal: bool = False) -> None:
        """Add ``len(rhs)`` rows (``rows`` counts from 0 for this batch): sum(vals * x[cols]) <= rhs (or ==)."""
        rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
        vals, rhs = np.asarray(vals, dtype=float), np.atleast_1d(np.asarray(rhs, dtype=float))
        if equal:
            self.eq.append((rows + self.n_eq, cols, vals))
            self.eq_rhs.append(rhs)
            self.n_eq += len(rhs)
        else:
            self.ub.append((rows + self.n_ub, cols, vals))
            self.ub_rhs.append(rhs)
            self.n_ub += len(rhs)

    def maximise(self, objective_cols: np.ndarray) -> float:
        c = np.zeros(self.n)
        c[objective_cols] = 1.0
        return self.maximise_c(c)[0]

    def maximise_c(self, c: np.ndarray) -> tuple[float, np.ndarray]:
        """max c.x: the optimum and the solution (the matrices are built once and kept for the next call)."""
        from scipy.optimize import linprog

        if getattr(self, "_built", None) is None:
            import scipy.sparse as sp

            def matrix(parts: list, n_rows: int) -> sp.csr_matrix:
                return sp.csr_matrix((np.concatenate([p[2] for p in parts]),
                                      (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))),
                                     shape=(n_rows, self.n))

            hi = np.concatenate(self.hi)
            self._built = (matrix(self.ub, self.n_ub), np.concatenate(self.ub_rhs), matrix(self.eq, self.n_eq),
                           np.concatenate(self.eq_rhs),
                           np.column_stack([np.concatenate(self.lo), np.where(np.isinf(hi), np.inf, hi)]))
        a_ub, b_ub, a_eq, b_eq, bounds = self._built
        result = linprog(-np.asarray(c, dtype=float), A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq, bounds=bounds,
                         method=LP_METHOD)
        if result.status != 0:
            raise RuntimeError(f"the bound's LP did not solve: {result.message}")
        return float(-result.fun), result.x


@dataclass(frozen=True)
class _Kind:
    """One job kind: its per-minute draw, and per hour of a run started at any 5-minute offset in an hour,
    the least and most energy (Wh) and the least printer occupancy (fraction of the hour)."""

    name: str
    minute_w: np.ndarray
    energy_wh: float
    duration_h: float
    e_min: np.ndarray
    e_max: np.ndarray
    occ_min: np.ndarray

    @classmethod
    def of(cls, name: str, profile: list[list[float]], start_step_s: float) -> _Kind:
        minute_w = np.asarray(profile_to_steps(profile, 60.0))
        n = len(minute_w)
        span = int(np.ceil(n / 60.0)) + 1
        energy = []
        occupancy = []
        for offset in range(0, 60, max(1, int(start_step_s // 60))):
            minutes = np.arange(n) + offset
            energy.append(np.bincount(minutes // 60, weights=minute_w / 60.0, minlength=span)[:span])
            occupancy.append(np.bincount(minutes // 60, minlength=span)[:span] / 60.0)
        e = np.array(energy)
        return cls(name, minute_w, float(minute_w.sum() / 60.0), n / 60.0, e.min(axis=0), e.max(axis=0),
                   np.array(occupancy).min(axis=0))


@dataclass
class _Hours:
    """The hours' part of both LPs (``_solve``'s and ``_TimePart``'s): the plant's constants, the per-hour
    variables E (stored), C (charged), D (drawn), S (base load unserved), PZ (draw of time-free prints),
    U (their printing time), V (plate turnaround), and the battery's balance row."""

    lp: _LP
    H: int
    idx: np.ndarray
    ones: np.ndarray
    nights: list[list[int]]
    night: np.ndarray
    w_lo: float
    w_hi: float
    d_max: float
    E: int
    C: int
    D: int
    S: int
    PZ: int
    U: int
    V: int

    @classmethod
    def build(cls, pv_hourly_wh: np.ndarray, base_hourly_wh: np.ndarray, start_s: float, utc_offset_s: float,
              battery: BatteryParams, initial_soc: float, kinds: list[_Kind], attended: tuple[int, int]) -> _Hours:
        H = len(pv_hourly_wh)
        idx = np.arange(H)
        ones = np.ones(H)
        lp = _LP()
        e_cap = ocv_energy_wh(battery, 1.0) * DISCRETISATION_ALLOWANCE
        e0 = min(e_cap, ocv_energy_wh(battery, initial_soc) * DISCRETISATION_ALLOWANCE)
        eta = min(1.0, battery.charge_efficiency * DISCRETISATION_ALLOWANCE)
        c_max = battery.max_charge_a * open_circuit_v(battery.chemistry, 1.0, battery.cells)
        nights = unattended_windows(start_s, H, utc_offset_s, attended)
        night = np.zeros(H, dtype=bool)
        for w in nights:
            night[w] = True
        all_w = np.concatenate([k.minute_w for k in kinds])
        E = lp.variables(H, 0.0, e_cap)
        C = lp.variables(H, 0.0, c_max)
        D = lp.variables(H)
        S = lp.variables(H, 0.0, base_hourly_wh)  # base load left unserved (an empty battery, as the plant allows)
        PZ = lp.variables(H)                      # draw of time-free prints
        U = lp.variables(H, 0.0, 1.0)             # their printing time
        V = lp.variables(H, 0.0, np.where(night, 0.0, 1.0))   # plate turnaround time
        # battery: e_t = e_{t-1} + eta c_t - d_t
        lp.rows(np.concatenate([idx, idx[1:], idx, idx]), np.concatenate([E + idx, E + idx[1:] - 1, C + idx, D + idx]),
                np.concatenate([ones, -ones[1:], -eta * ones, ones]), np.where(idx == 0, e0, 0.0), equal=True)
        return cls(lp, H, idx, ones, nights, night, float(all_w.min()), float(all_w.max()),
                   max(k.duration_h for k in kinds), E, C, D, S, PZ, U, V)

    def time_free_draw_rows(self) -> None:
        """Time-free prints draw between the lowest and highest minute of any job while printing."""
        idx, ones, PZ, U = self.idx, self.ones, self.PZ, self.U
        self.lp.rows(np.concatenate([idx, idx]), np.concatenate([PZ + idx, U + idx]),
                     np.concatenate([ones, -self.w_hi * ones]), np.zeros(self.H))
        self.lp.rows(np.concatenate([idx, idx]), np.concatenate([PZ + idx, U + idx]),
                     np.concatenate([-ones, self.w_lo * ones]), np.zeros(self.H))


def upper_bound(pv_hourly_wh: np.ndarray, base_hourly_wh: np.ndarray, start_s: float, utc_offset_s: float,
                battery: BatteryParams, initial_soc: float, *, seed: int, queue_target: int, failed: int,
                resumed: int, attended: tuple[int, int], plate_clear_delay_s: float, start_step_s: float = 300.0,
                printer_profile: str = "ender3", ambient_c: float = 20.0, tight_passes: int = 0,
                decomposed: bool = True) -> Bound:
    """The bound for one run; see the module docstring.  Hourly arrays start at the run's first hour.

    ``failed``/``resumed``: the most prints any policy compared failed / resumed after a pause (a print that
    was paused may have had its energy moved in time, so it is counted in the loose, time-free part).
    ``tight_passes``: passes of the time-indexed LP (each print's energy tied to the hours after its start)
    after the time-free ones.  Off by default: on the benchmark's runs it tightened the bound by under 0.1 %
    (time and the plate bind, not where in the day the energy falls) at ten times the cost."""
    import time

    wall0 = time.perf_counter()
    hours = len(pv_hourly_wh)
    stream = JobStream(load_profile(printer_profile), seed=seed, ambient_c=ambient_c)
    kinds = [_Kind.of(t.name, stream._built[t.name][0], start_step_s) for t in stream.templates]
    shortest_h = min(k.duration_h for k in kinds)
    kinds_seen = [stream.next_job(0.0).name for _ in range(int(hours / shortest_h) + queue_target + failed + 1)]
    extra = failed + queue_target
    m_max = len(kinds_seen)
    best = math.inf
    if tight_passes == 0 and decomposed:
        # the loose LP by decomposition (see _TimePart): the hours are solved in a few directions, shared by
        # every seed and policy of the same run, the job kinds in a small LP
        part = _time_part(pv_hourly_wh, base_hourly_wh, start_s, utc_offset_s, battery, initial_soc, kinds,
                          attended)
        solves0 = part.solves
        nights = len(unattended_windows(start_s, hours, utc_offset_s, attended))
        for _ in range(MAX_DECOMPOSED_PASSES):
            best = min(best, part.prints(kinds, kinds_seen[:m_max], extra, nights, plate_clear_delay_s / 3600.0))
            next_max = min(m_max, math.floor(best + 1e-6) + extra)
            if next_max == m_max:
                break
            m_max = next_max
        return Bound(prints=best, variables=0, constraints=0, solve_s=time.perf_counter() - wall0,
                     hours_lp_solves=part.solves - solves0)
    # each pass's bound caps the jobs the next pass's hull must cover (every pass is a bound; the sequence falls
    # to a fixed point slowly, so it stops once a pass gains less than STOP_GAIN); the time-indexed passes
    # follow when asked for
    passes = 0
    for tight, max_passes in ((False, MAX_LOOSE_PASSES), (True, tight_passes)):
        for _ in range(max_passes):
            passes += 1
            value = _solve(pv_hourly_wh, base_hourly_wh, start_s, utc_offset_s, battery, initial_soc, kinds,
                           kinds_seen[:m_max], extra, resumed if tight else None, attended, plate_clear_delay_s)
            gain = (best - value) / max(1.0, value) if math.isfinite(best) else 1.0
            best = min(best, value)
            next_max = min(m_max, math.floor(best + 1e-6) + extra)
            if next_max == m_max or (not tight and gain < STOP_GAIN):
                break
            m_max = next_max
    return Bound(prints=best, variables=0, constraints=0, solve_s=time.perf_counter() - wall0,
                 hours_lp_solves=passes)


#: passes of the job-count shrink in the decomposed LP (each costs a small LP and rarely a new cut)
MAX_DECOMPOSED_PASSES = 60
#: the decomposition stops when its upper and lower values are this close (relative); the upper one is returned
DECOMPOSITION_GAP = 0.001
MAX_CUTS_PER_SOLVE = 40
#: time parts kept (one per site x battery x calendar of a bench process)
TIME_PARTS_KEPT = 4
_TIME_PARTS: dict[tuple, _TimePart] = {}


def _time_part(pv_hourly_wh: np.ndarray, base_hourly_wh: np.ndarray, start_s: float, utc_offset_s: float,
               battery: BatteryParams, initial_soc: float, kinds: list[_Kind], attended: tuple[int, int]
               ) -> _TimePart:
    """The run's time part, from the cache when every input is the same (seeds and policies of one run)."""
    import hashlib

    all_w = np.concatenate([k.minute_w for k in kinds])
    key = (hashlib.sha1(np.ascontiguousarray(pv_hourly_wh, dtype=float).tobytes()).hexdigest(),
           hashlib.sha1(np.ascontiguousarray(base_hourly_wh, dtype=float).tobytes()).hexdigest(),
           start_s, utc_offset_s, battery.model_dump_json(), initial_soc, attended, float(all_w.min()),
           float(all_w.max()), max(k.duration_h for k in kinds))
    part = _TIME_PARTS.pop(key, None)
    if part is None:
        part = _TimePart(pv_hourly_wh, base_hourly_wh, start_s, utc_offset_s, battery, initial_soc, kinds, attended)
    _TIME_PARTS[key] = part
    while len(_TIME_PARTS) > TIME_PARTS_KEPT:
        del _TIME_PARTS[next(iter(_TIME_PARTS))]
    return part


class _TimePart:
    """The loose LP split in two (a Dantzig-Wolfe decomposition; the same optimum, to DECOMPOSITION_GAP, and
    always an upper bound on it).

    The hours (battery, PV, draw per printing hour, occupancy, nights) meet the job kinds only through three
    totals: print energy ``P`` (Wh), printing hours ``U``, plate turnaround hours ``V``.  The totals the hours
    allow form a convex set F.  Solving the hours' LP in a direction ``lam >= 0`` gives ``h = max lam.x`` over F:
    ``lam.x <= h`` holds on all of F (a cut) and the solution is a point of F.  The kinds' LP with the cuts in
    place of F is a relaxation of the loose LP — its optimum is an upper bound (the value returned), whatever
    the cuts; with the points' convex hull in place of F it is a restriction — a lower value.  Each round adds
    the cut in the direction of the restriction's dual prices of the three totals (Dantzig-Wolfe pricing: the
    prices only choose where to cut, the bound's validity does not rest on them) until both values agree to
    DECOMPOSITION_GAP.  The hours do not depend on the seed's job stream, the failures or the
    resumes, so one set of cuts serves every seed and policy of a run: the big LP is solved a few times per
    site and battery instead of a few times per policy and seed."""

    def __init__(self, pv_hourly_wh: np.ndarray, base_hourly_wh: np.ndarray, start_s: float, utc_offset_s: float,
                 battery: BatteryParams, initial_soc: float, kinds: list[_Kind], attended: tuple[int, int]) -> None:
        # the same variables and rows as _solve's loose LP, without the kinds
        hours = _Hours.build(pv_hourly_wh, base_hourly_wh, start_s, utc_offset_s, battery, initial_soc, kinds,
                             attended)
        lp, H, idx, ones = hours.lp, hours.H, hours.idx, hours.ones
        nights, night, w_hi, d_max = hours.nights, hours.night, hours.w_hi, hours.d_max
        C, D, S, PZ, U, V = hours.C, hours.D, hours.S, hours.PZ, hours.U, hours.V
        lp.rows(np.tile(idx, 4), np.concatenate([C + idx, D + idx, PZ + idx, S + idx]),
                np.concatenate([ones, -ones, ones, -ones]), pv_hourly_wh - base_hourly_wh)
        hours.time_free_draw_rows()
        lp.rows(np.concatenate([idx, idx]), np.concatenate([U + idx, V + idx]), np.concatenate([ones, ones]),
                np.ones(H))
        if nights:
            lp.rows(np.concatenate([np.full(len(w), n_w) for n_w, w in enumerate(nights)]),
                    np.concatenate([U + np.asarray(w) for w in nights]),
                    np.concatenate([np.full(len(w), 1.0 / min(len(w), d_max)) for w in nights]), np.ones(len(nights)))
        self.lp = lp
        self.cols = (PZ, U, V)
        self.hours = H
        # a box F lies in without solving anything: every hour at the highest draw, printing or turning round
        self.cuts: list[tuple[np.ndarray, float]] = [(np.array([1.0, 0.0, 0.0]), w_hi * H),
                                                      (np.array([0.0, 1.0, 0.0]), float(H)),
                                                      (np.array([0.0, 0.0, 1.0]), float((~night).sum()))]
        self.points: list[np.ndarray] = [np.zeros(3)]
        self.solves = 0

    def support(self, lam: np.ndarray) -> None:
        """Solve the hours in direction ``lam``: one cut and one point."""
        c = np.zeros(self.lp.n)
        for col, weight in zip(self.cols, lam, strict=True):
            c[col:col + self.hours] = weight
        h, x = self.lp.maximise_c(c)
        self.solves += 1
        point = np.array([x[col:col + self.hours].sum() for col in self.cols])
        # the solver's tolerance: the cut is moved out a little, never in
        self.cuts.append((np.asarray(lam, dtype=float), h * (1.0 + 1e-7) + 1e-6))
        self.points.append(np.maximum(point, 0.0))

    def prints(self, kinds: list[_Kind], kinds_seen: list[str], extra: int, nights: int, turn_h: float) -> float:
        """The loose LP's optimum for this job stream prefix (an upper bound, within DECOMPOSITION_GAP of it)."""
        from scipy.optimize import linprog

        n = len(kinds)
        energy = np.array([k.energy_wh for k in kinds])
        duration = np.array([k.duration_h for k in kinds])
        hull_rows, hull_rhs = [], []
        for k, kind in enumerate(kinds):
            counts = np.concatenate([[0], np.cumsum([1 if seen == kind.name else 0 for seen in kinds_seen])])
            for slope, intercept in upper_hull_lines(counts.astype(float)):
                row = -slope * np.ones(n)
                row[k] += 1.0
                hull_rows.append(row)
                hull_rhs.append(slope * extra + intercept)
        hull = np.array(hull_rows).reshape(-1, n)
        link = [np.concatenate([energy, [-1.0, 0.0, 0.0]]), np.concatenate([duration, [0.0, -1.0, 0.0]])]
        link_rhs = [0.0, 0.0]
        if turn_h > 0:
            link.append(np.concatenate([np.ones(n), [0.0, 0.0, -1.0 / turn_h]]))
            link_rhs.append(nights + 1.0)
        c = -np.concatenate([np.ones(n), np.zeros(3)])

        def outer_value() -> float:
            """The relaxation: (P, U, V) under every cut so far."""
            cuts = np.array([np.concatenate([np.zeros(n), lam]) for lam, _ in self.cuts])
            a_ub = np.vstack([np.array(link), np.hstack([hull, np.zeros((len(hull), 3))]), cuts])
            b_ub = np.concatenate([link_rhs, hull_rhs, [h for _, h in self.cuts]])
            outer = linprog(c, A_ub=a_ub, b_ub=b_ub, bounds=(0, None), method="highs-ds")
            if outer.status != 0:
                raise RuntimeError(f"the bound's kinds LP did not solve: {outer.message}")
            return float(-outer.fun)

        def inner_solve() -> tuple[float, np.ndarray]:
            """The restriction: (P, U, V) a convex combination of the points found; its value and the prices of
            the three totals (Dantzig-Wolfe's restricted master: where the next cut is looked for)."""
            pts = np.array(self.points)
            m = len(pts)
            inner_link = [np.concatenate([energy, -pts[:, 0]]), np.concatenate([duration, -pts[:, 1]])]
            if turn_h > 0:
                inner_link.append(np.concatenate([np.ones(n), -pts[:, 2] / turn_h]))
            inner = linprog(-np.concatenate([np.ones(n), np.zeros(m)]),
                            A_ub=np.vstack([np.array(inner_link), np.hstack([hull, np.zeros((len(hull), m))])]),
                            b_ub=np.concatenate([link_rhs, hull_rhs]),
                            A_eq=np.concatenate([np.zeros(n), np.ones(m)])[None, :], b_eq=[1.0], bounds=(0, None),
                            method="highs-ds")
            if inner.status != 0:
                raise RuntimeError(f"the bound's kinds LP did not solve: {inner.message}")
            prices = np.maximum(0.0, -np.asarray(inner.ineqlin.marginals[:len(inner_link)]))
            lam = np.array([prices[0], prices[1], prices[2] / turn_h if turn_h > 0 else 0.0])
            return float(-inner.fun), lam

        upper = outer_value()
        for _ in range(MAX_CUTS_PER_SOLVE):
            lower, lam = inner_solve()
            if upper - lower <= DECOMPOSITION_GAP * max(1.0, upper):
                break
            if lam.sum() <= 1e-12:   # nothing prices the totals yet: a direction that values prints' totals
                lam = np.array([1.0 / energy.mean(), 1.0 / duration.mean(), 1.0 / turn_h if turn_h > 0 else 0.0])
            self.support(lam)
            # the relaxation under the new cut: an upper bound whatever the prices were (they only chose where
            # to cut)
            upper = min(upper, outer_value())
        return upper


def _solve(pv_hourly_wh: np.ndarray, base_hourly_wh: np.ndarray, start_s: float, utc_offset_s: float,
           battery: BatteryParams, initial_soc: float, kinds: list[_Kind], kinds_seen: list[str], extra: int,
           resumed: int | None, attended: tuple[int, int], plate_clear_delay_s: float) -> float:
    """One LP.  ``resumed`` None: every print is time-free (the loose relaxation)."""
    n_kinds = len(kinds)
    hours = _Hours.build(pv_hourly_wh, base_hourly_wh, start_s, utc_offset_s, battery, initial_soc, kinds, attended)
    lp, H, idx, ones = hours.lp, hours.H, hours.idx, hours.ones
    nights, d_max = hours.nights, hours.d_max
    C, D, S, PZ, U, V = hours.C, hours.D, hours.S, hours.PZ, hours.U, hours.V
    Z = lp.variables(n_kinds)                 # time-free prints of each kind
    tight = resumed is not None
    if tight:
        X = [lp.variables(H, 0.0, np.where(idx + k.duration_h <= H, np.inf, 0.0)) for k in kinds]  # starts per hour
        PX = lp.variables(H)                  # draw of started (uninterrupted) prints
    # PV used <= PV available
    pv_cols = [C + idx, D + idx, PZ + idx, S + idx] + ([PX + idx] if tight else [])
    pv_vals = [ones, -ones, ones, -ones] + ([ones] if tight else [])
    lp.rows(np.tile(idx, len(pv_cols)), np.concatenate(pv_cols), np.concatenate(pv_vals),
            pv_hourly_wh - base_hourly_wh)
    hours.time_free_draw_rows()
    kind_idx = np.arange(n_kinds)
    zero1 = np.zeros(n_kinds + H, dtype=int)
    lp.rows(zero1, np.concatenate([Z + kind_idx, PZ + idx]),
            np.concatenate([[k.energy_wh for k in kinds], -ones]), 0.0)
    lp.rows(zero1, np.concatenate([Z + kind_idx, U + idx]),
            np.concatenate([[k.duration_h for k in kinds], -ones]), 0.0)
    # occupancy of each hour: started prints (at least their least occupancy) + time-free + turnaround <= 1
    occ_rows, occ_cols, occ_vals = [idx, idx], [U + idx, V + idx], [ones, ones]
    night_rows, night_cols, night_vals = [], [], []
    if tight:
        draw_lo_rows, draw_lo_cols, draw_lo_vals = [idx], [PX + idx], [-ones]
        draw_hi_rows, draw_hi_cols, draw_hi_vals = [idx], [PX + idx], [ones]
        for k, x in zip(kinds, X, strict=True):
            for j in range(len(k.e_min)):
                starts = idx[:H - j] if j else idx
                hour = starts + j
                occ_rows.append(hour)
                occ_cols.append(x + starts)
                occ_vals.append(np.full(len(starts), k.occ_min[j]))
                draw_lo_rows.append(hour)
                draw_lo_cols.append(x + starts)
                draw_lo_vals.append(np.full(len(starts), k.e_min[j]))
                draw_hi_rows.append(hour)
                draw_hi_cols.append(x + starts)
                draw_hi_vals.append(np.full(len(starts), -k.e_max[j]))
        lp.rows(np.concatenate(draw_lo_rows), np.concatenate(draw_lo_cols), np.concatenate(draw_lo_vals), np.zeros(H))
        lp.rows(np.concatenate(draw_hi_rows), np.concatenate(draw_hi_cols), np.concatenate(draw_hi_vals), np.zeros(H))
        # started prints draw exactly their energy in total
        lp.rows(np.zeros(H * (n_kinds + 1), dtype=int), np.concatenate([*(x + idx for x in X), PX + idx]),
                np.concatenate([*(np.full(H, k.energy_wh) for k in kinds), -ones]), 0.0, equal=True)
        # prints paused and resumed are the only time-free ones
        lp.rows(np.zeros(n_kinds, dtype=int), Z + kind_idx, np.ones(n_kinds), float(resumed))
    lp.rows(np.concatenate(occ_rows), np.concatenate(occ_cols), np.concatenate(occ_vals), np.ones(H))
    # at most one print overlaps an unattended window: one start in it, or its time-free printing <= d_max
    for n_w, w in enumerate(nights):
        w_idx = np.asarray(w)
        night_rows.append(np.zeros(len(w_idx), dtype=int) + n_w)
        night_cols.append(U + w_idx)
        night_vals.append(np.full(len(w_idx), 1.0 / min(len(w_idx), d_max)))
        if tight:
            for x in X:
                night_rows.append(np.zeros(len(w_idx), dtype=int) + n_w)
                night_cols.append(x + w_idx)
                night_vals.append(np.ones(len(w_idx)))
    if nights:
        lp.rows(np.concatenate(night_rows), np.concatenate(night_cols), np.concatenate(night_vals),
                np.ones(len(nights)))
    # count of each kind: y_k = time-free + started (its own variable, so the rows below stay short)
    Yk = lp.variables(n_kinds)
    for k in range(n_kinds):
        cols = [np.array([Yk + k, Z + k])] + ([X[k] + idx] if tight else [])
        vals = [np.array([1.0, -1.0])] + ([-ones] if tight else [])
        lp.rows(np.zeros(sum(len(c) for c in cols), dtype=int), np.concatenate(cols), np.concatenate(vals), 0.0,
                equal=True)

    def y_terms(k: int, factor: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
        return [np.array([Yk + k])], [np.array([factor])]

    # every print but one per night window (and the last) is followed by the plate-clear delay
    turn_h = plate_clear_delay_s / 3600.0
    if turn_h > 0:
        cols, vals = [V + idx], [-ones / turn_h]
        for k in range(n_kinds):
            c_k, v_k = y_terms(k, 1.0)
            cols += c_k
            vals += v_k
        lp.rows(np.zeros(sum(len(c) for c in cols), dtype=int), np.concatenate(cols), np.concatenate(vals),
                len(nights) + 1.0)
    # jobs of each kind the stream could have handed out: y_k <= a_k(sum y + F + Q), by the hull's lines
    for k, kind in enumerate(kinds):
        counts = np.concatenate([[0], np.cumsum([1 if seen == kind.name else 0 for seen in kinds_seen])])
        for slope, intercept in upper_hull_lines(counts.astype(float)):
            cols, vals = [], []
            for j in range(n_kinds):
                c_j, v_j = y_terms(j, (1.0 if j == k else 0.0) - slope)
                cols += c_j
                vals += v_j
            lp.rows(np.zeros(sum(len(c) for c in cols), dtype=int), np.concatenate(cols), np.concatenate(vals),
                    slope * extra + intercept)
    return lp.maximise(Yk + kind_idx)


def _lowest_above_reserve_wh(profile: list[list[float]], pv_hourly_wh: np.ndarray, base_hourly_wh: np.ndarray,
                             battery: BatteryParams, reserve_frac: float, start_step_s: float,
                             envelope: bool = False) -> np.ndarray:
    """For each start hour of the run, the lowest energy above the planning reserve (Wh) during one print of
    ``profile`` started there, in the bound's relaxed plant (see :func:`single_print_fits`), with a full
    battery; ``envelope``: with the most energy the battery can hold at that hour (a full battery at the run's
    start, and no print since: printing only takes energy); empty when the run is shorter than the print."""
    kind = _Kind.of("job", profile, start_step_s)
    span = len(kind.e_min)
    hours = len(pv_hourly_wh)
    if hours < span:
        return np.zeros(0)
    e_cap = ocv_energy_wh(battery, 1.0) * DISCRETISATION_ALLOWANCE
    floor = ocv_energy_wh(battery, reserve_frac)
    eta = min(1.0, battery.charge_efficiency * DISCRETISATION_ALLOWANCE)
    c_max = battery.max_charge_a * open_circuit_v(battery.chemistry, 1.0, battery.cells)
    starts = np.arange(hours - span + 1)
    energy = np.full(len(starts), e_cap)
    if envelope:
        most = e_cap
        for h in range(len(starts)):
            energy[h] = most
            net = float(pv_hourly_wh[h] - base_hourly_wh[h])
            most = min(e_cap, most + eta * min(net, c_max)) if net >= 0 else most + net
    lowest = energy.copy()
    for j in range(span):
        net = pv_hourly_wh[starts + j] - base_hourly_wh[starts + j] - kind.e_min[j]
        energy = np.where(net >= 0, np.minimum(e_cap, energy + eta * np.minimum(net, c_max)), energy + net)
        lowest = np.minimum(lowest, energy)
    return lowest - floor


def single_print_fits(profile: list[list[float]], pv_hourly_wh: np.ndarray, base_hourly_wh: np.ndarray,
                      battery: BatteryParams, reserve_frac: float, start_step_s: float = 300.0) -> tuple[bool, float]:
    """Could one print of ``profile`` run uninterrupted above the planning reserve anywhere in this run, in the
    bound's relaxed plant and with perfect foresight?  (whether it fits, and the lowest energy above the reserve
    at its best start hour, Wh; negative: below.)

    The check behind the "never fits" flag (:mod:`node.plan.fit`): a job flagged there must fail here too.
    The same relaxations as the LP, each in the print's favour: hourly sums (PV nets the load inside an hour at
    no efficiency cost), the battery a bucket of open-circuit energy with the 1 % allowances and no Peukert,
    each hour's draw the least of any 5-minute start offset, the true PV of the file, and every start hour
    tried with a full battery.  For one print from a full battery this LP is solved exactly by charging
    whenever there is surplus (more stored energy never hurts later), so it is a forward pass, vectorised over
    the start hours."""
    lowest = _lowest_above_reserve_wh(profile, pv_hourly_wh, base_hourly_wh, battery, reserve_frac, start_step_s)
    if len(lowest) == 0:
        return False, -math.inf
    best = float(lowest.max())
    return best >= 0.0, best


def feasible_start_hours(profile: list[list[float]], pv_hourly_wh: np.ndarray, base_hourly_wh: np.ndarray,
                         battery: BatteryParams, reserve_frac: float, start_step_s: float = 300.0) -> np.ndarray:
    """The hours of the run (indices) in which one print of ``profile`` could start and run uninterrupted above
    the reserve, by the relaxations of :func:`single_print_fits` (perfect foresight), the battery at each start
    hour as full as it can be then (full at the run's start, nothing printed since): no policy can start it,
    uninterrupted, at another hour.  So the wait from a job's queueing to the first of these hours after it is
    a lower bound on its wait under any policy that does not pause it (the study's "forced" waits)."""
    lowest = _lowest_above_reserve_wh(profile, pv_hourly_wh, base_hourly_wh, battery, reserve_frac, start_step_s,
                                      envelope=True)
    return np.flatnonzero(lowest >= 0.0)
