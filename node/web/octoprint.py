"""The part of OctoPrint's REST API that slicers use to "send to printer".

Learnt from the clients' public source, not copied: PrusaSlicer (and OrcaSlicer, its fork) first
``GET /api/version`` with ``X-Api-Key`` and accept the host when the reply has ``api`` and a
``text`` starting with "OctoPrint"; then ``POST /api/files/local`` as multipart with the fields
``print`` ("true"/"false"), ``path`` (a folder, often empty) and ``file``.  Cura's OctoPrint
connection also reads ``/api/settings``, ``/api/printerprofiles``, ``/api/printer``, ``/api/job``
and ``/api/files/local``; scripted clients use ``select`` and ``POST /api/job``.

What differs on this node, on purpose: "print" means "queue it to print when the energy plan
allows" (the reply says when), and every file passes the same gate as any other job.  An upload
without ``print`` is kept in a small library of uploaded files (the page lists them) until someone
queues it: ``select`` marks it, ``POST /api/job {"command": "start"}`` queues the selected one.
"""
from __future__ import annotations

import logging
import os
import shutil
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import BaseModel

from node import __version__
from node.control import ControlError, StoredFile
from node.jobcontrol import run_job_command
from node.jobs import ACTIVE_STATES, RUNNABLE_STATES, Job, JobState, TransitionRefused
from node.web.api import Upload, queue_upload, read_json, receive_upload, truthy
from node.web.compat import API_VERSION, SERVER_VERSION

if TYPE_CHECKING:
    from node.web.server import WebServer

log = logging.getLogger(__name__)

LIBRARY_MAX = 20


class LibraryEntry(BaseModel):
    name: str
    sha256: str
    size_bytes: int
    uploaded_s: float


class Library(BaseModel):
    """Files uploaded without ``print``: kept until queued (or pushed out by newer ones)."""

    files: list[LibraryEntry] = []
    selected: str | None = None


