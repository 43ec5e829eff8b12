"""The year-long simulation on the three real TMY files pvlib ships (14-day slices here; the full year
runs in bench/simulate_table.py and in the slow test at the end)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pvlib
import pytest

from node.study.year import POLICIES, ForecastArchive, SimSettings, Simulation, WeatherYear

DATA = Path(pvlib.__file__).parent / "data"
TMY_FILES = ["723170TYA.CSV", "703165TY.csv", "12839.tm2"]
SLICE = SimSettings(days=14, start_day=300, seed=1)


@pytest.fixture(scope="module")
def weather() -> dict[str, WeatherYear]:
    return {name: WeatherYear.load(str(DATA / name)) for name in TMY_FILES}


@pytest.fixture(scope="module")
def slice_results(weather) -> dict[str, dict[str, object]]:
    out = {}
    for name, year in weather.items():
        archive = ForecastArchive.build(year, SLICE.seed)
        out[name] = {policy: Simulation(year, policy, SLICE, archive, record_events=True).run()
                     for policy in POLICIES}
    return out


def test_weather_files_read_through_pvlib(weather) -> None:
    formats = {name: w.site["format"] for name, w in weather.items()}
    assert formats == {"723170TYA.CSV": "TMY3", "703165TY.csv": "TMY3", "12839.tm2": "TMY2"}
    for w in weather.values():
        assert w.hours == 8760
        yearly_kwh = w.pv_w.sum() / 1000
        assert 250 < yearly_kwh < 800  # 400 Wp: 0.6-2 kWh/kWp/day
        # the forecast chain at 0 % cloud bounds the truth on most daylight hours
        clear = w.pv_by_cloud_w[0]
        day = clear > 50
        assert (w.pv_w[day] <= clear[day] * 1.3).mean() > 0.95


@pytest.mark.parametrize("name", TMY_FILES)
def test_planner_is_safe_and_competitive_on_a_14_day_slice(slice_results, name) -> None:
    r = slice_results[name]
    planner, oracle, greedy, threshold = r["planner"], r["oracle"], r["greedy"], r["threshold"]
    assert planner.brownouts == 0
    assert oracle.brownouts == 0
    assert planner.prints_completed >= math.ceil(0.95 * oracle.prints_completed)
    assert planner.prints_completed > greedy.prints_completed
    assert planner.prints_completed > threshold.prints_completed
    assert planner.prints_failed <= greedy.prints_failed


@pytest.mark.parametrize("name", TMY_FILES)
def test_the_shared_safety_pause_prevents_brownouts_for_every_policy(slice_results, name) -> None:
    for policy, result in slice_results[name].items():
        assert result.brownouts == 0, policy
        if result.pauses:
            assert result.min_soc_pct_printing >= 30.0 - 1e-6, policy


def test_policies_start_as_documented(slice_results) -> None:
    r = slice_results["723170TYA.CSV"]
    threshold_starts = [soc for _, kind, _, soc in r["threshold"].events if kind == "start"]
    assert threshold_starts and min(threshold_starts) > 0.60
    greedy_starts = [soc for _, kind, _, soc in r["greedy"].events if kind == "start"]
    assert min(greedy_starts) < 0.60  # greedy does not wait for a threshold


def test_a_short_print_pauses_at_a_layer_boundary_and_resumes_later(slice_results) -> None:
    """Some print in the slices ran short of energy: paused at a layer boundary, resumed, completed."""
    found = []
    for per_file in slice_results.values():
        for result in per_file.values():
            for job_id, at_s, heatup_s, layer_s in result.pauses_at:
                layers_done = (at_s - heatup_s) / layer_s
                assert at_s <= heatup_s + 1e-6 or abs(layers_done - round(layers_done)) < 1e-6
                kinds = [kind for _, kind, jid, _ in result.events if jid == job_id]
                if "pause" in kinds and "resume" in kinds and kinds[-1] == "completed":
                    assert kinds.index("pause") < kinds.index("resume") < len(kinds) - 1
                    found.append((result.policy, job_id))
    assert any(policy == "planner" for policy, _ in found), found


def test_a_pause_beyond_four_hours_cold_fails_the_print(slice_results) -> None:
    greedy = slice_results["723170TYA.CSV"]["greedy"]
    assert greedy.prints_failed > 0
    for _, kind, job_id, _ in greedy.events:
        if kind == "failed":
            times = {k: t for t, k, jid, _ in greedy.events if jid == job_id}
            assert times["failed"] - times["suspend"] >= 4 * 3600


def test_simulate_command_json_has_the_issue_keys(capsys) -> None:
    import argparse

    from node.commands import simulate

    parser = argparse.ArgumentParser()
    simulate.register(parser.add_subparsers())
    args = parser.parse_args(["simulate", "--weather", "12839.tm2", "--days", "3", "--start", "2025-03-01",
                              "--policy", "threshold", "--json"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("prints_completed", "prints_failed", "brownouts", "pauses", "pause_hours", "pv_used_wh",
                "pv_lost_wh", "mean_wait_hours"):
        assert key in out
    assert out["days"] == 3 and out["policy"] == "threshold"


def test_simulate_command_rejects_a_missing_weather_file() -> None:
    from node.commands.simulate import resolve_weather

    with pytest.raises(SystemExit, match="no such file"):
        resolve_weather("nowhere.csv")


@pytest.mark.slow
@pytest.mark.parametrize("name", TMY_FILES)
def test_full_year(weather, name) -> None:
    settings = SimSettings(days=365, seed=1)
    archive = ForecastArchive.build(weather[name], settings.seed)
    r = {p: Simulation(weather[name], p, settings, archive).run() for p in POLICIES}
    assert r["planner"].brownouts == 0
    assert r["planner"].prints_completed >= 0.95 * r["oracle"].prints_completed
    assert r["planner"].prints_completed > r["greedy"].prints_completed
    assert r["planner"].prints_completed > r["threshold"].prints_completed


def test_an_rv_fridge_on_the_same_battery_costs_prints_but_no_brownouts(weather, slice_results) -> None:
    from dataclasses import replace

    from node.plan.energymodel import LoadModel

    fridge = replace(SLICE, loads=LoadModel(other_loads_w_by_hour=[45.0] * 24))
    year = weather["723170TYA.CSV"]
    with_fridge = Simulation(year, "planner", fridge, ForecastArchive.build(year, SLICE.seed)).run()
    without = slice_results["723170TYA.CSV"]["planner"]
    assert with_fridge.brownouts == 0
    assert with_fridge.prints_completed < without.prints_completed
