"""Reordering the queue (``queue_move``): the order a person sets is the order the runner lists and
the energy planner considers, on a real store, job state machine and planner (real pvlib worker)."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from node.clock import ManualClock
from node.config import NodeConfig
from node.events import QueueChanged
from node.jobs import RUNNABLE_STATES, Jobs, JobState, TransitionRefused
from node.node import Node
from node.plan.planner import Planner
from node.printer.profile import load_profile
from node.store import Store
from node.study.year import DEFAULT_BATTERY
from tests.plan.test_planner import NIGHT_S, PROFILE, sample


@pytest.fixture
def world(tmp_path: Path):
    config = NodeConfig()
    node = Node(config.node, ManualClock(NIGHT_S))
    store = Store(tmp_path / "node.db").open()
    jobs = node.add(Jobs(node, store))
    planner = node.add(Planner(node, config.planner, site=config.site, array=config.array,
                               forecast=config.forecast, jobs=jobs, battery=DEFAULT_BATTERY,
                               printer_profile=load_profile("ender3"), energy_profile_for=lambda job: PROFILE))
    yield node, jobs, planner
    store.close()


async def names(jobs: Jobs) -> list[str]:
    """The waiting jobs in the order the runner takes them (its own query)."""
    return [j.name for j in await jobs.list(RUNNABLE_STATES)]


def test_a_move_is_the_order_the_runner_lists_and_the_planner_plans(world) -> None:
    node, jobs, planner = world
    changes: list[QueueChanged] = []
    node.register_event_handler("queue_changed", changes.append)

    async def scenario() -> None:
        a, b, c = [await jobs.create(name, "test") for name in "abc"]
        await node.send_event("telemetry_sample", sample(NIGHT_S, 95.0))  # a full battery: no energy choice
        await planner.replan("start")
        assert [p.job_id for p in planner.last_plan.planned] == [a.id, b.id, c.id]

        moved = await jobs.reorder(c.id, to_position=1)
        assert (moved.priority, moved.version) == (0, c.version)  # not a state transition
        assert await names(jobs) == ["c", "a", "b"]
        assert changes[-1] == QueueChanged(job_id=c.id, action="priority")  # the planner and runner wake
        await planner.replan("moved")
        assert planner.next_job_id() == c.id
        assert [p.job_id for p in planner.last_plan.planned] == [c.id, a.id, b.id]

        await jobs.reorder(c.id, by=1)
        assert await names(jobs) == ["a", "c", "b"]
        await jobs.reorder(a.id, to_position=99)  # past the end: the last place
        assert await names(jobs) == ["c", "b", "a"]
        await jobs.reorder(a.id, by=-5)
        assert await names(jobs) == ["a", "c", "b"]

    asyncio.run(scenario())


def test_a_move_past_a_job_of_another_priority_takes_its_priority_and_a_new_priority_keeps_the_place(world) -> None:
    node, jobs, planner = world

    async def scenario() -> None:
        urgent = await jobs.create("urgent", "test", priority=5)
        low = await jobs.create("low", "test", priority=-3)
        plain = await jobs.create("plain", "test")
        assert await names(jobs) == ["urgent", "plain", "low"]
        moved = await jobs.reorder(low.id, to_position=1)  # above a priority-5 job: it must rank as high
        assert moved.priority == 5 and await names(jobs) == ["low", "urgent", "plain"]
        moved = await jobs.reorder(low.id, to_position=2)  # between two fives: it stays a five, after urgent
        assert moved.priority == 5 and await names(jobs) == ["urgent", "low", "plain"]
        moved = await jobs.reorder(urgent.id, to_position=3)  # under a zero: it comes down to zero
        assert moved.priority == 0 and await names(jobs) == ["low", "plain", "urgent"]
        raised = await jobs.reorder(plain.id, priority=10)
        assert raised.priority == 10 and await names(jobs) == ["plain", "low", "urgent"]
        await jobs.reorder(plain.id, priority=0)  # under "low" (a five now), at the head of the zeros
        assert await names(jobs) == ["low", "plain", "urgent"]
        await jobs.reorder(urgent.id, priority=1)  # between the five and the zeros
        assert await names(jobs) == ["low", "urgent", "plain"]

    asyncio.run(scenario())


def test_a_job_on_the_printer_or_finished_cannot_move_and_nothing_changes(world) -> None:
    node, jobs, planner = world

    async def scenario() -> None:
        printing = await jobs.create("printing", "test")
        waiting = await jobs.create("waiting", "test")
        await jobs.transition(printing.id, JobState.PRINTING, "started")
        with pytest.raises(TransitionRefused, match="is printing: only a waiting job can be moved .it owns"):
            await jobs.reorder(printing.id, to_position=1)
        await jobs.transition(printing.id, JobState.COMPLETED, "done")
        with pytest.raises(TransitionRefused, match="is completed: only a waiting job can be moved"):
            await jobs.reorder(printing.id, by=-1)
        with pytest.raises(KeyError, match="no job"):
            await jobs.reorder("nosuchjob", to_position=1)
        with pytest.raises(ValueError, match="exactly one"):
            await jobs.reorder(waiting.id, to_position=1, priority=3)
        assert await jobs.get(waiting.id) == waiting  # untouched by the refusals

    asyncio.run(scenario())
