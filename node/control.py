"""The local control API: JSON lines over a Unix socket in the state directory.

One request per connection.  A request is one JSON line (a :data:`Request`) of at most
``MAX_REQUEST_LINE`` bytes;
``queue_add`` is followed by exactly ``size_bytes`` raw bytes of G-code, which
the daemon stores under ``files/<sha256>.gcode`` before queuing, so the CLI
never needs to share a filesystem view with the daemon (the systemd unit
hides /home from it).  The reply is one JSON line (a :class:`Reply`).

The socket is created with mode 0660 (the node's user and group).  The CLI
never opens the printer's port: everything goes through here.

Nobody can lock it: each connection has ``[control] read_timeout_s`` to send its request (and
each piece of an upload), at most ``[control] max_connections`` are served at once (the next
ones get a "busy" answer at once), a request line over the limit is answered with an error,
and every request gets exactly one answer, whatever went wrong.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter, ValidationError, model_validator

from node import __version__
from node.controlclient import ControlClient, ControlError  # noqa: F401 (ControlClient: older imports keep working)
from node.events import ConfigChangeRequested
from node.jobcontrol import run_job_command
from node.jobs import ACTIVE_STATES, RUNNABLE_STATES, Job, Jobs, JobState, Transition, TransitionRefused, error_text
from node.node import Component, Node
from node.section import ConfigError, Section
from node.store import StoreFull
from node.store.space import disk_error as _disk_error
from node.store.space import no_room_reason

if TYPE_CHECKING:  # the CLI imports this module for ControlClient: keep the runner's stack out of it
    from node.runner import JobRunner

log = logging.getLogger(__name__)

MAX_REQUEST_LINE = 64 * 1024
LISTEN_BACKLOG = 512
REJECTED_SHOWN_S = 24 * 3600.0  # `queue list` shows jobs refused this recently (node seconds)


class ControlSection(Section):
    """``[control]``: where the control socket lives and who may use it."""

    socket: str = Field("control.sock", description="path, relative to state_dir unless absolute")
    mode: int = Field(0o660, ge=0, le=0o777, description="socket permissions: the node's user and group")
    read_timeout_s: float = Field(10.0, gt=0, le=600, description="a client has this long to send its request "
                                                                 "(and each piece of an upload)")
    max_connections: int = Field(32, ge=1, le=1000, description="connections served at once; more get 'busy'")


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StatusRequest(_Request):
    cmd: Literal["status"]


class QueueAddRequest(_Request):
    cmd: Literal["queue_add"]
    name: str = Field(min_length=1, max_length=255)
    size_bytes: int = Field(ge=1)
    priority: int = Field(0, ge=-100, le=100)


class QueueListRequest(_Request):
    cmd: Literal["queue_list"]
    all: bool = False


class JobCommandRequest(_Request):
    cmd: Literal["pause", "resume", "cancel"]
    job: str | None = Field(None, description="id or unique prefix; default: the current job")


class JobShowRequest(_Request):
    cmd: Literal["job_show"]
    job: str


class QueueMoveRequest(_Request):
    """Move a waiting job in the queue: exactly one of ``to`` (1 = next), ``by`` (-1 = up one place)
    or ``priority``.  A job on the printer cannot be moved."""

    cmd: Literal["queue_move"]
    job: str = Field(min_length=1, description="id or unique prefix")
    to: int | None = Field(None, ge=1, le=100000)
    by: int | None = Field(None, ge=-100000, le=100000)
    priority: int | None = Field(None, ge=-100, le=100)

    @model_validator(mode="after")
    def _one_way(self) -> QueueMoveRequest:
        if sum(x is not None for x in (self.to, self.by, self.priority)) != 1:
            raise ValueError("give exactly one of: to (a position, 1 = next), by (places, -1 = up one), priority")
        return self


class PlateClearedRequest(_Request):
    cmd: Literal["plate_cleared"]


class PlanRequest(_Request):
    """The energy planner's last plan (summary and trajectories)."""

    cmd: Literal["plan"]


class ConfigSetRequest(_Request):
    """Persist ``key=value`` in the state directory's override file (applies at the next start)."""

    cmd: Literal["config_set"]
    assignment: str = Field(pattern=r"^[a-z_][a-z0-9_.]*=.*$")


