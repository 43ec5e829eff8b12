"""The control API over its real Unix socket, against a running daemon and the virtual printer on a pty."""
import json
import os
import socket
import stat
from pathlib import Path

import pytest

from node.control import ControlError
from tests.conftest import moves_gcode, stop_daemon, wait_for
from tests.test_cli import heavy_among, modules_loaded_by

# the control API is under test here, not energy planning (tests/power cover the planner)
SLOW = ("jobs.queue_sample_when_empty=false", "clock.time_scale=20", "planner.enabled=false")


def job_state(daemon, job_id: str) -> str:
    return daemon.request({"cmd": "job_show", "job": job_id})["job"]["state"]


def test_socket_is_private_to_user_and_group(daemon_factory) -> None:
    daemon = daemon_factory(*SLOW)
    mode = stat.S_IMODE(os.stat(daemon.state_dir / "control.sock").st_mode)
    assert mode == 0o660


def test_queue_add_list_cancel_and_status(daemon_factory, tmp_path: Path) -> None:
    daemon = daemon_factory(*SLOW)
    size_bytes = moves_gcode(tmp_path / "a", 400).stat().st_size
    first = daemon.request({"cmd": "queue_add", "name": "long.gcode", "size_bytes": size_bytes}, tmp_path / "a")
    second = daemon.cli("queue", "add", str(moves_gcode(tmp_path / "b.gcode", 5)), "--priority", "-5", "--json")
    assert second.returncode == 0, second.stderr
    second_job = json.loads(second.stdout)
    wait_for(lambda: job_state(daemon, first["id"]) == "printing", what="first job printing")
    listed = json.loads(daemon.cli("queue", "list", "--json").stdout)
    assert [j["id"] for j in listed] == [first["id"], second_job["id"]]
    status = json.loads(daemon.cli("status", "--json").stdout)
    assert status["components"]["runner"]["current_job"] == first["id"]
    assert status["components"]["printer"]["state"] == "printing"
    # the text a person reads, from a CLI that loaded none of the heavy libraries (issue #19)
    modules, shown = modules_loaded_by(["status", "--state-dir", str(daemon.state_dir)], tmp_path)
    assert first["id"] in shown.stdout and "printing" in shown.stdout, shown.stderr
    assert not heavy_among(modules), heavy_among(modules)
    cancelled = daemon.cli("queue", "cancel", second_job["id"][:6], "--json")
    assert json.loads(cancelled.stdout)["state"] == "cancelled"
    cancelled = daemon.request({"cmd": "cancel", "job": None})  # the current job
    assert cancelled["state"] == "cancelled" and cancelled["id"] == first["id"]
    history = daemon.request({"cmd": "job_show", "job": first["id"]})["history"]
    assert [h["to_state"] for h in history] == ["queued", "printing", "cancelled"]
    assert daemon.request({"cmd": "queue_list"}) == []


def test_pause_and_resume_a_print(daemon_factory, tmp_path: Path) -> None:
    daemon = daemon_factory(*SLOW)
    job = json.loads(daemon.cli("queue", "add", str(moves_gcode(tmp_path / "p.gcode", 120)), "--json").stdout)
    wait_for(lambda: job_state(daemon, job["id"]) == "printing", what="printing")
    paused = json.loads(daemon.cli("pause", "--json").stdout)
    assert paused["state"] == "paused" and paused["pause_reason"] == "user"
    # the lines already in flight (the firmware's queue) finish; then nothing more is sent
    wait_for(lambda: daemon.request({"cmd": "status"})["components"]["printer"]["state"] == "paused",
             what="the printer parked")
    lines_at_pause = daemon.request({"cmd": "status"})["components"]["printer"]["progress"]["lines_sent"]
    import time
    time.sleep(1.5)
    progress = daemon.request({"cmd": "status"})["components"]["printer"]["progress"]
    assert progress["lines_sent"] == lines_at_pause, "the printer kept receiving lines while paused"
    with pytest.raises(ControlError, match="paused, not printing"):
        daemon.request({"cmd": "pause", "job": job["id"]})
    resumed = daemon.request({"cmd": "resume", "job": job["id"]})
    assert resumed["state"] == "printing"
    wait_for(lambda: job_state(daemon, job["id"]) == "completed", timeout_s=60, what="completed")
    history = [h["to_state"] for h in daemon.request({"cmd": "job_show", "job": job["id"]})["history"]]
    assert history == ["queued", "printing", "paused", "printing", "completed"]


