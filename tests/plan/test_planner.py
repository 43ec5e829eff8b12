"""The Planner component on a real Node, store and job state machine, with the real pvlib worker."""
from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from node.clock import ManualClock
from node.config import NodeConfig
from node.events import EnergyPauseRequested, EnergyResumeAllowed, JobProgress, PlanSummary, TelemetrySample
from node.jobs import Jobs, JobState, PauseReason
from node.node import Node
from node.plan.planner import Planner
from node.printer.profile import load_profile
from node.store import Store
from node.store.db import read_from_outside
from node.study.year import DEFAULT_BATTERY

NIGHT_S = 1750500000.0  # 2025-06-21 03:00 in Tucson: no sun
PROFILE = [[60.0 * m, 250.0 if m < 5 else 130.0] for m in range(120)]  # 2 h, ~270 Wh
HUGE = [[60.0 * m, 130.0] for m in range(40 * 60)]  # 40 h, 5.2 kWh: more than 1.2 kWh and a day of sun carry


class FakeStreamer:
    """Plays the streamer's part of the protocol: pause at the next layer boundary, resume on request."""

    def __init__(self, node: Node, jobs: Jobs) -> None:
        self.jobs = jobs
        self.pending: EnergyPauseRequested | None = None
        self.requests: list[EnergyPauseRequested] = []
        self.resumes: list[EnergyResumeAllowed] = []
        self.last_layer: dict[str, int] = {}
        node.register_event_handler("energy_pause_requested", self.on_pause)
        node.register_event_handler("energy_resume_allowed", self.on_resume)
        node.register_event_handler("job_progress", self.on_progress)

    async def on_pause(self, event: EnergyPauseRequested) -> None:
        self.requests.append(event)
        if event.printer_off:
            await self.jobs.transition(event.job_id, JobState.SUSPENDED, event.reason)
        else:
            self.pending = event

    async def on_progress(self, event: JobProgress) -> None:
        previous = self.last_layer.get(event.job_id)
        self.last_layer[event.job_id] = event.layer or 0
        if self.pending is not None and previous is not None and (event.layer or 0) > previous:
            request, self.pending = self.pending, None
            await self.jobs.transition(request.job_id, JobState.PAUSED, request.reason,
                                       pause_reason=PauseReason.ENERGY)

    async def on_resume(self, event: EnergyResumeAllowed) -> None:
        self.resumes.append(event)
        await self.jobs.transition(event.job_id, JobState.PRINTING, event.reason)


@pytest.fixture
def world(tmp_path: Path):
    config = NodeConfig()
    node = Node(config.node, ManualClock(NIGHT_S))
    store = Store(tmp_path / "node.db").open()
    jobs = node.add(Jobs(node, store))
    planner = node.add(Planner(node, config.planner, site=config.site, array=config.array,
                               forecast=config.forecast, jobs=jobs, battery=DEFAULT_BATTERY,
                               printer_profile=load_profile("ender3"),
                               energy_profile_for=lambda job: {"unknown": None, "huge": HUGE}.get(job.name, PROFILE)))
    streamer = FakeStreamer(node, jobs)
    plans: list[PlanSummary] = []
    node.register_event_handler("plan_updated", plans.append)
    yield node, jobs, planner, streamer, plans
    store.close()


def sample(t_s: float, soc: float, pv_w: float = 0.0) -> TelemetrySample:
    return TelemetrySample(t_s=t_s, source="test", soc_pct=soc, pv_w=pv_w)


async def printing_part(node: Node, jobs: Jobs, percent: int, layer: int, elapsed_s: float):
    """The 2-hour "part" job on the printer, ``percent`` done after ``elapsed_s``."""
    job = await jobs.create("part", "test")
    await jobs.transition(job.id, JobState.PRINTING, "started by the runner")
    await node.send_event("job_progress", JobProgress(job_id=job.id, bytes_done=percent, bytes_total=100,
                                                      lines_sent=percent, percent=percent, layer=layer,
                                                      elapsed_s=elapsed_s))
    return job


