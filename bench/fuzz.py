"""The fuzz suites of issue #14 with many more examples than `make test` runs (200-300 each).

    .venv/bin/python bench/fuzz.py                 # 5,000 examples per suite
    .venv/bin/python bench/fuzz.py --examples 50000

Runs tests/test_fuzz_inputs.py (G-code into the gate and the sender's framing, config TOML and
`config set`, VE.Direct and Modbus frames, control-socket requests against a real daemon) and the
MQTT payload suite of tests/sync/test_sync_offline_and_fuzz.py; exits with pytest's status.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITES = ["tests/test_fuzz_inputs.py", "tests/sync/test_sync_offline_and_fuzz.py::test_fuzzed_hub_payloads_never_crash_the_node"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=5000, help="examples per fuzz suite")
    args = parser.parse_args()
    env = {**os.environ, "PRINTNODE_FUZZ_EXAMPLES": str(args.examples)}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "--hypothesis-show-statistics", *SUITES],
                            cwd=ROOT, env=env, check=False)
    print(f"fuzz: {args.examples} examples per suite, {time.monotonic() - started:.0f} s, "
          f"{'all properties held' if result.returncode == 0 else 'A PROPERTY FAILED'}")
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
