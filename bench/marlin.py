"""Real Marlin in the loop: `printnode print` against Marlin firmware built for its Linux HAL.

    .venv/bin/python bench/marlin.py --marlin-bin PATH      # or PRINTNODE_MARLIN_BIN=PATH
    .venv/bin/python bench/marlin.py --marlin-bin PATH --files check,benchy --lines 500

PATH is a Marlin 2.x executable built for its Linux HAL (``MOTHERBOARD BOARD_SIMULATED``; see
docs/benchmarks.md, "Real Marlin", for the configuration it needs). This project builds no firmware
and downloads nothing at run time: without an executable the script says so and exits 2.

For every file it starts a fresh firmware process in its own process group and working directory
(an empty ``eeprom.dat``, or every setting stays zero), its stdin/stdout on a pseudo-terminal through
``socat`` with ``stdbuf -o0``, and ``tee`` keeping what the firmware said (``firmware.log``: the
judge below reads the firmware's own words, not the sender's). Then it runs the project's real sender,
``printnode print --json``, under a time bound, switches the heaters off on the port afterwards and
checks they read 0, and ends the process group (the simulated firmware busy-spins: a core or more).

Files: the first ``--lines`` commands (default 2,000) of each real slicer file in ../shared/gcode
(never copied into the project; the prefix goes to bench/out/marlin/), with their own heating, and
``check``: a relative-mode file this script writes itself, where each block moves X, Y, Z and E by
lengths that are distinct within the block (multiples of 0.25 mm, exact in the firmware's floats)
and ends with M114. Every M114 report must equal the running sum of the moves before it, there must
be exactly one report per block, and the last one must be the file's total: a lost line or a line
executed twice shifts every report after it, so it cannot pass.

The bound per file: 600 s + 3 x (the analysed motion and heat-up time of the prefix), the analysis
being this project's own (`node.gcode.analysis`, profile ender3); the simulated heaters reach 200 °C
in about a minute. Past the bound the sender is ended and the file fails with "timeout".

Results: a Markdown table on stdout, bench/out/marlin/marlin.json, and per file the firmware log and
the sender's stderr under bench/out/marlin/<file>/.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GCODE_DIR = Path(os.environ.get("PRINTNODE_GCODE", ROOT.parent.parent / "shared" / "gcode"))
if not GCODE_DIR.exists():
    GCODE_DIR = Path("/work/shared/gcode")
OUT = HERE / "out" / "marlin"
PY = sys.executable
BAUD = 250000  # the firmware's BAUDRATE; a pseudo-terminal ignores it
CHECK_NAME = "check"
#: echoed by M118 before the first block: G28 and G92 report the position too, the judge starts here
CHECK_MARKER = "relative-mode blocks begin"
QUARTER_MM = 0.25
#: the bound per file: the simulated bed (bang-bang, checked every 5 s) overshoots a target by up to
#: 17 °C and cools ~2 °C/min, so M190 waits minutes no thermal model predicts, and on a loaded machine
#: the simulation runs slower than real time; the bound only keeps a stalled run from waiting forever
BOUND_BASE_S, BOUND_FACTOR = 600.0, 3.0

sys.path.insert(0, str(ROOT))
from _gcode_prefix import prefix_file  # noqa: E402

REPORT = re.compile(rb"X:(-?\d+\.\d+) Y:(-?\d+\.\d+) Z:(-?\d+\.\d+) E:(-?\d+\.\d+) Count")
TEMPS = re.compile(rb"T:(-?\d+\.\d+) /(-?\d+\.\d+) B:(-?\d+\.\d+) /(-?\d+\.\d+)")


@dataclass
class FileResult:
    """One file's run, as reported in the table and the JSON."""

    file: str
    commands: int
    status: str = "not run"
    reason: str = ""
    lines: int = 0
    seconds: float = 0.0
    lines_per_s: float = 0.0
    resends: int = 0
    firmware_resend_requests: int = 0
    firmware_errors: dict[str, int] = field(default_factory=dict)
    bound_s: float = 0.0
    heaters_off: bool = False
    check: dict[str, object] = field(default_factory=dict)
    passed: bool = False


# --- the relative-mode check file -------------------------------------------------------------------

@dataclass
class CheckFile:
    """The generated G91 file and the positions its M114 reports must show, in order."""

    path: Path
    commands: int
    expected: list[tuple[float, float, float, float]]


