"""Fixtures shared by the whole suite: real ptys, real daemons, real SQLite files."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from node.clock import Clock
from node.controlclient import ControlClient
from node.printer.profile import load_profile
from node.printer.virtual import VirtualPrinter, serve_pty


@dataclass
class VirtualPort:
    path: str
    printer: VirtualPrinter
    stop: threading.Event


@pytest.fixture
def virtual_port() -> Iterator[VirtualPort]:
    """A virtual printer on a real pseudo-terminal, in this process (time scale 100)."""
    stop = threading.Event()
    path, printer, _ = serve_pty(lambda write: VirtualPrinter(load_profile("ender3"), Clock(100.0), write), stop)
    yield VirtualPort(path, printer, stop)
    stop.set()


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    state_dir: Path
    log_path: Path

    @property
    def client(self) -> ControlClient:
        return ControlClient(self.state_dir / "control.sock", timeout_s=30)

    def request(self, payload: dict[str, Any], body: Path | None = None) -> Any:
        return self.client.request(payload, body)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "node", *args, "--state-dir", str(self.state_dir)],
                              capture_output=True, text=True, timeout=60)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


#: test daemons start at noon of a sunny day at the default site (Tucson), not on the wall clock:
#: at night the energy planner rightly holds every print until sunrise
SUNNY_NOON = "clock.start='2026-06-21T19:00:00+00:00'"
#: test daemons serve their page on a free loopback port (``status`` names it under web.url)
WEB_ON_ANY_LOOPBACK_PORT = ("web.port=0", "web.bind='127.0.0.1'")


def start_daemon(state_dir: Path, *sets: str, extra_args: tuple[str, ...] = ()) -> Daemon:
    log_path = state_dir.parent / f"{state_dir.name}-daemon.log"
    args = [sys.executable, "-m", "node", "run", "--state-dir", str(state_dir), *extra_args]
    if not any(item.startswith("clock.start=") for item in sets):
        sets = (SUNNY_NOON, *sets)
    if not any(item.startswith("web.") for item in sets):  # never a fixed port: any free one, loopback only
        sets = (*WEB_ON_ANY_LOOPBACK_PORT, *sets)
    for item in sets:
        args += ["--set", item]
    process = subprocess.Popen(args, stdout=log_path.open("ab"), stderr=subprocess.STDOUT)
    daemon = Daemon(process, state_dir, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daemon exited early ({process.returncode}):\n{daemon.log()}")
        try:
            daemon.request({"cmd": "status"})
            return daemon
        except Exception:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"daemon did not answer on its socket:\n{daemon.log()}")


def stop_daemon(daemon: Daemon) -> int:
    if daemon.process.poll() is None:
        daemon.process.send_signal(signal.SIGTERM)
        try:
            daemon.process.wait(20)
        except subprocess.TimeoutExpired:
            daemon.process.kill()
            daemon.process.wait()
    return daemon.process.returncode


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Any]:
    """Start real ``printnode run`` daemons (virtual printer on a pty); all stopped at teardown."""
    started: list[Daemon] = []

    def factory(*sets: str, name: str = "state", extra_args: tuple[str, ...] = ()) -> Daemon:
        daemon = start_daemon(tmp_path / name, *sets, extra_args=extra_args)
        started.append(daemon)
        return daemon

    yield factory
    for daemon in started:
        stop_daemon(daemon)


def moves_gcode(path: Path, moves: int, mm: float = 10.0, feed_mm_min: float = 600.0) -> Path:
    """A job without heating: ``moves`` moves of ``mm`` each (1 s of sim time each at the default feed)."""
    lines = ["G28", "G90", f"G1 X0 Y0 F{feed_mm_min:g}"]
    lines += [f"G1 X{mm * ((i + 1) % 2):g} Y{i * 0.01:.2f}" for i in range(moves)]
    path.write_text("\n".join(lines) + "\n")
    return path


def wait_for(predicate: Any, timeout_s: float = 30.0, interval_s: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """A real PostgreSQL for the session: initdb in a temp dir, a free loopback port (fsync off: test data)."""
    from node.hub.pgserver import TempPostgres

    try:
        server = TempPostgres(durable=False)
    except FileNotFoundError:
        pytest.skip("PostgreSQL is not installed (scripts/ensure-system-deps.sh test installs it)")
    server.start()
    yield server
    server.remove()


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_location(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where a hub ledger lives: a SQLite file, or a fresh database on the session's PostgreSQL."""
    if request.param == "sqlite":
        return tmp_path / "ledger.sqlite"
    import uuid

    return request.getfixturevalue("postgres_server").create_database(f"ledger_{uuid.uuid4().hex[:12]}")


os.environ.setdefault("PYTHONUNBUFFERED", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``@pytest.mark.slow`` soaks are skipped when CI=true; bench/ runs them (see docs/benchmarks.md)."""
    if os.environ.get("CI", "").lower() != "true":
        return
    skip = pytest.mark.skip(reason="slow soak: skipped when CI=true; its bench in bench/ runs it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# fuzz suites are reproducible: the same examples in every run (bench/fuzz.py runs more)
settings.register_profile("printnode", derandomize=True, deadline=None)
settings.load_profile("printnode")