def test_short_print_is_paused_at_a_layer_boundary_switched_off_and_resumed(world) -> None:
    node, jobs, planner, streamer, plans = world

    async def scenario() -> None:
        job = await printing_part(node, jobs, percent=10, layer=12, elapsed_s=1200)
        # plenty of energy: no pause
        await node.send_event("telemetry_sample", sample(NIGHT_S, 70.0))
        assert streamer.requests == []
        # the battery runs down at night: two more steps of printing would cross the 30 % reserve
        await node.send_event("telemetry_sample", sample(NIGHT_S + 60, 31.0))
        assert len(streamer.requests) == 1
        request = streamer.requests[0]
        assert request.at == "next_layer" and not request.printer_off and request.job_id == job.id
        assert (await jobs.get(job.id)).state == JobState.PRINTING  # not yet: mid-layer
        await node.send_event("job_progress", JobProgress(job_id=job.id, bytes_done=11, bytes_total=100,
                                                          lines_sent=6, percent=11, layer=13, elapsed_s=1260))
        paused = await jobs.get(job.id)
        assert paused.state == JobState.PAUSED and paused.pause_reason == PauseReason.ENERGY
        # a second low sample does not ask twice for the same warm pause
        await node.send_event("telemetry_sample", sample(NIGHT_S + 90, 33.0))
        assert len(streamer.requests) == 1
        # keeping the bed warm would now cross the reserve: switch the printer off
        await node.send_event("telemetry_sample", sample(NIGHT_S + 120, 30.6))
        assert streamer.requests[-1].printer_off
        assert (await jobs.get(job.id)).state == JobState.SUSPENDED
        # the sun is back and the battery charged: the plan puts the print first, and it resumes
        await node.clock.advance(6 * 3600)
        now = node.clock.time()
        await node.send_event("telemetry_sample", sample(now, 85.0, pv_w=300.0))
        await planner.replan("test")
        assert plans[-1].planned[0].job_id == job.id
        await node.send_event("telemetry_sample", sample(now + 10, 85.0, pv_w=300.0))
        assert len(streamer.resumes) == 1
        assert (await jobs.get(job.id)).state == JobState.PRINTING

    asyncio.run(scenario())


def test_a_print_near_its_end_finishes_within_the_allowance_instead_of_pausing(world) -> None:
    """The same reading that pauses a print with 100 minutes to go lets one with 3 minutes to go finish: its rest
    (6.5 Wh, half a point of the battery) ends above the reserve minus [planner] finish_allowance_pct; the guard
    still pauses it once even the rest would go past that."""
    node, jobs, planner, streamer, plans = world

    async def scenario() -> None:
        job = await printing_part(node, jobs, percent=97, layer=60, elapsed_s=7020)
        await node.send_event("telemetry_sample", sample(NIGHT_S, 31.0))
        assert streamer.requests == [] and planner.status()["finishing"][job.id].startswith("the rest needs 6 Wh")
        await node.send_event("telemetry_sample", sample(NIGHT_S + 60, 29.5))   # below the reserve: still finishing
        assert streamer.requests == []
        await node.send_event("telemetry_sample", sample(NIGHT_S + 90, 25.2))   # the rest would end below 25 %
        assert len(streamer.requests) == 1 and not streamer.requests[0].printer_off
        assert planner.status()["finishing"] == {}   # the page no longer says it finishes

    asyncio.run(scenario())
    assert planner.guard.finish_allowance_frac == pytest.approx(0.05)


def test_without_a_finish_allowance_the_guard_pauses_at_the_reserve(tmp_path) -> None:
    """finish_allowance_pct = 0 is the old rule: a print three minutes from its end pauses at the reserve; and the
    allowance must stay below the reserve (a config that would let a print run the battery flat is refused)."""
    from node.plan.config import PlannerSection
    from node.plan.energymodel import EnergyModel
    from node.plan.guard import EnergyGuard, energy_action

    model = EnergyModel.from_params(DEFAULT_BATTERY)
    near_end = dict(energy_wh=0.31 * model.capacity_wh, pv_w=0.0, draw_w=130.0, hold_w=40.0, resume_w=130.0,
                    paused_for_s=0.0, switched_off=False, plan_starts_it=False, rest=lambda: (6.5, 180.0))
    with_allowance = EnergyGuard.from_config(PlannerSection(), model)
    assert energy_action(with_allowance, "printing", **near_end)[0] is None
    without = EnergyGuard.from_config(PlannerSection(finish_allowance_pct=0.0), model)
    assert energy_action(without, "printing", **near_end)[0] == "pause"
    # with no energy profile (rest unknown) the guard cannot tell: it pauses
    assert energy_action(with_allowance, "printing", **(near_end | {"rest": None}))[0] == "pause"
    with pytest.raises(ValueError, match="finish_allowance_pct"):
        PlannerSection(reserve_pct=10.0, finish_allowance_pct=12.0)


