"""`printnode run --until-idle` prints the sample job end to end on the virtual printer, started
from a directory that holds a folder named ``node`` (a checkout's parent, a user's project): its
child processes (the virtual printer, the simulated charge controller) must still import the
installed package, not that folder."""
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.conftest import SUNNY_NOON, WEB_ON_ANY_LOOPBACK_PORT


def test_run_until_idle_prints_the_sample_job(tmp_path: Path) -> None:
    state = tmp_path / "state"
    decoy = tmp_path / "node"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("raise ImportError('the decoy node/ in the working directory was imported')\n")
    (decoy / "__main__.py").write_text("raise SystemExit('the decoy node/ in the working directory ran')\n")
    printnode = Path(sys.executable).parent / "printnode"  # the console script make run uses
    result = subprocess.run(
        [str(printnode), "run", "--until-idle", "--timeout", "120", "--state-dir", str(state),
         "--set", "clock.time_scale=300", "--set", SUNNY_NOON,
         *[arg for item in WEB_ON_ANY_LOOPBACK_PORT for arg in ("--set", item)]],
        capture_output=True, text=True, timeout=180,
        cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "decoy" not in result.stderr
    log = result.stderr
    assert "queued the sample job" in log and "100.0 %" in log and "completed: all lines executed" in log
    conn = sqlite3.connect(state / "printnode.sqlite3")
    rows = conn.execute("SELECT name, state FROM jobs").fetchall()
    assert rows == [("sample-square-tube.gcode", "completed")]
    # it may wait for the planner's first plan (waiting_energy) before it starts: that is the planner's call
    history = [r[0] for r in conn.execute("SELECT to_state FROM job_transitions ORDER BY version")]
    assert history[0] == "queued" and history[-2:] == ["printing", "completed"], history
    assert set(history) <= {"queued", "waiting_energy", "printing", "completed"}, history
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
