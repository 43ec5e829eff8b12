"""SoC estimator and thresholds: a simulated week against a plant that differs from the estimator."""
from __future__ import annotations

from itertools import pairwise

import pytest
from pydantic import ValidationError

from node.power.battery import SocEstimator
from node.power.config import BatterySection
from node.power.plant import open_circuit_v
from node.power.thresholds import ThresholdMonitor
from tests.power.week_sim import DAY_S, simulate_week

BANKS = {"lifepo4": 4, "lead_acid": 6}


@pytest.mark.parametrize("chemistry", ["lifepo4", "lead_acid"])
@pytest.mark.parametrize("capacity_factor", [0.9, 1.1])
def test_week_within_3_points_of_true_soc(chemistry: str, capacity_factor: float) -> None:
    battery = BatterySection(chemistry=chemistry, cells=BANKS[chemistry])
    result = simulate_week(battery, capacity_factor, seed=7)
    assert result.max_error_pp <= 3.0, result.max_error_pp
    syncs = result.sync_times_s
    # the week has a clear first day, then three grey days: the bank is not full for over 3 days
    longest_gap_days = max(b - a for a, b in pairwise(syncs)) / DAY_S
    assert longest_gap_days >= 3.0
    assert syncs[0] < DAY_S and len(syncs) >= 3
    assert result.true_soc_min < 0.86  # the bank really was cycled
    assert result.offset_a == pytest.approx(0.05, abs=0.06)


def test_week_without_resync_or_learning_would_drift() -> None:
    """The same week with resync and learning disabled goes wrong: the test can fail."""
    battery = BatterySection(chemistry="lifepo4", cells=4, charged_v=30.0, learn_offset=False,
                             thresholds={"reserve_v": 12.9})
    result = simulate_week(battery, 0.9, seed=7)
    assert result.max_error_pp > 3.0


def test_defaults_are_a_1_2_kwh_lifepo4_bank() -> None:
    battery = BatterySection()
    params = battery.plant_params()
    assert params.capacity_wh == pytest.approx(94 * 12.8)
    t = battery.resolved_thresholds()
    assert (t.node_lvd_v, t.node_reconnect_v) == (12.0, 13.1)
    assert t.reserve_v > t.critical_v > t.node_lvd_v > t.controller_lvd_v
    lead = BatterySection(chemistry="lead_acid", cells=6).resolved_thresholds()
    assert (lead.node_lvd_v, lead.node_reconnect_v) == (11.7, 12.6)
    lead24 = BatterySection(chemistry="lead_acid", cells=12).resolved_thresholds()
    assert lead24.node_lvd_v == pytest.approx(23.4)


def test_thresholds_out_of_order_are_refused_naming_keys() -> None:
    with pytest.raises(ValidationError, match=r"critical_v \(11.5\) must be above node_lvd_v \(12.0\)"):
        BatterySection(thresholds={"critical_v": 11.5})
    with pytest.raises(ValidationError, match="node_lvd_v .* must be above controller_lvd_v"):
        BatterySection(thresholds={"node_lvd_v": 11.4, "node_reconnect_v": 13.0})
    with pytest.raises(ValidationError, match="reserve_soc_pct"):
        BatterySection(thresholds={"reserve_soc_pct": 5})


def test_sag_under_a_heater_load_is_not_an_empty_battery() -> None:
    battery = BatterySection()
    estimator = SocEstimator(battery, initial_soc=0.6)
    rest_v = open_circuit_v("lifepo4", 0.6, 4)
    t_s = 0.0
    for _ in range(60):  # a bed heater pulling 20 A: terminal voltage 0.4 V below rest
        t_s += 1.0
        estimate = estimator.update(t_s, rest_v - 20 * 0.02, -20.0)
    assert rest_v - 0.4 < battery.resolved_thresholds().critical_v + 0.5
    assert estimate.corrected_v == pytest.approx(rest_v, abs=0.01)
    assert estimate.level == "ok"


def test_threshold_monitor_latches_node_lvd_until_reconnect() -> None:
    monitor = ThresholdMonitor(BatterySection().resolved_thresholds())
    assert monitor.update(13.2, 80) == "ok"
    assert monitor.update(12.8, 80) == "below_reserve"
    assert monitor.update(13.2, 8) == "critical"
    assert monitor.update(11.9, 5) == "node_lvd"
    assert monitor.update(12.9, 50) == "node_lvd"  # not yet above the reconnect voltage
    assert monitor.update(13.15, 50) == "ok"


