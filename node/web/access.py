"""The access rules of every printnode web page (the node's and the hub's fleet page): who may ask.

API clients send the API key (``X-Api-Key``, or ``Authorization: Bearer``); a page logs in with the
password and gets a session cookie (HttpOnly, SameSite=Strict) plus a CSRF token that every
state-changing request from the page must echo in ``X-CSRF-Token``.  Nothing is anonymous but the
login page and its static files.  A request without valid credentials gets 401 (none offered) or 403
(wrong ones) as JSON, never a page; a browser asking for a page is sent to the login.

``WebAccess`` is a mixin: the server using it calls ``init_access(credentials_path)`` and has
``config.session_hours`` and a ``counters`` dict (node/web/server.py WebServer, node/web/fleet.py
FleetWebServer).  Moved here from node/web/server.py, which re-exports the names.  Its
``errors_middleware`` turns every failure into a JSON sentence (never a traceback, never aiohttp's HTML
page); each server names what its own errors mean in ``error_answer``.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from node.web import credentials as creds
from node.web.common import CSRF_HEADER, SESSION_COOKIE, HttpError, LoginTries, Principal, json_error
from node.web.sessions import Session, SessionStore, password_fingerprint, sessions_path

SERVER_HEADER = "printnode"  # no library, no version
LOGIN_TRIES = 5  # failed logins from one address within LOGIN_WINDOW_S before it must wait
LOGIN_WINDOW_S = 300.0


class WebAccess:
    """Credentials (re-read when the file changes), sessions (node/web/sessions.py: hashed, in a file, they
    survive a restart), login throttling, the auth middleware."""

    credentials_path: Path
    config: Any  # has session_hours
    counters: dict[str, int]
    #: how the sentences of a refusal name the holder of the credentials and the command that shows the key
    holder_words = "the node"
    key_command = "`printnode web key` on the node"

    def init_access(self, credentials_path: Path) -> None:
        self.credentials_path = credentials_path
        self._credentials: creds.Credentials | None = None
        self._credentials_mtime = 0.0
        #: page logins, kept hashed in a file beside the credentials: a restart does not log the page out
        self.sessions = SessionStore(sessions_path(credentials_path))
        self._login_tries: dict[str, LoginTries] = {}
        self._once_tokens: dict[str, float] = {}

    # --- credentials and sessions -------------------------------------------------------------
    def credentials(self) -> creds.Credentials:
        """The file's content, re-read when it changed (a rotated key acts at once)."""
        try:
            mtime = self.credentials_path.stat().st_mtime_ns
        except OSError as exc:
            raise creds.CredentialsError(f"{self.credentials_path}: {exc.strerror or exc}") from None
        if self._credentials is None or mtime != self._credentials_mtime:
            self._credentials = creds.load(self.credentials_path)
            self._credentials_mtime = mtime
        return self._credentials

    def once_token(self) -> str:
        token = secrets.token_urlsafe(24)
        self._once_tokens[token] = time.monotonic() + 3600.0
        return token

    def _password_fingerprint(self) -> str:
        password = self.credentials().password
        return password_fingerprint(password.hash if password else None)

    async def new_session(self) -> Session:
        session = self.sessions.create(self.config.session_hours, self._password_fingerprint())
        await asyncio.to_thread(self.sessions.save)
        return session

    async def end_session(self, session: Session) -> None:
        if self.sessions.revoke(session.token):
            await asyncio.to_thread(self.sessions.save)

    def session_of(self, request: web.Request) -> Session | None:
        """The cookie's live session: unknown, expired, or logged in with an older password is None."""
        return self.session_from_token(request.cookies.get(SESSION_COOKIE))

    def session_from_token(self, token: str | None) -> Session | None:
        try:
            return self.sessions.lookup(token, self._password_fingerprint())
        except creds.CredentialsError:
            return None

    def authenticate(self, request: web.Request) -> Principal:
        """The API key or a session, or HttpError 401 (nothing offered) / 403 (wrong credentials)."""
        offered = request.headers.get("X-Api-Key")
        authorization = request.headers.get("Authorization", "")
        if offered is None and authorization.lower().startswith("bearer "):
            offered = authorization[7:].strip()
        if offered is not None:
            try:
                good = self.credentials().key_matches(offered)
            except creds.CredentialsError as exc:
                raise HttpError(503, f"{self.holder_words}'s credentials cannot be read: {exc}") from None
            if not good:
                raise HttpError(403, f"invalid API key ({self.key_command} shows the right one)")
            return Principal("key")
        session = self.session_of(request)
        if session is not None:
            if request.method not in ("GET", "HEAD", "OPTIONS") and not secrets.compare_digest(
                    request.headers.get(CSRF_HEADER, ""), session.csrf):
                raise HttpError(403, f"this request did not come from {self.holder_words}'s own page "
                                     "(missing CSRF token): reload the page")
            return Principal("session", session)
        if request.cookies.get(SESSION_COOKIE):
            raise HttpError(401, "your login has expired: log in again")
        raise HttpError(401, "log in on the page, or send the API key in the X-Api-Key header")

    def login_throttled(self, remote: str) -> float:
        """Seconds this address must wait before its next try (0: it may try)."""
        tries = self._login_tries.setdefault(remote, LoginTries())
        now = time.monotonic()
        tries.times = [t for t in tries.times if now - t < LOGIN_WINDOW_S]
        if len(tries.times) < LOGIN_TRIES:
            return 0.0
        return LOGIN_WINDOW_S - (now - tries.times[0])

    def login_failed(self, remote: str) -> None:
        self._login_tries.setdefault(remote, LoginTries()).times.append(time.monotonic())
        if len(self._login_tries) > 1000:  # bounded memory under a scan
            self._login_tries.clear()

    @web.middleware
    async def auth_middleware(self, request: web.Request,
                              handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        self.counters["requests"] += 1
        if request.path == "/login" or request.path.startswith("/static/") or request.path == "/favicon.ico":
            return await handler(request)
        try:
            request["principal"] = self.authenticate(request)
        except HttpError:
            self.counters["denied"] += 1
            if request.path.startswith("/api/") or request.method != "GET" or "X-Api-Key" in request.headers:
                raise
            raise web.HTTPSeeOther("/login") from None  # a person's browser: to the login page
        return await handler(request)

    # --- errors as answers ------------------------------------------------------------------------
    def refusal_text(self, request: web.Request, exc: web.HTTPException) -> str:
        """aiohttp's own refusals (404, 405, 413 ...) in a sentence."""
        return {404: f"no such page or API route: {request.path}",
                405: f"{request.method} is not allowed on {request.path}"}.get(exc.status, exc.reason)

    def error_answer(self, exc: Exception) -> web.Response | None:
        """The answer to an error this server knows (a missing job: 404 ...); None: an internal error."""
        return None

    @web.middleware
    async def errors_middleware(self, request: web.Request,
                                handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                                ) -> web.StreamResponse:
        try:
            response = await handler(request)
        except HttpError as exc:
            response = json_error(exc.status, exc.message)
        except (web.HTTPRedirection, asyncio.CancelledError, ConnectionError):
            raise
        except web.HTTPException as exc:  # a sentence, not aiohttp's HTML page
            response = json_error(exc.status, self.refusal_text(request, exc))
        except Exception as exc:
            answer = self.error_answer(exc)
            if answer is None:
                self.counters["errors"] += 1
                logging.getLogger(type(self).__module__).exception("%s: %s %s failed", self.holder_words,
                                                                   request.method, request.path)
                answer = json_error(500, f"internal error ({type(exc).__name__}); {self.holder_words} keeps "
                                         "running, details are in its log")
            response = answer
        secure_headers(request, response)
        return response


def secure_headers(request: web.Request, response: web.StreamResponse) -> None:
    """The headers every answer of a printnode page carries (no sniffing, no framing, scripts of its own only)."""
    if not response.prepared:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        # not "no-referrer": with it a browser sends "Origin: null" with the login form
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Content-Security-Policy",
                                    "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                                    "form-action 'self'; base-uri 'none'")
        if request.path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")


async def plain_server_header(request: web.Request, response: web.StreamResponse) -> None:
    """aiohttp names itself and its version in ``Server`` (a gift to a scanner): name printnode only."""
    response.headers["Server"] = SERVER_HEADER
