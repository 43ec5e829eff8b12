"""``make run``'s simulated day, with the Makefile's own arguments: the node waits for the sun, prints,
pauses the print the unforecast cloud catches, switches it off, resumes it, and completes every part.
About five real minutes: @slow (skipped when CI=true; run it with ``pytest -m slow tests/test_make_run_day.py``)."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import WEB_ON_ANY_LOOPBACK_PORT

ROOT = Path(__file__).resolve().parents[1]


def run_args() -> list[str]:
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    match = re.search(r"^RUN_ARGS \?= (.*)$", text, re.M)
    assert match, "RUN_ARGS not found in the Makefile"
    return shlex.split(match.group(1))


@pytest.mark.slow
def test_the_simulated_day_waits_prints_pauses_resumes_and_completes(tmp_path: Path) -> None:
    web = [arg for item in WEB_ON_ANY_LOOPBACK_PORT for arg in ("--set", item)]  # never a fixed port in a test
    result = subprocess.run([sys.executable, "-m", "node", "run", "--state-dir", str(tmp_path), *run_args(), *web,
                             "--until-idle"], capture_output=True, text=True, timeout=900)
    log = result.stderr + result.stdout
    assert result.returncode == 0, log[-3000:]
    assert "waits: energy" in log
    assert re.search(r"job \w+ paused: SoC", log), "no energy pause"
    assert re.search(r"job \w+ suspended at byte", log) or re.search(r"job \w+ resumes: SoC", log)
    assert re.search(r"job \w+ resumes (at byte|: SoC)", log), "no resume"
    assert len(re.findall(r"job \w+ completed", log)) == 4
