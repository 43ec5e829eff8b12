"""Time without a clock chip: solar noon against pvlib, PV plausibility, sources, jumps."""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pandas as pd
import pvlib
import pytest

from node.clock import ManualClock
from node.events import TelemetrySample
from node.field.config import TimeSection
from node.field.timesync import TimeSync, estimate_clock_offset_s, gpsd_time_s, rtc_set_clock_at_boot, solar_noon_utc_s
from node.node import Node, NodeSection

BERLIN = (52.52, 13.40)
QUITO = (-0.18, -78.47)


@pytest.mark.parametrize("day", ["2026-01-03", "2026-02-11", "2026-06-21", "2026-11-03", "2026-12-21"])
@pytest.mark.parametrize("site", [BERLIN, QUITO, (35.0, 139.7), (-33.9, 151.2)])
def test_solar_noon_agrees_with_pvlib_spa_transit(day: str, site: tuple[float, float]) -> None:
    lat, lon = site
    times = pd.DatetimeIndex([pd.Timestamp(day, tz="UTC")])
    transit = pvlib.solarposition.sun_rise_set_transit_spa(times, lat, lon)["transit"].iloc[0].timestamp()
    ours = solar_noon_utc_s(transit, lon)
    assert abs(ours - transit) < 60, f"{ours - transit:.0f} s off pvlib's SPA transit"


def clear_sky_day(day: str, site: tuple[float, float], clock_ahead_s: float = 0.0,
                  step_min: int = 5) -> list[tuple[float, float]]:
    """(t_s, pv_w) of a clear day on a 1 kW south-facing array, stamped by a clock ``clock_ahead_s`` off."""
    lat, lon = site
    times = pd.date_range(f"{day} 00:00", f"{day} 23:59", freq=f"{step_min}min", tz="UTC")
    location = pvlib.location.Location(lat, lon)
    sky = location.get_clearsky(times)
    sun = location.get_solarposition(times)
    poa = pvlib.irradiance.get_total_irradiance(30, 180 if lat >= 0 else 0, sun["apparent_zenith"],
                                                sun["azimuth"], sky["dni"], sky["ghi"], sky["dhi"])["poa_global"]
    pv_w = poa.fillna(0).clip(lower=0).to_numpy()  # 1 kWp at STC: 1000 W/m² gives 1000 W
    return [(t.timestamp() + clock_ahead_s, float(p)) for t, p in zip(times, pv_w, strict=True)]


@pytest.mark.parametrize("ahead_s", [0.0, 2 * 3600.0, -5 * 3600.0, 40 * 60.0])
def test_pv_curve_recovers_a_clock_offset(ahead_s: float) -> None:
    samples = clear_sky_day("2026-05-10", BERLIN, ahead_s)
    estimate = estimate_clock_offset_s(samples, BERLIN[1])
    assert estimate is not None and abs(estimate - ahead_s) < 5 * 60


def test_partial_day_gives_no_estimate() -> None:
    samples = [s for s in clear_sky_day("2026-05-10", BERLIN) if s[0] % 86400 < 11 * 3600]  # until 11:00 UTC
    assert estimate_clock_offset_s(samples, BERLIN[1]) is None
    assert estimate_clock_offset_s([], BERLIN[1]) is None


def test_rtc_source_reads_sysfs(tmp_path: Path) -> None:
    (tmp_path / "hctosys").write_text("1\n")
    (tmp_path / "since_epoch").write_text(f"{int(time.time())}\n")
    assert rtc_set_clock_at_boot(tmp_path)
    (tmp_path / "since_epoch").write_text(f"{int(time.time()) - 3600}\n")
    assert not rtc_set_clock_at_boot(tmp_path)
    (tmp_path / "hctosys").write_text("0\n")
    assert not rtc_set_clock_at_boot(tmp_path / "missing")


