"""`make bench`: every benchmark in bench/, one after another, each with its default settings.

Each writes its own figures (bench/out/, and docs/benchmarks.md says how to read them); this
runner only sequences them and reports which finished.  `--only NAME` runs one; `--list` names them.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
#: (name, script and its arguments) in the order they run; the long soaks come last
BENCHES: list[tuple[str, list[str]]] = [
    ("analyze", ["analyze.py", "--skip-big"]),
    ("stream", ["stream.py", "--quick"]),
    ("plan", ["plan.py"]),
    ("energy_table", ["energy_table.py"]),
    ("sync", ["sync.py"]),
    ("fleet", ["fleet.py", "--nodes", "100"]),
    ("fleet_view", ["fleet_view.py", "--nodes", "100"]),
    ("sdwrites", ["sdwrites.py", "--seconds", "90"]),
    ("web", ["web.py"]),
    ("footprint", ["footprint.py"]),
    ("fuzz", ["fuzz.py"]),
    ("soak", ["soak.py", "--cycles", "20"]),
]
#: benches that need something the user brings: (name, script, environment variable that names it)
OPTIONAL: list[tuple[str, list[str], str]] = [
    ("marlin", ["marlin.py"], "PRINTNODE_MARLIN_BIN"),  # a Marlin Linux-HAL executable (docs/benchmarks.md)
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[], help="run only this bench (repeatable)")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    if args.list:
        for name, argv in BENCHES:
            print(f"{name:16s} bench/{' '.join(argv)}")
        for name, argv, variable in OPTIONAL:
            print(f"{name:16s} bench/{' '.join(argv)}  (when {variable} is set)")
        return 0
    failed = []
    benches = list(BENCHES)
    for name, argv, variable in OPTIONAL:
        if os.environ.get(variable):
            benches.append((name, argv))
        else:
            print(f"=== {name}: skipped ({variable} is not set; see docs/benchmarks.md)")
    for name, argv in benches:
        if args.only and name not in args.only:
            continue
        print(f"=== {name}: bench/{' '.join(argv)}", flush=True)
        started = time.monotonic()
        code = subprocess.run([sys.executable, str(ROOT / argv[0]), *argv[1:]], cwd=ROOT.parent, check=False).returncode
        print(f"=== {name}: {'ok' if code == 0 else f'FAILED (exit {code})'} in {time.monotonic() - started:.0f} s")
        if code != 0:
            failed.append(name)
    print("all benches finished" if not failed else f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