Request = Annotated[
    StatusRequest | QueueAddRequest | QueueListRequest | QueueMoveRequest | JobCommandRequest | JobShowRequest
    | PlateClearedRequest | ConfigSetRequest | PlanRequest,
    Field(discriminator="cmd"),
]
REQUEST_ADAPTER: TypeAdapter[Request] = TypeAdapter(Request)


class StatusReport(BaseModel):
    """``status``: the node, its pending jobs, and each component's own summary under its name."""

    node_id: str
    version: str
    sim_time: str
    time_scale: float
    jobs: list[Job]
    components: dict[str, dict[str, Any]]  # each component's status(), JSON-able by contract
    problems: list[str] = []  # what the node started with anyway (an override file set aside)


class JobHistory(BaseModel):
    """``job_show``: a job and every transition it went through."""

    job: Job
    history: list[Transition]


class PlateClearedReply(BaseModel):
    plate_clear: bool


class SettingSaved(BaseModel):
    """``config_set``: where the setting went; it applies at the next start."""

    saved: str
    file: str
    restart_required: bool = True


#: what a request answers (the plan is the planner's own JSON snapshot)
ReplyResult = Job | list[Job] | JobHistory | StatusReport | PlateClearedReply | SettingSaved | dict[str, Any]
RESULT_ADAPTER: TypeAdapter[ReplyResult] = TypeAdapter(ReplyResult)


class Reply(BaseModel):
    ok: bool
    result: JsonValue = None
    error: str | None = None


#: persists one run-time ``key=value`` from a source ("cli" or "hub") and returns the file it went
#: to; raises ConfigError if refused
SettingSaver = Callable[[str, str], Path]


