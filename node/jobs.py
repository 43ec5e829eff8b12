"""The job state machine: the only code that changes a job's state.

Every change goes through :meth:`Jobs.transition`, which checks the move
against :data:`TRANSITIONS`, bumps the job's ``version``, records the
transition with its time and reason in the store (one durable transaction),
and then announces it as a ``job_state_changed`` event.  The sync issue maps
these states onto the wire; it does not invent a second machine.

Life of a job::

    received ─► downloading ─► queued ─► waiting_plate ─► waiting_energy ─► printing ─► completed
        │            │           ▲  │          │                 │            │  ▲
        └─► rejected ◄┘           │  └──────────┴─────────────────┴─► cancelled  ▼  │
                                  │                            paused (user|energy|runout|door|low_battery|telemetry_lost)
                         failed ──┘ (retry)                        │         ▲
                                                                   ▼         │
                                  interrupted (reset, crash) ─► printing   suspended (printer off)

``failed`` may be retried (back to ``queued``); ``completed``, ``cancelled``
and ``rejected`` are final.
"""
from __future__ import annotations

import logging
import sqlite3
import uuid
from collections.abc import Callable
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict

from node.events import JobStateChanged, QueueChanged
from node.node import Component, Node
from node.store import Store, StoreFull, transaction

log = logging.getLogger(__name__)
T = TypeVar("T")

class JobState(StrEnum):
    RECEIVED = "received"
    DOWNLOADING = "downloading"
    REJECTED = "rejected"
    QUEUED = "queued"
    WAITING_PLATE = "waiting_plate"
    WAITING_ENERGY = "waiting_energy"
    PRINTING = "printing"
    PAUSED = "paused"
    SUSPENDED = "suspended"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


class PauseReason(StrEnum):
    USER = "user"
    ENERGY = "energy"
    RUNOUT = "runout"
    DOOR = "door"
    LOW_BATTERY = "low_battery"
    PRINTER = "printer"  # the firmware asked (//action:pause: M600, its own runout sensor, a button)
    TELEMETRY_LOST = "telemetry_lost"  # the battery guard went blind for too long (node/power/power_guard.py)


S = JobState
_CANCELLABLE = {S.RECEIVED, S.DOWNLOADING, S.QUEUED, S.WAITING_PLATE, S.WAITING_ENERGY,
                S.PRINTING, S.PAUSED, S.SUSPENDED, S.INTERRUPTED, S.FAILED}

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    S.RECEIVED: frozenset({S.DOWNLOADING, S.QUEUED, S.REJECTED, S.CANCELLED}),
    S.DOWNLOADING: frozenset({S.QUEUED, S.REJECTED, S.FAILED, S.CANCELLED}),
    S.QUEUED: frozenset({S.WAITING_PLATE, S.WAITING_ENERGY, S.PRINTING, S.CANCELLED, S.REJECTED}),
    S.WAITING_PLATE: frozenset({S.QUEUED, S.WAITING_ENERGY, S.PRINTING, S.CANCELLED}),
    S.WAITING_ENERGY: frozenset({S.QUEUED, S.WAITING_PLATE, S.PRINTING, S.CANCELLED}),
    S.PRINTING: frozenset({S.PAUSED, S.COMPLETED, S.FAILED, S.CANCELLED, S.INTERRUPTED}),
    S.PAUSED: frozenset({S.PRINTING, S.SUSPENDED, S.FAILED, S.CANCELLED, S.INTERRUPTED}),
    S.SUSPENDED: frozenset({S.PRINTING, S.FAILED, S.CANCELLED}),
    S.INTERRUPTED: frozenset({S.PRINTING, S.FAILED, S.CANCELLED}),
    S.FAILED: frozenset({S.QUEUED, S.CANCELLED}),
    S.COMPLETED: frozenset(),
    S.CANCELLED: frozenset(),
    S.REJECTED: frozenset(),
}
assert all(to in TRANSITIONS[frm] for frm in _CANCELLABLE for to in [S.CANCELLED])

FINAL_STATES = frozenset(s for s, targets in TRANSITIONS.items() if not targets)
#: jobs the runner may pick up (in priority, then queue order)
RUNNABLE_STATES = frozenset({S.QUEUED, S.WAITING_PLATE, S.WAITING_ENERGY})
#: jobs that own the printer (at most one at a time)
ACTIVE_STATES = frozenset({S.PRINTING, S.PAUSED, S.SUSPENDED, S.INTERRUPTED})
#: the jobs :meth:`Jobs.live` keeps in memory: waiting for the printer or on it
LIVE_STATES = RUNNABLE_STATES | ACTIVE_STATES


class TransitionRefused(ValueError):
    """The move is not allowed from the job's current state (or the version is stale)."""