def test_plate_gate_holds_the_next_job_until_cleared(daemon_factory, tmp_path: Path) -> None:
    daemon = daemon_factory("jobs.queue_sample_when_empty=false", "clock.time_scale=200", "jobs.auto_plate_clear=false",
                            "planner.enabled=false")
    a = json.loads(daemon.cli("queue", "add", str(moves_gcode(tmp_path / "a.gcode", 3)), "--json").stdout)
    b = json.loads(daemon.cli("queue", "add", str(moves_gcode(tmp_path / "b.gcode", 3)), "--json").stdout)
    wait_for(lambda: job_state(daemon, a["id"]) == "completed", what="first completed")
    wait_for(lambda: job_state(daemon, b["id"]) == "waiting_plate", what="second waits for the plate")
    assert "occupied" in daemon.cli("status").stdout
    assert daemon.cli("plate-cleared").returncode == 0
    wait_for(lambda: job_state(daemon, b["id"]) == "completed", what="second completed after plate cleared")


def test_malformed_and_refused_requests_get_clear_errors_and_daemon_lives(daemon_factory) -> None:
    daemon = daemon_factory(*SLOW)
    path = daemon.state_dir / "control.sock"
    for raw, expected in ((b"not json\n", "malformed request"), (b'{"cmd": "explode"}\n', "malformed request"),
                          (b'{"cmd": "queue_add", "name": "x", "size_bytes": -1}\n', "size_bytes")):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(path))
            sock.sendall(raw)
            reply = json.loads(sock.makefile().readline())
        assert reply["ok"] is False and expected in reply["error"]
    with pytest.raises(ControlError, match="no job"):
        daemon.request({"cmd": "cancel", "job": "doesnotexist"})
    result = daemon.cli("resume")
    assert result.returncode == 1 and "nothing is printing" in result.stderr
    assert daemon.request({"cmd": "status"})["node_id"]


def test_cli_without_a_daemon_says_so(tmp_path: Path) -> None:
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-m", "node", "status", "--state-dir", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "no printnode daemon is listening" in result.stderr


def test_sigterm_stops_cleanly_and_a_second_daemon_is_refused(daemon_factory, tmp_path: Path) -> None:
    """A second daemon on the same state directory stops before it touches anything: before the lock it got
    as far as the control socket, having opened the store, started its own virtual printer and runner, and on
    its way out deleted the first one's virtual-printer port file (this test, run against that daemon)."""
    daemon = daemon_factory(*SLOW)
    job = json.loads(daemon.cli("queue", "add", str(moves_gcode(tmp_path / "p.gcode", 400)), "--json").stdout)
    wait_for(lambda: job_state(daemon, job["id"]) == "printing", what="printing")
    port_file = daemon.state_dir / "virtual-printer.port"
    port_before = (port_file.read_text(), port_file.stat().st_mtime_ns)
    import subprocess
    import sys
    second = subprocess.run([sys.executable, "-m", "node", "run", "--state-dir", str(daemon.state_dir),
                             "--set", "jobs.queue_sample_when_empty=false"], capture_output=True, text=True, timeout=60)
    assert second.returncode == 1 and "already running" in second.stderr
    assert f"pid {daemon.process.pid}" in second.stderr and "--state-dir" in second.stderr  # who, and the way out
    assert "Traceback" not in second.stderr and "virtual printer" not in second.stderr.lower()
    assert (port_file.read_text(), port_file.stat().st_mtime_ns) == port_before  # its printer untouched
    assert job_state(daemon, job["id"]) == "printing"  # the first one's print goes on, not marked interrupted
    history = [h["to_state"] for h in daemon.request({"cmd": "job_show", "job": job["id"]})["history"]]
    assert history == ["queued", "printing"]
    assert stop_daemon(daemon) == 0
    assert not (daemon.state_dir / "control.sock").exists()
    assert (daemon.state_dir / "printnode.pid").read_text() == ""  # released: the next daemon may start


def test_config_set_through_the_daemon_goes_to_the_state_dir(daemon_factory) -> None:
    daemon = daemon_factory(*SLOW)
    result = daemon.cli("config", "set", "printer.reply_timeout_s=45")
    assert result.returncode == 0 and "overrides.toml" in result.stdout
    assert "reply_timeout_s = 45" in (daemon.state_dir / "overrides.toml").read_text()
    refused = daemon.cli("config", "set", "printer.nonsense=1")
    assert refused.returncode == 2 and "printer.nonsense" in refused.stderr
