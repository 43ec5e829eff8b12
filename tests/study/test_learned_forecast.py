"""The node's offline forecast (clear-sky-index persistence + its own climatology) against clear sky."""
from __future__ import annotations

import numpy as np
import pytest

from node.plan.learned import LearnedForecast, day_ahead_errors

TMY_FILES = ["723170TYA.CSV", "703165TY.csv", "12839.tm2"]


def _local_calendar(weather) -> tuple[np.ndarray, np.ndarray, int]:
    """Months and hours of each file hour, and how many hours to skip so the series starts at local midnight."""
    t = weather.start_s + (np.arange(weather.hours) + 0.5) * 3600.0 + weather.site["utc_offset_h"] * 3600.0
    days = np.floor(t / 86400.0).astype("datetime64[D]")
    months = days.astype("datetime64[M]").astype(int) % 12 + 1
    hours = ((t % 86400.0) // 3600.0).astype(int)
    return months, hours, int((24 - hours[0]) % 24)


@pytest.mark.parametrize("name", TMY_FILES)
def test_the_learned_forecast_beats_clear_sky_on_daily_energy(weather, name) -> None:
    w = weather[name]
    months, hours, skip = _local_calendar(w)
    errors = day_ahead_errors(w.pv_w[skip:], w.clear_pv_w[skip:], months[skip:], hours[skip:], 3600.0)
    assert errors["learned"] < errors["clear_sky"], errors
    assert errors["learned"] < errors["clear_sky_bias"], errors


def test_it_learns_a_cloudy_climate_and_ignores_throttled_hours() -> None:
    step_s = 3600.0
    hours = np.arange(24 * 40) % 24
    clear = np.clip(np.sin((hours - 6) / 12 * np.pi), 0, None) * 400.0
    forecast = LearnedForecast(step_s)
    for k in range(len(hours)):
        forecast.observe(6, int(hours[k]), 0.5 * clear[k], float(clear[k]), True)
    # a full battery throttles PV to nothing for a day: not the sun's doing, not learnt
    for k in range(24):
        forecast.observe(6, int(hours[k]), 0.0, float(clear[k]), False)
    day = slice(0, 24)
    expected = forecast.expected_w(clear[day], np.full(24, 6), hours[day], np.arange(24) + 30.0)
    assert np.allclose(expected, 0.5 * clear[day], rtol=0.05)
