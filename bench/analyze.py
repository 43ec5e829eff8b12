"""Benchmark of the G-code analysis: accuracy and speed against OctoPrint's gcodeInterpreter.

One command (from the worktree, after ``pip install -e .``)::

    .venv/bin/python bench/analyze.py            # all of it
    .venv/bin/python bench/analyze.py --skip-big # without the 200 MB file

It installs OctoPrint from PyPI into ``bench/.peers/octoprint-venv`` (once),
then, on the same files (``/work/shared/gcode``, never copied into the repo):

* accuracy: the model's ``motion_seconds`` vs the slicer's own estimate vs
  OctoPrint's ``totalMoveTimeMinute``;
* speed: lines/s of ``analyze_file`` and of OctoPrint's ``gcode().load``, each
  measured in its own process after its imports, best of ``--repeat`` runs, in
  CPU time of the process (``time.process_time``) so that other work on a shared
  machine skews neither side;
* memory: a generated ~200 MB file (``bench/out/big.gcode``, not committed)
  analysed in a fresh process, peak RSS (``ru_maxrss``) reported.

Results go to stdout (Markdown) and ``bench/out/analyze.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEER_VENV = HERE / ".peers" / "octoprint-venv"
OUT = HERE / "out"
SHARED = Path(os.environ.get("PRINTNODE_SHARED_GCODE", "/work/shared/gcode"))

# file -> (printer profile, why that profile)
FILES = {
    "prusaslicer2.6.1_benchy.gcode": "prusa_mini",
    "prusaslicer2.7.4_screw.gcode": "ender3",
    "bambustudio2.3.1_cube20mm_plate1.gcode": "ender3",
    "cura5.2.1_corral_ironing.gcode": "ender3",
    "curalegacy_bp_case.gcode": "ender3",
    "simplify3d4.0.0_bc_wheel.gcode": "ender3",
    "ideamaker3.4_calibration_box.gcode": "ender3",
}
TARGET_FILES = {"prusaslicer2.6.1_benchy.gcode", "prusaslicer2.7.4_screw.gcode",
                "bambustudio2.3.1_cube20mm_plate1.gcode"}

OCTOPRINT_WORKER = textwrap.dedent("""
    import json, sys, time
    from octoprint.util.gcodeInterpreter import gcode
    import octoprint
    repeat = int(sys.argv[1])
    out = {"version": octoprint.__version__, "files": {}}
    for path in sys.argv[2:]:
        best = None
        for _ in range(repeat):
            g = gcode()
            t0 = time.process_time()
            g.load(path)
            dt = time.process_time() - t0
            best = dt if best is None else min(best, dt)
        out["files"][path] = {"seconds": best, "estimate_s": g.totalMoveTimeMinute * 60.0,
                              "filament_mm": [e for e in g.extrusionAmount if e]}
    print(json.dumps(out))
