"""Who may use the web page and the HTTP API: one API key (slicers, scripts) and one page password.

Both live in one JSON file in the state directory, mode 0600 (``[web] credentials``), created at
install (``scripts/install-pi.sh`` runs ``printnode web init``) or, failing that, at the daemon's
first start.  The password is kept only as a salted scrypt hash.  The daemon re-reads the file when
it changes, so ``printnode web key --rotate`` and ``printnode web password`` act without a restart.

No aiohttp here: the CLI and ``doctor`` use this module too.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

#: scrypt cost: ~16 MiB and ~50 ms on a Pi 4, so a guessed password costs the guesser too
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MIN_PASSWORD_CHARS = 8


class CredentialsError(RuntimeError):
    """The credentials file is missing, unreadable or damaged (the message says which and the fix)."""


class PasswordHash(BaseModel):
    salt: str
    hash: str
    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P


class Credentials(BaseModel):
    """The file's content: the API key in clear (it must be shown to paste into a slicer), the
    password as a hash."""

    api_key: str = Field(min_length=32)
    password: PasswordHash | None = None

    def key_matches(self, offered: str | None) -> bool:
        return bool(offered) and hmac.compare_digest(offered.encode(), self.api_key.encode())  # type: ignore[union-attr]

    def password_matches(self, offered: str) -> bool:
        if self.password is None or not offered:
            return False
        stored = self.password
        digest = _scrypt(offered, base64.b64decode(stored.salt), stored.n, stored.r, stored.p)
        return hmac.compare_digest(digest, base64.b64decode(stored.hash))


def _scrypt(password: str, salt: bytes, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=32)


def hash_password(password: str) -> PasswordHash:
    if len(password) < MIN_PASSWORD_CHARS:
        raise CredentialsError(f"the password is too short: use at least {MIN_PASSWORD_CHARS} characters")
    salt = secrets.token_bytes(16)
    return PasswordHash(salt=base64.b64encode(salt).decode(), hash=base64.b64encode(_scrypt(password, salt)).decode())


def new_api_key() -> str:
    """32 hex characters, as OctoPrint's keys look (slicers' key fields expect that shape)."""
    return secrets.token_hex(16).upper()


def new_password() -> str:
    return secrets.token_urlsafe(12)


def load(path: Path) -> Credentials:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CredentialsError(f"{path} does not exist: create it with `printnode web init`") from None
    except OSError as exc:
        raise CredentialsError(f"{path} cannot be read ({exc.strerror or exc}): run as the node's user") from None
    try:
        return Credentials.model_validate_json(data)
    except ValidationError:
        raise CredentialsError(f"{path} is damaged (not the credentials JSON): recreate it with "
                               "`printnode web init --force`") from None


def save(path: Path, credentials: Credentials) -> None:
    """Write atomically, readable by the node's user only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(credentials.model_dump(mode="json"), indent=1))
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def create(path: Path, password: str | None = None) -> tuple[Credentials, str]:
    """A new key and password (random unless given); returns them with the password in clear,
    to be shown once."""
    password = password or new_password()
    credentials = Credentials(api_key=new_api_key(), password=hash_password(password))
    save(path, credentials)
    return credentials, password


def rotate_key(path: Path) -> Credentials:
    credentials = load(path)
    credentials = credentials.model_copy(update={"api_key": new_api_key()})
    save(path, credentials)
    return credentials


def set_password(path: Path, password: str) -> None:
    credentials = load(path)
    save(path, credentials.model_copy(update={"password": hash_password(password)}))


def problems(path: Path) -> list[str]:
    """What ``doctor`` reports: missing, unreadable, damaged, too open, no password."""
    try:
        credentials = load(path)
    except CredentialsError as exc:
        return [str(exc)]
    found = []
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        found.append(f"{path} is readable by others (mode {mode:o}): chmod 600 {path}")
    if credentials.password is None:
        found.append("no page password is set: `printnode web password`")
    return found
