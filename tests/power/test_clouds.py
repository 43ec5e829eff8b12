"""Simulated passing clouds: the spell arithmetic, and the pvlib PV model dimmed inside a spell only."""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from node.power.config import ArraySection, CloudSpell, SimulatedControllerSection, SiteSection, cloud_clearness
from node.power.simcontroller import PvModel


def test_spells_cover_their_window_and_wrap_midnight() -> None:
    spells = [CloudSpell(start="23:30", hours=1, clearness=0.2), CloudSpell(start="11:00", hours=2, clearness=0.5),
              CloudSpell(start="12:00", hours=1, clearness=0.1)]
    assert cloud_clearness(0, spells) == 0.2 and cloud_clearness(40, spells) == 1.0
    assert cloud_clearness(659, spells) == 1.0 and cloud_clearness(660, spells) == 0.5
    assert cloud_clearness(730, spells) == 0.1  # the darkest of two overlapping spells
    assert cloud_clearness(781, spells) == 1.0


@pytest.mark.parametrize("start", ["9:75", "noon", "24:00"])
def test_a_bad_start_names_itself(start: str) -> None:
    with pytest.raises(ValidationError, match=start):
        CloudSpell(start=start, hours=1, clearness=0.5)


def test_pv_model_is_dimmed_inside_the_spell_only() -> None:
    site = SiteSection()
    zone = ZoneInfo(site.timezone)
    day = datetime(2026, 6, 21, tzinfo=zone)
    times = [day.replace(hour=h).timestamp() for h in (9, 10, 11, 13)]
    clear = PvModel(site, ArraySection(), SimulatedControllerSection())
    cloudy = PvModel(site, ArraySection(), SimulatedControllerSection(
        clouds=[CloudSpell(start="09:30", hours=2, clearness=0.05)]))
    clear_w = [pv for pv, _, _ in clear.available(times)]
    cloudy_w = [pv for pv, _, _ in cloudy.available(times)]
    assert all(w > 100 for w in clear_w)
    assert cloudy_w[0] == pytest.approx(clear_w[0]) and cloudy_w[3] == pytest.approx(clear_w[3])
    assert cloudy_w[1] < 0.1 * clear_w[1] and cloudy_w[2] < 0.1 * clear_w[2]
