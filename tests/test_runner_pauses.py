"""The job follows every kind of pause, in a real node on a virtual printer over a pty: the firmware's
own ``//action:pause|resume``; the planner's energy pause (hotend off, bed warm), its ``printer_off``
(suspended, heaters off) and its resume, which brings the job back through the power-loss path with
every move executed exactly once."""
from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from node.clock import Clock
from node.config import NodeConfig
from node.daemon import make_runner
from node.events import EnergyPauseRequested, EnergyResumeAllowed
from node.jobs import Jobs, JobState
from node.node import Node
from node.printer.printer import Printer
from node.printer.profile import load_profile
from node.printer.virtual import VirtualPrinter, serve_pty
from node.runner import GateDecision
from node.store import Store
from tests.hw.test_gpio import _state_is, wait_until
from tests.printer.helpers import write_job

HEADER = "G28\nG90\nM82\nM140 S60\nM104 S200\nM190 S60\nM109 S200\nG92 E0\n"


def _node_on_a_virtual_printer(tmp_path: Path, **printer_kwargs: object):  # noqa: ANN202
    """A node with its job core and printer on a virtual printer over a pty (time runs 100x)."""
    executed = tmp_path / "executed.log"
    stop = threading.Event()
    port, firmware, _ = serve_pty(lambda write: VirtualPrinter(load_profile("ender3"), Clock(100.0), write,
                                                               command_log=executed, **printer_kwargs), stop)
    config = NodeConfig.model_validate({
        "node": {"state_dir": str(tmp_path / "state")}, "printer": {"port": port},
        "jobs": {"queue_sample_when_empty": False}})
    store = Store(tmp_path / "state" / "printnode.sqlite3").open()
    node = Node(config.node, Clock(100.0))
    jobs = node.add(Jobs(node, store))
    printer = node.add(Printer(node, config.printer, store))
    runner = node.add(make_runner(node, config, store, jobs, printer, recheck_s=0.5))
    return executed, stop, firmware, store, node, jobs, printer, runner


def test_firmware_pause_and_energy_suspension_move_the_job(tmp_path: Path) -> None:
    asyncio.run(_scenario(tmp_path))


async def _scenario(tmp_path: Path) -> None:
    executed, stop, firmware, store, node, jobs, printer, runner = _node_on_a_virtual_printer(tmp_path)
    sun = {"enough": True}

    async def energy_gate(_job: object) -> GateDecision:  # stands in for the planner's start gate
        return GateDecision(sun["enough"], "" if sun["enough"] else "test: not enough sun")

    runner.add_start_gate("energy", energy_gate)
    await node.start()
    try:
        path = tmp_path / "job.gcode"
        moves = [c for c in write_job(path, 3000, header=HEADER) if c.startswith(b"G1 X")]
        job = await runner.queue_file("part", path, "e" * 64, path.stat().st_size)
        await wait_until(lambda: printer.progress is not None and printer.progress.lines_sent > 200,
                         timeout_s=60, what="200 lines printed")

        firmware.host_action("pause")  # a runout sensor wired to the board, say
        paused = await wait_until(lambda: _state_is(jobs, job.id, JobState.PAUSED), what="paused by the printer")
        assert paused.pause_reason == "printer"
        firmware.host_action("resume")  # the knob
        await wait_until(lambda: _state_is(jobs, job.id, JobState.PRINTING), what="resumed by the printer")

        # a person's pause taken back before the printer parked: the park the printer still reports is
        # the node's own pause, not the firmware asking (no "//action:pause" in the history)
        before = len(await jobs.history(job.id))
        await runner.pause(job.id)
        await runner.resume(job.id)
        lines = printer.progress.lines_sent
        await wait_until(lambda: printer.state == "printing" and printer.progress.lines_sent > lines + 100,
                         timeout_s=60, what="printing again after the withdrawn pause")
        await asyncio.sleep(0.5)  # the printer's reports of that pause have all arrived
        steps = [(t.to_state, t.pause_reason) for t in (await jobs.history(job.id))[before:]]
        assert steps == [("paused", "user"), ("printing", None)], steps

        t_s = node.clock.time()
        await node.send_event("energy_pause_requested", EnergyPauseRequested(
            job_id=job.id, t_s=t_s, soc_pct=31.0, reserve_pct=30.0, reason="test: energy short"))
        paused = await wait_until(lambda: _state_is(jobs, job.id, JobState.PAUSED), what="energy pause")
        assert paused.pause_reason == "energy"
        await wait_until(lambda: firmware.hotend.target_c == 0.0, what="hotend off")
        assert firmware.bed.target_c == 60.0  # the part stays stuck

        sun["enough"] = False
        await node.send_event("energy_pause_requested", EnergyPauseRequested(
            job_id=job.id, t_s=t_s, printer_off=True, soc_pct=30.5, reserve_pct=30.0, reason="test: too long"))
        suspended = await wait_until(lambda: _state_is(jobs, job.id, JobState.SUSPENDED), what="suspended")
        assert suspended.pause_reason == "energy" and firmware.bed.target_c == 0.0
        await asyncio.sleep(1.0)
        assert (await jobs.get(job.id)).state == JobState.SUSPENDED  # type: ignore[union-attr]
        assert "not enough sun" in runner.status()["waiting"][job.id]

        sun["enough"] = True
        await node.send_event("energy_resume_allowed", EnergyResumeAllowed(
            job_id=job.id, t_s=node.clock.time(), soc_pct=45.0, reason="test: sun is back"))
        await wait_until(lambda: _state_is(jobs, job.id, JobState.COMPLETED), timeout_s=120, what="completed")
        done = [line for line in executed.read_bytes().splitlines() if line in set(moves)]
        assert done == moves  # two pauses and a suspension: nothing lost, nothing repeated
        reasons = [t.reason for t in await jobs.history(job.id)]
        assert sum("//action:pause" in r for r in reasons) == 1 and any(r.startswith("suspended") for r in reasons)
    finally:
        await node.stop()
        store.close()
        stop.set()


