"""The local control API: JSON lines over a Unix socket in the state directory.

One request per connection.  A request is one JSON line (a :data:`Request`);
``queue_add`` is followed by exactly ``size_bytes`` raw bytes of G-code, which
the daemon stores under ``files/<sha256>.gcode`` before queuing, so the CLI
never needs to share a filesystem view with the daemon (the systemd unit
hides /home from it).  The reply is one JSON line (a :class:`Reply`).

The socket is created with mode 0660 (the node's user and group).  The CLI
never opens the printer's port: everything goes through here.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter, ValidationError

from node import __version__
from node.events import ConfigChangeRequested
from node.jobcontrol import run_job_command
from node.jobs import ACTIVE_STATES, RUNNABLE_STATES, Job, Jobs, Transition, TransitionRefused
from node.node import Component, Node
from node.section import ConfigError, Section
from node.store import StoreFull

if TYPE_CHECKING:  # the CLI imports this module for ControlClient: keep the runner's stack out of it
    from node.runner import JobRunner

log = logging.getLogger(__name__)

MAX_REQUEST_LINE = 64 * 1024


class ControlSection(Section):
    """``[control]``: where the control socket lives and who may use it."""

    socket: str = Field("control.sock", description="path, relative to state_dir unless absolute")
    mode: int = Field(0o660, ge=0, le=0o777, description="socket permissions: the node's user and group")


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
    StatusRequest | QueueAddRequest | QueueListRequest | JobCommandRequest | JobShowRequest | PlateClearedRequest
    | ConfigSetRequest | PlanRequest,
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


class ControlError(RuntimeError):
    """The daemon refused the request (the message says why)."""


class ControlServer(Component):
    name = "control"
    section = "control"

    def __init__(self, node: Node, config: ControlSection, *, jobs: Jobs, runner: JobRunner, socket_path: Path,
                 files_dir: Path, max_file_bytes: int, save_setting: SettingSaver,
                 plan_snapshot: Callable[[], dict[str, Any] | None] | None = None) -> None:
        super().__init__(node, config)
        self.config: ControlSection = config
        self.socket_path = socket_path
        self.files_dir = files_dir
        self.max_file_bytes = max_file_bytes
        self.jobs = jobs
        self.runner = runner
        #: persists a run-time ``key=value`` (the state directory's overrides.toml); ConfigError if refused
        self.save_setting = save_setting
        self.plan_snapshot = plan_snapshot or (lambda: None)
        self._server: asyncio.base_events.Server | None = None

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
                                                           limit=MAX_REQUEST_LINE)
        finally:
            os.umask(old_umask)
        os.chmod(self.socket_path, self.config.mode)
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

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            try:
                request = REQUEST_ADAPTER.validate_json(line)
                result = await self._dispatch(request, reader)
                reply = Reply(ok=True, result=RESULT_ADAPTER.dump_python(result, mode="json"))
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'request'}: {e['msg']}" for e in exc.errors())
                reply = Reply(ok=False, error=f"malformed request: {problems}")
            except (ControlError, TransitionRefused, KeyError, ValueError, TimeoutError) as exc:
                reply = Reply(ok=False, error=str(exc).strip("'\""))
            except StoreFull as exc:  # nothing was written; everything already stored is intact
                reply = Reply(ok=False, error=f"store full, request not saved: {exc} "
                                              "(free disk space or raise storage.max_db_mb)")
            writer.write(reply.model_dump_json().encode() + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            log.warning("control: client went away: %s", exc)
        except Exception:
            log.exception("control: request failed")
        finally:
            writer.close()

    async def _dispatch(self, request: Request, reader: asyncio.StreamReader) -> ReplyResult:
        runner = self.runner
        if isinstance(request, StatusRequest):
            return await self.status_report()
        if isinstance(request, QueueAddRequest):
            return await self._receive_file(request, reader)
        if isinstance(request, QueueListRequest):
            states = None if request.all else RUNNABLE_STATES | ACTIVE_STATES
            return await self.jobs.list(states)
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

    async def _receive_file(self, request: QueueAddRequest, reader: asyncio.StreamReader) -> Job:
        if request.size_bytes > self.max_file_bytes:
            raise ControlError(f"{request.name}: {request.size_bytes} bytes is over jobs.max_file_mb")
        digest = hashlib.sha256()
        tmp = self.files_dir / f".incoming-{os.getpid()}-{id(request)}"
        remaining = request.size_bytes
        try:
            with tmp.open("wb") as handle:
                while remaining:
                    chunk = await reader.read(min(remaining, 256 * 1024))
                    if not chunk:
                        raise ControlError(f"{request.name}: the upload ended {remaining} bytes early")
                    digest.update(chunk)
                    handle.write(chunk)
                    remaining -= len(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            sha = digest.hexdigest()
            final = self.files_dir / f"{sha}.gcode"
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        return await self.runner.queue_file(request.name, final, sha, request.size_bytes,
                                               priority=request.priority, source="cli")

    async def status_report(self) -> StatusReport:
        return StatusReport(node_id=self.node.id, version=__version__, sim_time=self.node.clock.now().isoformat(),
                            time_scale=self.node.clock.time_scale,
                            jobs=await self.jobs.list(RUNNABLE_STATES | ACTIVE_STATES),
                            components={c.name: c.status() for c in self.node.components},
                            problems=list(self.node.problems))


def _socket_alive(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


class ControlClient:
    """Blocking client for the CLI: one request per connection."""

    def __init__(self, socket_path: Path, timeout_s: float = 60.0) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s

    def request(self, payload: dict[str, Any], body_path: Path | None = None) -> JsonValue:
        REQUEST_ADAPTER.validate_python(payload)  # refuse a malformed request before sending it
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout_s)
        try:
            try:
                sock.connect(str(self.socket_path))
            except (FileNotFoundError, ConnectionRefusedError):
                raise ControlError(f"no printnode daemon is listening on {self.socket_path} "
                                   "(start it with `printnode run`)") from None
            sock.sendall(json.dumps(payload).encode() + b"\n")
            if body_path is not None:
                with body_path.open("rb") as handle:
                    sock.sendfile(handle)
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        finally:
            sock.close()
        reply = Reply.model_validate_json(data)
        if not reply.ok:
            raise ControlError(reply.error or "request refused")
        return reply.result
