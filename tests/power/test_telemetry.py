"""The Telemetry component end to end: real ptys, the real simulated controller process, real SQLite."""
from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from node.clock import Clock, ManualClock
from node.config import load_config
from node.daemon import make_telemetry
from node.events import TelemetrySample, Temperatures
from node.node import Node
from node.power.battery import SocEstimator
from node.power.config import BatterySection
from node.power.sources import Reading
from node.power.sources.vedirect import encode_block
from node.power.telemetry import ReadingRejected, to_sample
from node.printer.profile import load_profile
from node.store import Store
from node.store.telemetry import TelemetryRecorder, history, write_batch

REPO = Path(__file__).resolve().parents[2]


def mppt_block(battery_mv: int, current_ma: int = 2500) -> bytes:
    return encode_block([("PID", "0xA053"), ("V", str(battery_mv)), ("I", str(current_ma)), ("VPV", "35000"),
                         ("PPV", "40"), ("CS", "3"), ("MPPT", "2"), ("ERR", "0"), ("LOAD", "ON"), ("IL", "400")])


async def wait_for(predicate, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def test_daemon_side_never_imports_pvlib_pandas_scipy(tmp_path: Path) -> None:
    """Run the component with the simulated controller in a fresh interpreter and look at sys.modules."""
    script = textwrap.dedent(f"""
        import asyncio, json, sys
        from node.clock import Clock
        from node.config import load_config
        from node.node import Node
        from node.daemon import make_telemetry
        from node.store import Store
        from node.store.telemetry import history

        async def main():
            config = load_config(None, ['node.state_dir="{tmp_path}"', "clock.time_scale=60",
                                        "store.batch_commit_s=0.2"], use_overrides=False)
            store = Store(config.state_dir / "db.sqlite3").open()
            node = Node(config.node, Clock(60))
            telemetry = node.add(make_telemetry(node, config, store))
            samples = []
            node.register_event_handler("telemetry_sample", samples.append)
            await node.start()
            for _ in range(600):
                if len(samples) >= 3:
                    break
                await asyncio.sleep(0.05)
            await node.stop()
            rows = store.run_sync(lambda c: history(c, "telemetry_raw", 0))
            store.close()
            print(json.dumps({{"samples": len(samples), "rows": len(rows),
                              "sources": sorted({{s.source for s in samples}}),
                              "soc": samples[-1].soc_pct if samples else None,
                              "heavy": [m for m in ("pvlib", "pandas", "scipy") if m in sys.modules]}}))

        asyncio.run(main())
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["samples"] >= 3
    assert report["rows"] >= 3
    assert report["sources"] == ["simulated"]
    assert report["soc"] is not None
    assert report["heavy"] == []


def test_cli_simulated_json_samples(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "node", "telemetry", "--source", "simulated", "--json", "--samples", "5",
         "--state-dir", str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 5
    samples = [TelemetrySample.model_validate_json(line) for line in lines]
    assert all(s.source == "simulated" and not s.stale for s in samples)
    assert all(10.0 < s.battery_v < 15.0 and s.soc_pct is not None for s in samples)
    assert [s.t_s for s in samples] == sorted(s.t_s for s in samples)


def test_cli_names_a_missing_port(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "node", "telemetry", "--source", "vedirect", "--samples", "1",
                             "--state-dir", str(tmp_path)], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 1
    assert "telemetry.port" in result.stderr


def test_cli_ina226_with_the_simulated_chip(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "node", "telemetry", "--source", "ina226", "--bus", "7", "--address", "0x45",
         "--json", "--samples", "2", "--state-dir", str(tmp_path), "--set", "telemetry.poll_interval_s=0.05",
         "--set", 'telemetry.ina.backend="simulated"'], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr
    sample = TelemetrySample.model_validate_json(result.stdout.splitlines()[0])
    assert sample.source == "ina226" and 12.9 < sample.battery_v < 13.3 and abs(sample.battery_a) <= 4.01


@pytest.fixture
def vedirect_node(tmp_path: Path, pty_pair):
    config = load_config(None, [
        f'node.state_dir="{tmp_path}"', 'telemetry.source="vedirect"', f'telemetry.port="{pty_pair.slave_name}"',
        "telemetry.stale_after_s=0.3", "telemetry.read_timeout_s=0.1", "telemetry.retry_initial_s=0.05",
        "telemetry.retry_max_s=0.2", "store.batch_commit_s=0.1"], use_overrides=False)
    store = Store(tmp_path / "db.sqlite3").open()
    node = Node(config.node, ManualClock(1_750_000_000.0))
    telemetry = node.add(make_telemetry(node, config, store))
    yield node, telemetry, store, pty_pair
    store.close()


def test_stale_rejected_retry_and_printer_estimate(vedirect_node, caplog) -> None:
    asyncio.run(_stale_rejected_retry_and_printer_estimate(vedirect_node, caplog))


async def _stale_rejected_retry_and_printer_estimate(vedirect_node, caplog) -> None:
    node, telemetry, store, pty = vedirect_node
    samples: list[TelemetrySample] = []
    levels = []
    node.register_event_handler("telemetry_sample", samples.append)
    node.register_event_handler("battery_level_changed", levels.append)
    caplog.set_level(logging.WARNING, logger="node.power.telemetry")
    await node.start()
    try:
        await wait_for(lambda: telemetry.connected)  # pyserial flushes its input when it opens the port
        await asyncio.sleep(0.1)
        os.write(pty.master_fd, mppt_block(13300))
        await wait_for(lambda: len(samples) >= 1)
        first = samples[0]
        assert (first.battery_v, first.battery_a, first.pv_w, first.charge_state) == (13.3, 2.5, 40.0, "bulk")
        assert first.load_w == pytest.approx(0.4 * 13.3)
        assert first.soc_pct is not None and not first.stale

        await node.send_event("temperatures", Temperatures(t_s=0, hotend_c=200, hotend_target_c=200, bed_c=60,
                                                           bed_target_c=60, hotend_pwm=0.4, bed_pwm=0.5))
        os.write(pty.master_fd, mppt_block(48000) + mppt_block(11000, -2_000_000) + mppt_block(13310))
        await wait_for(lambda: len([s for s in samples if not s.stale]) >= 2)
        assert telemetry.counts["rejected"] == 2
        assert "battery_v 48.00 V is impossible" in caplog.text
        profile = load_profile("ender3")  # the default profile
        assert samples[-1].printer_w == pytest.approx(profile.electrical_w(0.4, 0.5), abs=0.1)

        # the device fell silent: the last values go on, flagged stale
        await wait_for(lambda: samples[-1].stale and samples[-1].battery_v == 13.31)

        os.close(pty.master_fd)  # unplugged: the port fails, the source retries with backoff
        await wait_for(lambda: telemetry.counts["retries"] >= 2)
        assert telemetry.connected is False
        assert telemetry.last_error
        assert telemetry.status()["counts"]["samples"] == 2
    finally:
        await node.stop()
    rows = store.run_sync(lambda c: history(c, "telemetry_raw", 0))
    assert len(rows) >= 3 and any(r["stale"] for r in rows)
    saved = store.run_sync(lambda c: store.get_meta(c, "telemetry.soc_estimator"))
    assert json.loads(saved)["soc"] is not None


def test_to_sample_rejects_impossible_values_and_prefers_measured_soc() -> None:
    battery = BatterySection()
    estimator = SocEstimator(battery)
    for bad, reason in ((Reading(source="x", battery_v=float("nan")), "nan"),
                        (Reading(source="x", battery_v=13.0, battery_a=2000.0), "exceeds 10 C"),
                        (Reading(source="x", pv_w=-5.0), "pv_w -5.0 is outside"),
                        (Reading(source="x", soc_pct=120.0), "soc_pct")):
        with pytest.raises(ReadingRejected, match=reason):
            to_sample(bad, 0.0, estimator, battery)
    sample = to_sample(Reading(source="bmv", battery_v=13.1, battery_a=-3.0, soc_pct=87.6), 1.0, estimator, battery)
    assert sample.soc_pct == 87.6
    estimated = to_sample(Reading(source="mppt", battery_v=13.1, battery_a=-3.0), 2.0, estimator, battery)
    assert estimated.soc_pct == pytest.approx(estimator.soc * 100, abs=0.01)


def test_store_downsampling_and_retention(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3").open()
    recorder = TelemetryRecorder()
    start_s = 1_750_000_000.0 - 1_750_000_000.0 % 900
    step_s, hours = 10.0, 26
    try:
        for i in range(int(hours * 3600 / step_s)):
            t_s = start_s + i * step_s
            pv_w = 100.0 + 50.0 * math.sin(i / 30.0)
            recorder.add(TelemetrySample(t_s=t_s, source="sim", pv_w=pv_w, battery_v=13.0 + (i % 6) * 0.01,
                                         battery_a=2.0 if i % 2 else -1.0, soc_pct=50.0))
            if i % 50 == 49:
                store.run_sync(lambda c: write_batch(c, recorder.take_batch()))
        store.run_sync(lambda c: write_batch(c, recorder.take_batch()))
        raw = store.run_sync(lambda c: history(c, "telemetry_raw", 0))
        minutes = store.run_sync(lambda c: history(c, "telemetry_1m", 0))
        quarters = store.run_sync(lambda c: history(c, "telemetry_15m", 0))
    finally:
        store.close()
    end_s = start_s + hours * 3600
    assert min(r["t_s"] for r in raw) >= end_s - 25 * 3600  # pruned to ~24 h (hourly pruning)
    assert len(minutes) == hours * 60 and len(quarters) == hours * 4
    first = minutes[0]
    expected_pv = [100.0 + 50.0 * math.sin(i / 30.0) for i in range(6)]
    assert first["samples"] == 6
    assert first["pv_w"] == pytest.approx(sum(expected_pv) / 6)
    assert (first["battery_v_min"], first["battery_v_max"]) == (pytest.approx(13.0), pytest.approx(13.05))
    assert first["pv_wh"] == pytest.approx(sum(expected_pv[1:]) * step_s / 3600)  # first sample has no interval
    total_pv_wh = sum(q["pv_wh"] for q in quarters)
    assert total_pv_wh == pytest.approx(sum(m["pv_wh"] for m in minutes), rel=1e-9)
    assert quarters[1]["samples"] == 90


def test_simulated_controller_follows_the_sun_and_the_printer(tmp_path: Path) -> None:
    """The child process on a 600x clock: daylight in Tucson charges; the printer's draw discharges."""
    from node.power.sources.simulated import SimulatedSource

    config = load_config(None, [f'node.state_dir="{tmp_path}"'], use_overrides=False)
    noon_s = 1_750_532_400.0  # 2025-06-21 19:00 UTC = 12:00 in Arizona
    source = SimulatedSource(Clock(600, noon_s).spec(), config.site, config.array, config.battery,
                             config.telemetry.simulated.model_copy(update={"initial_soc": 0.5}))
    source.open()
    try:
        day = source.read(5.0)
        source.set_printer_w(400.0)
        readings = [source.read(5.0) for _ in range(3)]
    finally:
        source.close()
    assert day.pv_w > 250 and day.battery_a > 15 and day.charge_state == "bulk"
    assert readings[-1].load_w > 380 and readings[-1].battery_a < 0
    midnight = SimulatedSource(Clock(1, noon_s + 12 * 3600).spec(), config.site, config.array, config.battery,
                               config.telemetry.simulated)
    midnight.open()
    try:
        night = midnight.read(5.0)
    finally:
        midnight.close()
    assert night.pv_w == 0 and night.charge_state == "off" and night.battery_a < 0


def test_printer_shunt_measures_printer_w(tmp_path: Path, pty_pair) -> None:
    config = load_config(None, [
        f'node.state_dir="{tmp_path}"', 'telemetry.source="vedirect"', f'telemetry.port="{pty_pair.slave_name}"',
        "telemetry.read_timeout_s=0.1",
        'telemetry.printer_shunt={chip="ina219", shunt_ohm=0.01, max_current_a=20.0, backend="simulated"}'],
        use_overrides=False)
    node = Node(config.node, ManualClock(1_750_000_000.0))
    telemetry = node.add(make_telemetry(node, config, None))
    samples: list[TelemetrySample] = []
    node.register_event_handler("telemetry_sample", samples.append)

    async def scenario() -> None:
        await node.start()
        try:
            await wait_for(lambda: telemetry.connected)
            await asyncio.sleep(0.1)
            os.write(pty_pair.master_fd, mppt_block(13300))
            await wait_for(lambda: len(samples) >= 1)
        finally:
            await node.stop()

    asyncio.run(scenario())
    # the simulated chip measures a feed cycling within +-4 A at ~13.1 V (ina.demo_battery_state)
    assert samples[0].printer_w is not None and 0.0 <= samples[0].printer_w <= 4.0 * 13.2


def test_cli_samples_ends_when_every_reading_is_rejected(tmp_path: Path, pty_pair) -> None:
    """Issue #14: ``--samples N`` never ended when the controller sent only implausible values."""
    from node.power.sources.vedirect import encode_block
    from tests.power.test_vedirect import mppt_fields

    block = encode_block(mppt_fields(battery_mv=99_000, yield_total=1234))  # 99 V on a 12 V bank
    stop = threading.Event()

    def controller() -> None:  # a block a second, as a Victron sends them (faster here)
        while not stop.wait(0.1):
            os.write(pty_pair.master_fd, block)

    threading.Thread(target=controller, daemon=True).start()
    try:
        result = subprocess.run([sys.executable, "-m", "node", "telemetry", "--source", "vedirect", "--port",
                                 pty_pair.slave_name, "--samples", "3", "--state-dir", str(tmp_path)],
                                capture_output=True, text=True, timeout=60, cwd=REPO)
    finally:
        stop.set()
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("reading rejected: battery_v 99.00 V") == 3
    assert "all 3 readings were rejected" in result.stderr


def test_a_sample_says_where_its_soc_was_last_anchored_at_full() -> None:
    """A BMV's "seconds since full charge" (H9) and the node's own unbroken count both tell the planner where
    the SoC's drift started; a reading that says neither leaves it unknown."""
    battery = BatterySection()
    bmv = Reading(source="vedirect", battery_v=13.2, battery_a=-3.2, soc_pct=87.6,
                  extra={"seconds_since_full_charge": 86400})
    assert to_sample(bmv, 1_000_000.0, SocEstimator(battery), battery).last_full_s == 1_000_000.0 - 86400
    no_history = Reading(source="vedirect", battery_v=13.2, battery_a=-3.2, soc_pct=87.6)
    assert to_sample(no_history, 1_000_000.0, SocEstimator(battery), battery).last_full_s is None
    # the node's own count: anchored once it has read the bank full, and from that moment
    estimator = SocEstimator(battery, initial_soc=0.9)
    charging = Reading(source="simulated", battery_v=14.2, battery_a=1.0, charge_state="absorption")
    t_s, anchored = 0.0, []
    while estimator.syncs == 0:
        t_s += 1.0
        anchored.append(to_sample(charging, t_s, estimator, battery).last_full_s)
    assert set(anchored[:-1]) == {None} and anchored[-1] == t_s == estimator.last_sync_t_s
