import asyncio
import time

import pytest

from node.clock import Clock, ClockSpec, ManualClock


def test_scaled_clock_runs_faster_than_the_wall() -> None:
    clock = Clock(time_scale=3600, sim_start_s=0.0, wall_epoch_s=time.time() - 2.0)
    assert 7200 <= clock.time() < 7200 + 3600  # two real seconds = two sim hours


def test_spec_reproduces_the_same_time_in_another_process() -> None:
    clock = Clock(time_scale=60, sim_start_s=1_000_000.0)
    twin = Clock.from_spec(ClockSpec.model_validate_json(clock.spec().model_dump_json()))
    assert abs(twin.time() - clock.time()) < 1.0


def test_scale_zero_is_instant_and_advances_by_what_is_asked() -> None:
    clock = Clock(time_scale=0, sim_start_s=500.0)
    start = time.monotonic()
    clock.sleep_blocking(3600)
    asyncio.run(clock.sleep(60))
    assert time.monotonic() - start < 1.0
    assert clock.time() == pytest.approx(500.0 + 3660.0)


def test_negative_scale_refused() -> None:
    with pytest.raises(ValueError):
        Clock(time_scale=-1)


def test_manual_clock_drives_a_scaled_simulation_deterministically() -> None:
    """Three periodic tasks with different periods interleave the same way every run."""

    async def simulation() -> list[tuple[float, str]]:
        clock = ManualClock(start_s=0.0)
        log: list[tuple[float, str]] = []

        async def ticker(name: str, period_s: float) -> None:
            while True:
                await clock.sleep(period_s)
                log.append((clock.time(), name))

        tasks = [asyncio.create_task(ticker(n, p)) for n, p in (("printer", 2.0), ("sun", 5.0), ("plan", 300.0))]
        await asyncio.sleep(0)
        await clock.advance(600)
        for task in tasks:
            task.cancel()
        return log

    first, second = asyncio.run(simulation()), asyncio.run(simulation())
    assert first == second
    assert sum(1 for _, n in first if n == "printer") == 300
    assert sum(1 for _, n in first if n == "sun") == 120
    assert [t for t, n in first if n == "plan"] == [300.0, 600.0]
    assert [t for t, _ in first] == sorted(t for t, _ in first)


def test_clock_start_local_hh_mm_is_today_at_the_site() -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from node.clock import clock_start_s
    from node.config import load_config

    config = load_config(sets=["clock.start='05:00'", "site.timezone='America/Phoenix'"], use_overrides=False)
    now_s = datetime(2026, 6, 21, 20, 0, tzinfo=ZoneInfo("UTC")).timestamp()  # 13:00 in Phoenix
    start = datetime.fromtimestamp(clock_start_s(config.clock, config.site.timezone, now_s), tz=ZoneInfo("America/Phoenix"))
    assert (start.date().isoformat(), start.hour, start.minute) == ("2026-06-21", 5, 0)
    with pytest.raises(Exception, match="clock.start"):
        load_config(sets=["clock.start='25:00'"], use_overrides=False)