def test_a_printer_waiting_for_its_user_is_a_paused_job_that_resume_or_the_knob_ends(tmp_path: Path) -> None:
    """Two filament changes (M600) in a file: the firmware waits for a person (``busy: paused for
    user``); the job shows paused with the printer's reason, not a print standing still; resume on the
    page sends M108 (the emergency parser), the knob ends the second wait, and every move runs once.
    (M0/M1 are refused in a job by the default safety policy.)"""
    asyncio.run(_user_waits(tmp_path))


async def _user_waits(tmp_path: Path) -> None:
    executed, stop, firmware, store, node, jobs, printer, runner = _node_on_a_virtual_printer(
        tmp_path, busy_interval_s=0.3)
    await node.start()
    try:
        path = tmp_path / "job.gcode"
        moves = [f"G1 X{i % 40 + 1} Y{i % 17 + 1} F3000" for i in range(60)]
        path.write_text(HEADER + "\n".join(moves[:20] + ["M600"] + moves[20:40] + ["M600"] + moves[40:]) + "\n")
        job = await runner.queue_file("part", path, "f" * 64, path.stat().st_size)
        paused = await wait_until(lambda: _state_is(jobs, job.id, JobState.PAUSED), timeout_s=60,
                                  what="paused for the filament change")
        assert paused.pause_reason == "printer"
        history = await jobs.history(job.id)
        assert "waiting for you at the printer" in history[-1].reason and "M600" in history[-1].reason
        await runner.resume(job.id)  # the page's resume: M108 through the emergency parser

        async def second_wait() -> bool:
            waits = [t for t in await jobs.history(job.id) if t.reason.startswith("waiting for you at the printer")]
            return len(waits) == 2 and await _state_is(jobs, job.id, JobState.PAUSED) is not None
        await wait_until(second_wait, timeout_s=60, what="past the first M600 (M108) and paused at the second")
        firmware.press_button()  # the person at the printer
        await wait_until(lambda: _state_is(jobs, job.id, JobState.COMPLETED), timeout_s=60, what="completed")
        done = [line for line in executed.read_bytes().decode().splitlines() if line.startswith("G1 X")]
        assert done == moves
        reasons = [t.reason for t in await jobs.history(job.id)]
        assert "resumed: the user answered the printer" in reasons
    finally:
        await node.stop()
        store.close()
        stop.set()
