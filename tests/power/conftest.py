"""Skip ``@pytest.mark.slow`` tests (the full-year simulations) when CI=true, as the house rules say."""
from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("CI", "").lower() != "true":
        return
    skip = pytest.mark.skip(reason="slow soak: skipped when CI=true (run bench/simulate_table.py)")
    for item in items:
        if "slow" in item.keywords and str(item.fspath).startswith(os.path.dirname(__file__)):
            item.add_marker(skip)
