"""Battery protection thresholds: the four levels, their required order, and their defaults.

From the top down, each level is a stronger reaction to an emptying battery:

1. **planning reserve** — the planner never plans to go below it (energy kept for the night
   and for a cloudy morning);
2. **critical** — pause the print and power the printer off (the job can resume later);
3. **node low-voltage disconnect** — the node shuts itself down cleanly before the controller
   cuts it off (reconnects above ``node_reconnect_v``);
4. **controller load disconnect** — the charge controller's own LVD on its load output: the
   last line, outside the node's control, stated here so the order can be checked.

Voltages are compared with the *sag-corrected, filtered* battery voltage
(``V - I * R_internal``, smoothed over ~30 s): a bed heater pulling 15 A from a 12 V bank
with 20 mΩ drops the terminal voltage by 0.3 V, which must not look like an empty battery.

Defaults (common practice):
- lead-acid 12 V: node cutoff 11.7 V, reconnect 12.6 V (the usual LVD/LVR pair of charge
  controllers, e.g. EPEVER's 11.1 V LVD / 12.6 V LVR with a margin above the LVD);
  critical 12.0 V (~30 % SoC at rest), reserve 12.3 V (~50 %: lead-acid lasts longest kept above
  half charge, Battery University BU-403/BU-903); controller LVD 11.1 V.
- LiFePO4 4S: node cutoff 12.0 V (3.0 V/cell), reconnect 13.1 V; critical 12.5 V (~10 %),
  reserve 12.9 V (~25 %); controller LVD 11.5 V (2.875 V/cell, above the BMS's 2.5 V/cell).
"""
from __future__ import annotations

from itertools import pairwise
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from node.power.config import ThresholdsSection

Level = Literal["ok", "below_reserve", "critical", "node_lvd"]

DEFAULTS: dict[str, dict[str, float]] = {
    "lead_acid": {"reserve_soc_pct": 50.0, "reserve_v": 12.3, "critical_soc_pct": 30.0, "critical_v": 12.0,
                  "node_lvd_v": 11.7, "node_reconnect_v": 12.6, "controller_lvd_v": 11.1},
    "lifepo4": {"reserve_soc_pct": 25.0, "reserve_v": 12.9, "critical_soc_pct": 10.0, "critical_v": 12.5,
                "node_lvd_v": 12.0, "node_reconnect_v": 13.1, "controller_lvd_v": 11.5},
}
#: the defaults above are for a 12 V bank of this many cells; other banks scale per cell
DEFAULT_CELLS = {"lead_acid": 6, "lifepo4": 4}




class Thresholds(BaseModel):
    """All levels resolved and checked."""

    model_config = ConfigDict(frozen=True)

    reserve_soc_pct: float
    reserve_v: float
    critical_soc_pct: float
    critical_v: float
    node_lvd_v: float
    node_reconnect_v: float
    controller_lvd_v: float


def resolve_thresholds(section: ThresholdsSection, chemistry: str, cells: int) -> Thresholds:
    """Fill defaults and check the order; ``ValueError`` names the keys out of order."""
    scale = cells / DEFAULT_CELLS[chemistry]
    values: dict[str, float] = {}
    for key, default in DEFAULTS[chemistry].items():
        given = getattr(section, key)
        values[key] = given if given is not None else (default if key.endswith("_pct") else round(default * scale, 3))
    order_v = ["reserve_v", "critical_v", "node_lvd_v", "controller_lvd_v"]
    problems = [f"{high} ({values[high]}) must be above {low} ({values[low]})"
                for high, low in pairwise(order_v) if not values[high] > values[low]]
    if not values["reserve_soc_pct"] > values["critical_soc_pct"]:
        problems.append(f"reserve_soc_pct ({values['reserve_soc_pct']}) must be above critical_soc_pct "
                        f"({values['critical_soc_pct']})")
    if not values["node_reconnect_v"] > values["node_lvd_v"]:
        problems.append(f"node_reconnect_v ({values['node_reconnect_v']}) must be above node_lvd_v "
                        f"({values['node_lvd_v']})")
    if problems:
        raise ValueError("thresholds out of order (required: planning reserve > critical > node LVD > "
                         "controller LVD): " + "; ".join(problems))
    return Thresholds(**values)


class ThresholdMonitor:
    """Turns (corrected, filtered voltage; SoC) into a level, latching the node LVD until reconnect.

    Pure: the caller feeds it every estimate and acts on changes of ``level``.
    """

    def __init__(self, thresholds: Thresholds) -> None:
        self.t = thresholds
        self.level: Level = "ok"
        self._lvd_latched = False

    def update(self, corrected_v: float, soc_pct: float | None) -> Level:
        t = self.t
        if corrected_v < t.node_lvd_v:
            self._lvd_latched = True
        elif self._lvd_latched and corrected_v >= t.node_reconnect_v:
            self._lvd_latched = False
        soc = 100.0 if soc_pct is None else soc_pct
        if self._lvd_latched:
            level: Level = "node_lvd"
        elif corrected_v < t.critical_v or soc < t.critical_soc_pct:
            level = "critical"
        elif corrected_v < t.reserve_v or soc < t.reserve_soc_pct:
            level = "below_reserve"
        else:
            level = "ok"
        self.level = level
        return level
