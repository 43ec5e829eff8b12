"""The node's own footprint on a Pi-Zero-sized CPU (issue #19): memory, CPU, link use, re-plan and CLI time
under a cgroup CPU quota of 12 % of one core.

    .venv/bin/python bench/footprint.py [--quota-pct 12] [--idle-minutes 5] [--day-minutes 14]

The daemon (and what it spawns itself: the pvlib forecast worker) runs in a cgroup limited to
``--quota-pct`` of one core (cgroup v1 ``cpu.cfs_quota_us`` under /sys/fs/cgroup/cpu, or v2
``cpu.max``; needs root).  The stand-ins for hardware — the virtual printer and the simulated charge
controller, separate processes on ptys — are moved back out of the quota once they have started and run
in the real-time class (SCHED_FIFO; else nice -10): on a Pi they are a printer and a charge controller, not
the node's CPU, and other load on this VM must not make them late.  Three phases:

1. **idle**: time scale 1, no job, offline, web page on (the defaults): the daemon's CPU over
   ``--idle-minutes`` after a settling minute, as % of one core.
2. **day**: the Makefile's ``make run`` day (RUN_ARGS: 05:00 at 120x, four sample parts, the cloud)
   with the virtual printer emulating a 250000-baud link (``printer.virtual.baud``).  Every second:
   the daemon's VmRSS, its CPU (its own and its node children's, simulators excluded), whether it
   prints, the lines acknowledged, the planner's last re-plan time; every 20 s ``printnode status``
   is run inside the quota and timed.  Ends when the four parts are done or after ``--day-minutes``.
3. **print**: a dense job (``--print-lines`` short moves) at noon on a full battery, 120x, the same
   250000-baud link: at 120x the sample parts' long moves leave the link mostly idle, these do not, so
   the lines acknowledged per second measure how much of the link the stream holds under the quota.

Link use: job lines acknowledged per second while lines move, times the mean framed line of the job
(``N<n> <cmd>*<xor>\\n``, bench/stream.py), over the link's byte rate (baud / 10, 8N1).  Prints a
report and one JSON line; writes bench/out/footprint.json.  docs/benchmarks.md ("Footprint") quotes it.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from stream import mean_framed_bytes  # noqa: E402

from node.controlclient import ControlClient  # noqa: E402

TICK_S = os.sysconf("SC_CLK_TCK")
SIMULATORS = ("virtual-printer", "node.power.simcontroller")
BAUD = 250_000


# --- the quota -----------------------------------------------------------------------------------
class CpuQuota:
    """A cgroup limited to ``pct`` % of one core: v1 (cpu controller) or v2 (cpu.max)."""

    def __init__(self, pct: float) -> None:
        period_us = 100_000
        quota_us = int(period_us * pct / 100)
        name = f"printnode-footprint-{os.getpid()}"
        v1 = Path("/sys/fs/cgroup/cpu")
        v2 = Path("/sys/fs/cgroup")
        if (v1 / "cpu.cfs_quota_us").exists():
            self.version, self.root = 1, v1
            self.path = v1 / name
            self.path.mkdir()
            (self.path / "cpu.cfs_period_us").write_text(str(period_us))
            (self.path / "cpu.cfs_quota_us").write_text(str(quota_us))
        elif "cpu" in (v2 / "cgroup.controllers").read_text().split():
            self.version, self.root = 2, v2
            subtree = v2 / "cgroup.subtree_control"
            if "cpu" not in subtree.read_text().split():
                subtree.write_text("+cpu")
            self.path = v2 / name
            self.path.mkdir()
            (self.path / "cpu.max").write_text(f"{quota_us} {period_us}")
        else:
            raise SystemExit("no cgroup cpu controller (v1 /sys/fs/cgroup/cpu or v2 cpu.max) on this machine")
        self.pct = pct
        self.nice = 0  # --node-nice: the daemon's priority against other load on this VM (0: as any process)

    def prioritise(self, nice: int) -> None:
        """The node's processes at ``nice`` and their cgroup's weight to match (the group competes with the
        VM's other processes as one entity: a nice value inside it alone does not reach them)."""
        self.nice = nice
        if nice:
            factor = 1.25 ** -nice  # the kernel's weight step per nice level
            if self.version == 1:
                (self.path / "cpu.shares").write_text(str(round(1024 * factor)))
            else:
                (self.path / "cpu.weight").write_text(str(max(1, min(10000, round(100 * factor)))))

    def enter(self) -> None:
        """For preexec_fn: the calling (child) process joins the quota before it execs."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))
        if self.nice:
            os.setpriority(os.PRIO_PROCESS, 0, self.nice)

    def release(self, pid: int) -> None:
        (self.root / "cgroup.procs").write_text(str(pid))

    def throttled(self) -> dict[str, float]:
        stat = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines())
        if self.version == 1:
            return {"periods": int(stat["nr_periods"]), "throttled": int(stat["nr_throttled"]),
                    "throttled_s": int(stat["throttled_time"]) / 1e9}
        return {"periods": int(stat["nr_periods"]), "throttled": int(stat["nr_throttled"]),
                "throttled_s": int(stat["throttled_usec"]) / 1e6}

    def remove(self) -> None:
        for pid in (self.path / "cgroup.procs").read_text().split():
            try:
                self.release(int(pid))
            except OSError:
                pass
        self.path.rmdir()


# --- processes -----------------------------------------------------------------------------------
def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


def cpu_s(pid: int, with_waited_children: bool = False) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if with_waited_children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime: the forecast workers that exited
    return ticks / TICK_S


def node_cpu_s(daemon_pid: int) -> float:
    """The daemon's CPU and its node children's (the pvlib worker), not the simulators'."""
    total = cpu_s(daemon_pid, with_waited_children=True)
    for child in children(daemon_pid):
        if not any(s in cmdline(child) for s in SIMULATORS):
            total += cpu_s(child) + sum(cpu_s(c) for c in children(child))
    return total


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def run_args() -> list[str]:
    """The Makefile's RUN_ARGS: exactly `make run`'s day."""
    text = (ROOT / "Makefile").read_text()
    match = re.search(r"^RUN_ARGS \?= ((?:.*\\\n)*.*)$", text, re.M)
    assert match, "RUN_ARGS not found in the Makefile"
    return shlex.split(match.group(1).replace("\\\n", " "))


def start(state: Path, args: list[str], quota: CpuQuota) -> tuple[subprocess.Popen[bytes], ControlClient]:
    log = (state.parent / f"{state.name}.log").open("ab")
    process = subprocess.Popen([sys.executable, "-m", "node", "run", "--state-dir", str(state), *args],
                               stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, preexec_fn=quota.enter)
    client = ControlClient(state / "control.sock", timeout_s=30)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daemon exited with {process.returncode}; see {log.name}")
        try:
            client.request({"cmd": "status"})
            break
        except Exception:
            time.sleep(0.3)
    else:
        raise RuntimeError("daemon did not come up")
    for child in children(process.pid):  # the hardware stand-ins are not the node's CPU
        if any(s in cmdline(child) for s in SIMULATORS):
            quota.release(child)
            for grandchild in children(child):
                quota.release(grandchild)
            hardware_priority(child)
    return process, client


def hardware_priority(pid: int) -> None:
    """A printer's firmware runs on its own microcontroller: whatever else loads this shared VM must not
    make the stand-in late (a late stand-in acknowledges late, and the link idles for it, not for the
    node).  Every thread of it in the real-time class (SCHED_FIFO 10: it runs as soon as it wakes,
    ahead of every ordinary process; its threads sleep between lines, and the kernel keeps 5 % of each
    second for the rest), else at nice -10 (root).  Under four busy loops on this 2-core VM the stand-in
    at nice -10 still wrote two thirds of the oks that left the wire idle after it had gone idle (a
    wire trace, docs/benchmarks.md)."""
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            os.sched_setscheduler(int(task.name), os.SCHED_FIFO, os.sched_param(10))
        except OSError:
            try:
                os.setpriority(os.PRIO_PROCESS, int(task.name), -10)
            except OSError:
                pass


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def timed_status(state: Path, quota: CpuQuota) -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "node", "status", "--state-dir", str(state)], capture_output=True,
                   cwd=ROOT, preexec_fn=quota.enter, check=True, timeout=60)
    return time.monotonic() - started