def test_replan_sends_a_plan_summary_with_reasons(world) -> None:
    node, jobs, planner, streamer, plans = world

    async def scenario() -> str:
        await jobs.create("part", "test")
        await jobs.create("unknown", "test")
        huge = await jobs.create("huge", "test")
        await node.send_event("telemetry_sample", sample(NIGHT_S, 35.0))
        await planner.replan("test")
        assert (await jobs.get(huge.id)).state == JobState.QUEUED   # held, not dropped: a person decides
        return huge.id

    huge_id = asyncio.run(scenario())
    summary = plans[-1]
    # a job the plant can never carry is flagged with its figures, not left to wait for ever
    held = [w for w in summary.waiting if w.job_id == huge_id]
    assert held and held[0].never_fits and planner.status()["never_fits"] == 1
    assert "never fits this plant: needs 5200 Wh over 40.0 h" in held[0].reason
    assert "Wh below the reserve" in held[0].reason and "cancel it" in held[0].reason
    assert not any(w.never_fits for w in summary.waiting if w.job_id != huge_id)
    assert summary.trigger == "test"
    assert summary.horizon_h == pytest.approx(72.0)
    assert summary.reserve_pct == 30.0
    # at 35 % at night the 270 Wh print waits for the sun, and says so
    assert summary.planned and "first window above the 30 % reserve is" in summary.planned[0].reason
    assert summary.next_start_s > NIGHT_S
    assert any("no energy profile" in w.reason for w in summary.waiting)
    assert planner.status()["planned"] == 1
    # each re-plan is counted with what asked for it and where its time went (bench/footprint.py reads them)
    status = planner.status()
    assert status["replans"] == 1 and status["last_replan_trigger"] == "test"
    assert set(status["last_replan_parts_ms"]) == {"lock", "forecast", "store", "plan", "deliver", "cpu"}


def test_moving_the_site_replans_for_the_new_place(world) -> None:
    node, jobs, planner, streamer, plans = world

    async def scenario() -> None:
        await node.send_event("telemetry_sample", sample(NIGHT_S, 50.0))
        await planner.replan("before")
        before = plans[-1].pv_forecast_wh
        planner.set_site(planner.site.model_copy(update={"latitude": 61.2, "longitude": -149.9,
                                                         "timezone": "America/Anchorage"}))
        await planner.replan("after")
        assert plans[-1].pv_forecast_wh != pytest.approx(before, rel=0.01)

    asyncio.run(scenario())


def test_telemetry_departing_from_the_plan_asks_for_a_replan(world) -> None:
    node, jobs, planner, streamer, plans = world

    async def scenario() -> None:
        await node.send_event("telemetry_sample", sample(NIGHT_S, 60.0))
        await planner.replan("first")
        planner._wake.clear()
        await node.send_event("telemetry_sample", sample(NIGHT_S + 60, 60.5))
        assert not planner._wake.is_set()  # within the deviation band
        await node.send_event("telemetry_sample", sample(NIGHT_S + 120, 52.0))
        assert planner._wake.is_set() and "departs from the planned" in planner._trigger
        planner._wake.clear()
        await node.send_event("telemetry_sample", sample(NIGHT_S + 3600, 59.8, pv_w=250.0))  # sun at night?
        assert planner._wake.is_set() and "PV 250 W departs" in planner._trigger

    asyncio.run(scenario())