def check_transition(from_state: JobState | None, to_state: JobState,
                     pause_reason: PauseReason | None = None) -> None:
    """Raise :class:`TransitionRefused` unless ``from_state -> to_state`` is allowed.

    Pure: the table above is the whole rule.  A pause needs its reason; a
    suspension may keep the reason of the pause it came from; no other state
    takes one.
    """
    if from_state is None:
        if to_state not in (S.RECEIVED, S.QUEUED):
            raise TransitionRefused(f"a new job starts as received or queued, not {to_state}")
    elif to_state not in TRANSITIONS[from_state]:
        allowed = ", ".join(sorted(TRANSITIONS[from_state])) or "nothing (final state)"
        raise TransitionRefused(f"{from_state} -> {to_state} is not allowed (allowed: {allowed})")
    if to_state == S.PAUSED and pause_reason is None:
        raise TransitionRefused("a pause needs a reason (" + ", ".join(PauseReason) + ")")
    if to_state not in (S.PAUSED, S.SUSPENDED) and pause_reason is not None:
        raise TransitionRefused(f"{to_state} takes no pause reason")


class Job(BaseModel):
    """A job as stored; read-only outside this module."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    state: JobState
    pause_reason: PauseReason | None = None
    reason: str = ""
    version: int
    priority: int = 0
    queue_seq: int
    source: str
    file_path: str | None = None
    file_sha256: str | None = None
    file_bytes: int | None = None
    deadline_s: float | None = None
    created_s: float
    updated_s: float
    started_s: float | None = None
    finished_s: float | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        return cls.model_validate(dict(row))


class Transition(BaseModel):
    job_id: str
    from_state: JobState | None
    to_state: JobState
    pause_reason: PauseReason | None
    reason: str
    version: int
    t_s: float


def _get(conn: sqlite3.Connection, job_id: str) -> Job | None:
    row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return None if row is None else Job.from_row(row)


class Jobs(Component):
    """Owns every job row; the node's single entry point for creating and moving jobs."""

    name = "jobs"

    def __init__(self, node: Node, store: Store) -> None:
        super().__init__(node, None)
        self.store = store
        #: the jobs in LIVE_STATES by id, kept in step with every write this class makes; None: not read yet,
        #: or a write it could not follow (see :meth:`live`)
        self._live: dict[str, Job] | None = None
        self._writes = 0   # bumped before and after every write: a read that overlaps one is not kept

    # --- reads ------------------------------------------------------------------------------
    async def get(self, job_id: str) -> Job | None:
        return await self.store.run(lambda c: _get(c, job_id))

    async def find(self, job_ref: str) -> Job:
        """A job by id or unique id prefix (what a person types)."""
        def _find(conn: sqlite3.Connection) -> list[Job]:
            # a prefix compare, not LIKE: '%' and '_' in what a person types are just characters
            rows = conn.execute("SELECT * FROM jobs WHERE substr(id, 1, ?) = ? ORDER BY queue_seq",
                                (len(job_ref), job_ref)).fetchall()
            return [Job.from_row(r) for r in rows]

        matches = await self.store.run(_find)
        exact = [j for j in matches if j.id == job_ref]
        if exact:
            return exact[0]
        if len(matches) != 1:
            raise KeyError(f"no job {job_ref!r}" if not matches else f"{job_ref!r} matches {len(matches)} jobs")
        return matches[0]

    async def list(self, states: frozenset[JobState] | None = None, limit: int = 200) -> list[Job]:
        def _list(conn: sqlite3.Connection) -> list[Job]:
            rows = conn.execute("SELECT * FROM jobs ORDER BY priority DESC, queue_seq LIMIT ?"
                                if states is None else
                                "SELECT * FROM jobs WHERE state IN (%s) ORDER BY priority DESC, queue_seq LIMIT ?"
                                % ",".join("?" * len(states)),
                                ([] if states is None else [s.value for s in states]) + [limit]).fetchall()
            return [Job.from_row(r) for r in rows]

        return await self.store.run(_list)

    async def live(self, states: frozenset[JobState] = LIVE_STATES) -> list[Job]:
        """The jobs in ``states`` (some of LIVE_STATES), in queue order, from memory once read.

        Every write of a job goes through this class, which applies it to the jobs it keeps: after the first
        read, the planner's energy guard (on every telemetry sample) and its re-plans (on every job event) cost
        no store round trip — under a Pi Zero's CPU, a re-plan at start-up waited seconds for two reads queued
        behind the start's writes (issue #19)."""
        if not states <= LIVE_STATES:
            raise ValueError(f"Jobs.live keeps {sorted(LIVE_STATES)}, not {sorted(states - LIVE_STATES)}")
        if self._live is None:
            writes = self._writes
            jobs = await self.list(LIVE_STATES, limit=1_000_000)
            if writes == self._writes:   # no write began or ended meanwhile
                self._live = {job.id: job for job in jobs}
        else:
            jobs = list(self._live.values())
        return sorted((job for job in jobs if job.state in states), key=lambda job: (-job.priority, job.queue_seq))

    async def active(self) -> list[Job]:
        """The jobs that own the printer (ACTIVE_STATES), in queue order: :meth:`live`."""
        return await self.live(ACTIVE_STATES)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a write in the store; a read of the live jobs that overlaps it is not kept (see :meth:`live`)."""
        self._writes += 1
        try:
            return await self.store.run(fn)
        finally:
            self._writes += 1

    def _track(self, job: Job) -> None:
        """Apply a job just written to the live jobs kept in memory."""
        if self._live is None:
            return
        if job.state in LIVE_STATES:
            self._live[job.id] = job
        else:
            self._live.pop(job.id, None)

    async def history(self, job_id: str) -> list[Transition]:
        def _history(conn: sqlite3.Connection) -> list[Transition]:
            rows = conn.execute("SELECT * FROM job_transitions WHERE job_id = ? ORDER BY version",
                                (job_id,)).fetchall()
            return [Transition.model_validate({k: r[k] for k in r.keys() if k != "id"}) for r in rows]

        return await self.store.run(_history)

    # --- writes -----------------------------------------------------------------------------
    async def create(self, name: str, source: str, *, state: JobState = S.QUEUED, priority: int = 0,
                     file_path: str | None = None, file_sha256: str | None = None,
                     file_bytes: int | None = None, deadline_s: float | None = None,
                     job_id: str | None = None, reason: str = "created") -> Job:
        """Insert a new job in ``received`` or ``queued`` (version 1) and record that."""
        check_transition(None, state)
        now_s = self.node.clock.time()
        new_id = job_id or uuid.uuid4().hex[:12]

        def _insert(conn: sqlite3.Connection) -> Job:
            with transaction(conn):
                seq = conn.execute("SELECT COALESCE(MAX(queue_seq), 0) + 1 FROM jobs").fetchone()[0]
                conn.execute(
                    "INSERT INTO jobs(id, name, state, reason, version, priority, queue_seq, source, file_path,"
                    " file_sha256, file_bytes, deadline_s, created_s, updated_s) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (new_id, name, state.value, reason, 1, priority, seq, source, file_path, file_sha256,
                     file_bytes, deadline_s, now_s, now_s))
                conn.execute("INSERT INTO job_transitions(job_id, from_state, to_state, pause_reason, reason, version, t_s)"
                             " VALUES(?,?,?,?,?,?,?)", (new_id, None, state.value, None, reason, 1, now_s))
                job = _get(conn, new_id)
            assert job is not None
            return job

        job = await self._write(_insert)
        self._track(job)
        await self.node.send_event("job_state_changed", JobStateChanged(
            job_id=job.id, from_state=None, to_state=job.state, reason=reason, version=1, t_s=now_s))
        if job.state in RUNNABLE_STATES:
            await self.node.send_event("queue_changed", QueueChanged(job_id=job.id, action="added"))
        return job

    async def transition(self, job_id: str, to_state: JobState, reason: str, *,
                         pause_reason: PauseReason | None = None,
                         expected_version: int | None = None) -> Job:
        """Move a job, or raise :class:`TransitionRefused` and change nothing.

        ``expected_version`` makes the move conditional (optimistic concurrency:
        a hub update applies only to the version it was made against).
        """
        now_s = self.node.clock.time()

        def _move(conn: sqlite3.Connection) -> tuple[Job, Job]:
            with transaction(conn):
                job = _get(conn, job_id)
                if job is None:
                    raise KeyError(f"no job {job_id!r}")
                if expected_version is not None and job.version != expected_version:
                    raise TransitionRefused(f"job {job_id} is at version {job.version}, not {expected_version}")
                check_transition(job.state, to_state, pause_reason)
                version = job.version + 1
                fields: dict[str, Any] = {"state": to_state.value, "pause_reason": pause_reason and pause_reason.value,
                                          "reason": reason, "version": version, "updated_s": now_s}
                if to_state == S.PRINTING and job.started_s is None:
                    fields["started_s"] = now_s
                if to_state in FINAL_STATES or to_state == S.FAILED:
                    fields["finished_s"] = now_s
                assignments = ", ".join(f"{k} = ?" for k in fields)
                conn.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*fields.values(), job_id))
                conn.execute("INSERT INTO job_transitions(job_id, from_state, to_state, pause_reason, reason, version, t_s)"
                             " VALUES(?,?,?,?,?,?,?)",
                             (job_id, job.state.value, to_state.value, pause_reason and pause_reason.value,
                              reason, version, now_s))
                moved = _get(conn, job_id)
            assert moved is not None
            return job, moved

        try:
            before, after = await self._write(_move)
        except StoreFull:
            # how a job ended outranks everything else the store keeps: make room, then record it
            freed = await self._write(make_room_for_jobs)
            log.warning("store full while recording job %s -> %s: dropped %d oldest telemetry rows to record it",
                        job_id, to_state.value, freed)
            before, after = await self._write(_move)
        self._track(after)
        await self.node.send_event("job_state_changed", JobStateChanged(
            job_id=job_id, from_state=before.state, to_state=after.state, reason=reason,
            version=after.version, t_s=now_s))
        was_runnable, is_runnable = before.state in RUNNABLE_STATES, after.state in RUNNABLE_STATES
        if was_runnable != is_runnable:
            await self.node.send_event("queue_changed", QueueChanged(
                job_id=job_id, action="added" if is_runnable else "removed"))
        return after

    async def reorder(self, job_id: str, *, to_position: int | None = None, by: int | None = None,
                      priority: int | None = None) -> Job:
        """Move a waiting job in the queue: to ``to_position`` (1 = next), ``by`` places (-1 = up one),
        or to a new ``priority`` (it keeps its place among jobs of that priority).

        The queue's order is ``priority DESC, queue_seq`` everywhere (the runner's list, the planner's
        order), so a move is written in those two columns: the waiting jobs' own ``queue_seq`` values
        are dealt out again in the new order, and a job moved past one of another priority takes
        that priority (else the move would not hold).  A job on the printer or finished cannot move
        (TransitionRefused with the reason).  Not a state transition: no version bump, so a hub's
        conditional update of the job still applies."""
        if sum(x is not None for x in (to_position, by, priority)) != 1:
            raise ValueError("a move takes exactly one of: a position, a number of places, a priority")

        def _reorder(conn: sqlite3.Connection) -> Job:
            with transaction(conn):
                job = _get(conn, job_id)
                if job is None:
                    raise KeyError(f"no job {job_id!r}")
                if job.state not in RUNNABLE_STATES:
                    where = ("it owns the printer" if job.state in ACTIVE_STATES else "it is not waiting in the queue")
                    raise TransitionRefused(f"job {job.id} is {job.state}: only a waiting job can be moved ({where})")
                waiting = [Job.from_row(r) for r in conn.execute(
                    "SELECT * FROM jobs WHERE state IN (%s) ORDER BY priority DESC, queue_seq"
                    % ",".join("?" * len(RUNNABLE_STATES)), [s.value for s in RUNNABLE_STATES]).fetchall()]
                others = [j for j in waiting if j.id != job.id]
                if priority is not None:
                    new_priority = priority
                    # its place among the jobs of its (new) priority: by its queue_seq, as a new job's would be
                    index = sum(1 for j in others if (-j.priority, j.queue_seq) < (-priority, job.queue_seq))
                else:
                    here = next(i for i, j in enumerate(waiting) if j.id == job.id)
                    index = max(0, min(len(others), (to_position - 1) if to_position is not None else here + by))
                    above = others[index - 1].priority if index > 0 else None
                    below = others[index].priority if index < len(others) else None
                    new_priority = job.priority
                    if above is not None:
                        new_priority = min(new_priority, above)
                    if below is not None:
                        new_priority = max(new_priority, below)
                order = others[:index] + [job.model_copy(update={"priority": new_priority})] + others[index:]
                for seq, queued in zip(sorted(j.queue_seq for j in waiting), order, strict=True):
                    conn.execute("UPDATE jobs SET queue_seq = ?, priority = ? WHERE id = ?",
                                 (seq, queued.priority, queued.id))
                moved = _get(conn, job.id)
            assert moved is not None
            return moved

        moved = await self._write(_reorder)
        self._live = None   # the other waiting jobs' places changed too: read them again
        await self.node.send_event("queue_changed", QueueChanged(job_id=moved.id, action="priority"))
        return moved


def error_text(exc: BaseException) -> str:
    """An error's message for a person: a KeyError's own text (``str`` of a KeyError is its repr,
    which quotes it and garbles a job reference that holds quotes)."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc)


#: telemetry tables, oldest rows first to go when a job's record needs the room
_EXPENDABLE = ("telemetry_raw", "telemetry_1m", "telemetry_15m")


def make_room_for_jobs(conn: sqlite3.Connection, fraction: float = 0.25) -> int:
    """Delete the oldest ``fraction`` of each telemetry table (re-sampled history, reported to the
    hub long ago or never needed); return the rows deleted.  Freed pages are reused by SQLite."""
    deleted = 0
    with transaction(conn):
        for table in _EXPENDABLE:
            count = conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            if count:
                deleted += conn.execute(f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} "
                                        f"ORDER BY t_s LIMIT ?)", (max(1, int(count * fraction)),)).rowcount
    return deleted
