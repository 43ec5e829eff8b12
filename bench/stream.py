"""Streaming benchmark: `printnode print` against Printrun's printcore, both on the virtual printer.

One command: ``.venv/bin/python bench/stream.py`` (``--quick`` for a smaller run).  It installs
printcore into ``bench/.peers/printrun-venv`` (``pip install --no-deps printrun pyserial``), starts a
fresh ``printnode virtual-printer`` process (instant mode, time scale 0) for every run, and measures:

(a) lines/s and host CPU µs per line (user+sys of the host process while streaming; start-up,
    parsing and connecting excluded) on the real slicer files of ../shared/gcode — printcore on the
    first ``--peer-lines`` commands of each file (it does ~800 lines/s), this project on the same
    prefix and on the whole file;
(b) at emulated 115200 and 250000 baud, lines/s as a fraction of the link's line capacity
    (baud / 10 bytes per second over the mean framed line length), printcore beside it;
(c) peak RSS of `printnode print` for a 1 MB file and a generated 200 MB file, and the time to
    replay the 200 MB file's state up to its end for a resume (``resume.state_at``, native, against
    the Python reference ``state_at_reference``).

Results go to stdout as Markdown tables and to bench/out/stream.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GCODE_DIR = Path(os.environ.get("PRINTNODE_GCODE", ROOT.parent.parent / "shared" / "gcode"))
if not GCODE_DIR.exists():
    GCODE_DIR = Path("/work/shared/gcode")
OUT = HERE / "out"
PEER_VENV = HERE / ".peers" / "printrun-venv"
PY = sys.executable

sys.path.insert(0, str(ROOT))
from _gcode_prefix import prefix_file  # noqa: E402

from node.native import streamcore  # noqa: E402


def ensure_peer() -> Path:
    python = PEER_VENV / "bin" / "python"
    check = [str(python), "-c", "import printrun.printcore, serial"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "printrun", "pyserial"], check=True)
    subprocess.run(check, check=True)
    return python


class VirtualPrinterProcess:
    def __init__(self, baud: int = 0, extra: tuple[str, ...] = ()) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="vp-", dir=OUT))
        port_file = self.dir / "port"
        args = [PY, "-m", "node", "virtual-printer", "--time-scale", "0", "--port-file", str(port_file), *extra]
        if baud:
            args += ["--baud", str(baud)]
        self.process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("the virtual printer did not start")
            time.sleep(0.05)
        self.port = port_file.read_text().strip()

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> VirtualPrinterProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_ours(path: Path, baud: int = 0) -> dict:
    with VirtualPrinterProcess(baud) as vp:
        result = subprocess.run([PY, "-m", "node", "print", str(path), "--port", vp.port, "--json",
                                 "--baud", str(baud or 115200)], cwd=ROOT, capture_output=True, text=True,
                                timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"printnode print failed on {path.name}: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_printcore(peer: Path, path: Path, baud: int = 0) -> dict:
    with VirtualPrinterProcess(baud) as vp:
        result = subprocess.run([str(peer), str(HERE / "_printcore_peer.py"), vp.port, str(path),
                                 str(baud or 115200)], capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"printcore failed on {path.name}: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def mean_framed_bytes(path: Path) -> float:
    """Mean length of a framed line (``N<n> <cmd>*<xor>\\n``), numbering as a print would."""
    splitter = streamcore.LineSplitter()
    total = count = 0
    data = path.read_bytes()
    for _, command in splitter.feed(data) + splitter.finish():
        if command is None:
            continue
        count += 1
        total += len(streamcore.frame(count + 3, command))
    return total / count


def big_file(size_mb: int) -> Path:
    """A generated file of ``size_mb`` MB of ordinary moves (never kept in memory)."""
    out = OUT / f"generated-{size_mb}mb.gcode"
    if out.exists() and out.stat().st_size >= size_mb * 1_000_000:
        return out
    block = "".join(f"G1 X{i % 200 + 10}.{i % 10} Y{(i * 7) % 200 + 5}.{i % 9} E{(i % 1000) * 0.031:.4f}\n"
                    for i in range(20000))
    block += ";LAYER_CHANGE\nG92 E0\n"
    with out.open("w") as handle:
        handle.write("G28\nG90\nM82\nG92 E0\n")
        while handle.tell() < size_mb * 1_000_000:
            handle.write(block)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer-lines", type=int, default=12000, help="commands per file for printcore")
    parser.add_argument("--baud-lines", type=int, default=1500, help="commands per baud-rate run")
    parser.add_argument("--big-mb", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="three files, smaller runs, 20 MB 'big' file")
    parser.add_argument("--parts", default="abc", help="which parts to run (a, b, c)")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    files = sorted(GCODE_DIR.glob("*.gcode"))
    if args.quick:
        files, args.peer_lines, args.big_mb = files[:3], 3000, 20
    peer = ensure_peer()
    results: dict = {"instant": [], "baud": [], "rss": []}

    if "a" in args.parts:
        part_a(args, files, peer, results)
    if "b" in args.parts:
        part_b(args, files, peer, results)
    if "c" in args.parts:
        part_c(args, files, results)
    (OUT / f"stream-{args.parts}.json").write_text(json.dumps(results, indent=1))
    return 0


def part_a(args: argparse.Namespace, files: list[Path], peer: Path, results: dict) -> None:
    print("## (a) instant mode: virtual printer at time scale 0, Marlin buffers (BUFSIZE 4, RX 128 B)\n")
    print("| file | lines | printcore lines/s | printcore µs/line | ours lines/s (same lines) | ours µs/line "
          "| speed-up | CPU ratio | ours lines per read / per write | ours lines/s (whole file) "
          "| ours µs/line (whole file) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for path in files:
        head, _ = prefix_file(path, args.peer_lines, OUT)
        theirs = run_printcore(peer, head)
        ours = run_ours(head)
        whole = run_ours(path)
        row = {"file": path.name, "lines": ours["lines"], "printcore": theirs, "ours": ours, "ours_whole": whole}
        results["instant"].append(row)
        print(f"| {path.name} | {ours['lines']} | {theirs['lines_per_s']:.0f} | {theirs['cpu_us_per_line']:.1f} "
              f"| {ours['lines_per_s']:.0f} | {ours['cpu_us_per_line']:.1f} "
              f"| {ours['lines_per_s'] / theirs['lines_per_s']:.1f}× "
              f"| 1/{theirs['cpu_us_per_line'] / ours['cpu_us_per_line']:.0f} "
              f"| {ours['lines'] / max(ours['reads'], 1):.1f} / {ours['lines'] / max(ours['writes'], 1):.1f} "
              f"| {whole['lines_per_s']:.0f} | {whole['cpu_us_per_line']:.1f} |", flush=True)


def part_b(args: argparse.Namespace, files: list[Path], peer: Path, results: dict) -> None:
    print("\n## (b) emulated link rate: share of the link's line capacity\n")
    print("| baud | file | mean framed bytes | capacity lines/s | ours lines/s | ours % | printcore lines/s "
          "| printcore % |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    baud_file, _ = prefix_file(files[0] if args.quick else next(p for p in files if "benchy" in p.name),
                               args.baud_lines, OUT)
    mean_bytes = mean_framed_bytes(baud_file)
    for baud in (115200, 250000):
        capacity = baud / 10 / mean_bytes
        ours = run_ours(baud_file, baud)
        theirs = run_printcore(peer, baud_file, baud)
        results["baud"].append({"baud": baud, "file": baud_file.name, "mean_framed_bytes": mean_bytes,
                                "capacity_lines_s": capacity, "ours": ours, "printcore": theirs})
        print(f"| {baud} | {baud_file.name} | {mean_bytes:.1f} | {capacity:.0f} | {ours['lines_per_s']:.0f} "
              f"| {100 * ours['lines_per_s'] / capacity:.1f} % | {theirs['lines_per_s']:.0f} "
              f"| {100 * theirs['lines_per_s'] / capacity:.1f} % |", flush=True)



def part_c(args: argparse.Namespace, files: list[Path], results: dict) -> None:
    print("\n## (c) peak RSS of `printnode print`\n")
    print("| file | size MB | lines | peak RSS MB | lines/s |")
    print("|---|---:|---:|---:|---:|")
    small = next(p for p in sorted(GCODE_DIR.glob("*.gcode")) if 0.5e6 < p.stat().st_size < 1.5e6)
    big = big_file(args.big_mb)
    for path in (small, big):
        ours = run_ours(path)
        results["rss"].append({"file": path.name, "bytes": path.stat().st_size, **ours})
        print(f"| {path.name} | {path.stat().st_size / 1e6:.1f} | {ours['lines']} | {ours['max_rss_mb']:.1f} "
              f"| {ours['lines_per_s']:.0f} |", flush=True)
    resume_scan(big, results)


def resume_scan(path: Path, results: dict) -> None:
    """CPU seconds to replay the state at the end of ``path`` (what a resume does deep in a big file)."""
    from node.printer.resume import state_at, state_at_reference

    print("\n## (c) resume replay: `state_at` at the end of the file\n")
    print("| file | size MB | native s (CPU) | Python reference s (CPU) | speed-up | same state |")
    print("|---|---:|---:|---:|---:|---|")
    size = path.stat().st_size
    timings = {}
    states = {}
    for name, scan in (("native", state_at), ("reference", state_at_reference)):
        best = None
        for _ in range(1 if name == "reference" else 3):
            before = time.process_time()
            states[name] = scan(path, size)
            spent = time.process_time() - before
            best = spent if best is None else min(best, spent)
        timings[name] = best
    same = states["native"] == states["reference"]
    results["resume_scan"] = {"file": path.name, "bytes": size, "native_s": timings["native"],
                              "reference_s": timings["reference"], "same_state": same}
    print(f"| {path.name} | {size / 1e6:.1f} | {timings['native']:.2f} | {timings['reference']:.1f} "
          f"| {timings['reference'] / timings['native']:.0f}× | {'yes' if same else 'NO'} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