def write_check_file(path: Path, blocks: int, moves_per_block: int = 8, tamper: str = "") -> CheckFile:
    """Blocks of relative moves with lengths distinct per axis within a block, each closed by M114.

    Signs alternate block by block so the head stays near the middle of the bed (software endstops
    would clamp a move that runs off it, and a clamped move would hide nothing but fail the check).
    ``tamper`` ("lost" or "doubled") drops or repeats one move of the second block in the file while
    the expected sums stay those of the intact file: the judge's own test (``--prove-judge``).
    """
    x, y, z, e = 100.0, 100.0, 10.0, 0.0
    lines = ["; relative-mode check written by bench/marlin.py: every M114 must equal the running sum",
             "G28", "G90", "G1 X100 Y100 Z10 F6000", "G92 E0", "M302 P1 ; extrude cold: no heating needed here",
             "G91", f"M118 {CHECK_MARKER}"]
    commands = 7
    expected = []
    for block in range(blocks):
        sign = 1 if block % 2 == 0 else -1
        # distinct quarter-millimetre counts per axis, in a different order every block
        xs = [(block * 3 + i) % moves_per_block + 1 for i in range(moves_per_block)]
        ys = [(block * 5 + 3 * i) % moves_per_block + 1 for i in range(moves_per_block)]
        es = [(block + 5 * i) % moves_per_block + 1 for i in range(moves_per_block)]
        for i in range(moves_per_block):
            dx, dy, de = sign * xs[i] * QUARTER_MM, -sign * ys[i] * QUARTER_MM, es[i] * QUARTER_MM
            feed = 3000 + 600 * ((block + i) % 10)
            lines.append(f"G1 X{dx:.2f} Y{dy:.2f} E{de:.2f} F{feed}")
            x, y, e = x + dx, y + dy, e + de
        dz = sign * (block // 2 % 4 + 1) * QUARTER_MM  # up in one block, the same down in the next
        lines.append(f"G1 Z{dz:.2f} F300")
        z += dz
        lines.append("M114")
        commands += moves_per_block + 2
        expected.append((x, y, z, e))
    lines.append("G90")
    commands += 1
    if tamper:
        victim = next(index for index, line in enumerate(lines) if line.startswith("G1 X-"))  # block 2's first
        if tamper == "lost":
            del lines[victim]
            commands -= 1
        else:
            lines.insert(victim, lines[victim])
            commands += 1
    path.write_text("\n".join(lines) + "\n")
    return CheckFile(path, commands, expected)


def judge_check(log: bytes, check: CheckFile) -> dict[str, object]:
    """Compare the firmware's M114 reports with the running sums (the firmware's words, from its log)."""
    marker = log.find(CHECK_MARKER.encode())
    if marker < 0:
        return {"blocks": len(check.expected), "reports": 0, "ok": False, "mismatch_count": 0,
                "problem": "the firmware never echoed the M118 marker before the first block"}
    report_lines = [line for line in log[marker:].split(b"\n") if b"Count" in line]
    parsed = [REPORT.search(line) for line in report_lines]
    # after the marker only the blocks' M114 report a position (the handshake and the end send none)
    mismatches = []
    garbled = 0
    for index, (match, want) in enumerate(zip(parsed, check.expected)):
        if match is None:
            garbled += 1
            continue
        got = tuple(float(v) for v in match.groups())
        if any(abs(g - w) > 0.001 for g, w in zip(got, want)):
            mismatches.append({"block": index + 1, "expected": want, "reported": got})
    last = parsed[-1] if parsed else None
    final = tuple(float(v) for v in last.groups()) if last else None
    final_ok = final is not None and all(abs(g - w) < 0.001 for g, w in zip(final, check.expected[-1]))
    return {"blocks": len(check.expected), "reports": len(report_lines), "garbled_reports": garbled,
            "mismatches": mismatches[:5], "mismatch_count": len(mismatches), "final_expected": check.expected[-1],
            "final_reported": final, "ok": (len(report_lines) == len(check.expected) and not mismatches
                                            and final_ok)}


# --- the real files ---------------------------------------------------------------------------------

def bound_seconds(path: Path) -> float:
    from node.gcode.analysis import analyze_file
    from node.printer.profile import load_profile

    analysis = analyze_file(path, load_profile("ender3"))
    return BOUND_BASE_S + BOUND_FACTOR * (analysis.motion_seconds + analysis.heatup_seconds)


# --- the firmware on a pseudo-terminal --------------------------------------------------------------

class MarlinOnPty:
    """A fresh firmware process in its own directory and process group, its serial on a pty."""

    def __init__(self, binary: Path, workdir: Path, trace: bool = False) -> None:
        self.workdir = workdir
        self.port = workdir / "tty"
        self.log = workdir / "firmware.log"
        (workdir / "eeprom.dat").write_bytes(b"")
        self.log.write_bytes(b"")
        if re.search(r"[,:!'\"\\\s]", str(binary)):
            raise RuntimeError(f"{binary}: socat's address syntax needs a path without , : ! quotes or spaces")
        # SYSTEM: runs the pipeline through /bin/sh; tee keeps the firmware's words for the judge
        self.process = subprocess.Popen(
            ["socat", "-d", *(["-v"] if trace else []), f"PTY,link={self.port},raw,echo=0",
             f"SYSTEM:stdbuf -o0 {binary} | tee -a firmware.log,pty,raw,echo=0"],
            cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=(workdir / "socat.log").open("wb"), start_new_session=True)  # with --trace: both directions
        deadline = time.monotonic() + 20
        while not (self.port.exists() and b"start" in self.log.read_bytes()):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.close()
                raise RuntimeError(f"the firmware did not start (see {workdir}/socat.log and firmware.log)")
            time.sleep(0.05)

    def heaters_off(self, timeout_s: float = 60.0) -> bool:
        """Send M104 S0 / M140 S0 (unnumbered: accepted whatever the line number) and read the targets.

        They queue behind whatever the sender left in the firmware's command buffer (a G28 runs to its
        end first), hence the minute. A firmware that halted (M112, kill()) has switched them off.
        """
        import serial

        with serial.Serial(str(self.port), BAUD, timeout=0.2, exclusive=True) as port:
            port.write(b"M104 S0\nM140 S0\n")
            deadline = time.monotonic() + timeout_s
            next_poll = 0.0
            seen = b""
            while time.monotonic() < deadline:
                if time.monotonic() >= next_poll:
                    port.write(b"M105\n")
                    next_poll = time.monotonic() + 1.0
                seen += port.read(4096)
                for match in TEMPS.finditer(seen):
                    if float(match.group(2)) == 0.0 and float(match.group(4)) == 0.0:
                        return True
                if b"kill() called" in seen or b"Printer halted" in seen:
                    return True
        return b"kill() called" in self.log.read_bytes()

    def close(self) -> None:
        """End the whole process group (socat, the shell, the firmware, tee)."""
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _group_alive(self.process.pid):
            time.sleep(0.1)
        if _group_alive(self.process.pid):
            os.killpg(self.process.pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.wait(5)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def firmware_errors(log: bytes) -> tuple[int, dict[str, int]]:
    """Resend requests and error lines the firmware printed, by kind (digits blanked)."""
    resends = sum(1 for line in log.split(b"\n") if line.startswith(b"Resend:"))
    kinds: dict[str, int] = {}
    for line in log.split(b"\n"):
        if line.startswith(b"Error:"):
            kind = re.sub(r"\d+", "#", line[len(b"Error:"):].decode(errors="replace").strip())
            kinds[kind] = kinds.get(kind, 0) + 1
    return resends, kinds


def run_one(binary: Path, name: str, path: Path, commands: int, bound: float,
            check: CheckFile | None = None, trace: bool = False) -> FileResult:
    result = FileResult(file=name, commands=commands, bound_s=round(bound))
    workdir = OUT / name
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    marlin = MarlinOnPty(binary, workdir, trace=trace)
    try:
        started = time.monotonic()
        with (workdir / "sender.stderr").open("wb") as stderr:
            sender = subprocess.Popen([PY, "-m", "node", "print", str(path), "--port", str(marlin.port), "--json",
                                       "--baud", str(BAUD)], cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr)
            try:
                stdout, _ = sender.communicate(timeout=bound)
            except subprocess.TimeoutExpired:
                sender.send_signal(signal.SIGINT)
                try:
                    stdout, _ = sender.communicate(timeout=10)
                except subprocess.TimeoutExpired:
                    sender.kill()
                    stdout, _ = sender.communicate()
                result.status, result.reason = "timeout", f"not done within the bound of {bound:.0f} s"
        wall = time.monotonic() - started
        summary = _last_json(stdout)
        if summary:
            result.status = result.status if result.status == "timeout" else summary["status"]
            result.reason = result.reason or summary["reason"]
            result.lines, result.resends = summary["lines"], summary["resends"]
            result.seconds = summary["seconds"]
        else:
            result.seconds = wall
            if result.status != "timeout":
                result.status = "failed"
                tail = (workdir / "sender.stderr").read_text(errors="replace").strip().splitlines()[-1:]
                result.reason = f"exit {sender.returncode}: {tail[0] if tail else 'no output'}"
        result.lines_per_s = round(result.lines / result.seconds, 1) if result.seconds else 0.0
        result.seconds = round(result.seconds, 1)
        try:
            result.heaters_off = marlin.heaters_off()
        except OSError as exc:  # serial errors are OSErrors: the judge records it, the run goes on
            result.reason += f"; heaters-off check failed: {exc}"
    finally:
        marlin.close()
    log = marlin.log.read_bytes()
    result.firmware_resend_requests, result.firmware_errors = firmware_errors(log)
    result.passed = result.status == "completed" and result.heaters_off
    if check is not None:
        result.check = judge_check(log, check)
        result.passed = result.passed and bool(result.check["ok"])
    return result


def _last_json(stdout: bytes | None) -> dict | None:
    """``printnode print --json``'s summary line (progress lines come before it; a print that failed
    before its end writes none, and the caller reads the reason from stderr)."""
    for line in reversed((stdout or b"").decode(errors="replace").strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and value.get("type", "summary") == "summary":
            return value
    return None


def missing_tools() -> list[str]:
    return [tool for tool in ("socat", "stdbuf", "tee") if shutil.which(tool) is None]


def main() -> int:
    global OUT
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--marlin-bin", type=Path, default=os.environ.get("PRINTNODE_MARLIN_BIN"),
                        help="Marlin executable built for its Linux HAL (or PRINTNODE_MARLIN_BIN)")
    parser.add_argument("--lines", type=int, default=2000, help="commands per real file")
    parser.add_argument("--check-blocks", type=int, default=200, help="blocks of the check file (10 lines each)")
    parser.add_argument("--files", default="", help="comma-separated: 'check' and/or parts of file names")
    parser.add_argument("--prove-judge", action="store_true",
                        help="only the check file, twice, with one move lost and one doubled: both must fail")
    parser.add_argument("--out", type=Path, default=OUT, help="where logs and results go")
    parser.add_argument("--trace", action="store_true",
                        help="log every byte both ways, with times, in <out>/<file>/socat.log (socat -v): what a "
                             "failed run needs to be understood")
    args = parser.parse_args()
    OUT = args.out.resolve()  # socat runs in the file's directory: its pty link needs an absolute path
    if args.marlin_bin is None:
        print("bench/marlin.py: no Marlin executable given (--marlin-bin or PRINTNODE_MARLIN_BIN); "
              "see docs/benchmarks.md, 'Real Marlin'. Nothing run.", file=sys.stderr)
        return 2
    binary = Path(args.marlin_bin).resolve()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        print(f"bench/marlin.py: {binary}: not an executable file", file=sys.stderr)
        return 2
    missing = missing_tools()
    if missing:
        print(f"bench/marlin.py: needs {', '.join(missing)}: run scripts/ensure-system-deps.sh marlin "
              "(or apt-get install socat coreutils)", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    wanted = [part.strip() for part in args.files.split(",") if part.strip()]
    runs: list[tuple[str, Path, int, float, CheckFile | None]] = []
    if args.prove_judge:
        for tamper in ("lost", "doubled"):
            check = write_check_file(OUT / f"check-{tamper}.gcode", args.check_blocks, tamper=tamper)
            runs.append((f"check-{tamper}", check.path, check.commands, bound_seconds(check.path), check))
    elif not wanted or CHECK_NAME in wanted:
        check = write_check_file(OUT / "check.gcode", args.check_blocks)
        runs.append((CHECK_NAME, check.path, check.commands, bound_seconds(check.path), check))
    names = [part for part in wanted if part != CHECK_NAME]
    files = sorted(GCODE_DIR.glob("*.gcode"))
    if wanted:  # in the order asked for (`--files check` alone: the check file only)
        files = [path for part in names for path in files if part in path.name]
    for path in files if not args.prove_judge else ():
        prefix, count = prefix_file(path, args.lines, OUT)
        runs.append((path.stem, prefix, count, bound_seconds(prefix), None))
    print(f"firmware: {binary}\n")
    print("| file | commands | lines acked | time s | lines/s | resends (sender) | resend requests (firmware) "
          "| heaters off | check | result |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---|---|")
    results = []
    for name, path, commands, bound, check in runs:
        result = run_one(binary, name, path, commands, bound, check, trace=args.trace)
        results.append(result)
        check_text = "–"
        if result.check:
            check_text = (f"{result.check['reports']}/{result.check['blocks']} reports, "
                          f"{result.check['mismatch_count']} off, final {'=' if result.check['ok'] else '≠'} sum")
        print(f"| {name} | {commands} | {result.lines} | {result.seconds:.1f} | {result.lines_per_s:.1f} "
              f"| {result.resends} | {result.firmware_resend_requests} | {'yes' if result.heaters_off else 'NO'} "
              f"| {check_text} | {'pass' if result.passed else 'FAIL: ' + result.status + ' ' + result.reason} |",
              flush=True)
        (OUT / "marlin.json").write_text(json.dumps([asdict(r) for r in results], indent=1, default=str))
    if args.prove_judge:
        caught = all(not r.check.get("ok") for r in results)
        print(f"\njudge: {'catches' if caught else 'MISSES'} a lost and a doubled line "
              f"({', '.join(r.file + ': ' + str(r.check.get('mismatch_count')) + ' reports off' for r in results)})")
        return 0 if caught else 1
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