class OctoPrintApi:
    def __init__(self, server: WebServer) -> None:
        self.server = server
        self.library_path = server.files_dir.parent / "web-library.json"
        self.library = self._load_library()

    # --- the library of uploaded files ------------------------------------------------------
    def _load_library(self) -> Library:
        try:
            return Library.model_validate_json(self.library_path.read_bytes())
        except FileNotFoundError:
            return Library()
        except Exception as exc:  # damaged: start empty, say so
            log.warning("web: %s could not be read (%s); starting with an empty library", self.library_path, exc)
            return Library()

    def _save_library(self) -> None:
        tmp = self.library_path.with_suffix(".tmp")
        tmp.write_text(self.library.model_dump_json())
        os.replace(tmp, self.library_path)

    async def _keep(self, upload: Upload, select: bool) -> LibraryEntry:
        entry = LibraryEntry(name=upload.filename, sha256=upload.stored.sha256, size_bytes=upload.stored.size_bytes,
                             uploaded_s=self.server.node.clock.time())
        files = [f for f in self.library.files if f.name != entry.name] + [entry]
        dropped, files = files[:-LIBRARY_MAX], files[-LIBRARY_MAX:]
        self.library.files = files
        if select:
            self.library.selected = entry.name
        self._save_library()
        self.server.mark_dirty()
        for old in dropped:  # its file goes too, unless a job or another entry uses it
            users = {f.sha256 for f in files} | {j.file_sha256 for j in await self.server.jobs.list(limit=100000)}
            if old.sha256 not in users:
                (self.server.files_dir / f"{old.sha256}.gcode").unlink(missing_ok=True)
        return entry

    def entry(self, name: str) -> LibraryEntry:
        for f in self.library.files:
            if f.name == name:
                return f
        raise KeyError(f"no uploaded file {name!r}")

    async def queue_entry(self, name: str) -> tuple[Job, str]:
        """Queue a file of the library (it leaves the library: it is a job now)."""
        entry = self.entry(name)
        path = self.server.files_dir / f"{entry.sha256}.gcode"
        if not path.exists():
            raise ControlError(f"{name}: its file is gone from the node; upload it again")
        job, when = await queue_upload(self.server, Upload(StoredFile(path, entry.sha256, entry.size_bytes),
                                                           entry.name, {}))
        self.library.files = [f for f in self.library.files if f.name != name]
        if self.library.selected == name:
            self.library.selected = None
        self._save_library()
        self.server.mark_dirty()
        return job, when

    # --- routes -----------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/api/version", self.version)
        r.add_get("/api/server", self.server_info)
        r.add_post("/api/login", self.login)
        r.add_get("/api/settings", self.settings)
        r.add_get("/api/printerprofiles", self.printer_profiles)
        r.add_get("/api/connection", self.connection)
        r.add_get("/api/files", self.files)
        r.add_get("/api/files/local", self.files)
        r.add_post("/api/files/local", self.upload)
        r.add_post("/api/files/sdcard", self.no_sd)
        r.add_post("/api/files/local/{name:.+}", self.file_command)
        r.add_get("/api/job", self.job)
        r.add_post("/api/job", self.job_command)
        r.add_get("/api/printer", self.printer)

    async def version(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"api": API_VERSION, "server": SERVER_VERSION,
                                  "text": f"OctoPrint {SERVER_VERSION} (compatible: printnode {__version__})"})

    async def server_info(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"version": SERVER_VERSION, "safemode": None})

    async def login(self, request: web.Request) -> web.StreamResponse:
        """Cura's passive login: who the key belongs to."""
        return web.json_response({"name": "printnode", "active": True, "admin": True, "user": True,
                                  "groups": ["admins", "users"], "permissions": [], "apikey": None})

    async def settings(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"api": {"allowCrossOrigin": False}, "feature": {"sdSupport": False},
                                  "webcam": {"webcamEnabled": False, "streamUrl": "", "snapshotUrl": ""},
                                  "plugins": {}})

    async def printer_profiles(self, request: web.Request) -> web.StreamResponse:
        name = self.server.printer_profile_name
        profile = {"id": "_default", "name": name, "model": name, "current": True, "default": True,
                   "heatedBed": True, "heatedChamber": False, "extruder": {"count": 1, "sharedNozzle": False}}
        return web.json_response({"profiles": {"_default": profile}})

    async def connection(self, request: web.Request) -> web.StreamResponse:
        printer = self.server.runner.printer.status()
        return web.json_response({"current": {"state": self._state_text(printer.get("state")), "port": None,
                                              "baudrate": None, "printerProfile": "_default"},
                                  "options": {"ports": [], "baudrates": [], "printerProfiles": [
                                      {"id": "_default", "name": self.server.printer_profile_name}],
                                      "portPreference": None, "baudratePreference": None,
                                      "printerProfilePreference": "_default", "autoconnect": True}})

    async def files(self, request: web.Request) -> web.StreamResponse:
        entries = [self._file_json(request, f.name, f.size_bytes, f.uploaded_s, f.sha256) for f in self.library.files]
        pending = await self.server.jobs.list(RUNNABLE_STATES | ACTIVE_STATES)
        entries += [self._file_json(request, j.name, j.file_bytes or 0, j.created_s, j.file_sha256 or "", j)
                    for j in pending]
        return web.json_response({"files": entries, "free": shutil.disk_usage(self.server.files_dir).free})

    def _file_json(self, request: web.Request, name: str, size: int, date_s: float, sha: str,
                   job: Job | None = None) -> dict[str, Any]:
        base = f"{request.scheme}://{request.host}"
        data: dict[str, Any] = {"name": name, "path": name, "display": name, "type": "machinecode",
                                "typePath": ["machinecode", "gcode"], "origin": "local", "size": size,
                                "date": int(date_s), "hash": sha,
                                "refs": {"resource": f"{base}/api/files/local/{name}"}}
        if job is not None:
            data["printnode"] = {"job_id": job.id, "state": job.state.value}
        return data

    async def no_sd(self, request: web.Request) -> web.StreamResponse:
        raise ControlError("this node has no SD card target: upload to /api/files/local")

    async def upload(self, request: web.Request) -> web.StreamResponse:
        """``POST /api/files/local``: store the file; with ``print`` queue it (through the gate) to
        print when the plan allows; with ``select`` alone keep it selected for ``/api/job start``."""
        upload = await receive_upload(self.server, request)
        # ``path`` (a folder) is not kept: a job's name is what a person sees
        do_print = truthy(upload.fields.get("print"))
        select = truthy(upload.fields.get("select"))
        body: dict[str, Any] = {"done": True, "effectiveSelect": select or do_print, "effectivePrint": do_print,
                                "files": {"local": {"name": upload.filename, "path": upload.filename,
                                                    "origin": "local",
                                                    "refs": {"resource": f"{request.scheme}://{request.host}"
                                                                         f"/api/files/local/{upload.filename}"}}}}
        if not do_print:
            await self._keep(upload, select)
            body["printnode"] = {"queued": False, "when": "stored, not queued: press Print on the node's page "
                                                          "(or upload again with print)"}
            return web.json_response(body, status=201, headers={"Location": body["files"]["local"]["refs"]["resource"]})
        job, when = await queue_upload(self.server, upload, source="web")
        body["printnode"] = {"queued": job.state != JobState.REJECTED, "job_id": job.id, "state": job.state.value,
                             "when": when}
        if job.state == JobState.REJECTED:
            return web.json_response({"error": f"{upload.filename} was refused by the node's safety gate: "
                                               f"{job.reason}", **body}, status=400)
        return web.json_response(body, status=201, headers={"Location": body["files"]["local"]["refs"]["resource"]})

    async def file_command(self, request: web.Request) -> web.StreamResponse:
        """``POST /api/files/local/<name> {"command": "select", "print": true}``."""
        name = request.match_info["name"]
        body = await read_json(request)
        if body.get("command") != "select":
            raise ControlError("only the command 'select' (with 'print': true to queue it) is supported")
        self.entry(name)
        if body.get("print") is True:
            job, when = await self.queue_entry(name)
            return web.json_response({"printnode": {"job_id": job.id, "state": job.state.value, "when": when}},
                                     status=400 if job.state == JobState.REJECTED else 200)
        self.library.selected = name
        self._save_library()
        return web.Response(status=204)

    # --- the job and the printer ----------------------------------------------------------------
    async def _shown_job(self) -> Job | None:
        """The job /api/job describes: the one on the printer, else the next one waiting."""
        runner = self.server.runner
        if runner.current_job_id:
            try:
                return await self.server.jobs.find(runner.current_job_id)
            except KeyError:
                pass
        active = await self.server.jobs.list(ACTIVE_STATES, limit=1)
        if active:
            return active[0]
        pending = await self.server.jobs.list(RUNNABLE_STATES, limit=1)
        return pending[0] if pending else None

    @staticmethod
    def _state_text(printer_state: str | None, job: Job | None = None) -> str:
        if job is not None and job.state == JobState.PRINTING:
            return "Printing"
        if job is not None and job.state in (JobState.PAUSED, JobState.SUSPENDED):
            return "Paused"
        return {"ready": "Operational", "printing": "Printing", "paused": "Paused", "error": "Error",
                "connecting": "Connecting", "disconnected": "Offline"}.get(printer_state or "", "Offline")

    async def job(self, request: web.Request) -> web.StreamResponse:
        job = await self._shown_job()
        printer = self.server.runner.printer.status()
        progress = printer.get("progress") or {}
        mine = job is not None and progress.get("job_id") == job.id
        percent = progress.get("percent") if mine else None
        elapsed = progress.get("elapsed_s") if mine else None
        left = None if not percent or not elapsed else elapsed * (100 - percent) / percent
        selected = None if job is not None else self.library.selected
        waits = None if job is None else (self.server.runner.status().get("waiting") or {}).get(job.id)
        return web.json_response({
            "job": {"file": {"name": job.name if job else selected, "path": job.name if job else selected,
                             "origin": "local" if (job or selected) else None,
                             "size": job.file_bytes if job else None, "date": int(job.created_s) if job else None},
                    "estimatedPrintTime": None, "lastPrintTime": None, "filament": None,
                    "user": job.source if job else None},
            "progress": {"completion": percent, "filepos": progress.get("bytes_done") if mine else None,
                         "printTime": int(elapsed) if elapsed is not None else None,
                         "printTimeLeft": int(left) if left is not None else None, "printTimeLeftOrigin": "linear"},
            "state": self._state_text(printer.get("state"), job),
            "printnode": None if job is None else {"job_id": job.id, "state": job.state.value, "reason": job.reason,
                                                   "waits": waits},
        })

    async def job_command(self, request: web.Request) -> web.StreamResponse:
        """``POST /api/job``: start (queue the selected file), cancel, pause (pause/resume/toggle)."""
        body = await read_json(request)
        command = body.get("command")
        runner, jobs = self.server.runner, self.server.jobs
        if command == "start":
            if self.library.selected is None:
                raise TransitionRefused("no file is selected: upload one with select, or with print")
            job, when = await self.queue_entry(self.library.selected)
            if job.state == JobState.REJECTED:
                return web.json_response({"error": f"refused: {job.reason}", "printnode": {
                    "job_id": job.id, "state": job.state.value, "when": when}}, status=400)
            # OctoPrint answers a start with 204 and clients check for exactly that (octoprint-cli does):
            # the job and, in words, when it prints go in headers; GET /api/job and the page say it too
            return web.Response(status=204, headers={"X-Printnode-Job": job.id,
                                                     "X-Printnode-When": when.encode("ascii", "replace").decode()})
        job = await self._shown_job()
        if command == "cancel":
            if job is None:
                raise TransitionRefused("nothing to cancel: no job is printing or waiting")
            await run_job_command(runner, jobs, "cancel", job.id, source="web")
            return web.Response(status=204)
        if command == "pause":
            if job is None:
                raise TransitionRefused("nothing to pause: no job is printing")
            action = body.get("action", "toggle")
            if action == "toggle":
                stopped = job.state in (JobState.PAUSED, JobState.SUSPENDED, JobState.INTERRUPTED)
                action = "resume" if stopped else "pause"
            if action not in ("pause", "resume"):
                raise ControlError("action: pause, resume or toggle")
            await run_job_command(runner, jobs, action, job.id, source="web")
            return web.Response(status=204)
        if command == "restart":
            raise TransitionRefused("restart is not supported: upload the file again to print it again")
        raise ControlError(f"unknown job command {command!r} (start, cancel, pause)")

    async def printer(self, request: web.Request) -> web.StreamResponse:
        status = self.server.runner.printer.status()
        state = status.get("state")
        if state in ("disconnected", "connecting", None):
            return web.json_response({"error": f"Printer is not operational ({state or 'unknown'}: "
                                               f"{status.get('detail') or 'not connected'})"}, status=409)
        temps = status.get("temperatures") or {}
        job = await self._shown_job()
        text = self._state_text(state, job)
        flags = {"operational": state in ("ready", "printing", "paused"), "printing": text == "Printing",
                 "paused": text == "Paused", "pausing": False, "cancelling": False, "resuming": False,
                 "finishing": False, "sdReady": False, "error": state == "error",
                 "ready": state == "ready" and text == "Operational", "closedOrError": state == "error"}
        body: dict[str, Any] = {"state": {"text": text, "flags": flags}, "sd": {"ready": False}}
        if temps:
            body["temperature"] = {
                "tool0": {"actual": temps.get("hotend_c"), "target": temps.get("hotend_target_c"), "offset": 0},
                "bed": {"actual": temps.get("bed_c"), "target": temps.get("bed_target_c"), "offset": 0}}
        return web.json_response(body)
