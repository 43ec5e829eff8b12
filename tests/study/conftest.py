"""The three real TMY files pvlib ships, run through the pvlib worker once per test session."""
from __future__ import annotations

from pathlib import Path

import pvlib
import pytest

from node.study.year import WeatherYear

DATA = Path(pvlib.__file__).parent / "data"
TMY_FILES = ["723170TYA.CSV", "703165TY.csv", "12839.tm2"]


@pytest.fixture(scope="session")
def weather() -> dict[str, WeatherYear]:
    return {name: WeatherYear.load(str(DATA / name)) for name in TMY_FILES}
