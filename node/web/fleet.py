"""The hub's fleet page and its HTTP API (``printnode hub web``, or ``hub serve --web``).

The same web stack and access rules as the node's page (aiohttp; node/web/access.py: the page logs in
with a password and echoes its CSRF token, API clients send the key; nothing anonymous but the login),
over the hub's ledger instead of a node: every figure comes from node/hub/fleet.py, the read model
``printnode hub nodes | jobs | job`` print, and every action is what the CLI does (``submit_job``,
``cancel_job``: rows the pump of ``hub serve`` sends on).  The ledger is read in threads, never on the
loop.  Credentials: ``<hub dir>/web-credentials.json`` (``printnode hub web init | key | password``).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web

from node.hub import fleet
from node.hub.ledger import Ledger
from node.web import credentials as creds
from node.web import pages
from node.web.access import WebAccess, plain_server_header
from node.web.common import HttpError, json_error
from node.web.config import WebSection

log = logging.getLogger(__name__)

CREDENTIALS_FILE = "web-credentials.json"
DEFAULT_PORT = 8090  # beside a node's 8080, so a hub and a node can share a machine
MAX_SMALL_BODY = 64 * 1024
STATIC_FILES = ("fleet.js", "fleet.css", "app.css", "login.js", "icon.svg")
FLEET_LOGIN = pages.LoginPage("Solar Print Fleet", "The password was set when the hub first served this page; on "
                                                   "the hub, <code>printnode hub web password</code> sets a new one.")
CHART_HOURS = 24.0


def credentials_path(hub_dir: Path) -> Path:
    return hub_dir / CREDENTIALS_FILE


class FleetWebServer(WebAccess):
    """Serves the fleet page on ``config.bind:config.port`` (a ``[web]`` section: bind, port, TLS, sessions)."""

    holder_words = "the hub"
    key_command = "`printnode hub web key`"

    def __init__(self, ledger: Ledger, files_dir: Path, config: WebSection, credentials_file: Path,
                 alert_settings: fleet.AlertSettings | None = None, clock: Callable[[], float] = time.time) -> None:
        self.ledger = ledger
        self.files_dir = files_dir
        self.config = config
        self.alert_settings = alert_settings or fleet.AlertSettings()
        self.clock = clock
        self.max_file_bytes = int((config.max_upload_mb or 500) * 1024 * 1024)
        self.url: str | None = None
        self.counters = {"requests": 0, "denied": 0, "uploads": 0, "errors": 0}
        self.init_access(credentials_file)
        self._runner: web.AppRunner | None = None

    # --- lifetime -----------------------------------------------------------------------------
    async def start(self) -> str:
        """Listen; returns the URL.  Raises CredentialsError/OSError with a sentence when it cannot."""
        self.credentials()  # a missing or damaged file stops here, with its fix
        await asyncio.to_thread(self.sessions.load)  # logins made before a restart still hold
        self._runner = web.AppRunner(self.build_app(), access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        context = None
        if self.config.tls_cert is not None and self.config.tls_key is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        site = web.TCPSite(self._runner, self.config.bind, self.config.port, ssl_context=context, backlog=128)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise OSError(exc.errno, f"cannot listen on {self.config.bind}:{self.config.port} "
                                     f"({exc.strerror or exc}); choose another --port or --bind") from None
        sockets = getattr(site._server, "sockets", None) or []  # port 0: ask the server which one it got
        port = sockets[0].getsockname()[1] if sockets else self.config.port
        shown_host = "127.0.0.1" if self.config.bind in ("0.0.0.0", "::") else self.config.bind
        self.url = f"{self.config.scheme}://{shown_host}:{port}/"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self.errors_middleware, self.auth_middleware],
                              client_max_size=MAX_SMALL_BODY)
        pages.add_routes(app, self, index_page="fleet.html", login=FLEET_LOGIN, static_files=STATIC_FILES)
        app.router.add_get("/api/fleet", self.overview)
        app.router.add_get("/api/fleet/session", self.session)
        app.router.add_get("/api/fleet/nodes", self.nodes)
        app.router.add_get("/api/fleet/nodes/{node}/telemetry", self.telemetry)
        app.router.add_get("/api/fleet/jobs", self.jobs)
        app.router.add_post("/api/fleet/jobs", self.submit)
        app.router.add_get("/api/fleet/jobs/{job}", self.job)
        app.router.add_post("/api/fleet/jobs/{job}/cancel", self.cancel)
        app.on_response_prepare.append(plain_server_header)
        return app

    def error_answer(self, exc: Exception) -> web.Response | None:
        if isinstance(exc, KeyError):  # no such job or node
            return json_error(404, str(exc.args[0]) if exc.args else "not found")
        if isinstance(exc, ValueError):
            return json_error(400, str(exc) or "malformed request")
        if isinstance(exc, creds.CredentialsError):
            return json_error(503, str(exc))
        return None

    # --- reads ----------------------------------------------------------------------------------
    @staticmethod
    def _json(data: Any) -> web.Response:
        return web.Response(text=json.dumps(data), content_type="application/json")

    async def session(self, request: web.Request) -> web.StreamResponse:
        principal = request["principal"]
        return self._json({"csrf": principal.session.csrf if principal.session else None})

    async def overview(self, request: web.Request) -> web.StreamResponse:
        """What the page shows in one answer: nodes (with their alerts), every alert, the latest jobs."""
        def read() -> dict[str, Any]:
            now = self.clock()
            nodes = fleet.list_nodes(self.ledger, now, self.alert_settings)
            return {"t_s": now, "nodes": [n.model_dump(mode="json") for n in nodes],
                    "alerts": [a.model_dump(mode="json") for a in fleet.fleet_alerts(nodes)],
                    "jobs": [j.model_dump(mode="json") for j in fleet.list_jobs(self.ledger, limit=50)]}

        response = self._json(await asyncio.to_thread(read))
        response.enable_compression()  # a page on a phone reads it every few seconds: ~10x smaller gzipped
        return response

    async def nodes(self, request: web.Request) -> web.StreamResponse:
        nodes = await asyncio.to_thread(fleet.list_nodes, self.ledger, self.clock(), self.alert_settings)
        return self._json([n.model_dump(mode="json") for n in nodes])

    async def telemetry(self, request: web.Request) -> web.StreamResponse:
        try:
            hours = float(request.query.get("hours", CHART_HOURS))
        except ValueError:
            raise ValueError("hours: a number of hours, e.g. ?hours=24") from None
        hours = min(max(hours, 0.1), 24 * 31)
        node_id = request.match_info["node"]
        # the chart's hours end at the node's latest sample (a node offline since yesterday still has a day)
        latest = await asyncio.to_thread(self.ledger.read, lambda c: c.execute(
            "SELECT MAX(t_s) AS t FROM telemetry WHERE node_id = ?", (node_id,)).fetchone()["t"])
        end = latest if latest is not None else self.clock()
        points = await asyncio.to_thread(fleet.telemetry_series, self.ledger, node_id, end - hours * 3600)
        return self._json({"node_id": node_id, "from_s": end - hours * 3600, "to_s": end,
                           "points": [pt.model_dump() for pt in points]})

    async def jobs(self, request: web.Request) -> web.StreamResponse:
        jobs = await asyncio.to_thread(fleet.list_jobs, self.ledger, request.query.get("node") or None,
                                       request.query.get("state") or None)
        return self._json([j.model_dump(mode="json") for j in jobs])

    async def job(self, request: web.Request) -> web.StreamResponse:
        detail = await asyncio.to_thread(fleet.job_detail, self.ledger, request.match_info["job"], self.clock())
        return self._json(detail.model_dump(mode="json"))

    # --- actions (the CLI's: rows in the ledger that `hub serve` sends on) -------------------------
    async def cancel(self, request: web.Request) -> web.StreamResponse:
        from node.hub.server import cancel_job

        try:
            job_id, how = await asyncio.to_thread(cancel_job, self.ledger, request.match_info["job"])
        except ValueError as exc:  # already over
            raise HttpError(409, str(exc)) from None
        return self._json({"job_id": job_id, "result": how, "message": fleet.cancelled_sentence(job_id, how)})

    async def submit(self, request: web.Request) -> web.StreamResponse:
        """A multipart upload: ``file`` (G-code), ``node`` (empty: the best node), optional ``name``,
        ``material``, ``priority``; streamed to a temporary file beside the hub's files, then queued."""
        from node.hub.server import submit_job
        from node.sync.protocol import PrinterRequirements

        if not request.content_type.startswith("multipart/"):
            raise ValueError("send the file as a multipart form upload (field 'file')")
        fields: dict[str, str] = {}
        upload: Path | None = None
        filename = ""
        reader = await request.multipart()
        try:
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    continue
                if part.name == "file":
                    filename = Path(part.filename or "upload.gcode").name
                    upload = await self._receive(part)
                elif part.name:
                    fields[part.name] = (await part.read(decode=True)).decode("utf-8", "replace")[:200]
            if upload is None:
                raise ValueError("no file in the upload (field 'file')")
            node_id = fields.get("node", "").strip() or None
            if node_id is not None:
                known = await asyncio.to_thread(self.ledger.read, lambda c: c.execute(
                    "SELECT 1 FROM nodes WHERE node_id = ?", (node_id,)).fetchone())
                if known is None:
                    raise ValueError(f"no node {node_id!r} on this hub")
            try:
                priority = int(fields.get("priority") or 0)
            except ValueError:
                raise ValueError("priority: a whole number") from None
            requirements = PrinterRequirements(material=fields.get("material", "").strip() or None)
            name = fields.get("name", "").strip() or Path(filename).stem
            job_id = await asyncio.to_thread(
                submit_job, self.ledger, self.files_dir, upload, name=name, node_id=node_id,
                requirements=requirements, priority=priority)
        finally:
            if upload is not None:
                upload.unlink(missing_ok=True)
        self.counters["uploads"] += 1
        return self._json({"job_id": job_id, "message": fleet.submitted_sentence(job_id, name, node_id)})

    async def _receive(self, part: BodyPartReader) -> Path:
        """The file part, streamed to disk in 64 KiB pieces with the size limit."""
        self.files_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".upload-", suffix=".gcode", dir=self.files_dir)
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := await part.read_chunk(64 * 1024):
                    size += len(chunk)
                    if size > self.max_file_bytes:
                        raise HttpError(413, f"the file is larger than {self.max_file_bytes // (1024 * 1024)} MB")
                    await asyncio.to_thread(out.write, chunk)
            if size == 0:
                raise ValueError("the file is empty")
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        return Path(name)
