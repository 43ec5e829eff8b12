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
        import scipy.sparse as sp
        from scipy.optimize import linprog

        def matrix(parts: list, n_rows: int) -> sp.csr_matrix:
            return sp.csr_matrix((np.concatenate([p[2] for p in parts]),
                                  (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))),
                                 shape=(n_rows, self.n))

        c = np.zeros(self.n)
        c[objective_cols] = -1.0
        bounds = np.column_stack([np.concatenate(self.lo), np.concatenate(self.hi)])
        result = linprog(c, A_ub=matrix(self.ub, self.n_ub), b_ub=np.concatenate(self.ub_rhs),
                         A_eq=matrix(self.eq, self.n_eq), b_eq=np.concatenate(self.eq_rhs),
                         bounds=[(lo, None if np.isinf(hi) else hi) for lo, hi in bounds], method=LP_METHOD)
        if result.status != 0:
            raise RuntimeError(f"the bound's LP did not solve: {result.message}")
        return float(-result.fun)


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


def upper_bound(pv_hourly_wh: np.ndarray, base_hourly_wh: np.ndarray, start_s: float, utc_offset_s: float,
                battery: BatteryParams, initial_soc: float, *, seed: int, queue_target: int, failed: int,
                resumed: int, attended: tuple[int, int], plate_clear_delay_s: float, start_step_s: float = 300.0,
                printer_profile: str = "ender3", ambient_c: float = 20.0, tight_passes: int = 0) -> Bound:
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
    # each pass's bound caps the jobs the next pass's hull must cover (every pass is a bound; the sequence falls
    # to a fixed point slowly, so it stops once a pass gains less than STOP_GAIN); the time-indexed passes
    # follow when asked for
    for tight, max_passes in ((False, MAX_LOOSE_PASSES), (True, tight_passes)):
        for _ in range(max_passes):
            value = _solve(pv_hourly_wh, base_hourly_wh, start_s, utc_offset_s, battery, initial_soc, kinds,
                           kinds_seen[:m_max], extra, resumed if tight else None, attended, plate_clear_delay_s)
            gain = (best - value) / max(1.0, value) if math.isfinite(best) else 1.0
            best = min(best, value)
            next_max = min(m_max, math.floor(best + 1e-6) + extra)
            if next_max == m_max or (not tight and gain < STOP_GAIN):
                break
            m_max = next_max
    return Bound(prints=best, variables=0, constraints=0, solve_s=time.perf_counter() - wall0)


def _solve(pv_hourly_wh: np.ndarray, base_hourly_wh: np.ndarray, start_s: float, utc_offset_s: float,
           battery: BatteryParams, initial_soc: float, kinds: list[_Kind], kinds_seen: list[str], extra: int,
           resumed: int | None, attended: tuple[int, int], plate_clear_delay_s: float) -> float:
    """One LP.  ``resumed`` None: every print is time-free (the loose relaxation)."""
    H = len(pv_hourly_wh)
    idx = np.arange(H)
    ones = np.ones(H)
    n_kinds = len(kinds)
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
    w_lo, w_hi = float(all_w.min()), float(all_w.max())
    d_max = max(k.duration_h for k in kinds)

    E = lp.variables(H, 0.0, e_cap)
    C = lp.variables(H, 0.0, c_max)
    D = lp.variables(H)
    S = lp.variables(H, 0.0, base_hourly_wh)  # base load left unserved (an empty battery, as the plant allows)
    PZ = lp.variables(H)                      # draw of time-free prints
    U = lp.variables(H, 0.0, 1.0)             # their printing time
    V = lp.variables(H, 0.0, np.where(night, 0.0, 1.0))   # plate turnaround time
    Z = lp.variables(n_kinds)                 # time-free prints of each kind
    tight = resumed is not None
    if tight:
        X = [lp.variables(H, 0.0, np.where(idx + k.duration_h <= H, np.inf, 0.0)) for k in kinds]  # starts per hour
        PX = lp.variables(H)                  # draw of started (uninterrupted) prints
    # battery: e_t = e_{t-1} + eta c_t - d_t
    lp.rows(np.concatenate([idx, idx[1:], idx, idx]), np.concatenate([E + idx, E + idx[1:] - 1, C + idx, D + idx]),
            np.concatenate([ones, -ones[1:], -eta * ones, ones]), np.where(idx == 0, e0, 0.0), equal=True)
    # PV used <= PV available
    pv_cols = [C + idx, D + idx, PZ + idx, S + idx] + ([PX + idx] if tight else [])
    pv_vals = [ones, -ones, ones, -ones] + ([ones] if tight else [])
    lp.rows(np.tile(idx, len(pv_cols)), np.concatenate(pv_cols), np.concatenate(pv_vals),
            pv_hourly_wh - base_hourly_wh)
    # time-free prints: draw between the lowest and highest minute of any job while printing
    lp.rows(np.concatenate([idx, idx]), np.concatenate([PZ + idx, U + idx]), np.concatenate([ones, -w_hi * ones]),
            np.zeros(H))
    lp.rows(np.concatenate([idx, idx]), np.concatenate([PZ + idx, U + idx]), np.concatenate([-ones, w_lo * ones]),
            np.zeros(H))
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
    kind = _Kind.of("job", profile, start_step_s)
    span = len(kind.e_min)
    hours = len(pv_hourly_wh)
    if hours < span:
        return False, -math.inf
    e_cap = ocv_energy_wh(battery, 1.0) * DISCRETISATION_ALLOWANCE
    floor = ocv_energy_wh(battery, reserve_frac)
    eta = min(1.0, battery.charge_efficiency * DISCRETISATION_ALLOWANCE)
    c_max = battery.max_charge_a * open_circuit_v(battery.chemistry, 1.0, battery.cells)
    starts = np.arange(hours - span + 1)
    energy = np.full(len(starts), e_cap)
    lowest = energy.copy()
    for j in range(span):
        net = pv_hourly_wh[starts + j] - base_hourly_wh[starts + j] - kind.e_min[j]
        energy = np.where(net >= 0, np.minimum(e_cap, energy + eta * np.minimum(net, c_max)), energy + net)
        lowest = np.minimum(lowest, energy)
    best = float(lowest.max()) - floor
    return best >= 0.0, best