def test_a_full_battery_holding_pv_back_is_no_departure_from_the_plan(world) -> None:
    """At noon on a full battery the charger takes only what the load needs: the reading is far below the
    plan's PV, which says nothing about the sun (it re-planned every 15 minutes all day).  The same reading
    while the charger takes all it gets is a grey noon: re-plan."""
    node, jobs, planner, streamer, plans = world
    noon_s = NIGHT_S + 9 * 3600.0  # 12:00 in Tucson, June: the plan counts on several hundred watts

    async def scenario() -> None:
        await node.send_event("telemetry_sample", TelemetrySample(t_s=noon_s, source="test", soc_pct=100.0,
                                                                   pv_w=30.0, charge_state="float"))
        await planner.replan("first")
        assert planner.last_plan is not None and planner.last_plan.pv_w_at(noon_s + 1800) > 200.0
        planner._wake.clear()
        await node.send_event("telemetry_sample", TelemetrySample(t_s=noon_s + 1800, source="test", soc_pct=100.0,
                                                                   pv_w=30.0, charge_state="float"))
        assert not planner._wake.is_set()
        await node.send_event("telemetry_sample", TelemetrySample(t_s=noon_s + 3600, source="test", soc_pct=98.0,
                                                                   pv_w=30.0, charge_state="bulk"))
        assert planner._wake.is_set() and "PV 30 W departs" in planner._trigger

    asyncio.run(scenario())


def test_start_gate_says_why_a_job_waits_and_lets_it_go_when_planned(world) -> None:
    node, jobs, planner, streamer, plans = world

    async def scenario() -> None:
        job = await jobs.create("part", "test")
        await node.send_event("telemetry_sample", sample(NIGHT_S, 35.0))
        await planner.replan("test")
        decision = await planner.start_gate(job)
        assert not decision.allowed and "first window above the 30 % reserve" in decision.reason
        await node.send_event("telemetry_sample", sample(NIGHT_S + 60, 90.0))
        await planner.replan("charged")
        decision = await planner.start_gate(job)
        assert decision.allowed and planner.next_job_id() == job.id

    asyncio.run(scenario())


def test_a_print_that_needs_the_sun_waits_until_the_panel_shows_it(world) -> None:
    """09:00 on a June morning, the battery at 40 %: the 270 Wh print needs the sun the plan counts on.  Under a
    cloud the forecast did not see it waits, saying why; once the panel gives what the plan counts on it
    starts.  A print the battery carries alone starts under the same cloud (node.plan.sungate)."""
    node, jobs, planner, streamer, plans = world
    morning_s = NIGHT_S + 6 * 3600.0

    async def half_hour_of(pv_w: float, soc: float, until_s: float) -> None:
        for t_s in np.arange(until_s - 1800.0, until_s + 1.0, 60.0):
            await node.send_event("telemetry_sample", sample(float(t_s), soc, pv_w))

    async def scenario() -> None:
        await node.clock.advance(morning_s - NIGHT_S)
        job = await jobs.create("part", "test")
        await half_hour_of(20.0, 40.0, morning_s)
        await planner.replan("morning")
        planned_w = planner.last_plan.pv_w_at(morning_s)
        assert planner.next_job_id() == job.id and planned_w > 100.0     # the plan starts it now, on the sun
        decision = await planner.start_gate(job)
        assert not decision.allowed and decision.waits_for == "the sun to show up"
        assert "needs 270 Wh" in decision.reason and "the panel gives 20 W" in decision.reason
        # the cloud passes: half an hour at what the plan counts on
        later_s = morning_s + 1800.0
        await node.clock.advance(1800.0)
        await half_hour_of(1.05 * planner.last_plan.pv_w_at(later_s), 40.0, later_s)
        assert (await planner.start_gate(job)).allowed
        # the battery carries it alone: no wait under the cloud
        await half_hour_of(20.0, 90.0, later_s)
        assert (await planner.start_gate(job)).allowed

    asyncio.run(scenario())


