"""Fixtures of the sync tests: ``mosquitto`` (plain, anonymous) and ``tls_broker`` (TLS + per-node ACL).

Both start a real broker on a free loopback port with its own config file in tmp_path; see
``sync_harness.Broker`` for kill/restart.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sync_harness import Broker, free_port, make_tls


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(tmp_path / "broker", free_port())
    broker.workdir.mkdir()
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(tmp_path / "broker", free_port(), tls=make_tls(tmp_path / "pki"), acl=True)
    broker.workdir.mkdir()
    broker.start()
    yield broker
    broker.stop()
