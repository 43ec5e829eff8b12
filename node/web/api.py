"""The JSON API: one HTTP route for every control-socket command (``CONTROL_ROUTES``), plus what the
page needs (its session's CSRF token, its live state, the plan for the chart).

Each route builds the control API's own request model and hands it to ``ControlServer.execute``,
so a command means exactly what it means from the CLI; a file goes through ``store_upload`` and
``JobRunner.queue_file`` (the gate), like ``printnode queue add``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.multipart import BodyPartReader
from pydantic import ValidationError

from node.control import (
    REQUEST_ADAPTER,
    RESULT_ADAPTER,
    ConfigSetRequest,
    ControlError,
    JobCommandRequest,
    JobShowRequest,
    PlanRequest,
    PlateClearedRequest,
    QueueListRequest,
    StatusRequest,
    StoredFile,
    store_upload,
)
from node.jobs import Job, JobState

if TYPE_CHECKING:
    from node.web.server import WebServer

#: control-socket command -> (method, path) of its HTTP route (tests/web checks every command has one)
CONTROL_ROUTES: dict[str, tuple[str, str]] = {
    "status": ("GET", "/api/node/status"),
    "queue_add": ("POST", "/api/node/jobs"),
    "queue_list": ("GET", "/api/node/jobs"),
    "job_show": ("GET", "/api/node/jobs/{job}"),
    "queue_move": ("POST", "/api/node/jobs/{job}/move"),
    "pause": ("POST", "/api/node/jobs/{job}/pause"),
    "resume": ("POST", "/api/node/jobs/{job}/resume"),
    "cancel": ("POST", "/api/node/jobs/{job}/cancel"),
    "plate_cleared": ("POST", "/api/node/plate-cleared"),
    "plan": ("GET", "/api/node/plan"),
    "config_set": ("POST", "/api/node/config"),
}
MAX_FIELD_BYTES = 4096  # a form field that is not the file (print, select, path, priority)


@dataclass
class Upload:
    """A multipart upload: the stored file, its name, and the form's other fields."""

    stored: StoredFile
    filename: str
    fields: dict[str, str]


def as_json(result: Any, status: int = 200) -> web.Response:
    return web.json_response(RESULT_ADAPTER.dump_python(result, mode="json"), status=status)