# --- the phases ----------------------------------------------------------------------------------
def idle_phase(work: Path, quota: CpuQuota, minutes: float) -> dict:
    state = work / "idle"
    process, client = start(state, ["--set", "jobs.queue_sample_when_empty=false"], quota)
    try:
        time.sleep(60)  # settle: the first forecast and plan, the web page's first files
        cpu0, wall0, rss0 = node_cpu_s(process.pid), time.monotonic(), rss_mb(process.pid)
        throttled0 = quota.throttled()
        time.sleep(minutes * 60)
        cpu1, wall1 = node_cpu_s(process.pid), time.monotonic()
        throttled1 = quota.throttled()
        latencies = [timed_status(state, quota) for _ in range(5)]
        return {"minutes": minutes, "cpu_pct_of_core": round(100 * (cpu1 - cpu0) / (wall1 - wall0), 3),
                "rss_mb_start": round(rss0, 1), "rss_mb_end": round(rss_mb(process.pid), 1),
                "throttled_periods": throttled1["throttled"] - throttled0["throttled"],
                "cli_status_s": [round(x, 3) for x in latencies]}
    finally:
        stop(process)


def day_phase(work: Path, quota: CpuQuota, minutes: float) -> dict:
    state = work / "day"
    args = [*run_args(), "--set", f"printer.virtual.baud={BAUD}"]
    process, client = start(state, args, quota)
    samples: list[dict] = []
    latencies: list[float] = []
    replans: list[dict] = []
    replans_seen, cli_ran = 0, False
    mean_bytes: dict[str, float] = {}
    started = time.monotonic()
    last_cli = started
    throttled0 = quota.throttled()
    try:
        while time.monotonic() - started < minutes * 60:
            report = client.request({"cmd": "status"})
            components = report["components"]
            runner, printer = components.get("runner", {}), components.get("printer", {})
            job_id = runner.get("current_job")
            progress = printer.get("progress") or {}
            planner = components.get("planner") or {}
            count = planner.get("replans", 0)
            if planner.get("last_replan_ms") is not None and count != replans_seen:
                # each re-plan seen (the bench polls once a second: `missed` more ran in between), what asked
                # for it, where its time went, and whether a `printnode status` ran in the quota meanwhile
                replans.append({"ms": planner["last_replan_ms"], "trigger": planner.get("last_replan_trigger"),
                                "parts_ms": planner.get("last_replan_parts_ms"), "missed": count - replans_seen - 1,
                                "cli_meanwhile": cli_ran, "forecast_pending": planner.get("forecast_pending"),
                                "sim_time": report["sim_time"]})
                replans_seen = count
            cli_ran = False
            if job_id and job_id not in mean_bytes:
                job = client.request({"cmd": "job_show", "job": job_id})["job"]
                if job.get("file_path"):
                    mean_bytes[job_id] = mean_framed_bytes(Path(job["file_path"]))
            samples.append({"t": time.monotonic() - started, "rss_mb": rss_mb(process.pid),
                            "cpu_s": node_cpu_s(process.pid), "sim_time": report["sim_time"],
                            "printing": printer.get("state") == "printing", "job": job_id,
                            "lines": progress.get("lines_sent", 0)})
            if time.monotonic() - last_cli >= 20:
                last_cli = time.monotonic()
                latencies.append(timed_status(state, quota))
                cli_ran = True
            done = [j for j in client.request({"cmd": "queue_list", "all": True}) if j["state"] == "completed"]
            if len(done) >= 4 and not job_id:
                break
            time.sleep(1.0)
    finally:
        throttled1 = quota.throttled()
        stop(process)
    throttled = throttled1["throttled"] - throttled0["throttled"]
    summary = summarise_day(samples, latencies, [r["ms"] for r in replans], mean_bytes, throttled)
    summary["replans"] = replans
    return summary


