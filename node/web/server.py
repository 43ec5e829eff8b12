"""The WebServer component: the node's page and HTTP API on ``[web] bind:port``, in the daemon's loop.

Built on aiohttp's server (a maintained asyncio HTTP stack: parsing, multipart, keep-alive, TLS and
streaming responses are its job, not ours).  It is an outer door like the control socket: every
command goes through the control API's one dispatch (``ControlServer.execute``), every file through
``store_upload`` and ``JobRunner.queue_file`` (the gate), so the page, a slicer and the CLI mean the
same thing.  It never touches the printer or the store directly and does nothing on the print path.

Access (node/web/access.py, shared with the hub's fleet page; keys in node/web/credentials.py): API
clients send the API key (``X-Api-Key``, or ``Authorization: Bearer``); the page logs in with the
password and gets a session cookie (HttpOnly, SameSite=Strict) plus a CSRF token that every
state-changing request from the page must echo in ``X-CSRF-Token``.
Nothing is anonymous but the login page and its static files.  A request without valid credentials
gets 401 (none offered) or 403 (wrong ones) as JSON, never a page.  Errors are sentences; a bug is
logged with its traceback and answered with a sentence.
"""
from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from node.jobs import FINAL_STATES, Job, Jobs, JobState, TransitionRefused, error_text
from node.node import Component, Node
from node.web import api, pages
from node.web import credentials as creds
from node.web.access import LOGIN_TRIES, LOGIN_WINDOW_S, SERVER_HEADER, WebAccess, plain_server_header, secure_headers  # noqa: F401 (re-exported)
from node.web.common import Principal, json_error
from node.web.config import WebSection
from node.web.octoprint import OctoPrintApi
from node.web.view import PageState, page_state, zone

if TYPE_CHECKING:
    from node.control import ControlServer
    from node.runner import JobRunner

log = logging.getLogger(__name__)

MAX_SMALL_BODY = 64 * 1024  # a login form or a JSON command; uploads are streamed, not read whole
UPDATE_MIN_INTERVAL_S = 1.0  # the page gets at most one state a second ...
UPDATE_MAX_INTERVAL_S = 5.0  # ... and at least one every five (the clock moves)
KEEPALIVE_S = 15.0
#: events after which the page's state is rebuilt
FEED_EVENTS = ("job_state_changed", "job_progress", "printer_state", "temperatures", "plate_cleared",
               "queue_changed", "telemetry_sample", "plan_updated", "battery_level_changed", "telemetry_link",
               "printer_emergency", "clock_sync")


