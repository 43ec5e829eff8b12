"""What the web component's route modules share: the session cookie, who is asking, errors as answers."""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources

from aiohttp import web

from node.web.sessions import Session

SESSION_COOKIE = "printnode_session"
CSRF_HEADER = "X-CSRF-Token"
STATIC = resources.files("node.web") / "static"


class HttpError(Exception):
    """An answer that is not 2xx, with a sentence for the person or the slicer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Principal:
    """Who is asking: the API key's holder, or a logged-in page (with its session)."""

    kind: str  # "key" | "session"
    session: Session | None = None


@dataclass
class LoginTries:
    times: list[float] = field(default_factory=list)


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def read_static(name: str) -> bytes:
    return (STATIC / name).read_bytes()