def test_plans_keep_a_margin_for_the_soc_readings_drift_since_the_battery_was_last_full(world) -> None:
    """A coulomb count drifts after each full charge: a print that fits the reading only by a hair is not planned
    on a reading hours old, and is on one an hour after the battery was read full (EnergyGuard.soc_margin_wh)."""
    node, jobs, planner, streamer, plans = world
    capacity_wh = planner.model.capacity_wh
    band_pct = 100.0 * planner.guard.plan_band_wh / capacity_wh
    # 270 Wh print and 2 h of base load at night, on the 30 % reserve and the guard's band: SoC 58 % carries it
    # with ~3 points to spare, less than the 6-point margin of a reading never anchored by a full charge
    soc = 30.0 + band_pct + 100.0 * (sum(w for _, w in PROFILE) / 60.0 + 8.0) / capacity_wh + 3.0

    async def scenario() -> tuple[bool, bool]:
        job = await jobs.create("part", "test")
        await node.send_event("telemetry_sample", sample(NIGHT_S, soc))
        await planner.replan("never full")
        unanchored = (await planner.start_gate(job)).allowed
        assert planner.status()["soc_margin_pct"] == pytest.approx(6.0) and planner.status()["last_full_s"] is None
        # the battery read full an hour ago (a resync), then the same reading: the margin is 0.35 point
        await node.send_event("telemetry_sample", sample(NIGHT_S - 3600.0, 100.0))
        await node.send_event("telemetry_sample", sample(NIGHT_S, soc))
        await planner.replan("full an hour ago")
        assert planner.status()["soc_margin_pct"] == pytest.approx(0.35, abs=0.01)
        return unanchored, (await planner.start_gate(job)).allowed

    unanchored, anchored = asyncio.run(scenario())
    assert not unanchored and anchored
    # the margin grows as the square root of the hours since full, up to soc_error_max_pct
    guard, hour = planner.guard, 3600.0
    assert guard.soc_margin_wh(NIGHT_S, NIGHT_S) == 0.0
    one_hour = guard.soc_margin_wh(NIGHT_S, NIGHT_S + hour)
    assert guard.soc_margin_wh(NIGHT_S, NIGHT_S + 4 * hour) == pytest.approx(2 * one_hour)
    largest = guard.soc_margin_wh(None, 0.0)
    assert guard.soc_margin_wh(0.0, 10_000 * hour) == largest == pytest.approx(0.06 * capacity_wh)


def test_after_a_restart_the_margin_starts_at_the_soc_sources_own_last_full_reading(world) -> None:
    """A freshly started planner has seen no full reading; a sample whose source kept its anchor (a BMV's "since
    full", the node's own count across a short restart) gives the margin its hours again, not the 6-point cap."""
    node, jobs, planner, streamer, plans = world

    async def scenario() -> None:
        await node.send_event("telemetry_sample", sample(NIGHT_S, 60.0))
        assert planner.status()["last_full_s"] is None
        assert planner.status()["soc_margin_pct"] == pytest.approx(6.0)
        anchored = TelemetrySample(t_s=NIGHT_S + 60, source="test", soc_pct=60.0, last_full_s=NIGHT_S - 4 * 3600.0)
        await node.send_event("telemetry_sample", anchored)
        assert planner.status()["last_full_s"] == NIGHT_S - 4 * 3600.0
        assert planner.status()["soc_margin_pct"] == pytest.approx(0.35 * (4 + 60 / 3600) ** 0.5, abs=0.01)
        # an older anchor never moves it back
        older = TelemetrySample(t_s=NIGHT_S + 120, source="test", soc_pct=60.0, last_full_s=NIGHT_S - 9 * 3600.0)
        await node.send_event("telemetry_sample", older)
        assert planner.status()["last_full_s"] == NIGHT_S - 4 * 3600.0

    asyncio.run(scenario())


def test_a_failing_forecast_worker_plans_on_the_battery_alone(world, tmp_path: Path) -> None:
    node, jobs, planner, streamer, plans = world

    def broken(request):
        raise RuntimeError("worker died")

    planner.forecaster = broken

    async def scenario() -> None:
        await jobs.create("part", "test")
        await node.send_event("telemetry_sample", sample(NIGHT_S, 90.0))
        await planner.replan("test")

    asyncio.run(scenario())
    assert plans[-1].forecast_stale and plans[-1].pv_forecast_wh == 0.0
    assert plans[-1].planned  # 90 % carries a 270 Wh print without sun