def print_phase(work: Path, quota: CpuQuota, lines: int) -> dict:
    """A dense job (short moves: the link, not the motion, is the limit at 120x) printed at noon on a full
    battery, the planner re-planning and sync keeping its outbox meanwhile: the share of the 250000-baud
    link the stream holds under the quota."""
    state = work / "print"
    job = work / "dense.gcode"
    moves = [f"G1 X{10 + (i % 2) * 0.5:.1f} Y{10 + (i // 2) % 200 * 0.5:.1f} E{i * 0.02:.2f}" for i in range(lines)]
    job.write_text("\n".join(["G28", "G90", "M82", "G92 E0", "G1 F6000", *moves, "M400"]) + "\n")
    args = ["--set", "clock.time_scale=120", "--set", 'clock.start="11:00"',
            "--set", "jobs.queue_sample_when_empty=false", "--set", "telemetry.simulated.initial_soc=0.95",
            "--set", f"printer.virtual.baud={BAUD}"]
    process, client = start(state, args, quota)
    try:
        time.sleep(10)  # the first forecast and plan
        queued = client.request({"cmd": "queue_add", "name": job.name, "size_bytes": job.stat().st_size}, job)
        samples: list[tuple[float, int, float]] = []
        throttled: list[dict[str, float]] = []
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            report = client.request({"cmd": "status"})
            printer = report["components"].get("printer", {})
            if printer.get("state") == "printing" and printer.get("progress"):
                samples.append((time.monotonic(), printer["progress"]["lines_sent"], node_cpu_s(process.pid)))
                throttled.append(quota.throttled())
            if not any(j["id"] == queued["id"] for j in report["jobs"]):  # no longer pending: ended
                break
            time.sleep(2.0)  # the bench's own questions cost the daemon CPU under the quota: few of them
        state_now = client.request({"cmd": "job_show", "job": queued["id"]})["job"]["state"]
        replan = (client.request({"cmd": "status"})["components"].get("planner") or {}).get("last_replan_ms")
    finally:
        stop(process)
    steady = samples[1:]  # past the handshake and the first window
    framed = mean_framed_bytes(job)
    capacity_lines_s = BAUD / 10 / framed
    lines_s = (steady[-1][1] - steady[0][1]) / (steady[-1][0] - steady[0][0]) if len(steady) > 1 else 0.0
    cpu = (steady[-1][2] - steady[0][2]) / (steady[-1][0] - steady[0][0]) if len(steady) > 1 else 0.0
    return {"lines": lines, "job_state": state_now, "mean_framed_bytes": round(framed, 1),
            "capacity_lines_s": round(capacity_lines_s), "lines_s": round(lines_s),
            "link_use_pct": round(100 * lines_s / capacity_lines_s, 1), "cpu_pct_of_core": round(100 * cpu, 2),
            "seconds_measured": round(steady[-1][0] - steady[0][0], 1) if len(steady) > 1 else 0,
            # the quota stopped the daemon (and its pvlib worker) this often while lines moved: each period
            # throttled leaves the link idle once the few lines the printer's buffer holds have gone
            "throttled_periods": throttled[-1]["throttled"] - throttled[1]["throttled"] if len(throttled) > 2 else None,
            "throttled_s": round(throttled[-1]["throttled_s"] - throttled[1]["throttled_s"], 3)
            if len(throttled) > 2 else None,
            "last_replan_ms": replan}


