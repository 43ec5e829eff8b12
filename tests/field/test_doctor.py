"""``printnode doctor`` against real ports, sockets and a running daemon."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from node.commands.doctor import check_broker, check_serial


def doctor(state_dir: Path, *sets: str, extra: tuple[str, ...] = ()) -> tuple[int, dict[str, dict]]:
    args = [sys.executable, "-m", "node", "doctor", "--json", "--state-dir", str(state_dir), *extra]
    for item in sets:
        args += ["--set", item]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    return result.returncode, {c["name"]: c for c in json.loads(result.stdout)}


def test_missing_port_fails_with_a_fix_and_exit_status(tmp_path: Path) -> None:
    code, checks = doctor(tmp_path, "printer.port='/dev/ttyUSB-not-here'")
    assert code == 1
    assert checks["printer"]["level"] == "fail" and "by-id" in checks["printer"]["fix"]
    assert checks["storage"]["level"] == "ok"
    assert checks["daemon"]["level"] == "warn" and "systemctl start" in checks["daemon"]["fix"]
    assert {"gpio", "i2c", "broker", "clock", "service"} <= set(checks)


def test_text_output_lists_fixes(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "node", "doctor", "--state-dir", str(tmp_path),
                             "--set", "printer.port='/dev/ttyUSB-not-here'"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "FAIL printer" in result.stdout and "fix:" in result.stdout and "1 problem(s)" in result.stdout


def test_serial_checks_on_a_real_pty_and_a_plain_file(virtual_port, tmp_path: Path) -> None:
    assert check_serial(virtual_port.path, None).level == "ok"
    plain = tmp_path / "not-a-tty"
    plain.write_text("")
    failed = check_serial(str(plain), None)
    assert failed.level == "fail" and "not a character device" in failed.detail


def test_broker_reachability() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert check_broker(f"127.0.0.1:{port}").level == "ok"
    closed = check_broker(f"127.0.0.1:{port}", timeout_s=1)
    assert closed.level == "fail" and "cannot reach" in closed.detail
    assert check_broker(None).level == "info"
    assert check_broker("nonsense").level == "fail"


def test_with_a_running_daemon(daemon_factory) -> None:
    daemon = daemon_factory("jobs.queue_sample_when_empty=false")
    code, checks = doctor(daemon.state_dir)
    assert checks["daemon"]["level"] == "ok"
    assert checks["clock"]["level"] == "ok" and "simulated" in checks["clock"]["detail"]
    assert "daemon says: ready" in checks["printer"]["detail"]
    assert code == 0, checks
