"""The page's words (node.web.view.page_state), pure: no browser, no node."""
from __future__ import annotations

from datetime import UTC
from types import SimpleNamespace

from node.web.view import page_state


def report(planner: dict) -> SimpleNamespace:
    telemetry = {"soc_pct": 27.5, "level": "below_reserve",
                 "last_sample": {"pv_w": 0.0, "printer_w": 130.0, "battery_v": 12.9, "battery_a": -10.5}}
    return SimpleNamespace(components={"telemetry": telemetry, "planner": planner, "printer": {"state": "printing"},
                                       "runner": {}},
                           sim_time="2026-12-03T22:00:00+00:00", jobs=[], problems=[], node_id="n1", version="t",
                           time_scale=1.0)


def test_the_battery_line_says_why_a_print_goes_on_below_the_reserve() -> None:
    """A print the guard lets finish below the reserve (finish_allowance_pct) is not a silent anomaly: the battery
    line says why the charge is under the reserve while it prints."""
    why = "the rest needs 6 Wh: it finishes within the allowance below the reserve rather than pause so near its end"
    finishing = page_state(report({"finishing": {"j1": why}}), None, [], tz=UTC, alerts_seen=[])
    assert finishing.battery.startswith("28 % charged (below the planning reserve)")
    assert finishing.battery.endswith(f"; the print finishes below the reserve: {why}")
    plain = page_state(report({"finishing": {}}), None, [], tz=UTC, alerts_seen=[])
    assert "finishes below the reserve" not in plain.battery
