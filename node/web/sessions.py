"""Page logins that survive a restart: session tokens kept hashed, with their expiry, in a small
0600 file beside the credentials (``web-credentials.sessions.json``).

Only a SHA-256 of each token is written, so the file cannot be replayed as cookies.  The CSRF token
is derived from the session token (an HMAC), so it is never stored either.  Each session remembers
a fingerprint of the password hash it logged in with: a new password (``printnode web password``,
whether the daemon runs or not) ends every earlier login; the CLI also clears the file.  Expiry is
wall-clock time (``time.time()``): a restart or a reboot does not extend or cut a login.

No aiohttp here: the CLI uses it, and so can any other page served with node/web's stack.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MAX_SESSIONS = 64  # the oldest login goes first beyond this


@dataclass
class Session:
    token: str  # as the cookie carries it (in memory for one request only; the file has its hash)
    csrf: str
    expires_s: float  # wall clock, time.time()


def sessions_path(credentials_path: Path) -> Path:
    return credentials_path.with_name(credentials_path.stem + ".sessions.json")


def password_fingerprint(password_hash: str | None) -> str:
    """What a session remembers of the password it logged in with (never the hash itself)."""
    return hashlib.sha256(b"printnode-session:" + (password_hash or "").encode()).hexdigest()[:32]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_of(token: str) -> str:
    return hmac.new(token.encode(), b"printnode-csrf", hashlib.sha256).hexdigest()[:32]


class SessionStore:
    """The logins: a dict of token digest -> (expiry, password fingerprint), saved on every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[str, tuple[float, str]] = {}
        self.problem: str | None = None  # a file that could not be read or written (logins then live in memory)

    def __len__(self) -> int:
        return len(self._entries)

    def load(self) -> None:
        """Read the file (missing: no logins; damaged: set aside as no logins, and said)."""
        try:
            data = json.loads(self.path.read_bytes())
            now = time.time()
            self._entries = {digest: (float(expires), str(fingerprint))
                             for digest, (expires, fingerprint) in data.items() if float(expires) > now}
        except FileNotFoundError:
            self._entries = {}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            self._entries = {}
            detail = getattr(exc, "strerror", None) or exc
            self.problem = f"{self.path}: unreadable ({detail}); every page logs in again"
            log.warning("web: %s", self.problem)

    def save(self) -> None:
        """Write atomically, readable by the node's user only; a failure is logged, not raised (a login
        that does not survive a restart is no reason to refuse it)."""
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump({d: list(entry) for d, entry in self._entries.items()}, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
            self.problem = None
        except OSError as exc:
            self.problem = f"{self.path}: cannot be written ({exc.strerror or exc}); logins end at a restart"
            log.warning("web: %s", self.problem)

    def create(self, hours: float, fingerprint: str) -> Session:
        now = time.time()
        # expired logins and those of an older password go when a new one comes
        self._entries = {d: e for d, e in self._entries.items() if e[0] > now and e[1] == fingerprint}
        while len(self._entries) >= MAX_SESSIONS:
            del self._entries[min(self._entries, key=lambda d: self._entries[d][0])]
        token = secrets.token_urlsafe(32)
        expires_s = now + hours * 3600.0
        self._entries[_digest(token)] = (expires_s, fingerprint)
        return Session(token, csrf_of(token), expires_s)

    def lookup(self, token: str | None, fingerprint: str) -> Session | None:
        """The live session of a cookie's token, or None (unknown, expired, or from an older password)."""
        if not token:
            return None
        entry = self._entries.get(_digest(token))
        if entry is None or entry[0] <= time.time() or not hmac.compare_digest(entry[1], fingerprint):
            return None
        return Session(token, csrf_of(token), entry[0])

    def revoke(self, token: str) -> bool:
        return self._entries.pop(_digest(token), None) is not None


def clear(credentials_path: Path) -> None:
    """End every login (the CLI, after a new password or new credentials)."""
    sessions_path(credentials_path).unlink(missing_ok=True)