class WebServer(WebAccess, Component):
    """Serves ``[web]``; takes the control API (its dispatch), the runner (its queue path), the jobs
    (reads) and the planner's snapshot."""

    name = "web"
    section = "web"

    def __init__(self, node: Node, config: WebSection, *, control: ControlServer, runner: JobRunner, jobs: Jobs,
                 credentials_path: Path, files_dir: Path, max_file_bytes: int, reserve_bytes: int,
                 plan_snapshot: Callable[[], dict[str, Any] | None], timezone: str, printer_profile_name: str,
                 announce_login_link: bool = False) -> None:
        super().__init__(node, config)
        self.config: WebSection = config
        self.control = control
        self.runner = runner
        self.jobs = jobs
        self.credentials_path = credentials_path
        self.files_dir = files_dir
        self.max_file_bytes = min(max_file_bytes, int((config.max_upload_mb or 1e12) * 1024 * 1024))
        self.reserve_bytes = reserve_bytes
        self.plan_snapshot = plan_snapshot
        self.tz = zone(timezone)
        self.printer_profile_name = printer_profile_name
        #: in simulation, log a one-time login link with the URL (make run: the printed URL opens the page)
        self.announce_login_link = announce_login_link
        self.url: str | None = None
        self.problem: str | None = None
        self.init_access(credentials_path)
        self._runner: web.AppRunner | None = None
        self._dirty = asyncio.Event()
        self._subscribers = 0
        self._has_subscribers = asyncio.Event()
        self._state_bytes: bytes = b""
        self._state_version = 0
        self._state_changed = asyncio.Condition()
        self._history: list[Job] | None = None
        self._alerts: list[str] = []
        self._plan_seen: asyncio.Event = asyncio.Event()
        self._closing = False
        self.counters = {"requests": 0, "denied": 0, "uploads": 0, "errors": 0}
        self.octoprint = OctoPrintApi(self)  # the compat routes and the library of uploads

    # --- lifetime ---------------------------------------------------------------------------
    async def start(self) -> None:
        if not self.config.enabled:
            return
        created_password = None
        try:
            if not self.credentials_path.exists():
                _, created_password = creds.create(self.credentials_path)
                log.warning("web: created %s (API key and page password); `printnode web key` shows the key, "
                            "`printnode web password` sets the password", self.credentials_path)
            self.credentials()
            await asyncio.to_thread(self.sessions.load)
        except (creds.CredentialsError, OSError) as exc:  # the node runs on; status and doctor say why
            detail = f"{self.credentials_path}: {exc.strerror or exc}" if isinstance(exc, OSError) else str(exc)
            self.problem = f"web page not served: {detail}"
            self.node.problems.append(self.problem)
            log.error("%s", self.problem)
            return
        for event in FEED_EVENTS:
            self.node.register_event_handler(event, self._on_event)
        self.node.register_event_handler("printer_emergency", self._on_emergency)
        app = self.build_app()
        # a live page keeps its request open: at stop the node waits for it at most 2 s
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        try:
            site = web.TCPSite(self._runner, self.config.bind, self.config.port, ssl_context=self._ssl_context(),
                               backlog=128)
            await site.start()
        except (OSError, ssl.SSLError, ValueError) as exc:  # the port is taken, a bad address or certificate
            self.problem = (f"web page not served: cannot listen on {self.config.bind}:{self.config.port} "
                            f"({getattr(exc, 'strerror', None) or exc}); change [web] port or bind")
            self.node.problems.append(self.problem)
            log.error("%s", self.problem)
            await self._runner.cleanup()
            self._runner = None
            return
        port = self._bound_port(site)
        shown_host = "127.0.0.1" if self.config.bind in ("0.0.0.0", "::") else self.config.bind
        self.url = f"{self.config.scheme}://{shown_host}:{port}/"
        self.node.spawn(self._feed_loop(), "web-feed")
        message = f"web page: {self.url}"
        if self.config.bind in ("0.0.0.0", "::"):
            message += f" (and on this machine's LAN address, port {port})"
        if created_password:
            message += f"; page password (shown once): {created_password}"
        if self.announce_login_link:
            message += f"; login link for this run: {self.url}login?once={self.once_token()}"
        log.warning("%s", message)

    async def stop(self) -> None:
        started = time.monotonic()
        self._closing = True
        async with self._state_changed:  # live pages end their streams now
            self._state_changed.notify_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        log.debug("web: stopped in %.1f s", time.monotonic() - started)

    def status(self) -> dict[str, Any]:
        return {"url": self.url, "problem": self.problem, "sessions": len(self.sessions),
                "sessions_problem": self.sessions.problem,
                "live_pages": self._subscribers, **self.counters}

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self.config.tls_cert is None or self.config.tls_key is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        return context

    @staticmethod
    def _bound_port(site: web.TCPSite) -> int:
        server = site._server  # aiohttp keeps the asyncio server here; port 0 means "ask it"
        sockets = getattr(server, "sockets", None) or []
        return sockets[0].getsockname()[1] if sockets else site._port

    # --- the app ----------------------------------------------------------------------------
    def build_app(self) -> web.Application:
        # bodies read whole (a login, a JSON command) are small; uploads stream to disk (store_upload)
        app = web.Application(middlewares=[self.errors_middleware, self.auth_middleware],
                              client_max_size=MAX_SMALL_BODY)
        pages.add_routes(app, self)
        api.add_routes(app, self)
        self.octoprint.add_routes(app)
        app.on_response_prepare.append(plain_server_header)
        return app

    def refusal_text(self, request: web.Request, exc: web.HTTPException) -> str:
        if exc.status == 413:
            return (f"the request body is too large (a command is at most {MAX_SMALL_BODY // 1024} KB; "
                    "files go as multipart uploads)")
        return super().refusal_text(request, exc)

    def error_answer(self, exc: Exception) -> web.Response | None:
        from node.control import ControlError
        from node.store import StoreFull

        if isinstance(exc, KeyError):  # no such job or uploaded file
            return json_error(404, error_text(exc))
        if isinstance(exc, TransitionRefused):
            return json_error(409, error_text(exc))
        if isinstance(exc, ValueError):  # json.JSONDecodeError is one
            return json_error(400, error_text(exc) or "malformed request")
        if isinstance(exc, ControlError):
            return json_error(400, str(exc))
        if isinstance(exc, StoreFull):
            return json_error(507, f"store full, request not saved: {exc}")
        if isinstance(exc, OSError):
            from node.store.space import disk_error
            return json_error(507, disk_error(exc))
        return None

    # --- what the page shows ------------------------------------------------------------------
    async def _on_event(self, payload: Any) -> None:
        if getattr(payload, "to_state", None) in {s.value for s in FINAL_STATES} | {"failed"}:
            self._history = None
        if type(payload).__name__ == "PlanSummary":
            self._plan_seen.set()
        self._dirty.set()

    def mark_dirty(self) -> None:
        """Something the page shows changed outside the events (the library of uploads)."""
        self._dirty.set()

    async def _on_emergency(self, payload: Any) -> None:
        stamp = time.strftime("%H:%M", time.localtime())
        self._alerts = (self._alerts + [f"thermal emergency at {stamp}: {payload.reason} (printer stopped)"])[-5:]

    async def page_state(self) -> PageState:
        report = await self.control.status_report()
        if self._history is None:
            finished = await self.jobs.list(FINAL_STATES | {JobState.FAILED}, limit=100000)
            finished.sort(key=lambda j: j.finished_s or j.updated_s, reverse=True)
            self._history = finished[:10]
        return page_state(report, self.plan_snapshot(), self._history, tz=self.tz, alerts_seen=self._alerts,
                          library=[f.name for f in self.octoprint.library.files])

    async def _feed_loop(self) -> None:
        """Build the page's state once per change (at most once a second), only while a page listens."""
        while True:
            await self._has_subscribers.wait()
            try:
                async with asyncio.timeout(UPDATE_MAX_INTERVAL_S):
                    await self._dirty.wait()
            except TimeoutError:
                pass
            self._dirty.clear()
            try:
                state = await self.page_state()
                data = state.model_dump_json().encode()
            except Exception:  # a bad snapshot must not end the feed
                log.exception("web: building the page state failed")
                data = json.dumps({"error": "the node's state could not be read; see its log"}).encode()
            if data != self._state_bytes:
                self._state_bytes = data
                self._state_version += 1
                async with self._state_changed:
                    self._state_changed.notify_all()
            await asyncio.sleep(UPDATE_MIN_INTERVAL_S)

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: ``state`` (a PageState) on every change; a comment every 15 s keeps
        proxies and phones from closing the stream."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                               "X-Accel-Buffering": "no"})
        await response.prepare(request)
        principal: Principal = request["principal"]
        self._subscribers += 1
        self._has_subscribers.set()
        self._dirty.set()
        seen = -1
        try:
            if self._state_bytes:
                await response.write(b"event: state\ndata: " + self._state_bytes + b"\n\n")
                seen = self._state_version
            while not self._closing:
                if principal.session is not None and self.session_from_token(principal.session.token) is None:
                    await response.write(b"event: logout\ndata: {}\n\n")
                    break
                if self._state_version == seen or not self._state_bytes:
                    changed = True
                    async with self._state_changed:
                        try:
                            async with asyncio.timeout(KEEPALIVE_S):
                                await self._state_changed.wait()
                        except TimeoutError:
                            changed = False
                    if not changed:
                        await response.write(b": keep-alive\n\n")
                    continue
                seen = self._state_version
                await response.write(b"event: state\ndata: " + self._state_bytes + b"\n\n")
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._subscribers -= 1
            if self._subscribers == 0:
                self._has_subscribers.clear()
        return response

    async def plan_news_for(self, job_id: str, timeout_s: float = 5.0) -> str:
        """When the plan expects ``job_id`` to start, or why it waits, in words; waits at most
        ``timeout_s`` for a plan that places it (the reply to an upload says when it prints; a fresh
        job first waits for its analysis, then the planner re-plans with its energy profile)."""
        from node.web.view import start_words

        deadline = time.monotonic() + timeout_s
        waits: str | None = None
        while True:
            snapshot = self.plan_snapshot()
            summary = (snapshot or {}).get("summary") or {}
            for planned in summary.get("planned", []):
                if planned["job_id"] == job_id:
                    return (f"queued to print when the energy plan allows: expected to start "
                            f"{start_words(planned['start_s'], self.tz, self.node.clock.time())} ({planned['reason']})")
            waits = next((w["reason"] for w in summary.get("waiting", []) if w["job_id"] == job_id), waits)
            left = deadline - time.monotonic()
            if left <= 0:
                if waits is not None:
                    return f"queued; the energy plan cannot place it yet: {waits}"
                why = (self.runner.status().get("waiting") or {}).get(job_id)
                return "queued to print when the energy plan allows" + (
                    f"; now: {why}" if why else " (the plan is being updated; the page says when)")
            self._plan_seen.clear()
            try:
                async with asyncio.timeout(left):
                    await self._plan_seen.wait()
            except TimeoutError:
                pass