def test_the_loop_plans_at_once_and_starts_nothing_until_the_right_forecast_arrives(world) -> None:
    """Issue #19: a re-plan never waits for the pvlib worker (6-12 s under a Pi-sized CPU quota); a plan made
    while the forecast its inputs need is computed is provisional, and no print starts on it."""
    import threading

    from node.plan.forecast import PvForecast, compute_pv_forecast

    node, jobs, planner, streamer, plans = world
    release = threading.Event()

    def held_forecast(request):   # the real pvlib chain, in this process, answering when released
        release.wait(60)
        return PvForecast.model_validate(compute_pv_forecast(request.model_dump(mode="json")))

    planner.forecaster = held_forecast

    async def answer(trigger: str) -> None:
        """The worker answers; the re-plan it asks for runs as the loop runs it."""
        release.set()
        await planner._pending_forecast
        assert planner._wake.is_set() and planner._trigger == "new PV forecast"
        release.clear()
        await planner.replan(trigger, wait=False)

    async def scenario() -> None:
        job = await jobs.create("part", "test")
        await node.send_event("telemetry_sample", sample(NIGHT_S, 90.0))
        await planner.replan("start", wait=False)   # no forecast yet: planned at once, on none
        assert plans[-1].trigger == "start" and plans[-1].forecast_stale
        assert planner.plan_provisional and planner.status()["forecast_pending"]
        decision = await planner.start_gate(job)
        assert not decision.allowed and decision.waits_for == "the new PV forecast"
        await answer("forecast")
        assert not planner.plan_provisional and plans[-1].pv_forecast_wh > 0
        assert (await planner.start_gate(job)).allowed   # 90 % carries the 270 Wh print
        before = plans[-1].pv_forecast_wh
        # the node moves: planned at once on the old place's forecast, which nothing starts on
        planner.set_site(planner.site.model_copy(update={"latitude": 61.2, "longitude": -149.9,
                                                         "timezone": "America/Anchorage"}))
        await planner.replan("site moved", wait=False)
        assert planner.plan_provisional and plans[-1].pv_forecast_wh == pytest.approx(before)
        assert not (await planner.start_gate(job)).allowed
        await answer("forecast for the new place")
        assert not planner.plan_provisional and plans[-1].pv_forecast_wh != pytest.approx(before, rel=0.01)
        assert (await planner.start_gate(job)).allowed

    asyncio.run(scenario())


def test_a_cloud_forecast_from_the_hub_reaches_the_planner(world) -> None:
    from node.events import CloudForecast

    node, planner = world[0], world[2]
    now_s = node.clock.time()

    async def scenario() -> None:
        await node.send_event("cloud_forecast", CloudForecast(
            t_s=now_s, source="hub", points=[(now_s + 3600 * h, 80.0) for h in range(6)]))

    asyncio.run(scenario())
    forecast = planner.cloud_forecast
    assert forecast is not None and len(forecast.points) == 6
    assert forecast.site.latitude == planner.site.latitude and forecast.issued_at.timestamp() == now_s
    assert all(p.cloud_cover_pct == 80.0 for p in forecast.points)


def test_the_hubs_forecast_plans_on_a_quantile_of_its_own_measured_errors(world) -> None:
    """The hub's forecast is issued for calibration every hour it is in use and scored as the hours pass
    (node.plan.quantile); once a lead bin has samples, the plan's PV at that lead is the forecast times the bias
    factor times that bin's quantile of measured / forecast, not the normal model's."""
    from node.events import CloudForecast

    node, planner = world[0], world[2]
    planner.hub_calibration.min_samples = 4   # a few hours of samples instead of days

    async def scenario() -> None:
        await node.send_event("cloud_forecast", CloudForecast(
            t_s=NIGHT_S, source="hub", points=[(NIGHT_S + 3600 * h, 0.0) for h in range(80)]))
        await planner.replan("test")
        assert planner.status()["forecast_source"] == "hub"
        whole = planner._forecast_whole
        # ten hours of a hazy sky: the array gives 30 % of what the hub forecast (the battery half full)
        for k in range(10 * 12 + 1):
            t_s = NIGHT_S + k * 300.0
            forecast_w = whole.pv_w[round((t_s - whole.start_s) / whole.step_s)]
            await node.send_event("telemetry_sample", sample(t_s, 50.0, 0.3 * forecast_w))
        await node.clock.advance(10 * 3600.0)
        await planner.replan("test")

    asyncio.run(scenario())
    by_lead = planner.status()["hub_quantile_by_lead"]
    assert by_lead["0-2h"] is not None and 0.2 < by_lead["0-2h"] < 0.4       # the 30 % it measured
    assert by_lead["48-72h"] is None                                        # no sample yet: the normal model
    assert planner.hub_calibration.samples(0) >= 4
    plan, whole = planner.last_plan, planner._forecast_whole
    first = round((plan.t0_s - whole.start_s) / whole.step_s)
    for k in range(12):    # the first hour: lead 0-1 h, the 0-2 h bin
        expected = whole.pv_w[first + k] * planner.bias.factor
        assert plan.pv_w[k] == pytest.approx(expected * by_lead["0-2h"], rel=1e-3, abs=1e-6)


