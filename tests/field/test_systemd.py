"""The daemon driven as systemd drives it: NOTIFY_SOCKET, WATCHDOG_USEC, JOURNAL_STREAM; the unit verified."""
from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from node.field.service import render_unit
from tests.conftest import start_daemon, stop_daemon, wait_for


class DatagramSink:
    """A test-owned AF_UNIX datagram socket standing in for systemd's notify or journal socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.received: list[tuple[float, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.received.append((time.monotonic(), data))

    def messages(self) -> list[tuple[float, str]]:
        return [(t, d.decode(errors="replace")) for t, d in list(self.received)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def test_ready_watchdog_pings_and_pings_stop_while_the_loop_is_blocked(tmp_path: Path, monkeypatch) -> None:
    sink = DatagramSink(tmp_path / "notify.sock")
    watchdog_usec = 1_000_000  # WatchdogSec=1s: pings every 0.5 s
    block_s = 4.0
    monkeypatch.setenv("NOTIFY_SOCKET", str(sink.path))
    monkeypatch.setenv("WATCHDOG_USEC", str(watchdog_usec))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    daemon = start_daemon(tmp_path / "state", "jobs.queue_sample_when_empty=false",
                          "watchdog.probe_interval_s=0.2", "watchdog.max_loop_lag_s=1.0",
                          "watchdog.debug_block_loop_after_s=2.5", f"watchdog.debug_block_loop_for_s={block_s}")
    try:
        wait_for(lambda: any("event loop unblocked" in m for _, m in sink.messages()), timeout_s=30,
                 what="the debug block to end")
        wait_for(lambda: sum(1 for _, m in sink.messages() if m == "WATCHDOG=1") >= 6, timeout_s=10,
                 what="pings after the block")
    finally:
        code = stop_daemon(daemon)
        sink.close()
    messages = sink.messages()
    texts = [m for _, m in messages]
    assert code == 0, daemon.log()
    assert any(m.startswith("READY=1") for m in texts), texts
    ready_at = next(t for t, m in messages if m.startswith("READY=1"))
    block_at = next(t for t, m in messages if "blocking the event loop" in m)
    unblock_at = next(t for t, m in messages if "event loop unblocked" in m)
    pings = [t for t, m in messages if m == "WATCHDOG=1"]
    before = [t for t in pings if t < block_at]
    after = [t for t in pings if t > unblock_at]
    assert len(before) >= 2, f"expected pings once ready, got {texts}"
    assert not [t for t in pings if block_at < t < unblock_at], "a ping was sent while the loop was blocked"
    assert after, "pings did not resume once the loop was healthy again"
    silence_s = after[0] - before[-1]
    assert silence_s > watchdog_usec / 1e6, f"systemd would not have noticed: silent only {silence_s:.2f} s"
    assert before[0] >= ready_at - 1.0
    assert any(m.startswith("STOPPING=1") for m in texts)


def test_no_pings_for_another_pid_and_status_reports_the_probe(daemon_factory, tmp_path: Path, monkeypatch) -> None:
    sink = DatagramSink(tmp_path / "notify2.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(sink.path))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    monkeypatch.setenv("WATCHDOG_PID", "1")  # systemd watches another process: we must not ping
    daemon = daemon_factory("jobs.queue_sample_when_empty=false", "watchdog.probe_interval_s=0.1")
    status = wait_for(lambda: (s := daemon.request({"cmd": "status"})["components"]["watchdog"])["loop_lag_s"] != 0 and s,
                      what="a loop-lag probe")
    assert status["systemd"] is False and status["pings_sent"] == 0 and status["healthy"]
    timesync = daemon.request({"cmd": "status"})["components"]["timesync"]
    assert timesync["clock_synchronized"] is True and timesync["source"] == "simulation"
    stop_daemon(daemon)
    sink.close()
    assert "WATCHDOG=1" not in [m for _, m in sink.messages()]
    assert any(m.startswith("READY=1") for _, m in sink.messages())


def test_health_needs_a_recent_on_time_probe_and_a_store_answer() -> None:
    from node.field.watchdog import assess, watchdog_interval_s

    assert assess(100.0, 99.0, 98.0, loop_window_s=2.0, store_window_s=5.0).healthy
    assert assess(100.0, 97.0, 99.0, loop_window_s=2.0, store_window_s=5.0).reason == "event loop lagging"
    assert assess(100.0, 99.5, 90.0, loop_window_s=2.0, store_window_s=5.0).reason == "store thread not answering"
    assert assess(100.0, None, None, loop_window_s=2.0, store_window_s=5.0).healthy is False
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}, pid=7) == 15.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"}, pid=7) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, pid=7) == 15.0
    assert watchdog_interval_s({}, pid=7) is None and watchdog_interval_s({"WATCHDOG_USEC": "x"}, pid=7) is None


def parse_native(datagram: bytes) -> dict[str, str]:
    """Decode one journal native-protocol datagram (both the KEY=value and the length-prefixed forms)."""
    fields: dict[str, str] = {}
    pos = 0
    while pos < len(datagram):
        newline = datagram.index(b"\n", pos)
        line = datagram[pos:newline]
        if b"=" in line:
            key, value = line.split(b"=", 1)
            fields[key.decode()] = value.decode()
            pos = newline + 1
        else:
            (size,) = struct.unpack("<Q", datagram[newline + 1:newline + 9])
            fields[line.decode()] = datagram[newline + 9:newline + 9 + size].decode()
            pos = newline + 9 + size + 1
    return fields


def test_logs_go_to_the_journal_with_component_and_job_id(tmp_path: Path, monkeypatch) -> None:
    journal = DatagramSink(tmp_path / "journal.sock")
    state = tmp_path / "state"
    log_path = tmp_path / "state-daemon.log"  # start_daemon's stderr file: JOURNAL_STREAM names it
    log_path.touch()
    info = os.stat(log_path)
    monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
    monkeypatch.setenv("PRINTNODE_JOURNAL_SOCKET", str(journal.path))
    daemon = start_daemon(state, "clock.time_scale=200")  # prints the sample job
    try:
        wait_for(lambda: any(b"JOB_ID=" in d and b"started" in d for _, d in journal.received), what="job log")
    finally:
        stop_daemon(daemon)
        journal.close()
    records = [parse_native(d) for _, d in journal.received]
    started = next(r for r in records if "started" in r["MESSAGE"] and "JOB_ID" in r)
    assert started["COMPONENT"] == "runner" and started["MESSAGE"].startswith(f"job {started['JOB_ID']}")
    assert started["PRIORITY"] == "6" and started["SYSLOG_IDENTIFIER"] == "printnode"
    assert {"daemon", "printer", "runner"} <= {r["COMPONENT"] for r in records}
    assert all(r["CODE_FILE"].endswith(".py") and r["CODE_LINE"].isdigit() for r in records)
    assert "running" not in log_path.read_text(), "records went to stderr instead of the journal"


SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (apt package systemd)")
def test_rendered_unit_verifies_and_rates_ok(tmp_path: Path) -> None:
    venv = Path(sys.prefix)
    assert (venv / "bin" / "printnode").exists(), "pip install -e . creates the printnode entry point"
    unit = tmp_path / "printnode.service"
    unit.write_text(render_unit(venv))
    assert f"ExecStart={venv.resolve()}/bin/printnode run" in unit.read_text()
    verify = subprocess.run([SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "printnode.service" not in verify.stderr, verify.stderr  # no warning about our unit
    security = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=true", str(unit)],
                              capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for printnode\.service: ([\d.]+) (\w+)", security.stdout)
    assert match, security.stdout + security.stderr
    level, rating = float(match.group(1)), match.group(2)
    assert rating in ("OK", "SAFE", "PERFECT"), f"exposure {level} {rating}"
    text = unit.read_text()
    for needle in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "NoNewPrivileges=yes", "ProtectSystem=strict",
                   "ReadWritePaths=/var/lib/printnode", "PrivateTmp=yes", "ProtectHome=yes", "DevicePolicy=closed",
                   "SupplementaryGroups=dialout gpio i2c"):
        assert needle in text


def test_unit_template_hardening_is_not_lost_by_rendering(tmp_path: Path) -> None:
    rendered = render_unit(tmp_path / "venv", config_path=Path("/srv/node.toml"), user="maker")
    assert "ExecStart=" + str((tmp_path / "venv").resolve()) + "/bin/printnode run --config /srv/node.toml" in rendered
    assert "User=maker" in rendered and "Group=maker" in rendered
    template = (Path(__file__).parents[2] / "systemd" / "printnode.service").read_text()
    hardening = [line for line in template.splitlines() if line.startswith(("Protect", "Restrict", "Device", "System"))]
    assert hardening and all(line in rendered for line in hardening)
