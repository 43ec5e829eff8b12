import asyncio
from pathlib import Path

import pytest

from node.clock import ManualClock
from node.jobs import (
    ACTIVE_STATES,
    FINAL_STATES,
    LIVE_STATES,
    RUNNABLE_STATES,
    TRANSITIONS,
    Jobs,
    JobState,
    PauseReason,
    TransitionRefused,
    check_transition,
)
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


def test_live_jobs_are_read_once_and_follow_every_write(jobs) -> None:
    """Jobs.live answers from memory after one read (the planner asks on every telemetry sample and every
    re-plan); every write through Jobs is applied to it, so it always equals what the store says; a read that
    overlaps a write is not kept."""
    component, node, _ = jobs

    async def from_store(states):
        return await component.list(states, limit=1_000_000)

    async def scenario():
        reads = []
        original = component.store.run

        async def counting(fn):
            reads.append(fn)
            return await original(fn)

        component.store.run = counting
        a = await component.create("a.gcode", "cli")
        b = await component.create("b.gcode", "cli", priority=2)
        assert [j.id for j in await component.live(RUNNABLE_STATES)] == [b.id, a.id]   # the queue's order
        loaded = len(reads)
        for to_state, pause in ((JobState.PRINTING, None), (JobState.PAUSED, PauseReason.ENERGY),
                                (JobState.SUSPENDED, None), (JobState.PRINTING, None)):
            await component.transition(a.id, to_state, "test", pause_reason=pause)
            for states in (ACTIVE_STATES, RUNNABLE_STATES, LIVE_STATES):
                reads_before = len(reads)
                assert await component.live(states) == await from_store(states)
                assert len(reads) == reads_before + 1   # the comparison's own read, not live's
            assert [(j.id, j.state) for j in await component.active()] == [(a.id, to_state)]
        c = await component.create("c.gcode", "cli")
        await component.reorder(c.id, to_position=1)
        assert await component.live(RUNNABLE_STATES) == await from_store(RUNNABLE_STATES)
        await component.transition(a.id, JobState.COMPLETED, "done")
        assert await component.active() == [] == await from_store(ACTIVE_STATES)
        assert loaded == 2 + 1   # two creates, then the one read of the live jobs
        # a read in flight while a job is written does not leave its older answer behind
        component._live = None
        reading = asyncio.ensure_future(component.live())
        await asyncio.sleep(0)
        await component.transition(b.id, JobState.CANCELLED, "not wanted")
        await reading
        assert await component.live() == await from_store(LIVE_STATES)
        assert [j.id for j in await component.live()] == [c.id]
        with pytest.raises(ValueError, match="keeps"):
            await component.live(frozenset({JobState.COMPLETED}))

    run(scenario())
