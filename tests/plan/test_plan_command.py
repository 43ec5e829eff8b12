"""``printnode plan``: text, --json and the PNG (axes and labels), on a real pvlib forecast."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from node.commands import plan as plan_command
from node.config import NodeConfig

AT = "2025-06-21T03:00:00+00:00"  # 20:00 in Tucson


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    plan_command.register(parser.add_subparsers())
    return parser.parse_args(["plan", *argv])


def test_plan_json_explains_every_job(capsys, tmp_path: Path) -> None:
    args = parse("--json", "--soc", "45", "--at", AT, "--state-dir", str(tmp_path))
    assert args.func(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["reserve_pct"] == 30.0 and summary["horizon_h"] == pytest.approx(72.0)
    jobs = summary["planned"] + summary["waiting"]
    assert len(jobs) == 5 and all(j["reason"] for j in jobs)
    assert all(j["min_soc_pct"] >= 30.0 for j in summary["planned"])
    assert any("Wh" in j["reason"] for j in jobs)


def test_plan_jobs_file_with_a_bad_job_names_it(tmp_path: Path) -> None:
    bad = tmp_path / "jobs.json"
    bad.write_text(json.dumps([{"name": "ok", "power_profile": [[0, 100]]}, {"power_profile": [[0, 100]]}]))
    args = parse("--jobs", str(bad), "--at", AT, "--state-dir", str(tmp_path))
    with pytest.raises(SystemExit, match="job 1"):
        args.func(args)


def test_plot_has_axes_labels_and_the_reserve_line(tmp_path: Path) -> None:
    config = NodeConfig(node={"state_dir": str(tmp_path)})
    jobs = plan_command._load_jobs(None, "ender3")
    result, summary, forecast = plan_command.build_plan(config, 60.0, jobs, 1750474800.0, cloud_cover_pct=30.0)
    fig = plan_command.plan_figure(result, forecast, config.site.timezone, title="test plan")
    ax_pv, ax_soc = fig.axes
    assert ax_pv.get_ylabel() == "power (W)"
    assert ax_soc.get_ylabel() == "state of charge (%)"
    assert ax_soc.get_xlabel().startswith("local time")
    labels = [t.get_text() for t in ax_soc.get_legend().get_texts()]
    assert "reserve 30 %" in labels and "planned state of charge" in labels
    assert any(t.get_text() == "PV forecast (expected)" for t in ax_pv.get_legend().get_texts())
    png = tmp_path / "plan.png"
    plan_command.plot_plan(result, forecast, png, config.site.timezone)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