def test_resync_needs_the_dwell_time() -> None:
    battery = BatterySection()
    estimator = SocEstimator(battery, initial_soc=0.9)
    t_s, full_at = 0.0, None
    for _ in range(400):
        t_s += 1.0
        estimate = estimator.update(t_s, 14.2, 1.0, charge_state="absorption")
        if estimate.full:
            full_at = t_s
    assert full_at == pytest.approx(1.0 + battery.charged_dwell_s, abs=1.0)
    assert estimator.syncs == 1
    assert estimator.soc == 1.0


def test_peukert_and_cold_make_discharge_count_more() -> None:
    battery = BatterySection(chemistry="lead_acid", cells=6)
    gentle, hard = SocEstimator(battery, initial_soc=1.0), SocEstimator(battery, initial_soc=1.0)
    cold = SocEstimator(battery, initial_soc=1.0)
    for step in range(1, 3601):
        gentle.update(step * 1.0, 12.6, -4.0, 25.0)
        cold.update(step * 1.0, 12.6, -4.0, 5.0)
        hard.update(step * 0.25, 12.6, -16.0, 25.0)  # the same Ah, four times faster
    assert gentle.soc == pytest.approx(1 - 4.0 / 94, abs=1e-3)
    assert hard.soc < gentle.soc - 0.01
    assert cold.soc == pytest.approx(1 - 4.0 / (94 * 0.9), abs=1e-3)


def test_rest_voltage_corrects_lead_acid_only_after_a_long_rest() -> None:
    battery = BatterySection(chemistry="lead_acid", cells=6)
    estimator = SocEstimator(battery, initial_soc=0.9)
    rest_v = open_circuit_v("lead_acid", 0.6, 6)
    t_s = 0.0
    while t_s < battery.rest_min_s - 60:
        t_s += 30.0
        estimator.update(t_s, rest_v, 0.0)
    assert estimator.soc == pytest.approx(0.9)
    while t_s < battery.rest_min_s + 60:
        t_s += 30.0
        estimator.update(t_s, rest_v, 0.0)
    assert estimator.soc == pytest.approx(0.6, abs=0.01)


def test_lifepo4_rest_voltage_is_never_used() -> None:
    estimator = SocEstimator(BatterySection(), initial_soc=0.9)
    rest_v = open_circuit_v("lifepo4", 0.5, 4)
    for step in range(1, 2000):
        estimator.update(step * 60.0, rest_v, 0.0)
    assert estimator.soc == pytest.approx(0.9)


def test_offset_is_learned_while_floating_lifepo4() -> None:
    battery = BatterySection()
    estimator = SocEstimator(battery, initial_soc=0.99)
    t_s = 0.0
    for _ in range(300):
        t_s += 1.0
        estimator.update(t_s, 14.2, 0.5, charge_state="absorption")
    for _ in range(240):
        t_s += 30.0
        estimator.update(t_s, 13.5, 0.12, charge_state="float")
    estimator.update(t_s + 30, 13.3, -2.0, charge_state="off")
    assert estimator.offset_a == pytest.approx(0.8 * 0.12, abs=1e-3)


def test_gaps_are_not_integrated_and_restore_keeps_state() -> None:
    battery = BatterySection()
    estimator = SocEstimator(battery, initial_soc=0.8)
    estimator.update(0.0, 13.2, -10.0)
    estimator.update(10_000.0, 13.2, -10.0)  # the daemon was down: nothing counted
    assert estimator.soc == pytest.approx(0.8)
    estimator.update(10_036.0, 13.2, -10.0)
    assert estimator.soc == pytest.approx(0.8 - 0.1 / 94 * (94 / battery.plant_params().usable_capacity_ah(10)),
                                          abs=1e-4)
    again = SocEstimator(battery)
    again.restore(estimator.state())
    assert again.soc == estimator.soc and again.certain


def test_unknown_start_takes_the_voltage_curve() -> None:
    estimator = SocEstimator(BatterySection(chemistry="lead_acid", cells=6))
    estimate = estimator.update(0.0, open_circuit_v("lead_acid", 0.5, 6), 0.0)
    assert estimate.soc_pct == pytest.approx(50.0, abs=0.5)
    assert estimate.certain is False


