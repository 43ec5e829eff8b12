"""The one dispatch of job commands (node/jobcontrol.py): versions, final states, cancel wins."""
import asyncio
from pathlib import Path

import pytest

from node.clock import ManualClock
from node.jobcontrol import StateOnlyJobControl, run_job_command
from node.jobs import Job, Jobs, JobState, TransitionRefused
from node.node import Node, NodeSection
from node.store import Store


@pytest.fixture
def node_and_jobs(tmp_path: Path):
    store = Store(tmp_path / "s.sqlite3").open()
    node = Node(NodeSection(), ManualClock(start_s=1_800_000_000))
    yield node, Jobs(node, store)
    store.close()


def test_state_only_control_cancels_once_and_turns_pause_and_plate_into_events(node_and_jobs) -> None:
    node, jobs = node_and_jobs
    pauses, plates = [], []
    node.register_event_handler("job_pause_requested", pauses.append)
    node.register_event_handler("plate_cleared", plates.append)
    control = StateOnlyJobControl(node, jobs)

    async def scenario() -> None:
        job = await jobs.create("part.gcode", "hub", job_id="abcdef123456")
        same = await run_job_command(control, jobs, "pause", job.id[:6], source="hub", expected_version=1)
        assert same.version == job.version and pauses[0].job_id == job.id and pauses[0].source == "hub"
        with pytest.raises(TransitionRefused, match="at version 1, not 7"):
            await run_job_command(control, jobs, "resume", job.id, source="hub", expected_version=7)
        cancelled = await run_job_command(control, jobs, "cancel", job.id, source="hub")
        assert (cancelled.state, cancelled.reason) == (JobState.CANCELLED, "cancelled by hub")
        with pytest.raises(TransitionRefused, match="already cancelled"):
            await run_job_command(control, jobs, "cancel", job.id, source="hub")
        with pytest.raises(KeyError, match="no job"):
            await run_job_command(control, jobs, "cancel", "ffff", source="hub")
        await control.set_plate_clear(True, source="hub")
        assert plates and plates[0].source == "hub"

    asyncio.run(scenario())


class _MovingJob:
    """A runner whose job moves under a cancel twice (a print finishing its pause), then stops."""

    def __init__(self, jobs: Jobs) -> None:
        self.jobs = jobs
        self.refusals = 2
        self.calls = 0

    async def pause(self, job_id: str) -> Job:
        raise AssertionError("not used")

    async def resume(self, job_id: str) -> Job:
        raise AssertionError("not used")

    async def cancel(self, job_id: str, reason: str = "cancelled by user") -> Job:
        self.calls += 1
        if self.refusals:
            self.refusals -= 1
            raise TransitionRefused("the job moved meanwhile")
        return await self.jobs.transition(job_id, JobState.CANCELLED, reason)

    async def set_plate_clear(self, clear: bool, source: str = "cli") -> None:
        raise AssertionError("not used")


def test_cancel_wins_over_a_job_that_moves_and_gives_up_after_three_tries(node_and_jobs) -> None:
    _, jobs = node_and_jobs

    async def scenario() -> None:
        moving = _MovingJob(jobs)
        job = await jobs.create("a.gcode", "cli")
        assert (await run_job_command(moving, jobs, "cancel", job.id, source="user")).state == JobState.CANCELLED
        assert moving.calls == 3
        stubborn = _MovingJob(jobs)
        stubborn.refusals = 5
        other = await jobs.create("b.gcode", "cli")
        with pytest.raises(TransitionRefused, match="moved meanwhile"):
            await run_job_command(stubborn, jobs, "cancel", other.id, source="user")
        assert stubborn.calls == 3

    asyncio.run(scenario())