""")

OURS_WORKER = textwrap.dedent("""
    import json, resource, sys, time
    from node.gcode.analysis import analyze_file
    from node.printer.profile import load_profile
    repeat = int(sys.argv[1])
    out = {"files": {}}
    for arg in sys.argv[2:]:
        path, profile_name = arg.rsplit("=", 1)
        profile = load_profile(profile_name)
        best = None
        for _ in range(repeat):
            t0 = time.process_time()
            result = analyze_file(path, profile)
            dt = time.process_time() - t0
            best = dt if best is None else min(best, dt)
        out["files"][path] = {"seconds": best, "motion_s": result.motion_seconds,
                              "heatup_s": result.heatup_seconds, "slicer_s": result.slicer_estimated_seconds,
                              "slicer": result.slicer, "filament_mm": result.filament_mm,
                              "slicer_filament_mm": result.slicer_filament_mm, "layers": result.layers,
                              "energy_wh": result.energy_wh, "peak_w": result.peak_w,
                              "limits_from_file": result.limits_from_file, "lines": result.lines}
    out["max_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(out))
""")


def ensure_octoprint() -> Path:
    python = PEER_VENV / "bin" / "python"
    probe = [str(python), "-c", "import octoprint.util.gcodeInterpreter"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print("installing OctoPrint into", PEER_VENV, file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "octoprint"], check=True)
    return python


def count_lines(path: Path) -> int:
    n = 0
    last = b"\n"
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (0 if last == b"\n" else 1)


def generate_big(path: Path, target_bytes: int) -> None:
    """A long, realistic print: round perimeters in ~1 mm segments, infill in ~2 mm segments,
    retractions, comments, fan changes, the odd arc; every layer a little different."""
    import math

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size >= target_bytes:
        return
    cx = cy = 110.0
    with open(path, "w") as fh:
        fh.write("; generated by bench/analyze.py\nM140 S60\nM104 S210\nM190 S60\nM109 S210\nG28\nG90\nM83\n")
        layer = 0
        written = 0
        while written < target_bytes:
            z = 0.2 + 0.2 * layer
            radius = 50.0 + 5.0 * math.sin(layer / 30.0)
            parts = [f";LAYER_CHANGE\n;Z:{z:.2f}\nG1 E-0.8 F2100\nG1 Z{z:.2f} F720\n"
                     f"G1 X{cx + radius:.3f} Y{cy:.3f} F9000\nG1 E0.8 F2100\nM106 S{150 + layer % 100}\n"
                     ";TYPE:Perimeter\n"]
            for loop in range(3):
                r = radius - 0.45 * loop
                steps = int(2 * math.pi * r)  # ~1 mm segments
                e = 2 * math.pi * r / steps * 0.0333
                parts.append(f"G1 X{cx + r:.3f} Y{cy:.3f} F9000\nG1 F1800\n")
                parts.extend(f"G1 X{cx + r * math.cos(2 * math.pi * k / steps):.3f} "
                             f"Y{cy + r * math.sin(2 * math.pi * k / steps):.3f} E{e:.5f}\n"
                             for k in range(1, steps + 1))
            parts.append(f"G2 X{cx + radius - 2:.3f} Y{cy:.3f} I-{radius / 2 - 1:.3f} J0 E0.5\n;TYPE:Internal infill\nG1 F4800\n")
            spacing = 0.45 if layer % 10 < 2 else 2.0
            y = -radius + 1.5
            flip = False
            while y < radius - 1.5:
                half = math.sqrt(radius * radius - y * y) - 1.5
                xs = [-half + 2.0 * k for k in range(int(2 * half / 2.0) + 1)]
                if flip:
                    xs.reverse()
                parts.append(f"G1 X{cx + xs[0]:.3f} Y{cy + y:.3f} E-0.1 F9000\nG1 F4800\n")
                parts.extend(f"G1 X{cx + x:.3f} Y{cy + y + 0.05 * ((k % 2) - 0.5):.3f} E0.06660\n"
                             for k, x in enumerate(xs[1:]))
                y += spacing
                flip = not flip
            text = "".join(parts)
            fh.write(text)
            written += len(text)
            layer += 1
        fh.write("M107\nM104 S0\nM140 S0\nM84\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="runs per file; the best is kept")
    parser.add_argument("--skip-big", action="store_true", help="skip the generated 200 MB file")
    parser.add_argument("--big-mb", type=int, default=200)
    args = parser.parse_args()

    files = [SHARED / name for name in FILES]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        print("missing shared G-code files:", ", ".join(missing), file=sys.stderr)
        return 2
    octo_python = ensure_octoprint()
    lines = {str(f): count_lines(f) for f in files}

    ours = json.loads(subprocess.run(
        [sys.executable, "-c", OURS_WORKER, str(args.repeat), *(f"{f}={FILES[f.name]}" for f in files)],
        check=True, capture_output=True, text=True, cwd=ROOT).stdout)
    octo = json.loads(subprocess.run(
        [str(octo_python), "-c", OCTOPRINT_WORKER, str(args.repeat), *map(str, files)],
        check=True, capture_output=True, text=True).stdout)

    rows = []
    print(f"\nOctoPrint {octo['version']} gcodeInterpreter vs printnode analysis core, best of {args.repeat}\n")
    print("| file | profile | slicer estimate s | model motion s | model/slicer | OctoPrint s | OctoPrint/slicer "
          "| model heat-up s | filament mm model / slicer | printnode lines/s | OctoPrint lines/s | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    total_lines = total_ours_s = total_octo_s = 0.0
    for f in files:
        key = str(f)
        o, p = ours["files"][key], octo["files"][key]
        n = lines[key]
        slicer_s = o["slicer_s"]
        ratio = o["motion_s"] / slicer_s if slicer_s else None
        octo_ratio = p["estimate_s"] / slicer_s if slicer_s else None
        ours_lps, octo_lps = n / o["seconds"], n / p["seconds"]
        total_lines += n
        total_ours_s += o["seconds"]
        total_octo_s += p["seconds"]
        row = {"file": f.name, "profile": FILES[f.name], "lines": n, "slicer_s": slicer_s, "model_motion_s": o["motion_s"],
               "model_over_slicer": ratio, "octoprint_s": p["estimate_s"], "octoprint_over_slicer": octo_ratio,
               "model_heatup_s": o["heatup_s"], "filament_mm": o["filament_mm"],
               "slicer_filament_mm": o["slicer_filament_mm"], "energy_wh": o["energy_wh"], "peak_w": o["peak_w"],
               "ours_lines_per_s": ours_lps, "octoprint_lines_per_s": octo_lps, "speedup": ours_lps / octo_lps,
               "target": f.name in TARGET_FILES}
        rows.append(row)
        fil = "/".join(f"{x:.0f}" for x in o["filament_mm"]) + " / " + (
            "/".join(f"{x:.0f}" for x in o["slicer_filament_mm"]) if o["slicer_filament_mm"] else "-")
        print(f"| {f.name}{' (target)' if row['target'] else ''} | {FILES[f.name]} | "
              f"{slicer_s if slicer_s is not None else '-'} | {o['motion_s']:.0f} | "
              f"{f'{ratio:.3f}' if ratio else '-'} | {p['estimate_s']:.0f} | "
              f"{f'{octo_ratio:.3f}' if octo_ratio else '-'} | {o['heatup_s']:.0f} | {fil} | "
              f"{ours_lps:,.0f} | {octo_lps:,.0f} | {ours_lps / octo_lps:.0f}x |")
    overall = (total_lines / total_ours_s) / (total_lines / total_octo_s)
    print(f"\nall files: printnode {total_lines / total_ours_s:,.0f} lines/s, OctoPrint "
          f"{total_lines / total_octo_s:,.0f} lines/s: {overall:.1f}x; peak RSS of the printnode process "
          f"{ours['max_rss_kb'] / 1024:.1f} MB")
    worst = max(abs(r["model_over_slicer"] - 1) for r in rows if r["target"])
    print(f"target files (PrusaSlicer, BambuStudio): worst |model/slicer - 1| = {worst * 100:.2f} %")
    result = {"rows": rows, "octoprint_version": octo["version"], "speedup_all_files": overall,
              "ours_lines_per_s": total_lines / total_ours_s, "octoprint_lines_per_s": total_lines / total_octo_s,
              "worst_target_error": worst}

    if not args.skip_big:
        big = OUT / "big.gcode"
        t0 = time.process_time()
        generate_big(big, args.big_mb * 1024 * 1024)
        print(f"\ngenerated {big} ({big.stat().st_size / 1e6:.0f} MB) in {time.process_time() - t0:.0f} s")
        big_run = json.loads(subprocess.run(
            [sys.executable, "-c", OURS_WORKER, "1", f"{big}=ender3"],
            check=True, capture_output=True, text=True, cwd=ROOT).stdout)
        b = big_run["files"][str(big)]
        print(f"big file: {b['lines']:,} lines in {b['seconds']:.1f} s ({b['lines'] / b['seconds']:,.0f} lines/s), "
              f"motion {b['motion_s'] / 3600:.1f} h, {b['layers']} layers; "
              f"peak RSS {big_run['max_rss_kb'] / 1024:.1f} MB")
        result["big"] = {"bytes": big.stat().st_size, "lines": b["lines"], "seconds": b["seconds"],
                         "peak_rss_mb": big_run["max_rss_kb"] / 1024, "motion_s": b["motion_s"],
                         "layers": b["layers"]}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "analyze.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