def test_the_forecast_learnt_from_the_nodes_own_pv_takes_over_from_clear_sky(tmp_path: Path) -> None:
    """forecast.source = "auto": clear sky until the node has history, then what its own PV taught it."""
    config = NodeConfig()
    node = Node(config.node, ManualClock(NIGHT_S))
    store = Store(tmp_path / "node.db").open()
    jobs = node.add(Jobs(node, store))
    planner = node.add(Planner(node, config.planner, site=config.site, array=config.array,
                               forecast=config.forecast.model_copy(update={"learned_min_days": 0.5}), jobs=jobs,
                               battery=DEFAULT_BATTERY, printer_profile=load_profile("ender3"),
                               energy_profile_for=lambda job: PROFILE, store=store))
    plans: list[PlanSummary] = []
    node.register_event_handler("plan_updated", plans.append)

    async def scenario() -> None:
        await planner.replan("test")
        assert plans[-1].forecast_source == "clear_sky" and planner.status()["forecast_source"] == "clear_sky"
        clear_sky_wh = plans[-1].pv_forecast_wh
        # a day of a hazy sky: the array gives 40 % of clear sky (the battery half full: nothing throttled)
        for k in range(288):
            t_s = NIGHT_S + k * 300.0
            clear_w = planner._clear_sky_at(t_s) or 0.0
            await node.send_event("telemetry_sample", TelemetrySample(t_s=t_s, source="test", soc_pct=50.0,
                                                                      pv_w=0.4 * clear_w))
        assert planner.learned.history_days > 0.5
        await planner.replan("test")
        assert plans[-1].forecast_source == "learned" and planner.status()["forecast_source"] == "learned"
        assert 0.1 * clear_sky_wh < plans[-1].pv_forecast_wh < 0.6 * clear_sky_wh
        await planner.stop()   # a clean stop saves what was learnt (and each local midnight did already)

    asyncio.run(scenario())
    learned_days = planner.learned.history_days
    expected = planner.learned.expected_w(np.full(24, 300.0), np.full(24, 6), np.arange(24), np.full(24, 30.0))
    # the forecast was issued every hour and scored as the hours passed (node.plan.quantile)
    calibration = planner.calibration.to_state()
    assert planner.calibration.samples(0) > 0
    store.close()

    # the node restarts: a new store object on the same SQLite file, a new Planner
    store = Store(tmp_path / "node.db").open()
    node = Node(config.node, ManualClock(NIGHT_S))   # at once: nothing has faded (persistence fades with time off)
    again = node.add(Planner(node, config.planner.model_copy(update={"enabled": False}), site=config.site,
                             array=config.array, forecast=config.forecast.model_copy(update={"learned_min_days": 0.5}),
                             jobs=node.add(Jobs(node, store)), battery=DEFAULT_BATTERY,
                             printer_profile=load_profile("ender3"), energy_profile_for=lambda job: PROFILE,
                             store=store))
    assert again.learned.history_days == 0.0
    asyncio.run(again.start())
    assert again.learned.history_days == pytest.approx(learned_days)
    assert again.forecast_source(NIGHT_S) == "learned"
    assert again.calibration.to_state() == calibration
    assert np.allclose(again.learned.expected_w(np.full(24, 300.0), np.full(24, 6), np.arange(24), np.full(24, 30.0)),
                       expected)
    rows = read_from_outside(tmp_path / "node.db", "SELECT day FROM learned_forecast")
    assert 1 <= len(rows) <= Planner.LEARNED_KEEP_DAYS
    store.close()
