"""A real daemon serving its page on a free loopback port, and real HTTP clients: the stdlib's urllib
for JSON, curl (libcurl, what PrusaSlicer uploads with) for multipart."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import Daemon, start_daemon, wait_for

PASSWORD = "correct horse battery"  # set the way the installer does: printnode web init --password-stdin
CURL = shutil.which("curl") or "curl"
#: PrusaSlicer's OctoPrint host: libcurl with its own User-Agent and the key in X-Api-Key
PRUSASLICER_AGENT = "PrusaSlicer/2.8.1"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebNode:
    daemon: Daemon
    url: str  # http://127.0.0.1:PORT/

    _key: str | None = None

    @property
    def key(self) -> str:
        """The node's API key as ``printnode web key`` shows it (read again after ``forget_key``)."""
        if self._key is None:
            self._key = self.daemon.cli("web", "key").stdout.strip()
        return self._key

    def forget_key(self) -> None:
        self._key = None

    def call(self, method: str, path: str, body: Any = None, key: str | None = "default",
             headers: dict[str, str] | None = None) -> Answer:
        """One request; ``key="default"`` sends the node's key, None sends none."""
        sent = dict(headers or {})
        if key == "default":
            key = self.key
        if key is not None:
            sent["X-Api-Key"] = key
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url.rstrip("/") + path, data=data, method=method, headers=sent)
        opener = urllib.request.build_opener(NoRedirect)
        try:
            with opener.open(request, timeout=30) as response:
                return Answer(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as error:
            return Answer(error.code, dict(error.headers), error.read())

    def curl_upload(self, path: Path, fields: dict[str, str], key: str | None = "default",
                    url_path: str = "/api/files/local", name: str | None = None) -> Answer:
        """What PrusaSlicer's OctoPrint host sends: multipart fields, then the file, X-Api-Key."""
        if key == "default":
            key = self.key
        args = [CURL, "-sS", "-A", PRUSASLICER_AGENT, "-o", "-", "-w", "\n%{http_code}", "-X", "POST"]
        if key is not None:
            args += ["-H", f"X-Api-Key: {key}"]
        for field, value in fields.items():
            args += ["--form-string", f"{field}={value}"]
        args += ["-F", f"file=@{path};filename={name or path.name}", self.url.rstrip("/") + url_path]
        result = subprocess.run(args, capture_output=True, timeout=60)
        assert result.returncode == 0, result.stderr.decode()
        body, _, status = result.stdout.rpartition(b"\n")
        return Answer(int(status), {}, body)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:  # a 303 is an answer to look at
        return None


def init_credentials(state_dir: Path) -> None:
    """What scripts/install-pi.sh does before the first start: a key and a known password."""
    state_dir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([sys.executable, "-m", "node", "web", "init", "--password-stdin", "--state-dir",
                             str(state_dir)], input=PASSWORD + "\n", capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def start_web_node(state_dir: Path, *sets: str) -> WebNode:
    init_credentials(state_dir)
    daemon = start_daemon(state_dir, *sets)
    url = wait_for(lambda: daemon.request({"cmd": "status"})["components"]["web"]["url"], what="the web page's url")
    return WebNode(daemon, url)


def moves_file(path: Path, moves: int) -> Path:
    """G-code without heating: ``moves`` 10 mm moves (1 s of node time each)."""
    lines = ["G28", "G90", "G1 X0 Y0 F600"] + [f"G1 X{10 * ((i + 1) % 2)} Y{i * 0.01:.2f}" for i in range(moves)]
    path.write_text("\n".join(lines) + "\n")
    return path


#: a PyPI OctoPrint client that sends what a person's script sends: version and key checks, a multipart
#: upload, ``select``, then ``POST /api/job start`` (octorest drops the select/print fields of an upload)
OCTOPRINT_CLI = "octoprint-cli==3.3.2.post1"


def octoprint_cli_executable() -> Path:
    """octoprint-cli in its own venv under the tests' cache (``PRINTNODE_TEST_CACHE``), built once per
    machine the way tests/printer/test_octoprint_conformance.py builds OctoPrint's (a lock serialises it)."""
    import fcntl

    from tests.printer.test_octoprint_conformance import _cache_dir

    cache = _cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    venv = cache / OCTOPRINT_CLI.replace("==", "-")
    tool = venv / "bin" / "octoprint-cli"
    with open(cache / "octoprint-cli.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        built = venv / ".printnode-built"  # written after a complete install: no probe process per run
        if tool.exists() and built.exists():
            return tool
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
        build = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                                "--disable-pip-version-check", OCTOPRINT_CLI], capture_output=True, text=True,
                               timeout=600)
        probe = subprocess.run([str(venv / "bin" / "python"), "-c", "import octoprint_cli.api"], capture_output=True,
                               timeout=120)
        if build.returncode != 0 or probe.returncode != 0 or not tool.exists():
            raise RuntimeError(f"could not build {OCTOPRINT_CLI}'s venv in {venv}:\n{build.stderr[-3000:]}")
        built.touch()
    return tool
