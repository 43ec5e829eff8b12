"""kill -9 of the daemon mid-print, with and without a printer that resets when the port opens (DTR):
``printnode resume JOB`` completes the job with nothing lost and repeats within the documented bound."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import start_daemon, stop_daemon, wait_for
from tests.printer.helpers import job_lines, write_job
from tests.printer.test_resume import check_resumed_log

TIME_SCALE = 150
CHECKPOINT_S = 0.3
REWIND = 24


def start_printer(tmp_path: Path, reset_on_open: bool) -> tuple[subprocess.Popen[bytes], str, Path]:
    port_file, log = tmp_path / "vp.port", tmp_path / "executed.log"
    args = [sys.executable, "-m", "node", "virtual-printer", "--time-scale", str(TIME_SCALE),
            "--port-file", str(port_file), "--command-log", str(log), "--planner-depth", "16"]
    if reset_on_open:
        args.append("--reset-on-open")
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: port_file.exists() and port_file.read_text().strip(), timeout_s=20, what="virtual printer")
    return process, port_file.read_text().strip(), log


@pytest.mark.parametrize("reset_on_open", [False, True])
def test_kill_9_mid_print_then_resume(tmp_path: Path, reset_on_open: bool) -> None:
    job = write_job(tmp_path / "job.gcode", 2500, header="G28\nG90\nM82\nG92 E0\nM104 S200\n")
    printer, port, log = start_printer(tmp_path, reset_on_open)
    sets = (f"printer.port={json.dumps(port)}", f"clock.time_scale={TIME_SCALE}", "jobs.queue_sample_when_empty=false",
            "jobs.auto_plate_clear=true", f"printer.checkpoint_interval_s={CHECKPOINT_S}",
            f"printer.resume_rewind_moves={REWIND}", "printer.tickle_s=1.0", "printer.boot_wait_s=1.0",
            "planner.enabled=false")  # power-loss resume under test, not energy planning
    state = tmp_path / "state"
    daemon = start_daemon(state, *sets)
    try:
        added = json.loads(daemon.cli("queue", "add", str(tmp_path / "job.gcode"), "--json").stdout)
        job_id = added["id"]

        def progress() -> float:
            report = daemon.request({"cmd": "status"})["components"]["printer"]["progress"]
            return report["percent"] if report else 0.0

        wait_for(lambda: progress() > 35, timeout_s=60, what="the job to pass 35 %")
        os.kill(daemon.process.pid, signal.SIGKILL)  # no goodbye: like the node losing power
        daemon.process.wait()
        time.sleep(0.2)
        daemon = start_daemon(state, *sets)
        wait_for(lambda: daemon.request({"cmd": "job_show", "job": job_id})["job"]["state"] == "interrupted",
                 what="the job marked interrupted")
        wait_for(lambda: daemon.request({"cmd": "status"})["components"]["printer"]["state"] == "ready",
                 timeout_s=30, what="printer ready")
        resumed = daemon.cli("resume", job_id, "--json")
        assert resumed.returncode == 0, resumed.stderr
        wait_for(lambda: daemon.request({"cmd": "job_show", "job": job_id})["job"]["state"] == "completed",
                 timeout_s=90, what="the resumed job to complete")
        history = [h["to_state"] for h in daemon.request({"cmd": "job_show", "job": job_id})["history"]]
        assert history == ["queued", "printing", "interrupted", "printing", "completed"]
    finally:
        stop_daemon(daemon)
        printer.terminate()
        printer.wait(10)
    moves = [c for c in job if c.startswith(b"G1 X")]
    executed = job_lines(log, moves)
    # documented bound (docs/resume.md): the lines acknowledged since the last checkpoint
    # (checkpoint_interval_s of streaming) plus resume_rewind_moves
    lines_per_checkpoint = int(CHECKPOINT_S * 2 * TIME_SCALE * 1.5) + 50
    repeats = check_resumed_log(executed, moves, bound=REWIND + lines_per_checkpoint)
    assert executed[-1] == moves[-1] and repeats >= 0
