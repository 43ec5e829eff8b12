"""`printnode plan` against a running daemon shows the daemon's own plan (control API `plan`)."""
import json
from pathlib import Path

from tests.conftest import wait_for


def test_plan_of_the_running_daemon_as_json_and_plot(daemon_factory, tmp_path: Path) -> None:
    daemon = daemon_factory("clock.time_scale=60", "jobs.queue_sample_when_empty=true")

    def live_plan():
        result = daemon.cli("plan", "--json")
        return json.loads(result.stdout) if result.returncode == 0 else None

    summary = wait_for(live_plan, timeout_s=60, what="the daemon's first plan")
    assert summary["reserve_pct"] == 30.0 and summary["horizon_h"] == 72.0
    assert summary["trigger"] and "offline" not in summary["forecast_source"]
    png = tmp_path / "plan.png"
    text = daemon.cli("plan", "--plot", str(png))
    assert text.returncode == 0, text.stderr
    assert "SoC" in text.stdout and png.stat().st_size > 10_000
    snapshot = daemon.request({"cmd": "plan"})
    trajectory = snapshot["trajectory"]
    assert len(trajectory["soc_pct"]) == len(trajectory["pv_w"]) + 1 == 72 * 12 + 1


def test_what_if_options_plan_offline_even_with_a_daemon(daemon_factory) -> None:
    daemon = daemon_factory("clock.time_scale=60", "jobs.queue_sample_when_empty=false")
    result = daemon.cli("plan", "--json", "--soc", "50")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["soc_pct"] == 50.0
