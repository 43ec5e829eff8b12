"""Issue #14 in a real node on a virtual printer over a pty: the plate gate holds after every
outcome that can leave plastic on the plate (and only then), and a resume passes the same gate
as a new job."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from node.clock import Clock
from node.config import NodeConfig
from node.daemon import make_runner
from node.gcode.extrusion import first_extrusion_offset
from node.jobs import Jobs, JobState, TransitionRefused
from node.node import Node
from node.printer.printer import Printer
from node.printer.profile import load_profile
from node.printer.virtual import VirtualPrinter, serve_pty
from node.runner import JobRunner
from node.store import Store
from tests.hw.test_gpio import _state_is, wait_until


def _job(path: Path, dry_moves: int, wet_moves: int) -> Path:
    """``dry_moves`` travel moves (nothing on the plate yet), then moves that extrude."""
    lines = ["G28", "G90", "M82", "G92 E0"] + [f"G1 X{i % 100 + 1} Y{i % 50 + 1} F6000" for i in range(dry_moves)]
    lines += [f"G1 X{i % 100 + 1} Y{i % 50 + 1} E{0.05 * (i + 1):.3f} F1200" for i in range(wet_moves)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_first_extrusion_follows_the_e_mode(tmp_path: Path) -> None:
    relative = tmp_path / "r.gcode"
    relative.write_text("M83\nG1 E-1\nG1 X1 E0\nG1 X2 E0.5\n")
    assert first_extrusion_offset(relative) == relative.read_bytes().index(b"G1 X2")
    absolute = tmp_path / "a.gcode"
    absolute.write_text("M82\nG92 E5\nG1 X1 E5\nG1 X1 E4\nG92 E0\nG1 X2 E0.1\n")
    assert first_extrusion_offset(absolute) == absolute.read_bytes().index(b"G1 X2")
    dry = tmp_path / "d.gcode"
    dry.write_text("G28\nG1 X10\nM104 S0\n")
    assert first_extrusion_offset(dry) is None


@pytest.fixture
def rig(tmp_path: Path):
    stop = threading.Event()
    port, firmware, _ = serve_pty(lambda write: VirtualPrinter(load_profile("ender3"), Clock(50.0), write), stop)
    config = NodeConfig.model_validate({
        "node": {"state_dir": str(tmp_path / "state")}, "printer": {"port": port},
        "jobs": {"queue_sample_when_empty": False, "auto_plate_clear": False}})
    yield config
    stop.set()


@asynccontextmanager
async def running_node(config: NodeConfig) -> AsyncIterator[tuple[Jobs, Printer, JobRunner]]:
    """A node with the store, the job table, the printer on the rig's pty and the runner."""
    store = Store(config.state_dir / "printnode.sqlite3").open()
    node = Node(config.node, Clock(50.0))
    jobs = node.add(Jobs(node, store))
    printer = node.add(Printer(node, config.printer, store))
    runner = node.add(make_runner(node, config, store, jobs, printer, recheck_s=0.2))
    await node.start()
    try:
        yield jobs, printer, runner
    finally:
        await node.stop()
        store.close()


def test_the_plate_gate_holds_after_plastic_and_only_after_plastic(rig: NodeConfig, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_node(rig) as (jobs, printer, runner):
            async def cancel_after(path: Path, lines: int):
                job = await runner.queue_file(path.name, path, "0" * 64, path.stat().st_size)
                await wait_until(lambda: runner.current_job_id == job.id and printer.progress is not None
                                 and printer.progress.lines_sent >= lines, timeout_s=60, what=f"{lines} lines")
                await runner.cancel(job.id)
                return await _state_is(jobs, job.id, JobState.CANCELLED)

            # cancelled while travelling, before any plastic: the plate is still clear
            assert await cancel_after(_job(tmp_path / "dry.gcode", 3000, 10), 100)
            assert runner.plate_clear
            # cancelled after its first extrusion: the leftover part holds the next job
            assert await cancel_after(_job(tmp_path / "wet.gcode", 5, 3000), 100)
            assert not runner.plate_clear
            nxt = await runner.queue_file("next", _job(tmp_path / "next.gcode", 5, 20), "1" * 64, 100)
            await wait_until(lambda: _state_is(jobs, nxt.id, JobState.WAITING_PLATE), what="waits for the plate")
            with pytest.raises(TransitionRefused):  # nothing may call the plate clear under a print...
                runner.current_job_id = "someone"
                await runner.set_plate_clear(True)
            runner.current_job_id = None
            await runner.set_plate_clear(True, source="cli")  # ...a person confirms it once it is empty
            await wait_until(lambda: _state_is(jobs, nxt.id, JobState.COMPLETED), timeout_s=60, what="next printed")
            assert not runner.plate_clear  # completed: its part is on the plate

    asyncio.run(scenario())


def test_a_resume_passes_the_same_gate(rig: NodeConfig, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_node(rig) as (jobs, printer, runner):
            await wait_until(lambda: printer.ready, what="printer ready")
            path = _job(tmp_path / "j.gcode", 5, 50)
            job = await jobs.create("j", "cli", state=JobState.QUEUED, file_path=str(path))
            job = await jobs.transition(job.id, JobState.PRINTING, "starting")
            job = await jobs.transition(job.id, JobState.INTERRUPTED, "power cut")
            with path.open("a") as handle:  # the file changed on the card since it was checked
                handle.write("M 0500\n")
            with pytest.raises(TransitionRefused, match="M500"):
                await runner.resume(job.id)
            assert (await jobs.get(job.id)).state == JobState.INTERRUPTED  # type: ignore[union-attr]

    asyncio.run(scenario())
