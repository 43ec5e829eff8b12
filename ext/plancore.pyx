# cython: language_level=3
"""The planner's inner loops: the battery as an energy bucket, stepped natively.

One step of the bucket (the same rule as ``node.plan.energymodel.EnergyModel.step_wh``):
a positive net power charges the battery through the charger's limit and the
coulombic efficiency, and whatever does not fit (over the limit, or over full)
is sunshine lost; a negative net power discharges it, derated by the Peukert
factor.  Arrays are float64, one value per planning step; ``soc_wh[k]`` is the
energy at the start of step ``k`` (so it has one more entry than ``net_w``).
"""


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
