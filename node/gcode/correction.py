"""A bounded, learned per-printer correction of the time (and energy) estimate.

Every finished print stores its measured duration (and energy, once measured)
beside the estimate it was planned with (``record_print``).  The correction
factor for a printer is

    f = clamp(exp( n/(n+K) * weighted_mean(log(measured / estimated)) ), F_MIN, F_MAX)

over its last ``WINDOW`` prints, newer prints weighing more (weight
``DECAY**age``).  Why this shape:

* the log ratio treats "20 % slower" and "20 % faster" symmetrically, and the
  model's error is multiplicative (a slow firmware, a flow override, a
  host that starves the planner scale the whole print);
* ``n/(n+K)`` shrinks the factor toward 1 while there are few prints, so one
  odd print cannot swing the planner;
* ratios outside ``[RATIO_MIN, RATIO_MAX]`` are prints that were cancelled,
  paused for hours or mis-recorded: they are ignored, not learned;
* the clamp bounds what the correction can ever do to an estimate.

The estimate stored is the raw model estimate (before correction) so the
factor converges to the true ratio instead of chasing its own output.
"""
from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

WINDOW = 20
DECAY = 0.9
K_SHRINK = 3.0
F_MIN, F_MAX = 0.8, 1.25
RATIO_MIN, RATIO_MAX = 0.5, 2.0


class Correction(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    time_factor: float = 1.0
    energy_factor: float = 1.0
    prints_used: int = 0


def correction_factor(ratios_newest_first: Sequence[float]) -> float:
    """The bounded factor from measured/estimated ratios, newest first (pure)."""
    usable = [r for r in ratios_newest_first[:WINDOW]
              if math.isfinite(r) and RATIO_MIN <= r <= RATIO_MAX]
    if not usable:
        return 1.0
    weights = [DECAY ** age for age in range(len(usable))]
    mean_log = sum(w * math.log(r) for w, r in zip(weights, usable, strict=True)) / sum(weights)
    n = len(usable)
    factor = math.exp(mean_log * n / (n + K_SHRINK))
    return min(F_MAX, max(F_MIN, factor))


def record_print(conn: sqlite3.Connection, *, printer_profile: str, estimated_s: float, measured_s: float,
                 finished_s: float, job_id: str | None = None, file_sha256: str | None = None,
                 estimated_wh: float | None = None, measured_wh: float | None = None) -> None:
    """Store one finished print (call inside the caller's transaction, on the store thread)."""
    if not (estimated_s > 0 and measured_s > 0):
        raise ValueError(f"estimated_s and measured_s must be positive, got {estimated_s!r}, {measured_s!r}")
    conn.execute(
        "INSERT INTO print_history(job_id, printer_profile, file_sha256, estimated_s, measured_s,"
        " estimated_wh, measured_wh, finished_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (job_id, printer_profile, file_sha256, estimated_s, measured_s, estimated_wh, measured_wh, finished_s),
    )


def load_correction(conn: sqlite3.Connection, printer_profile: str) -> Correction:
    rows = conn.execute(
        "SELECT estimated_s, measured_s, estimated_wh, measured_wh FROM print_history"
        " WHERE printer_profile = ? ORDER BY finished_s DESC, id DESC LIMIT ?",
        (printer_profile, WINDOW),
    ).fetchall()
    time_ratios = [r[1] / r[0] for r in rows]
    energy_ratios = [r[3] / r[2] for r in rows if r[2] and r[3] and r[2] > 0]
    return Correction(time_factor=correction_factor(time_ratios),
                      energy_factor=correction_factor(energy_ratios), prints_used=len(rows))
