# cython: language_level=3
"""The planner's inner loops: the battery as an energy bucket, stepped natively.

One step of the bucket (the same rule as ``node.plan.energymodel.EnergyModel.step_wh``):
a positive net power charges the battery through the charger's limit and the
coulombic efficiency, and whatever does not fit (over the limit, or over full)
is sunshine lost; a negative net power discharges it, derated by the Peukert
factor.  Arrays are float64, one value per planning step; ``soc_wh[k]`` is the
energy at the start of step ``k`` (so it has one more entry than ``net_w``).
"""
from libc.math cimport copysign, exp, floor, fmod


cdef inline double _step(double energy_wh, double net_w, double capacity_wh, double charge_eff,
                         double discharge_factor, double max_charge_w, double dt_h, double* lost_w) noexcept nogil:
    cdef double charge_w, new_wh
    if net_w >= 0.0:
        charge_w = net_w if net_w < max_charge_w else max_charge_w
        new_wh = energy_wh + charge_w * charge_eff * dt_h
        lost_w[0] = net_w - charge_w
        if new_wh > capacity_wh:
            lost_w[0] += (new_wh - capacity_wh) / (charge_eff * dt_h)
            new_wh = capacity_wh
        return new_wh
    lost_w[0] = 0.0
    new_wh = energy_wh + net_w * dt_h / discharge_factor
    return new_wh if new_wh > 0.0 else 0.0


cpdef double simulate(double[::1] net_w, double[::1] soc_wh, double[::1] lost_w, Py_ssize_t from_k,
                      double capacity_wh, double charge_eff, double discharge_factor, double max_charge_w,
                      double dt_h):
    """Fill ``soc_wh[from_k+1:]`` and ``lost_w[from_k:]`` from ``soc_wh[from_k]``; return the Wh lost."""
    cdef Py_ssize_t n = net_w.shape[0]
    cdef Py_ssize_t k
    cdef double e = soc_wh[from_k]
    cdef double lost, total = 0.0
    with nogil:
        for k in range(from_k, n):
            e = _step(e, net_w[k], capacity_wh, charge_eff, discharge_factor, max_charge_w, dt_h, &lost)
            soc_wh[k + 1] = e
            lost_w[k] = lost
            total += lost * dt_h
    return total


cpdef Py_ssize_t earliest_start(double[::1] soc_wh, double[::1] net_w, double[::1] job_w,
                                Py_ssize_t from_k, Py_ssize_t to_k, double reserve_wh,
                                double capacity_wh, double charge_eff, double discharge_factor,
                                double max_charge_w, double dt_h):
    """The first step ``s`` in ``[from_k, to_k]`` at which the job can start and end with the
    energy never below ``reserve_wh`` (at the start and after every step of the print), the job
    drawing ``job_w[d]`` on top of ``net_w[s+d]``; -1 if none.  The print must end inside the
    arrays (``s + len(job_w) <= len(net_w)``)."""
    cdef Py_ssize_t n = net_w.shape[0]
    cdef Py_ssize_t dur = job_w.shape[0]
    cdef Py_ssize_t s, d
    cdef double e, lost
    cdef bint ok
    if to_k > n - dur:
        to_k = n - dur
    with nogil:
        for s in range(from_k, to_k + 1):
            e = soc_wh[s]
            if e < reserve_wh:
                continue
            ok = True
            for d in range(dur):
                e = _step(e, net_w[s + d] - job_w[d], capacity_wh, charge_eff, discharge_factor,
                          max_charge_w, dt_h, &lost)
                if e < reserve_wh:
                    ok = False
                    break
            if ok:
                return s
    return -1


cpdef double min_energy_during(double[::1] soc_wh, Py_ssize_t from_k, Py_ssize_t to_k):
    """The lowest ``soc_wh`` over ``[from_k, to_k]`` inclusive."""
    cdef Py_ssize_t k
    cdef double low = soc_wh[from_k]
    for k in range(from_k, to_k + 1):
        if soc_wh[k] < low:
            low = soc_wh[k]
    return low


# --- small array helpers, so the daemon's planner needs no numpy (issue #19: numpy was 13.4 MB resident
# for arrays of a few hundred values); each gives bit for bit what the numpy expression it replaces gave

