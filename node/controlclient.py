"""The control socket's client: what ``printnode status`` and the other CLI commands use.

Kept apart from :mod:`node.control` (the server, its pydantic models and the job core behind
them) and free of pydantic, so a command that only asks the daemon something starts in a
fraction of the time and memory (issue #19: ``printnode status`` on a Pi Zero 2 W).  The daemon
validates every request and says what was wrong; this side only checks the reply's shape
(:class:`node.control.Reply`: ``{"ok": bool, "result": ..., "error": str | null}``), and
:func:`control_socket_path` finds the socket from node.toml and ``--set`` without validating
the whole config (the CLI falls back to :func:`node.config.load_config` when it cannot).
"""
from __future__ import annotations

import json
import socket
import time
import tomllib
from pathlib import Path
from typing import Any

#: how a "busy" answer starts on the wire (the client waits and asks again)
BUSY_PREFIX = b'{"ok":false,"result":null,"error":"busy:'


#: the defaults of [node] state_dir and [control] socket (node.node.NodeSection, node.control.ControlSection;
#: tests/test_cli.py checks they agree)
DEFAULT_STATE_DIR = "var"
DEFAULT_SOCKET = "control.sock"


def control_socket_path(config_path: Path | None, sets: list[str]) -> Path | None:
    """The control socket named by the config file and ``--set`` (``node.state_dir``,
    ``control.socket``), or None when that takes the full config to say (a file that does not
    read or parse, a value of the wrong type): the caller then loads it, which names the problem.

    The override file in the state directory cannot move the socket (``node.`` and ``control.``
    are never set at run time), so the file and ``--set`` decide."""
    try:
        data = tomllib.loads(config_path.read_bytes().decode("utf-8")) if config_path else {}
    except (OSError, ValueError):
        return None
    node, control = data.get("node", {}), data.get("control", {})
    if not isinstance(node, dict) or not isinstance(control, dict):
        return None
    state_dir, socket_name = node.get("state_dir", DEFAULT_STATE_DIR), control.get("socket", DEFAULT_SOCKET)
    for assignment in sets:
        key, equals, raw = assignment.partition("=")
        key = key.strip()
        if not equals:  # not key=value: the full config says so
            return None
        if key not in ("node.state_dir", "control.socket", "node", "control"):
            continue
        if key in ("node", "control"):  # a whole table from --set: rare, let the full config read it
            return None
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        if key == "node.state_dir":
            state_dir = value
        else:
            socket_name = value
    if not isinstance(state_dir, str) or not isinstance(socket_name, str):
        return None
    path = Path(socket_name)
    return path if path.is_absolute() else Path(state_dir) / path


class ControlError(RuntimeError):
    """The daemon refused the request (the message says why)."""


def _reply(data: bytes) -> dict[str, Any] | None:
    """The daemon's answer as a dict, or None when it is not one (cut short, not JSON)."""
    try:
        reply = json.loads(data)
    except ValueError:
        return None
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        return None
    if not isinstance(reply.get("error"), str | None):
        return None
    return reply


class ControlClient:
    """Blocking client for the CLI: one request per connection."""

    def __init__(self, socket_path: Path, timeout_s: float = 60.0) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s

    def request(self, payload: dict[str, Any], body_path: Path | None = None) -> Any:
        """Send one request (and the file, for ``queue_add``); return its result or raise
        :class:`ControlError` with a sentence: never a socket or JSON error."""
        if not isinstance(payload.get("cmd"), str):
            raise ControlError("malformed request: cmd: a command name is required")
        deadline = time.monotonic() + self.timeout_s
        try:
            while True:
                data = self._exchange(payload, body_path)
                if not data.startswith(BUSY_PREFIX) or time.monotonic() > deadline:
                    break
                time.sleep(0.05)  # every slot taken: a slot frees within read_timeout_s
        except TimeoutError:
            raise ControlError(f"the daemon did not answer within {self.timeout_s:g} s (it may be busy or stuck; "
                               "`printnode doctor` checks it)") from None
        except OSError as exc:
            raise ControlError(f"cannot talk to the daemon on {self.socket_path}: {exc.strerror or exc}") from None
        reply = _reply(data)
        if reply is None:
            raise ControlError("the daemon closed the connection without an answer "
                               f"({len(data)} bytes received; see its log)")
        if not reply["ok"]:
            raise ControlError(reply.get("error") or "request refused")
        return reply.get("result")

    def _exchange(self, payload: dict[str, Any], body_path: Path | None) -> bytes:
        sock = self._connect()
        try:
            try:
                sock.sendall(json.dumps(payload).encode() + b"\n")
                if body_path is not None:
                    with body_path.open("rb") as handle:
                        sock.sendfile(handle)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the daemon refused mid-upload (store full, too big): its answer is waiting
            data = b""
            while not data.endswith(b"\n"):
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                data += chunk
            return data
        finally:
            sock.close()

    def _connect(self) -> socket.socket:
        """Connect, waiting out a full listen queue (EAGAIN) until the timeout."""
        deadline = time.monotonic() + self.timeout_s
        delay_s = 0.01
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout_s)
            try:
                sock.connect(str(self.socket_path))
                return sock
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                raise ControlError(f"no printnode daemon is listening on {self.socket_path} "
                                   "(start it with `printnode run`)") from None
            except BlockingIOError:
                sock.close()
                if time.monotonic() + delay_s > deadline:
                    raise TimeoutError from None
                time.sleep(delay_s)
                delay_s = min(delay_s * 2, 0.5)
            except BaseException:
                sock.close()
                raise
