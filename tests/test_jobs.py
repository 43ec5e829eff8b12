import asyncio
from pathlib import Path

import pytest

from node.clock import ManualClock
from node.jobs import FINAL_STATES, TRANSITIONS, Jobs, JobState, PauseReason, TransitionRefused, check_transition
from node.node import Node, NodeSection
from node.store import Store

ALL_PAIRS = [(a, b) for a in JobState for b in JobState]


@pytest.mark.parametrize("from_state, to_state", ALL_PAIRS)
def test_every_pair_is_allowed_or_refused_by_the_table(from_state: JobState, to_state: JobState) -> None:
    pause = PauseReason.USER if to_state == JobState.PAUSED else None
    if to_state in TRANSITIONS[from_state]:
        check_transition(from_state, to_state, pause)
    else:
        with pytest.raises(TransitionRefused, match=f"{from_state} -> {to_state}"):
            check_transition(from_state, to_state, pause)


def test_final_states_and_retry() -> None:
    assert FINAL_STATES == {JobState.COMPLETED, JobState.CANCELLED, JobState.REJECTED}
    assert JobState.QUEUED in TRANSITIONS[JobState.FAILED]  # a failed job may be retried


def test_pause_needs_a_reason_and_only_a_suspension_may_keep_it() -> None:
    with pytest.raises(TransitionRefused, match="needs a reason"):
        check_transition(JobState.PRINTING, JobState.PAUSED)
    with pytest.raises(TransitionRefused, match="takes no pause reason"):
        check_transition(JobState.PAUSED, JobState.PRINTING, PauseReason.USER)
    check_transition(JobState.PAUSED, JobState.SUSPENDED, PauseReason.LOW_BATTERY)
    check_transition(JobState.PAUSED, JobState.SUSPENDED)


@pytest.fixture
def jobs(tmp_path: Path):
    store = Store(tmp_path / "s.sqlite3").open()
    node = Node(NodeSection(), ManualClock(start_s=1_800_000_000))
    seen = []
    node.register_event_handler("job_state_changed", seen.append)
    yield Jobs(node, store), node, seen
    store.close()


def run(coro):
    return asyncio.run(coro)


def test_life_of_a_job_versions_reasons_and_events(jobs) -> None:
    component, node, seen = jobs

    async def scenario():
        job = await component.create("part.gcode", "cli")
        assert (job.state, job.version) == (JobState.QUEUED, 1)
        await node.clock.advance(10)
        path = [(JobState.WAITING_ENERGY, "needs 300 Wh", None), (JobState.PRINTING, "sun is up", None),
                (JobState.PAUSED, "energy short", PauseReason.ENERGY), (JobState.SUSPENDED, "printer off", None),
                (JobState.PRINTING, "resumed", None), (JobState.COMPLETED, "done", None)]
        for to_state, reason, pause in path:
            job = await component.transition(job.id, to_state, reason, pause_reason=pause)
            await node.clock.advance(60)
        history = await component.history(job.id)
        return job, history

    job, history = run(scenario())
    assert job.state == JobState.COMPLETED and job.version == 7
    assert [t.version for t in history] == list(range(1, 8))
    assert [t.reason for t in history][1:] == ["needs 300 Wh", "sun is up", "energy short", "printer off", "resumed", "done"]
    assert history[3].pause_reason == PauseReason.ENERGY
    assert history[1].t_s == 1_800_000_010 and history[2].t_s == 1_800_000_070
    assert job.started_s == 1_800_000_070 and job.finished_s is not None
    assert [e.version for e in seen] == list(range(1, 8))


def test_refused_transition_changes_nothing(jobs) -> None:
    component, _, seen = jobs

    async def scenario():
        job = await component.create("a", "cli")
        with pytest.raises(TransitionRefused):
            await component.transition(job.id, JobState.COMPLETED, "skipping ahead")
        return await component.get(job.id), await component.history(job.id)

    job, history = run(scenario())
    assert job.state == JobState.QUEUED and job.version == 1 and len(history) == 1 and len(seen) == 1


def test_expected_version_makes_updates_conditional(jobs) -> None:
    component, _, _ = jobs

    async def scenario():
        job = await component.create("a", "hub", state=JobState.RECEIVED)
        await component.transition(job.id, JobState.QUEUED, "verified", expected_version=1)
        with pytest.raises(TransitionRefused, match="version 2, not 1"):
            await component.transition(job.id, JobState.CANCELLED, "stale hub cancel", expected_version=1)
        return await component.get(job.id)

    assert run(scenario()).state == JobState.QUEUED


def test_find_by_prefix_and_unknown(jobs) -> None:
    component, _, _ = jobs

    async def scenario():
        job = await component.create("a", "cli", job_id="abc123")
        await component.create("b", "cli", job_id="abd456")
        assert (await component.find("abc")).id == job.id
        with pytest.raises(KeyError, match="matches 2"):
            await component.find("ab")
        with pytest.raises(KeyError, match="no job"):
            await component.find("zzz")

    run(scenario())


def test_active_jobs_are_kept_until_a_job_is_written(jobs) -> None:
    """Jobs.active answers from memory between writes (the planner asks once a second); every write
    through Jobs makes the next call read again, and a read that overlaps a write is not kept."""
    component, node, _ = jobs

    async def scenario():
        job = await component.create("part.gcode", "cli")
        assert await component.active() == []
        for to_state, pause in ((JobState.PRINTING, None), (JobState.PAUSED, PauseReason.ENERGY),
                                (JobState.SUSPENDED, None), (JobState.PRINTING, None)):
            await component.transition(job.id, to_state, "test", pause_reason=pause)
            active = await component.active()
            assert [(j.id, j.state) for j in active] == [(job.id, to_state)]
            assert await component.active() == active
        reads = []
        original = component.store.run

        async def counting(fn):
            reads.append(fn)
            return await original(fn)

        component.store.run = counting
        await component.active()
        assert reads == []   # from memory: nothing was written since the last read
        # a read in flight while a job is written does not leave its older answer behind
        reading = asyncio.ensure_future(component.active())
        await asyncio.sleep(0)
        await component.transition(job.id, JobState.COMPLETED, "done")
        await reading
        assert await component.active() == []
        second = len(reads)
        assert await component.active() == [] and len(reads) == second

    run(scenario())