async def _fake_gpsd(reports: list[dict]) -> tuple[asyncio.base_events.Server, int]:
    """A TCP server speaking gpsd's JSON: VERSION on connect, then the reports after ?WATCH."""
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(json.dumps({"class": "VERSION", "release": "3.25"}).encode() + b"\n")
        line = await reader.readline()
        assert line.startswith(b"?WATCH=")
        for report in reports:
            writer.write(json.dumps(report).encode() + b"\n")
        await writer.drain()
        await asyncio.sleep(0.5)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_gpsd_time_from_a_tpv_report() -> None:
    async def scenario() -> None:
        now = time.time()
        iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + ".000Z"
        server, port = await _fake_gpsd([{"class": "TPV", "mode": 1}, {"class": "TPV", "mode": 3, "time": iso}])
        async with server:
            got = await gpsd_time_s(f"127.0.0.1:{port}", timeout_s=5)
        assert got is not None and abs(got - int(now)) < 1.0
        assert await gpsd_time_s("127.0.0.1:1", timeout_s=1) is None  # nobody listening
    asyncio.run(scenario())


def _component(**time_config) -> tuple[TimeSync, Node, list]:
    clock = ManualClock(start_s=time.time())
    node = Node(NodeSection(), clock)
    sync = node.add(TimeSync(node, TimeSection(**{"ntp": False, "rtc": False, **time_config}), simulated_clock=False))
    events: list = []
    node.register_event_handler("clock_sync", events.append)
    return sync, node, events


def test_hub_time_vouches_for_the_clock_and_the_planner_seam() -> None:
    async def scenario() -> None:
        sync, node, events = _component()
        await node.start()
        await sync.check()
        assert not sync.clock_synchronized and "no time source" in sync.reason
        sync.record_hub_time(node.clock.time() + 1.5)
        await sync.check()
        assert sync.clock_synchronized and sync.state.source == "hub"
        sync.record_hub_time(node.clock.time() - 86400 * 3)  # our clock is three days ahead
        await sync.check()
        assert not sync.clock_synchronized and "off the hub" in sync.reason
        assert [e.synchronized for e in events] == [False, True, False]
        assert sync.status()["clock_synchronized"] is False
        await node.stop()
    asyncio.run(scenario())


def test_hub_time_expires() -> None:
    async def scenario() -> None:
        sync, node, _ = _component(hub_max_age_s=1e-6)
        sync.record_hub_time(node.clock.time())
        await asyncio.sleep(0.01)
        assert (await sync.evaluate_sources()).synchronized is False
    asyncio.run(scenario())


def test_simulated_clock_needs_no_source_and_requirement_can_be_forced() -> None:
    node = Node(NodeSection(), ManualClock())
    assert TimeSync(node, TimeSection(), simulated_clock=True).required is False
    forced = TimeSync(node, TimeSection(require_sync=True, ntp=False, rtc=False), simulated_clock=True)
    assert forced.required is True
    assert asyncio.run(forced.evaluate_sources()).source == "simulation"


def test_pv_curve_flags_a_clock_hours_off_even_with_a_hub() -> None:
    async def scenario() -> None:
        sync, node, events = _component(longitude_deg=BERLIN[1])
        await node.start()
        sync.record_hub_time(node.clock.time())
        for t_s, pv_w in clear_sky_day("2026-05-10", BERLIN, clock_ahead_s=3 * 3600):
            await node.send_event("telemetry_sample", TelemetrySample(t_s=t_s, source="sim", pv_w=pv_w))
        await sync.check()
        assert not sync.clock_synchronized and "solar noon" in sync.reason
        assert abs(sync.solar_offset_s - 3 * 3600) < 300
        await node.stop()
    asyncio.run(scenario())


def test_a_wall_clock_step_is_detected_and_announced() -> None:
    async def scenario() -> None:
        sync, node, events = _component(jump_threshold_s=2.0)
        await node.start()
        sync._wall_minus_mono -= 3600  # as if the wall clock had just been stepped forward an hour
        await sync.check()
        assert sync.last_jump_s is not None and abs(sync.last_jump_s - 3600) < 1
        assert events[-1].jump_s == sync.last_jump_s
        assert sync.detect_jump() is None  # once
        await node.stop()
    asyncio.run(scenario())