class ControlServer(Component):
    name = "control"
    section = "control"

    def __init__(self, node: Node, config: ControlSection, *, jobs: Jobs, runner: JobRunner, socket_path: Path,
                 files_dir: Path, max_file_bytes: int, reserve_bytes: int, save_setting: SettingSaver,
                 plan_snapshot: Callable[[], dict[str, Any] | None] | None = None) -> None:
        super().__init__(node, config)
        self.config: ControlSection = config
        self.socket_path = socket_path
        self.files_dir = files_dir
        self.max_file_bytes = max_file_bytes
        #: free space an upload must leave, so a print's outcome can always be recorded
        self.reserve_bytes = reserve_bytes
        self.jobs = jobs
        self.runner = runner
        #: persists a run-time ``key=value`` (the state directory's overrides.toml); ConfigError if refused
        self.save_setting = save_setting
        self.plan_snapshot = plan_snapshot or (lambda: None)
        self._server: asyncio.base_events.Server | None = None
        self._open_connections = 0
        self.counters = {"served": 0, "busy": 0, "timed_out": 0, "malformed": 0}

    async def start(self) -> None:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        self.files_dir.mkdir(parents=True, exist_ok=True)
        if self.socket_path.exists():
            if _socket_alive(self.socket_path):
                raise RuntimeError(f"another printnode is already running on {self.socket_path}")
            self.socket_path.unlink()
        old_umask = os.umask(0o117)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.socket_path),
                                                           limit=MAX_REQUEST_LINE, backlog=LISTEN_BACKLOG)
        finally:
            os.umask(old_umask)
        os.chmod(self.socket_path, self.config.mode)
        for orphan in self.files_dir.glob(".incoming-*"):  # uploads a killed daemon never finished
            log.warning("control: removing the unfinished upload %s (%d bytes)", orphan.name, orphan.stat().st_size)
            orphan.unlink(missing_ok=True)
        self.node.register_event_handler("config_change_requested", self._apply_config_change)

    async def _apply_config_change(self, event: ConfigChangeRequested) -> None:
        """Run-time settings from the hub go where the CLI's go: the state directory's override file."""
        for assignment in event.assignments:
            try:
                self.save_setting(assignment, event.source)
                log.info("config: %s saved from the %s (applies at the next start)", assignment, event.source)
            except ConfigError as exc:
                log.warning("config: %s from the %s refused: %s", assignment, event.source, "; ".join(exc.problems))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.socket_path.unlink(missing_ok=True)

    def status(self) -> dict[str, Any]:
        return {"connections": self._open_connections, **self.counters}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open_connections >= self.config.max_connections:
            self.counters["busy"] += 1
            await self._answer(writer, Reply(ok=False, error=f"busy: {self._open_connections} requests are being "
                                                             "served; try again in a moment"))  # BUSY_PREFIX
            return
        self._open_connections += 1
        try:
            await self._answer(writer, await self._handle(reader))
        finally:
            self._open_connections -= 1

    async def _handle(self, reader: asyncio.StreamReader) -> Reply:
        """The one answer to one request, whatever happens while reading or serving it."""
        try:
            try:
                line = await asyncio.wait_for(reader.readline(), self.config.read_timeout_s)
            except ValueError:  # StreamReader's way of saying the line overran its limit
                self.counters["malformed"] += 1
                return Reply(ok=False, error=f"request too long (a request line is at most {MAX_REQUEST_LINE} bytes)")
            except TimeoutError:
                self.counters["timed_out"] += 1
                return Reply(ok=False, error=f"no complete request within {self.config.read_timeout_s:g} s")
            if not line.endswith(b"\n"):
                raise ControlError("incomplete request: a request is one JSON line ending in a newline")
            request = REQUEST_ADAPTER.validate_json(line)
            result = await self._dispatch(request, reader)
            self.counters["served"] += 1
            return Reply(ok=True, result=RESULT_ADAPTER.dump_python(result, mode="json"))
        except ValidationError as exc:
            self.counters["malformed"] += 1
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'request'}: {e['msg']}" for e in exc.errors())
            return Reply(ok=False, error=f"malformed request: {problems}")
        except (ControlError, ValueError, TransitionRefused, KeyError, TimeoutError) as exc:
            return Reply(ok=False, error=error_text(exc))
        except StoreFull as exc:  # nothing was written; everything already stored is intact
            return Reply(ok=False, error=f"store full, request not saved: {exc} "
                                         "(free disk space or raise storage.max_db_mb)")
        except OSError as exc:
            return Reply(ok=False, error=_disk_error(exc))
        except asyncio.IncompleteReadError as exc:
            return Reply(ok=False, error=f"the request ended early ({len(exc.partial)} bytes)")
        except Exception as exc:  # a bug: logged with its traceback; the client still gets a sentence
            log.exception("control: request failed")
            return Reply(ok=False, error=f"internal error ({type(exc).__name__}); the daemon keeps running, "
                                         "details are in its log")

    @staticmethod
    async def _answer(writer: asyncio.StreamWriter, reply: Reply) -> None:
        try:
            writer.write(reply.model_dump_json().encode() + b"\n")
            await asyncio.wait_for(writer.drain(), 5.0)
        except (ConnectionError, TimeoutError) as exc:
            log.info("control: client went away before its answer: %s", exc or type(exc).__name__)
        finally:
            writer.close()

    async def _dispatch(self, request: Request, reader: asyncio.StreamReader | None) -> ReplyResult:
        runner = self.runner
        if isinstance(request, StatusRequest):
            return await self.status_report()
        if isinstance(request, QueueAddRequest):
            return await self._receive_file(request, reader)
        if isinstance(request, QueueListRequest):
            if request.all:
                return await self.jobs.list()
            # pending and active jobs, and those refused in the last day (a refusal must be seen)
            recent_s = self.node.clock.time() - REJECTED_SHOWN_S
            rejected = [j for j in await self.jobs.list(frozenset({JobState.REJECTED})) if j.updated_s >= recent_s]
            return await self.jobs.list(RUNNABLE_STATES | ACTIVE_STATES) + rejected
        if isinstance(request, QueueMoveRequest):
            job = await self.jobs.find(request.job)
            return await self.jobs.reorder(job.id, to_position=request.to, by=request.by, priority=request.priority)
        if isinstance(request, JobShowRequest):
            job = await self.jobs.find(request.job)
            return JobHistory(job=job, history=await self.jobs.history(job.id))
        if isinstance(request, PlateClearedRequest):
            await runner.set_plate_clear(True, source="cli")
            return PlateClearedReply(plate_clear=True)
        if isinstance(request, PlanRequest):
            snapshot = self.plan_snapshot()
            if snapshot is None:
                raise ControlError("no plan yet (the planner is disabled or has not planned since start)")
            return snapshot
        if isinstance(request, ConfigSetRequest):
            try:
                saved_in = self.save_setting(request.assignment, "cli")
            except ConfigError as exc:
                raise ControlError("; ".join(exc.problems)) from None
            return SettingSaved(saved=request.assignment, file=str(saved_in))
        if isinstance(request, JobCommandRequest):
            job_ref = request.job or runner.current_job_id
            if job_ref is None:
                raise ControlError(f"no job given and nothing is printing to {request.cmd}")
            return await run_job_command(runner, self.jobs, request.cmd, job_ref, source="user")
        raise ControlError(f"unhandled request {request!r}")

    async def execute(self, request: Request) -> ReplyResult:
        """Serve one request that carries no file (the web API's routes come here: one dispatch)."""
        if isinstance(request, QueueAddRequest):
            raise ControlError("queue_add carries a file: use store_upload, then JobRunner.queue_file")
        return await self._dispatch(request, None)

    async def _receive_file(self, request: QueueAddRequest, reader: asyncio.StreamReader | None) -> Job:
        if reader is None:
            raise ControlError("queue_add carries a file")

        async def pieces() -> AsyncIterator[bytes]:
            remaining = request.size_bytes
            while remaining:
                try:
                    chunk = await asyncio.wait_for(reader.read(min(remaining, 256 * 1024)), self.config.read_timeout_s)
                except TimeoutError:
                    raise ControlError(f"{request.name}: the upload stalled ({remaining} bytes missing "
                                       f"after {self.config.read_timeout_s:g} s of silence)") from None
                if not chunk:
                    raise ControlError(f"{request.name}: the upload ended {remaining} bytes early")
                remaining -= len(chunk)
                yield chunk

        stored = await store_upload(self.files_dir, request.name, pieces(), max_bytes=self.max_file_bytes,
                                    reserve_bytes=self.reserve_bytes, expected_bytes=request.size_bytes)
        return await self.runner.queue_file(request.name, stored.path, stored.sha256, stored.size_bytes,
                                            priority=request.priority, source="cli")

    async def status_report(self) -> StatusReport:
        return StatusReport(node_id=self.node.id, version=__version__, sim_time=self.node.clock.now().isoformat(),
                            time_scale=self.node.clock.time_scale,
                            jobs=await self.jobs.list(RUNNABLE_STATES | ACTIVE_STATES),
                            components={c.name: c.status() for c in self.node.components},
                            problems=list(self.node.problems))


