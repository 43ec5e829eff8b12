"""`printnode run --until-idle` prints the sample job end to end on the virtual printer."""
import sqlite3
import subprocess
import sys
from pathlib import Path


def test_run_until_idle_prints_the_sample_job(tmp_path: Path) -> None:
    state = tmp_path / "state"
    result = subprocess.run(
        [sys.executable, "-m", "node", "run", "--until-idle", "--timeout", "120", "--state-dir", str(state),
         "--set", "clock.time_scale=300"], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stderr
    assert "queued the sample job" in log and "100.0 %" in log and "completed: all lines executed" in log
    conn = sqlite3.connect(state / "printnode.sqlite3")
    rows = conn.execute("SELECT name, state, version FROM jobs").fetchall()
    assert rows == [("sample-square-tube.gcode", "completed", 3)]
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
