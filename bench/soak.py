"""Soak: SIGKILL the daemon at random points while it prints, N times (default 100).

    .venv/bin/python bench/soak.py [--cycles 100] [--seed 8]

Each cycle: a job prints (virtual printer on a pty, time scale 200), the
daemon and its children are SIGKILLed at a random moment (as a power cut
would stop them), ``PRAGMA integrity_check`` runs on the store before any
recovery code, the daemon restarts, and the soak checks that no job or
transition acknowledged before the kill is missing, that the killed job is
``interrupted`` with its checkpoint kept, and that it resumes by itself
(``printer.auto_resume``) and completes.  It prints one JSON line with the
counts (docs/benchmarks.md) and exits 0 only if every cycle resumed and completed.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from node.controlclient import ControlClient  # noqa: E402
from node.store.db import integrity_check as integrity  # noqa: E402
from node.store.db import read_from_outside as read  # noqa: E402

# noon of a sunny day at the default site: on the wall clock, at night, the planner holds every print
SETS = ("jobs.queue_sample_when_empty=false", "clock.time_scale=200", "clock.start='2026-06-21T19:00:00+00:00'",
        "printer.auto_resume=true", "planner.enabled=false")  # power-loss resume under test, not planning


def start(state: Path, log) -> tuple[subprocess.Popen[bytes], ControlClient]:
    args = [sys.executable, "-m", "node", "run", "--state-dir", str(state)]
    for item in SETS:
        args += ["--set", item]
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    client = ControlClient(state / "control.sock", timeout_s=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daemon exited with {process.returncode}")
        try:
            client.request({"cmd": "status"})
            return process, client
        except Exception:
            time.sleep(0.05)
    raise RuntimeError("daemon did not come up")


def kill_tree(pid: int) -> None:
    kids: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            kids += [int(x) for x in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    os.kill(pid, signal.SIGKILL)
    for kid in kids:
        try:
            os.kill(kid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def snapshot(db: Path) -> tuple[set[str], set[tuple[str, int]]]:
    jobs = {r[0] for r in read(db, "SELECT id FROM jobs")}
    transitions = {(r[0], r[1]) for r in read(db, "SELECT job_id, version FROM job_transitions")}
    return jobs, transitions


def wait_state(client: ControlClient, job_id: str, states: set[str], timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    state = ""
    while time.monotonic() < deadline:
        state = client.request({"cmd": "job_show", "job": job_id})["job"]["state"]
        if state in states:
            return state
        time.sleep(0.05)
    return state


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--resume-grace-s", type=float, default=5.0,
                        help="real seconds a restarted daemon gets to resume the killed job")
    parser.add_argument("--complete-timeout-s", type=float, default=60.0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    counts = {"cycles": 0, "integrity_ok": 0, "lost_jobs": 0, "lost_transitions": 0,
              "interrupted_with_checkpoint_kept": 0, "resumed": 0, "resumed_and_completed": 0}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=ROOT / "bench") as tmp:
        state = Path(tmp) / "state"
        db = state / "printnode.sqlite3"
        gcode = Path(tmp) / "job.gcode"
        lines = ["G28", "G90", "G1 X0 Y0 F600"] + [f"G1 X{10 * ((i + 1) % 2)} Y{i * 0.01:.2f}" for i in range(2000)]
        gcode.write_text("\n".join(lines) + "\n")
        with (Path(tmp) / "daemon.log").open("ab") as log:
            process, client = start(state, log)
            for cycle in range(args.cycles):
                job = client.request({"cmd": "queue_add", "name": f"soak {cycle}", "size_bytes": gcode.stat().st_size}, gcode)
                wait_state(client, job["id"], {"printing"}, 30)
                time.sleep(rng.uniform(0.05, 6.0))
                before_jobs, before_transitions = snapshot(db)
                checkpoint = read(db, "SELECT byte_offset FROM checkpoints WHERE job_id = ?", (job["id"],))
                kill_tree(process.pid)
                process.wait(10)
                counts["cycles"] += 1
                counts["integrity_ok"] += integrity(db) == "ok"
                process, client = start(state, log)
                after_jobs, after_transitions = snapshot(db)
                counts["lost_jobs"] += len(before_jobs - after_jobs)
                counts["lost_transitions"] += len(before_transitions - after_transitions)
                state_now = client.request({"cmd": "job_show", "job": job["id"]})["job"]["state"]
                kept = read(db, "SELECT byte_offset FROM checkpoints WHERE job_id = ?", (job["id"],))
                if state_now in ("interrupted", "printing", "completed") and (
                        not checkpoint or (kept and kept[0][0] >= checkpoint[0][0])):
                    counts["interrupted_with_checkpoint_kept"] += 1
                resumed = wait_state(client, job["id"], {"printing", "completed"}, args.resume_grace_s)
                if resumed in ("printing", "completed"):
                    counts["resumed"] += 1
                    if wait_state(client, job["id"], {"completed"}, args.complete_timeout_s) == "completed":
                        counts["resumed_and_completed"] += 1
                else:
                    client.request({"cmd": "cancel", "job": job["id"]})  # free the printer for the next cycle
            process.send_signal(signal.SIGTERM)
            process.wait(30)
        counts["integrity_ok_at_end"] = integrity(db) == "ok"
    counts["wall_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(counts))
    ok = (counts["integrity_ok"] == counts["resumed_and_completed"] == counts["cycles"]
          and counts["lost_jobs"] == counts["lost_transitions"] == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
