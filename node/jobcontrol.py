"""Job commands from people and from the hub — pause, resume, cancel, plate cleared — in one place.

The control API (the CLI) and sync (the hub) both go through :func:`run_job_command`, so a command
means the same whoever sends it.  What carries it out is a :class:`JobControl`: the job runner in
the daemon (it also stops or holds the printer), or :class:`StateOnlyJobControl` in a node without
one (tools, tests), where a cancel is a plain state change and the rest become events.
"""
from __future__ import annotations

from typing import Literal, Protocol

from node.events import JobPauseRequested, JobResumeRequested, PlateCleared
from node.jobs import FINAL_STATES, Job, Jobs, JobState, TransitionRefused
from node.node import Node

JobVerb = Literal["pause", "resume", "cancel"]
CANCEL_ATTEMPTS = 3  # a job that moves while we cancel it is cancelled again: cancel wins


class JobControl(Protocol):
    """What a job command needs from the node (the runner has exactly these methods)."""

    async def pause(self, job_id: str) -> Job: ...

    async def resume(self, job_id: str) -> Job: ...

    async def cancel(self, job_id: str, reason: str = "cancelled by user") -> Job: ...

    async def set_plate_clear(self, clear: bool, source: str = "cli") -> None: ...


class StateOnlyJobControl:
    """A node without a job runner: the state machine for cancel, events for the rest.

    ``source`` is who the commands come from (the events name it): in such a node, the hub."""

    def __init__(self, node: Node, jobs: Jobs, source: Literal["hub", "cli"] = "hub") -> None:
        self.node = node
        self.jobs = jobs
        self.source = source

    async def pause(self, job_id: str) -> Job:
        job = await self.jobs.find(job_id)
        await self.node.send_event("job_pause_requested", JobPauseRequested(
            job_id=job.id, source=self.source, expected_version=job.version))
        return job

    async def resume(self, job_id: str) -> Job:
        job = await self.jobs.find(job_id)
        await self.node.send_event("job_resume_requested", JobResumeRequested(
            job_id=job.id, source=self.source, expected_version=job.version))
        return job

    async def cancel(self, job_id: str, reason: str = "cancelled by user") -> Job:
        job = await self.jobs.find(job_id)
        return await self.jobs.transition(job.id, JobState.CANCELLED, reason, expected_version=job.version)

    async def set_plate_clear(self, clear: bool, source: str = "cli") -> None:
        if clear:
            await self.node.send_event("plate_cleared", PlateCleared(t_s=self.node.clock.time(), source=source))  # type: ignore[arg-type]


async def run_job_command(control: JobControl, jobs: Jobs, verb: JobVerb, job_ref: str, *, source: str,
                          expected_version: int | None = None) -> Job:
    """Pause, resume or cancel the job ``job_ref`` (id or unique prefix) for ``source``.

    Raises KeyError (no such job), TransitionRefused (its state or version does not allow it) or
    TimeoutError (a running print did not stop).  ``expected_version`` makes the command
    conditional, as the hub's versioned commands are.
    """
    attempt = 1
    while True:
        job = await jobs.find(job_ref)
        if expected_version is not None and job.version != expected_version:
            raise TransitionRefused(f"job {job.id} is at version {job.version}, not {expected_version}")
        if verb == "pause":
            return await control.pause(job.id)
        if verb == "resume":
            return await control.resume(job.id)
        if job.state in FINAL_STATES:
            raise TransitionRefused(f"job {job.id} is already {job.state.value}")
        try:
            return await control.cancel(job.id, f"cancelled by {source}")
        except TransitionRefused:
            if attempt == CANCEL_ATTEMPTS:
                raise
            attempt += 1  # the job moved meanwhile: read it again and cancel again