def test_a_blind_gap_counts_the_nodes_own_draw_and_the_count_goes_on_from_there() -> None:
    """Telemetry lost for two hours while a 150 W print and the 4 W node run: the estimate goes down by
    that energy (no PV credited), turns uncertain, learns nothing across the gap, and the first sample
    after it restarts the voltage filter and counts on from the bridged value."""
    battery = BatterySection()
    estimator = SocEstimator(battery, initial_soc=0.9)
    estimator.update(0.0, 13.2, -5.0)
    assert estimator.certain
    before = estimator.soc
    assert estimator.bridge(3600.0, 154.0) is not None
    soc_pct = estimator.bridge(7200.0, 154.0)
    assert soc_pct is not None
    amps = 154.0 / (13.2 + 5.0 * battery.internal_resistance_ohm)  # the sag-corrected voltage before the gap
    expected = before - amps * 2 / battery.plant_params().usable_capacity_ah(amps)
    assert estimator.soc == pytest.approx(expected, abs=1e-4)
    assert soc_pct == pytest.approx(expected * 100, abs=1e-2)
    assert not estimator.certain and estimator.bridged_s == 7200.0
    assert estimator.bridge(7000.0, 154.0) == soc_pct  # time going back: nothing counted
    back = estimator.update(7201.0, 13.6, 0.0)
    assert back.corrected_v == pytest.approx(13.6)  # the filter restarted at the first sample
    assert estimator.soc == pytest.approx(expected, abs=1e-4)  # counted on, not reset to the old value
    assert estimator.state()["gap_since_sync"] and estimator.state()["bridged_s"] == 7200.0


def test_nothing_is_bridged_before_the_first_sample() -> None:
    estimator = SocEstimator(BatterySection(), initial_soc=0.7)
    assert estimator.bridge(1000.0, 100.0) is None
    assert estimator.soc == 0.7 and estimator.bridged_s == 0.0


def _synced(battery: BatterySection) -> tuple[SocEstimator, float]:
    """An estimator that has just read the bank full (a resync), and the time it did."""
    estimator = SocEstimator(battery, initial_soc=0.9)
    t_s = 0.0
    while estimator.syncs == 0:
        t_s += 1.0
        estimator.update(t_s, 14.2, 1.0, charge_state="absorption")
    return estimator, t_s


def test_the_count_is_anchored_at_its_last_full_reading_while_it_counts_every_stretch() -> None:
    """The planner's margin for the count's drift starts at the last full reading: across a short restart (the
    saved state goes on counting) the anchor holds; a long restart, a blind gap or a never-anchored count has
    none (node.plan.guard.EnergyGuard.soc_margin_wh)."""
    battery = BatterySection()
    estimator, synced_s = _synced(battery)
    for t_s in range(int(synced_s) + 10, int(synced_s) + 3601, 10):   # an hour of printing, read every 10 s
        estimator.update(float(t_s), 13.3, -8.0)
    assert estimator.anchored_full_s == synced_s
    # a restart of 20 s: the restored count goes on, still anchored
    quick = SocEstimator(battery)
    quick.restore(estimator.state())
    quick.update(synced_s + 3620.0, 13.3, -8.0)
    assert quick.anchored_full_s == synced_s
    # the daemon down for longer than max_gap_s: what the bank did meanwhile was not counted
    slow = SocEstimator(battery)
    slow.restore(estimator.state())
    slow.update(synced_s + 3600.0 + battery.max_gap_s + 60.0, 13.3, -8.0)
    assert slow.anchored_full_s is None
    # telemetry lost and bridged: counted blind
    estimator.bridge(synced_s + 4000.0, 20.0)
    assert estimator.anchored_full_s is None
    # a state saved before the anchor was kept is not trusted; a count never anchored has none
    old = estimator.state() | {"certain": True}
    old.pop("blind_since_sync")
    legacy = SocEstimator(battery)
    legacy.restore(old)
    assert legacy.anchored_full_s is None
    assert SocEstimator(battery, initial_soc=0.5).anchored_full_s is None
    # the next resync anchors it again
    while estimator.syncs == 1:
        synced_s += 1.0
        estimator.update(synced_s + 5000.0, 14.2, 1.0, charge_state="absorption")
    assert estimator.anchored_full_s == synced_s + 5000.0
