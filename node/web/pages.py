"""The page's own routes: the app (``/``), the login, the logout, the static files.

The page is one HTML file with its script and style, shipped in the package (node/web/static/):
no CDN, works offline on a phone on the workshop's Wi-Fi.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from string import Template
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from aiohttp import web

from node.web.common import SESSION_COOKIE, read_static

if TYPE_CHECKING:
    from node.web.fleet import FleetWebServer
    from node.web.server import WebServer

STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".html": "text/html"}
STATIC_FILES = ("app.js", "app.css", "login.js", "icon.svg")


@dataclass(frozen=True)
class LoginPage:
    """What the one login page (static/login.html) says: whose page it is and how its password is set."""

    product: str
    password_hint: str

    def html(self) -> bytes:
        return Template(read_static("login.html").decode()).substitute(
            product=self.product, password_hint=self.password_hint).encode()


NODE_LOGIN = LoginPage("Solar Print Node", "The password was set when the node was installed; on the node, "
                                           "<code>printnode web password</code> sets a new one.")


def add_routes(app: web.Application, server: WebServer | FleetWebServer, index_page: str = "index.html",
               login: LoginPage = NODE_LOGIN, static_files: tuple[str, ...] = STATIC_FILES) -> None:
    """The page's routes; the hub's fleet page (node/web/fleet.py) passes its own page, login and files."""
    login_html = login.html()

    async def index(request: web.Request) -> web.StreamResponse:
        return web.Response(body=read_static(index_page), content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store"})

    async def login_page(request: web.Request) -> web.StreamResponse:
        once = request.query.get("once")
        if once is not None:  # a one-time login link (make run prints one)
            expires = server._once_tokens.pop(once, None)
            if expires is not None and expires > time.monotonic():
                return await _logged_in(server, request)
            raise web.HTTPSeeOther("/login?error=link")
        if server.session_of(request) is not None:
            raise web.HTTPSeeOther("/")
        return web.Response(body=login_html, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store"})

    async def log_in(request: web.Request) -> web.StreamResponse:
        remote = request.remote or "?"
        if not _same_origin(request):  # a login posted from another site's page
            raise web.HTTPSeeOther("/login?error=origin")
        wait_s = server.login_throttled(remote)
        if wait_s > 0:
            raise web.HTTPSeeOther(f"/login?error=wait&s={wait_s:.0f}")
        form = await request.post()
        password = str(form.get("password", ""))
        if not server.credentials().password_matches(password):
            server.login_failed(remote)
            raise web.HTTPSeeOther("/login?error=wrong")
        return await _logged_in(server, request)

    async def logout(request: web.Request) -> web.StreamResponse:
        principal = request["principal"]
        if principal.session is not None:
            await server.end_session(principal.session)
        response = web.HTTPSeeOther("/login")
        response.del_cookie(SESSION_COOKIE, path="/")
        raise response

    async def static(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in static_files:
            raise web.HTTPNotFound()
        suffix = name[name.rfind("."):]
        return web.Response(body=read_static(name), content_type=STATIC_TYPES[suffix], charset="utf-8",
                            headers={"Cache-Control": "max-age=300"})

    async def favicon(request: web.Request) -> web.StreamResponse:
        return web.Response(body=read_static("icon.svg"), content_type="image/svg+xml")

    app.router.add_get("/", index)
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", log_in)
    app.router.add_post("/logout", logout)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/favicon.ico", favicon)


def _same_origin(request: web.Request) -> bool:
    """A browser names the page a form came from (Origin, else Referer); it must be this host."""
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if not origin or origin == "null":
        return origin is None  # no header at all: not a browser's cross-site form (those send Origin)
    return urlsplit(origin).netloc == request.host


async def _logged_in(server: WebServer | FleetWebServer, request: web.Request) -> web.StreamResponse:
    session = await server.new_session()
    response = web.HTTPSeeOther("/")
    response.set_cookie(SESSION_COOKIE, session.token, httponly=True, samesite="Strict", path="/",
                        secure=request.secure, max_age=int(server.config.session_hours * 3600))
    raise response
