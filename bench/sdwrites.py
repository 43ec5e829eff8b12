"""SD-card write rate of the daemon, idle and printing: bytes written per hour.

    .venv/bin/python bench/sdwrites.py [--seconds 60]

Starts a real ``printnode run`` (virtual printer, real time scale 1, the
state directory on this machine's disk), reads ``write_bytes`` from
``/proc/<pid>/io`` (bytes the process caused to be written to storage,
proc(5)) over ``--seconds`` while idle, then over ``--seconds`` while a
long job prints, and extrapolates to an hour.  Logs go to /dev/null: under
systemd they are journald's writes, capped separately (docs/field.md).
Prints one JSON line; docs/field.md and docs/benchmarks.md quote it.
"""
from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from node.controlclient import ControlClient  # noqa: E402


def write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/<pid>/io")


def moves_gcode(path: Path, moves: int) -> Path:
    lines = ["G28", "G90", "G1 X0 Y0 F600"] + [f"G1 X{10 * ((i + 1) % 2)} Y{i * 0.01:.2f}" for i in range(moves)]
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="real seconds per phase")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=ROOT / "bench") as tmp:
        state = Path(tmp) / "state"
        process = subprocess.Popen([sys.executable, "-m", "node", "run", "--state-dir", str(state),
                                    "--set", "jobs.queue_sample_when_empty=false",
                                    "--set", "clock.start='2026-06-21T19:00:00+00:00'"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
        client = ControlClient(state / "control.sock", timeout_s=30)
        try:
            for _ in range(300):
                try:
                    client.request({"cmd": "status"})
                    break
                except Exception:
                    time.sleep(0.1)
            time.sleep(2.0)  # start-up writes (migration, first checkpoint) are not the steady state
            start = write_bytes(process.pid)
            time.sleep(args.seconds)
            idle = write_bytes(process.pid) - start
            job_file = moves_gcode(Path(tmp) / "long.gcode", 100_000)
            job = client.request({"cmd": "queue_add", "name": "long", "size_bytes": job_file.stat().st_size}, job_file)
            for _ in range(300):
                if client.request({"cmd": "job_show", "job": job["id"]})["job"]["state"] == "printing":
                    break
                time.sleep(0.1)
            time.sleep(2.0)
            start = write_bytes(process.pid)
            time.sleep(args.seconds)
            printing = write_bytes(process.pid) - start
            state_ok = client.request({"cmd": "job_show", "job": job["id"]})["job"]["state"] == "printing"
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
    per_hour = 3600.0 / args.seconds
    print(json.dumps({"seconds_per_phase": args.seconds, "idle_bytes_per_hour": round(idle * per_hour),
                      "printing_bytes_per_hour": round(printing * per_hour),
                      "printing_mb_per_day_if_printing_10h": round(printing * per_hour * 10 / 2**20, 1),
                      "still_printing_at_end": state_ok}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