def summarise_day(samples: list[dict], latencies: list[float], replan_ms: list[float], mean_bytes: dict[str, float],
                  throttled: int) -> dict:
    cpu = {"printing": [0.0, 0.0], "idle": [0.0, 0.0]}  # cpu seconds, wall seconds
    link_pct: list[float] = []
    capacity_bytes_s = BAUD / 10
    for before, after in zip(samples, samples[1:], strict=False):
        kind = "printing" if before["printing"] and after["printing"] else "idle"
        cpu[kind][0] += after["cpu_s"] - before["cpu_s"]
        cpu[kind][1] += after["t"] - before["t"]
        moved = after["lines"] - before["lines"]
        job = after["job"]
        if kind == "printing" and before["job"] == job and moved > 0 and job in mean_bytes:
            link_pct.append(100 * moved * mean_bytes[job] / (after["t"] - before["t"]) / capacity_bytes_s)
    half = samples[len(samples) // 2:]
    rss = [s["rss_mb"] for s in samples]
    return {
        "minutes": round(samples[-1]["t"] / 60, 1) if samples else 0,
        "sim_from": samples[0]["sim_time"] if samples else None, "sim_to": samples[-1]["sim_time"] if samples else None,
        "rss_mb": {"min": round(min(rss), 1),
                   "median_second_half": round(statistics.median(s["rss_mb"] for s in half), 1),
                   "max": round(max(rss), 1),
                   "per_minute": [round(s["rss_mb"], 1) for s in samples[::60]]},
        "cpu_pct_of_core": {k: round(100 * c / w, 2) if w else None for k, (c, w) in cpu.items()},
        "cpu_s_per_hour": {k: round(3600 * c / w, 1) if w else None for k, (c, w) in cpu.items()},
        "link_use_pct": {"intervals": len(link_pct),
                         "median": round(statistics.median(link_pct), 1) if link_pct else None,
                         "mean": round(statistics.fmean(link_pct), 1) if link_pct else None},
        "replan_ms": {"count": len(replan_ms), "median": statistics.median(replan_ms) if replan_ms else None,
                      "max": max(replan_ms) if replan_ms else None,
                      "over_1s": sorted(ms for ms in replan_ms if ms > 1000)},
        "cli_status_s": {"count": len(latencies),
                         "median": round(statistics.median(latencies), 3) if latencies else None,
                         "max": round(max(latencies), 3) if latencies else None},
        "throttled_periods": throttled,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quota-pct", type=float, default=12.0, help="%% of one core (12: about a Pi Zero 2 W core)")
    parser.add_argument("--idle-minutes", type=float, default=5.0)
    parser.add_argument("--day-minutes", type=float, default=14.0, help="give the day up after this long")
    parser.add_argument("--print-lines", type=int, default=30000, help="moves in the dense print")
    parser.add_argument("--node-nice", type=int, default=0,
                        help="run the daemon at this nice value (e.g. -10: other load on a shared VM does not delay "
                             "it, as on a Pi that runs only the node; the quota still holds)")
    parser.add_argument("--skip-idle", action="store_true")
    parser.add_argument("--skip-day", action="store_true")
    parser.add_argument("--skip-print", action="store_true")
    args = parser.parse_args()
    quota = CpuQuota(args.quota_pct)
    quota.prioritise(args.node_nice)
    results: dict = {"quota_pct": args.quota_pct, "cgroup": quota.version, "node_nice": args.node_nice}
    try:
        with tempfile.TemporaryDirectory(prefix="footprint-") as work:
            if not args.skip_idle:
                results["idle"] = idle_phase(Path(work), quota, args.idle_minutes)
                print("idle:", json.dumps(results["idle"]), flush=True)
            if not args.skip_day:
                results["day"] = day_phase(Path(work), quota, args.day_minutes)
                print("day:", json.dumps(results["day"]), flush=True)
            if not args.skip_print:
                results["print"] = print_phase(Path(work), quota, args.print_lines)
                print("print:", json.dumps(results["print"]), flush=True)
    finally:
        quota.remove()
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "footprint.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
