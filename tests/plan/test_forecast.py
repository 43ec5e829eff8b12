"""The PV forecast: cloud-cover schema and staleness, the real pvlib chain in a worker, bias, quantile,
and that the daemon side never imports pvlib, pandas or scipy."""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from node.plan.config import ForecastSection
from node.plan.forecast import (
    BiasTracker,
    CloudCoverForecast,
    PvForecastRequest,
    forecast_pv,
    load_cloud_forecast,
    pessimistic_pv_w,
)
from node.power.config import ArraySection, SiteSection

TUCSON = SiteSection()
NOON_JUNE_S = datetime(2025, 6, 21, 19, 0, tzinfo=UTC).timestamp()  # ~solar noon in Tucson


def cloud_doc(issued: datetime, points: list[tuple[datetime, float]], lat: float = 32.2, lon: float = -110.95) -> str:
    return json.dumps({"issued_at": issued.isoformat(), "site": {"latitude": lat, "longitude": lon},
                       "points": [{"t_utc": t.isoformat(), "cloud_cover_pct": c} for t, c in points]})


# --- the cloud-cover forecast schema --------------------------------------------------------------
def test_cloud_forecast_interpolates_and_falls_back_outside_its_span() -> None:
    t0 = datetime(2025, 6, 21, 12, tzinfo=UTC)
    fc = load_cloud_forecast(cloud_doc(t0, [(t0, 0.0), (t0 + timedelta(hours=2), 80.0)]))
    section = ForecastSection(stale_cloud_cover_pct=70.0)
    now = t0.timestamp()
    values = fc.cloud_cover_at([now, now + 3600, now + 7200, now + 10 * 3600], now, section, 32.2, -110.95)
    assert values == pytest.approx([0.0, 40.0, 80.0, 70.0])


def test_stale_cloud_forecast_is_replaced_by_the_pessimistic_climatology() -> None:
    t0 = datetime(2025, 6, 21, 0, tzinfo=UTC)
    fc = load_cloud_forecast(cloud_doc(t0, [(t0, 0.0), (t0 + timedelta(hours=48), 0.0)]))
    section = ForecastSection(stale_after_h=12.0, stale_cloud_cover_pct=65.0)
    later = t0.timestamp() + 13 * 3600
    assert fc.is_stale(later, 12.0)
    assert fc.cloud_cover_at([later], later, section, 32.2, -110.95) == [65.0]


def test_cloud_forecast_for_another_place_is_not_used() -> None:
    """The site moved (an RV) 300 km: the old forecast no longer applies."""
    t0 = datetime(2025, 6, 21, 0, tzinfo=UTC)
    fc = load_cloud_forecast(cloud_doc(t0, [(t0, 0.0), (t0 + timedelta(hours=48), 0.0)]))
    now = t0.timestamp() + 3600
    assert fc.distance_km(35.0, -110.95) > 250
    assert fc.cloud_cover_at([now], now, ForecastSection(), 35.0, -110.95) == [70.0]


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["points"][0].update(cloud_cover_pct=130), "cloud_cover_pct"),
    (lambda d: d.pop("issued_at"), "issued_at"),
    (lambda d: d["points"].reverse(), "points"),
    (lambda d: d["site"].update(latitude=123), "latitude"),
])
def test_bad_cloud_forecast_names_the_field(mutate, field) -> None:
    t0 = datetime(2025, 6, 21, 0, tzinfo=UTC)
    doc = json.loads(cloud_doc(t0, [(t0, 10.0), (t0 + timedelta(hours=1), 20.0)]))
    mutate(doc)
    with pytest.raises(ValidationError) as info:
        CloudCoverForecast.model_validate_json(json.dumps(doc))
    assert field in str(info.value)


# --- the real pvlib chain, in a spawned worker -----------------------------------------------------
@pytest.fixture(scope="module")
def forecasts() -> dict[str, object]:
    def run(site: SiteSection, cloud: float | None) -> object:
        n = 288
        return forecast_pv(PvForecastRequest(site=site, array=ArraySection(), start_s=NOON_JUNE_S - 12 * 3600,
                                             step_s=300.0, n_steps=n,
                                             cloud_cover_pct=None if cloud is None else [cloud] * n))

    return {"clear": run(TUCSON, None), "cloud0": run(TUCSON, 0.0), "cloud90": run(TUCSON, 90.0),
            "north": run(SiteSection(latitude=61.2, longitude=-149.9, altitude_m=40.0, timezone="America/Anchorage"),
                         None)}