async def read_json(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ControlError("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise ControlError("the request body must be a JSON object")
    return body


async def receive_upload(server: WebServer, request: web.Request) -> Upload:
    """Read a ``multipart/form-data`` upload: the ``file`` part streamed to the store (never whole in
    memory), the other parts as short text fields, in whatever order the client sends them."""
    if not request.content_type.startswith("multipart/"):
        raise ControlError("an upload is multipart/form-data with a 'file' part")
    reader = await request.multipart()
    fields: dict[str, str] = {}
    stored: StoredFile | None = None
    filename = ""
    while True:
        part = await reader.next()
        if part is None:
            break
        if not isinstance(part, BodyPartReader):
            raise ControlError("nested multipart is not supported")
        if part.name == "file":
            if stored is not None:
                raise ControlError("one file per upload")
            filename = (part.filename or "upload.gcode").replace("\\", "/").rsplit("/", 1)[-1][:255] or "upload.gcode"

            async def pieces(p: BodyPartReader = part) -> Any:
                while chunk := await p.read_chunk(256 * 1024):
                    yield chunk

            stored = await store_upload(server.files_dir, filename, pieces(), max_bytes=server.max_file_bytes,
                                        reserve_bytes=server.reserve_bytes)
        elif part.name:
            value = await part.read(decode=True)
            if len(value) > MAX_FIELD_BYTES:
                raise ControlError(f"the form field {part.name!r} is too long")
            fields[part.name] = value.decode("utf-8", errors="replace")
    if stored is None:
        raise ControlError("the upload has no 'file' part")
    server.counters["uploads"] += 1
    return Upload(stored, filename, fields)


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1", "yes", "on")


async def queue_upload(server: WebServer, upload: Upload, priority: int = 0, source: str = "web") -> tuple[Job, str]:
    """Queue an uploaded file through the gate; the job and, in words, when it is expected to print."""
    job = await server.runner.queue_file(upload.filename, upload.stored.path, upload.stored.sha256,
                                         upload.stored.size_bytes, priority=priority, source=source)
    if job.state == JobState.REJECTED:
        return job, f"refused: {job.reason}"
    return job, await server.plan_news_for(job.id)


def add_routes(app: web.Application, server: WebServer) -> None:
    async def run(request_model: Any) -> web.Response:
        return as_json(await server.control.execute(request_model))

    async def status(request: web.Request) -> web.StreamResponse:
        return await run(StatusRequest(cmd="status"))

    async def queue_list(request: web.Request) -> web.StreamResponse:
        return await run(QueueListRequest(cmd="queue_list", all=request.query.get("all") in ("1", "true")))

    async def queue_add(request: web.Request) -> web.StreamResponse:
        upload = await receive_upload(server, request)
        try:
            priority = int(upload.fields.get("priority") or 0)
        except ValueError:
            raise ControlError("priority: a whole number from -100 to 100") from None
        if not -100 <= priority <= 100:
            raise ControlError("priority: a whole number from -100 to 100")
        if upload.fields.get("name"):
            upload.filename = upload.fields["name"][:255]
        job, when = await queue_upload(server, upload, priority)
        body = {"job": job.model_dump(mode="json"), "when": when}
        return web.json_response(body, status=422 if job.state == JobState.REJECTED else 201)

    async def job_show(request: web.Request) -> web.StreamResponse:
        return await run(JobShowRequest(cmd="job_show", job=request.match_info["job"]))

    async def job_command(request: web.Request) -> web.StreamResponse:
        verb = request.match_info["verb"]
        job = request.match_info.get("job")
        return await run(JobCommandRequest(cmd=verb, job=job))  # type: ignore[arg-type]

    async def queue_move(request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        unknown = set(body) - {"to", "by", "priority"}
        if unknown:
            raise ControlError(f"move: unknown field(s) {', '.join(sorted(unknown))}; send one of to, by, priority")
        try:
            model = REQUEST_ADAPTER.validate_python({"cmd": "queue_move", "job": request.match_info["job"], **body})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:])) or 'move'}: {e['msg']}" for e in exc.errors())
            raise ControlError(f"move: {problems}") from None
        return await run(model)

    async def plate_cleared(request: web.Request) -> web.StreamResponse:
        return await run(PlateClearedRequest(cmd="plate_cleared"))

    async def plan(request: web.Request) -> web.StreamResponse:
        return await run(PlanRequest(cmd="plan"))

    async def config_set(request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        try:
            model = REQUEST_ADAPTER.validate_python({"cmd": "config_set", "assignment": body.get("assignment")})
        except ValidationError:
            raise ControlError("config: send {\"assignment\": \"key=value\"}") from None
        assert isinstance(model, ConfigSetRequest)
        return await run(model)

    async def session(request: web.Request) -> web.StreamResponse:
        principal = request["principal"]
        return web.json_response({"csrf": principal.session.csrf if principal.session else None,
                                  "node_id": server.node.id})

    async def page(request: web.Request) -> web.StreamResponse:
        return web.json_response(json.loads((await server.page_state()).model_dump_json()))

    app.router.add_get("/api/node/status", status)
    app.router.add_get("/api/node/jobs", queue_list)
    app.router.add_post("/api/node/jobs", queue_add)
    app.router.add_get("/api/node/jobs/{job}", job_show)
    app.router.add_post("/api/node/jobs/{job}/{verb:pause|resume|cancel}", job_command)
    app.router.add_post("/api/node/jobs/{job}/move", queue_move)
    app.router.add_post("/api/node/{verb:pause|resume|cancel}", job_command)  # the current job
    app.router.add_post("/api/node/plate-cleared", plate_cleared)
    app.router.add_get("/api/node/plan", plan)
    app.router.add_post("/api/node/config", config_set)
    app.router.add_get("/api/node/session", session)
    app.router.add_get("/api/node/page", page)
    app.router.add_get("/api/node/events", server.events)