cdef double _pairwise(const double* a, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i, n2
    cdef double r0, r1, r2, r3, r4, r5, r6, r7, res
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[i]
        return res
    if n <= 128:
        r0 = a[0]; r1 = a[1]; r2 = a[2]; r3 = a[3]; r4 = a[4]; r5 = a[5]; r6 = a[6]; r7 = a[7]
        i = 8
        while i < n - (n % 8):
            r0 += a[i]; r1 += a[i + 1]; r2 += a[i + 2]; r3 += a[i + 3]
            r4 += a[i + 4]; r5 += a[i + 5]; r6 += a[i + 6]; r7 += a[i + 7]
            i += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            res += a[i]
            i += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return _pairwise(a, n2) + _pairwise(a + n2, n - n2)


cpdef double pairwise_sum(const double[::1] values):
    """The sum of ``values`` as numpy's ``ndarray.sum()`` computes it (pairwise, blocks of 128, 8 lanes)."""
    if values.shape[0] == 0:
        return 0.0
    return _pairwise(&values[0], values.shape[0])


cpdef void subtract_at(double[::1] target, const double[::1] values, Py_ssize_t at):
    """``target[at:at + len(values)] -= values`` (clipped to ``target``)."""
    cdef Py_ssize_t i, n = values.shape[0]
    if at + n > target.shape[0]:
        n = target.shape[0] - at
    for i in range(n):
        target[at + i] -= values[i]


cpdef void scale(double[::1] values, double factor):
    """``values *= factor`` in place."""
    cdef Py_ssize_t i
    for i in range(values.shape[0]):
        values[i] *= factor


cpdef void fit_lowest(const double[::1] net_w, const double[::1] pv_w, const double[::1] job_w, Py_ssize_t n_days,
                      Py_ssize_t per_day, double capacity_wh, double charge_eff, double max_charge_w, double dt_h,
                      double[::1] lowest_wh, double[::1] sun_wh):
    """node.plan.fit's trial of a job at every start of every clear day, from a full battery: for day ``i`` and
    start ``s``, ``lowest_wh[i * per_day + s]`` is the lowest energy during the print and ``sun_wh`` the PV over
    it.  ``net_w`` and ``pv_w`` hold each day repeated, ``n_days`` rows of ``len(net_w) // n_days`` steps.  The
    bucket of EnergyModel.step_wh without the Peukert derating (the benefit of the doubt)."""
    cdef Py_ssize_t row = net_w.shape[0] // n_days
    cdef Py_ssize_t i, s, d, k
    cdef double e, low, sun, flow, charge, draw
    for i in range(n_days):
        for s in range(per_day):
            e = capacity_wh
            low = capacity_wh
            sun = 0.0
            for d in range(job_w.shape[0]):
                k = i * row + s + d
                draw = job_w[d]
                flow = net_w[k] - draw
                charge = flow if flow > 0.0 else 0.0
                if charge > max_charge_w:
                    charge = max_charge_w
                if flow >= 0.0:
                    e = e + charge * charge_eff * dt_h
                    if e > capacity_wh:
                        e = capacity_wh
                else:
                    e = e + flow * dt_h
                if e < low:
                    low = e
                sun += pv_w[k] * dt_h
            lowest_wh[i * per_day + s] = low
            sun_wh[i * per_day + s] = sun


cpdef void sub(const double[::1] a, const double[::1] b, double[::1] out):
    """``out = a - b``."""
    cdef Py_ssize_t k
    for k in range(out.shape[0]):
        out[k] = a[k] - b[k]


cpdef void add_scalar(const double[::1] a, double c, double[::1] out):
    """``out = c + a``."""
    cdef Py_ssize_t k
    for k in range(out.shape[0]):
        out[k] = c + a[k]


cpdef void sub_scalar(const double[::1] a, double c, double[::1] out):
    """``out = a - c``."""
    cdef Py_ssize_t k
    for k in range(out.shape[0]):
        out[k] = a[k] - c


cpdef void percent_of(const double[::1] a, double whole, double[::1] out):
    """``out = 100 * a / whole``."""
    cdef Py_ssize_t k
    for k in range(out.shape[0]):
        out[k] = 100.0 * a[k] / whole


cpdef list runs_above(const double[::1] a, double threshold):
    """The runs of ``a > threshold`` as (first, past-the-end) index pairs."""
    cdef list runs = []
    cdef Py_ssize_t k, start = -1
    for k in range(a.shape[0]):
        if a[k] > threshold:
            if start < 0:
                start = k
        elif start >= 0:
            runs.append((start, k))
            start = -1
    if start >= 0:
        runs.append((start, a.shape[0]))
    return runs


cdef double _floordiv(double a, double b) noexcept nogil:
    """Python's ``a // b`` for floats (CPython's float_floor_div: the same result at every edge)."""
    cdef double mod = fmod(a, b)
    cdef double div = (a - mod) / b
    cdef double floordiv
    if mod:
        if (b < 0) != (mod < 0):
            div -= 1.0
    if div:
        floordiv = floor(div)
        if div - floordiv > 0.5:
            floordiv += 1.0
    else:
        floordiv = copysign(0.0, a / b)
    return floordiv


cpdef int learned_expected(const double[::1] clear_w, const long[::1] months, const long[::1] hours,
                           const double[::1] lead_h, const double[::1] clim_measured, const double[::1] clim_clear,
                           bint has_recent, double recent, double tau_h, double[::1] out) except -1:
    """node.plan.learned's expected PV per step: clear-sky PV times the clear-sky index, the climatology's of
    the step's (month, hour) blended with the recent one by ``exp(-lead / tau)``."""
    cdef Py_ssize_t k, cell
    cdef double climate, w
    for k in range(out.shape[0]):
        cell = months[k] * 24 + hours[k]
        if cell < 0 or cell >= clim_measured.shape[0] or hours[k] < 0 or hours[k] > 23:
            raise ValueError(f"month {months[k]} hour {hours[k]} is outside the climatology")
        climate = clim_measured[cell] / clim_clear[cell]
        if climate > 1.2:
            climate = 1.2
        if has_recent:
            w = exp(-lead_h[k] / tau_h)
            out[k] = clear_w[k] * (w * recent + (1.0 - w) * climate)
        else:
            out[k] = clear_w[k] * climate
    return 0


cpdef void lead_factors(const double[::1] lead_h, const double[::1] by_day, double[::1] out):
    """``out[k] = by_day[min(len(by_day) - 1, lead_h[k] // 24)]`` (leads are never negative; 0 if one were)."""
    cdef Py_ssize_t k, d, last = by_day.shape[0] - 1
    for k in range(out.shape[0]):
        d = <Py_ssize_t>_floordiv(lead_h[k], 24.0)
        out[k] = by_day[0 if d < 0 else d if d < last else last]
