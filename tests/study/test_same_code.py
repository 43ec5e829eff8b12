"""The year study runs the node's own energy code: the same guard (constants and decisions, node.plan.guard), the
same scheduler (node.plan.schedule.plan) with the same band, the same "never fits" check (node.plan.fit)."""
from __future__ import annotations

import dataclasses
import itertools

from node.clock import ManualClock
from node.config import NodeConfig
from node.jobs import Jobs
from node.node import Node
from node.plan import guard as guard_module
from node.plan import planner as planner_module
from node.plan import schedule
from node.plan.planner import Planner
from node.printer.profile import load_profile
from node.store import Store
from node.study import year
from node.study.year import SimSettings, Simulation, battery_of


def test_the_planner_and_the_study_guard_with_the_same_rule(weather, tmp_path) -> None:
    config = NodeConfig()
    battery = battery_of(40.0)
    store = Store(tmp_path / "node.db").open()
    node = Node(config.node, ManualClock(0.0))
    planner = Planner(node, config.planner, site=config.site, array=config.array, forecast=config.forecast,
                      jobs=Jobs(node, store), battery=battery, printer_profile=load_profile("ender3"),
                      energy_profile_for=lambda job: None)
    sim = Simulation(weather["723170TYA.CSV"], "planner", SimSettings(battery=battery))
    # one guard, built by one factory from the same [planner] section and plant
    assert planner.guard == sim.guard
    assert planner.guard.plan_band_wh == sim.guard.plan_band_wh
    # the same margin for the SoC reading's drift (the guard's, on each side's last full reading), from the same
    # "read full" rule
    assert year.reads_full is guard_module.reads_full
    # and the same decisions through each side's own entry point, over SoC, PV, draw and the resume margin
    for soc, pv_w, draw_w, resume in itertools.product((0.25, 0.3, 0.32, 0.35, 0.4, 0.6), (0.0, 80.0, 300.0),
                                                       (20.0, 150.0, 260.0), (False, True)):
        planner.soc_pct, planner.pv_w = 100.0 * soc, pv_w
        sim.soc_seen, sim.last_pv_w = soc, pv_w
        assert planner._guard_ok(draw_w, resume=resume) == sim._guard_ok(draw_w, resume=resume), (soc, pv_w, draw_w)
    # no copy of the guard's constants is left in the study
    for name in ("GUARD_MARGIN_FRAC", "TYPICAL_PRINT_W", "GUARD_STEPS"):
        assert getattr(year, name, getattr(guard_module, name)) is getattr(guard_module, name)
    assert year.energy_action is guard_module.energy_action and year.check_fit.__module__ == "node.plan.fit"
    # a print near its end: both give the guard its rest through the same function of profile and elapsed time
    assert year.rest_wh_s is schedule.rest_wh_s and planner_module.rest_wh_s is schedule.rest_wh_s
    store.close()


def test_the_study_plans_with_the_nodes_margin_for_the_soc_readings_drift(weather, monkeypatch) -> None:
    """Each plan of the study keeps the guard's band plus the guard's SoC margin, from its last full reading."""
    bands: list[tuple[float, float | None, float]] = []
    real_plan = year.plan

    def spy(inputs):
        bands.append((inputs.guard_band_wh, sim.full_seen_s, inputs.t0_s))
        return real_plan(inputs)

    monkeypatch.setattr(year, "plan", spy)
    sim = Simulation(weather["723170TYA.CSV"], "planner", SimSettings(days=3, start_day=170, battery=battery_of(20.0),
                                                                        initial_soc=1.0))
    sim.run()
    assert bands and any(full is not None for _, full, _ in bands)
    for band_wh, full_s, t_s in bands:
        assert band_wh == sim.guard.plan_band_wh + sim.guard.soc_margin_wh(full_s, t_s)
    assert len({round(band_wh, 6) for band_wh, _, _ in bands}) > 1   # the margin moves with the hours since full


def test_the_study_holds_a_start_that_needs_the_sun_with_the_nodes_gate(weather, monkeypatch) -> None:
    """The study asks the node's own sun gate (node.plan.sungate) before each planned start, with the plan's PV
    for the step and the PV its node would have measured; with the gate off it asks nothing."""
    from node.plan import sungate

    assert year.sun_wait is sungate.sun_wait and planner_module.sun_wait is sungate.sun_wait
    assert year.RecentPv is sungate.RecentPv and planner_module.RecentPv is sungate.RecentPv
    answers: list[str | None] = []

    def spy(*args, **kwargs):
        answers.append(sungate.sun_wait(*args, **kwargs))
        return answers[-1]

    monkeypatch.setattr(year, "sun_wait", spy)
    settings = SimSettings(days=4, start_day=330, battery=battery_of(20.0))
    Simulation(weather["723170TYA.CSV"], "planner-learned", settings).run()
    assert any(a is None for a in answers) and any(a is not None and "needs the sun" in a for a in answers)
    answers.clear()
    off = dataclasses.replace(settings, planner=settings.planner.model_copy(update={"sun_shown_window_min": 0.0}))
    Simulation(weather["723170TYA.CSV"], "planner-learned", off).run()
    assert answers == []


def test_the_study_replans_on_the_nodes_rule_when_the_sun_or_the_battery_departs_from_the_plan(
        weather, monkeypatch) -> None:
    """Both re-plan through node.plan.schedule.plan_deviation, at most once per DEVIATION_INTERVAL_S, while
    printing too; the study re-plans on its answers (not on a rule of its own)."""
    assert year.plan_deviation is schedule.plan_deviation and planner_module.plan_deviation is schedule.plan_deviation
    assert year.DEVIATION_INTERVAL_S is schedule.DEVIATION_INTERVAL_S is planner_module.DEVIATION_INTERVAL_S
    asked: list[tuple[float, str | None]] = []
    replans_at: list[float] = []
    held_back: list[bool] = []
    real_plan = year.plan

    def spy(current, t_s, soc_pct, pv_w, **kwargs):
        asked.append((t_s, schedule.plan_deviation(current, t_s, soc_pct, pv_w, **kwargs)))
        held_back.append(kwargs["pv_held_back"])
        return asked[-1][1]

    def planned(inputs):
        replans_at.append(inputs.t0_s)
        return real_plan(inputs)

    monkeypatch.setattr(year, "plan_deviation", spy)
    monkeypatch.setattr(year, "plan", planned)
    sim = Simulation(weather["723170TYA.CSV"], "planner-learned", SimSettings(days=4, start_day=330,
                                                                              battery=battery_of(40.0)))
    sim.run()
    departed = [t_s for t_s, why in asked if why is not None]
    assert departed and any("PV" in why for _, why in asked if why is not None)
    assert all(b - a >= schedule.DEVIATION_INTERVAL_S for a, b in itertools.pairwise(departed))
    assert set(departed) <= set(replans_at)   # each departure re-planned at once
    assert any(held_back) and not all(held_back)  # a full battery's PV reading is marked as the charger's limit
