"""Issue #14 against a real daemon: the control socket cannot be locked, a refused job is refused
loudly, and what a person reads is a sentence, never a traceback or a forged line."""
from __future__ import annotations

import json
import resource
import socket
import threading
from pathlib import Path

from node.controlclient import ControlClient
from tests.conftest import moves_gcode, wait_for

QUIET = ("jobs.queue_sample_when_empty=false", "planner.enabled=false", "clock.time_scale=20")


def _raw(path: Path, data: bytes, shut_write: bool = False) -> dict:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect(str(path))
        sock.sendall(data)
        if shut_write:
            sock.shutdown(socket.SHUT_WR)
        return json.loads(sock.makefile("rb").readline())


def test_refused_jobs_are_refused_loudly_and_names_cannot_forge_lines(daemon_factory, tmp_path: Path) -> None:
    daemon = daemon_factory(*QUIET)
    passwd = daemon.cli("queue", "add", "/etc/passwd")
    assert passwd.returncode == 3 and "REJECTED" in passwd.stderr and "not a G-code command" in passwd.stderr
    assert "Traceback" not in passwd.stderr
    sneaky = tmp_path / "sneaky.gcode"
    sneaky.write_text("G28\nG1 X10\nM500S1\n")
    refused = daemon.cli("queue", "add", str(sneaky))
    assert refused.returncode == 3 and "line 3" in refused.stderr and "M500" in refused.stderr
    empty = tmp_path / "empty.gcode"
    empty.write_text("")
    result = daemon.cli("queue", "add", str(empty))
    assert result.returncode == 1 and "empty" in result.stderr
    listed = daemon.cli("queue", "list").stdout
    assert listed.count("rejected") == 2, listed  # refusals are seen, not hidden

    forged = tmp_path / "forged.gcode"
    moves_gcode(forged, 2)
    job = daemon.request({"cmd": "queue_add", "name": "ok\nFAKE  completed\x1b[31m",
                          "size_bytes": forged.stat().st_size}, forged)
    text = daemon.cli("queue", "list", "--all").stdout
    assert "\x1b" not in text and "FAKE" in text and "\\n" in text and "\\x1b" in text
    assert all(not line.startswith("FAKE") for line in text.splitlines())
    assert "no job '%'" in daemon.cli("cancel", "%").stderr  # a prefix, not a LIKE pattern
    assert daemon.cli("cancel", job["id"]).returncode in (0, 1)


def test_the_control_socket_cannot_be_locked(daemon_factory) -> None:
    daemon = daemon_factory(*QUIET)
    path = daemon.state_dir / "control.sock"
    too_long = _raw(path, b'{"cmd": "status", "pad": "' + b"x" * 70_000 + b'"}\n')
    assert too_long["ok"] is False and "request too long" in too_long["error"]
    cut = _raw(path, b'{"cmd": "sta', shut_write=True)
    assert cut["ok"] is False and "incomplete request" in cut["error"]

    # 300 clients at once: every one gets its answer (none an EAGAIN)
    answers: list[object] = []

    def ask() -> None:
        try:
            answers.append(ControlClient(path, timeout_s=60).request({"cmd": "status"})["node_id"])
        except Exception as exc:  # noqa: BLE001 - the test counts them
            answers.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(300)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert len(answers) == 300 and all(isinstance(a, str) for a in answers), \
        [a for a in answers if not isinstance(a, str)][:3]

    # 1,100 idle clients: they are turned away or timed out, and the CLI still gets through
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    idle: list[socket.socket] = []
    try:
        for _ in range(1100):
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(str(path))
            idle.append(sock)
        status = daemon.cli("status", "--json")
        assert status.returncode == 0, status.stderr
        first = json.loads(idle[0].makefile("rb").readline())
        assert first["ok"] is False and ("no complete request" in first["error"] or "busy" in first["error"])
    finally:
        for sock in idle:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    wait_for(lambda: daemon.request({"cmd": "status"})["components"]["control"]["connections"] <= 1,
             what="idle connections released")


def test_store_full_is_said_in_words_and_orphaned_uploads_go_at_start(daemon_factory, tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "files").mkdir(parents=True)
    orphan = state / "files" / ".incoming-123-456"
    orphan.write_bytes(b"G1 X1\n" * 1000)  # a daemon SIGKILLed mid-upload left this
    daemon = daemon_factory(*QUIET, "jobs.reserve_mb=100000000")
    assert not orphan.exists()
    job = moves_gcode(tmp_path / "a.gcode", 50)
    result = daemon.cli("queue", "add", str(job))
    assert result.returncode == 1 and "store full" in result.stderr and "Traceback" not in result.stderr
    assert daemon.request({"cmd": "status"})["node_id"]


def test_the_cli_says_a_sentence_when_the_daemon_answers_nothing_or_too_late(tmp_path: Path) -> None:
    """Issue #14, finding 10: a cancel that timed out, or a daemon that closed the connection,
    ended in a pydantic traceback ("Invalid JSON") in the CLI."""
    import subprocess
    import sys
    import time

    from node.control import ControlError

    path = tmp_path / "control.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(8)
    stop = threading.Event()

    def serve() -> None:  # a daemon that reads the request, then either hangs up or says nothing
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            request = conn.recv(65536)
            if b"status" in request:
                conn.close()
            else:
                time.sleep(3)
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        try:
            ControlClient(path, timeout_s=5).request({"cmd": "status"})
            raise AssertionError("no error")
        except ControlError as exc:
            assert "without an answer" in str(exc)
        try:
            ControlClient(path, timeout_s=1).request({"cmd": "cancel", "job": "abc"})
            raise AssertionError("no error")
        except ControlError as exc:
            assert "did not answer within 1 s" in str(exc)
        cli = subprocess.run([sys.executable, "-m", "node", "status", "--socket", str(path)], capture_output=True,
                             text=True, timeout=60)
        assert cli.returncode == 1 and "without an answer" in cli.stderr and "Traceback" not in cli.stderr
    finally:
        stop.set()
        server.close()
