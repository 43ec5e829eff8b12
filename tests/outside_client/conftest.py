"""The broker of the outside-client test: the sync tests' real Mosquitto on a free loopback port."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sync.sync_harness import Broker, free_port


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(tmp_path / "broker", free_port())
    broker.workdir.mkdir()
    broker.start()
    yield broker
    broker.stop()