def test_clear_sky_pv_is_physical(forecasts) -> None:
    fc = forecasts["clear"]
    noon = fc.pv_w[144]
    assert 250.0 < noon < 400.0   # 400 Wp, 14 % losses, hot cells in June
    assert fc.pv_w[0] == 0.0      # midnight
    assert max(fc.ghi_w_m2) > 900.0
    daily_wh = sum(fc.pv_w) * 300 / 3600
    assert 2000.0 < daily_wh < 3200.0


def test_cloud_cover_lowers_pv_by_kasten_czeplak(forecasts) -> None:
    clear, c0, c90 = forecasts["clear"], forecasts["cloud0"], forecasts["cloud90"]
    # 0 % cloud reproduces clear-sky GHI; 90 % scales it by 1 - 0.75 * 0.9**3.4
    assert c0.ghi_w_m2[144] == pytest.approx(clear.ghi_w_m2[144], rel=1e-6)
    assert c90.ghi_w_m2[144] == pytest.approx(clear.ghi_w_m2[144] * (1 - 0.75 * 0.9 ** 3.4), rel=1e-6)
    assert sum(c90.pv_w) < 0.6 * sum(c0.pv_w)


def test_a_moved_site_gets_its_own_sun(forecasts) -> None:
    # Anchorage at the June solstice: the sun is up at local midnight-ish hours Tucson is dark
    north, tucson = forecasts["north"], forecasts["clear"]
    assert sum(1 for w in north.pv_w if w > 1) > sum(1 for w in tucson.pv_w if w > 1)


# --- bias and quantile -----------------------------------------------------------------------------
def test_bias_tracker_learns_the_measured_ratio_and_is_clamped() -> None:
    bias = BiasTracker(halflife_h=24)
    assert bias.factor == 1.0
    for k in range(200):
        bias.add(k * 300.0, measured_w=160.0, forecast_w=200.0, dt_s=300.0)
    assert bias.factor == pytest.approx(0.8, rel=1e-6)
    wild = BiasTracker()
    for k in range(200):
        wild.add(k * 300.0, measured_w=1000.0, forecast_w=100.0, dt_s=300.0)
    assert wild.factor == 1.5


def test_pessimistic_quantile_shrinks_with_lead_time() -> None:
    section = ForecastSection(quantile=0.2, error_sigma_0=0.2, error_sigma_per_h=0.006, error_sigma_max=0.6)
    values = pessimistic_pv_w([100.0] * 864, 300.0, section)
    assert values[0] == pytest.approx(100 * (1 - 0.8416 * 0.2005), rel=1e-3)
    assert values[0] > values[300] > values[-1] >= 0.0
    assert pessimistic_pv_w([100.0], 300.0, ForecastSection(quantile=0.5))[0] == pytest.approx(100.0)


# --- the daemon never imports pvlib, pandas or scipy -----------------------------------------------
DAEMON_SIDE = r"""
import asyncio, sys, tempfile
import node.daemon  # the daemon's own import graph too
from pathlib import Path
from node.clock import ManualClock
from node.config import load_config
from node.jobs import Jobs
from node.node import Node
from node.plan.planner import Planner
from node.study.year import DEFAULT_BATTERY
from node.printer.profile import load_profile
from node.store import Store
from node.events import TelemetrySample

async def main():
    config = load_config(None)
    node = Node(config.node, ManualClock(1750500000.0))
    store = Store(Path(tempfile.mkdtemp()) / "node.db").open()
    jobs = node.add(Jobs(node, store))
    planner = node.add(Planner(node, config.planner, site=config.site, array=config.array,
                               forecast=config.forecast, jobs=jobs, battery=DEFAULT_BATTERY,
                               printer_profile=load_profile("ender3"),
                               energy_profile_for=lambda job: [[0.0, 120.0], [60.0, 120.0]]))
    await jobs.create("part", "test")
    await node.send_event("telemetry_sample", TelemetrySample(t_s=1750500000.0, source="sim", soc_pct=80.0, pv_w=0.0))
    plan = await planner.replan("test")
    store.close()
    assert plan.planned, "the plan is empty"
    bad = sorted(m for m in ("pvlib", "pandas", "scipy") if m in sys.modules)
    print("FORBIDDEN:" + ",".join(bad))

asyncio.run(main())
"""


def test_daemon_side_planning_never_imports_pvlib_pandas_or_scipy() -> None:
    """A full re-plan (forecast from the real worker) leaves the daemon process free of them."""
    out = subprocess.run([sys.executable, "-c", DAEMON_SIDE], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert "FORBIDDEN:\n" in out.stdout, out.stdout