@dataclass(frozen=True)
class StoredFile:
    path: Path
    sha256: str
    size_bytes: int


async def store_upload(files_dir: Path, name: str, pieces: AsyncIterator[bytes], *, max_bytes: int,
                       reserve_bytes: int, expected_bytes: int | None = None) -> StoredFile:
    """Write an upload to ``files_dir/<sha256>.gcode`` (fsync'd, then renamed in), refusing it with a
    sentence when it is over ``max_bytes`` or would leave less than ``reserve_bytes`` free.

    The one way a file arrives from a person: the control socket and the web API both use it, and
    both hand the result to ``JobRunner.queue_file`` (the gate)."""
    if expected_bytes is not None and expected_bytes > max_bytes:
        raise ControlError(f"{name}: {expected_bytes} bytes is over jobs.max_file_mb")
    room = no_room_reason(files_dir, expected_bytes or 0, reserve_bytes)
    if room is not None:
        raise ControlError(f"{name}: {room}")
    files_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    tmp = files_dir / f".incoming-{os.getpid()}-{secrets.token_hex(6)}"
    size = 0
    try:
        with tmp.open("wb") as handle:
            async for chunk in pieces:
                size += len(chunk)
                if size > max_bytes:
                    raise ControlError(f"{name}: over jobs.max_file_mb ({max_bytes} bytes)")
                if expected_bytes is None and size % (16 * 1024 * 1024) < len(chunk):
                    room = no_room_reason(files_dir, len(chunk), reserve_bytes)  # size unknown: look as it grows
                    if room is not None:
                        raise ControlError(f"{name}: {room}")
                digest.update(chunk)
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        if size == 0:
            raise ControlError(f"{name}: the file is empty")
        sha = digest.hexdigest()
        final = files_dir / f"{sha}.gcode"
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return StoredFile(final, sha, size)


def _socket_alive(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()
