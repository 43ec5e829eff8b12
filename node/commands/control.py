"""CLI commands that talk to the running daemon over its control socket."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from node.commands.common import add_config_arguments, control_socket_from_args, print_json
from node.controlclient import ControlClient, ControlError


def register(subparsers: argparse._SubParsersAction) -> None:
    status = subparsers.add_parser("status", help="what the node is doing")
    _common(status, with_json=True)
    status.set_defaults(func=cmd_status)

    queue = subparsers.add_parser("queue", help="add, list or cancel queued jobs")
    queue_sub = queue.add_subparsers(dest="queue_command", metavar="ACTION", required=True)
    add = queue_sub.add_parser("add", help="queue a G-code file")
    _common(add, with_json=True)
    add.add_argument("file", type=Path)
    add.add_argument("--priority", type=int, default=0, help="higher prints first (-100..100)")
    add.add_argument("--name", default=None, help="job name (default: the file name)")
    add.set_defaults(func=cmd_queue_add)
    listing = queue_sub.add_parser("list", help="list pending jobs (--all: every job)")
    _common(listing, with_json=True)
    listing.add_argument("--all", action="store_true")
    listing.set_defaults(func=cmd_queue_list)
    move = queue_sub.add_parser("move", help="move a waiting job in the queue (not one on the printer)")
    _common(move, with_json=True)
    move.add_argument("job")
    where = move.add_mutually_exclusive_group(required=True)
    where.add_argument("--to", type=int, metavar="N", help="to position N of the waiting jobs (1 = next)")
    where.add_argument("--top", action="store_const", dest="to", const=1, help="to the head of the queue")
    where.add_argument("--bottom", action="store_const", dest="to", const=100000, help="to the end of the queue")
    where.add_argument("--up", action="store_const", dest="by", const=-1, help="one place up")
    where.add_argument("--down", action="store_const", dest="by", const=1, help="one place down")
    where.add_argument("--priority", type=int, help="a new priority (-100..100; higher prints first)")
    move.set_defaults(func=cmd_queue_move, by=None)
    qcancel = queue_sub.add_parser("cancel", help="cancel a job")
    _common(qcancel, with_json=True)
    qcancel.add_argument("job")
    qcancel.set_defaults(func=lambda a: _job_command(a, "cancel"))

    for verb, text in (("pause", "pause the current (or given) job"), ("resume", "resume a paused job"),
                       ("cancel", "cancel the current (or given) job")):
        parser = subparsers.add_parser(verb, help=text)
        _common(parser, with_json=True)
        parser.add_argument("job", nargs="?", default=None)
        parser.set_defaults(func=lambda a, v=verb: _job_command(a, v))

    show = subparsers.add_parser("job", help="one job with its full transition history")
    _common(show, with_json=True)
    show.add_argument("job")
    show.set_defaults(func=cmd_job_show)

    plate = subparsers.add_parser("plate-cleared", help="confirm the build plate is empty")
    _common(plate, with_json=True)
    plate.set_defaults(func=lambda a: _simple(a, {"cmd": "plate_cleared"}, "plate confirmed clear"))


def _common(parser: argparse.ArgumentParser, with_json: bool) -> None:
    add_config_arguments(parser)
    parser.add_argument("--socket", type=Path, default=None, help="control socket (default: from the config)")
    if with_json:
        parser.add_argument("--json", action="store_true", help="machine-readable output")


def _client(args: argparse.Namespace) -> ControlClient:
    path = args.socket or control_socket_from_args(args)
    return ControlClient(path)


def _call(args: argparse.Namespace, payload: dict[str, Any], body: Path | None = None) -> Any:
    try:
        return _client(args).request(payload, body)
    except ControlError as exc:
        print(f"printnode: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except TimeoutError:
        print(f"printnode: the daemon did not answer {payload.get('cmd')!r} in time; it may still act on it "
              "(see `printnode status`)", file=sys.stderr)
        raise SystemExit(1) from None
    except (OSError, ValueError) as exc:  # a reset socket, a reply cut short
        print(f"printnode: {payload.get('cmd')!r} failed: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def printable(text: str) -> str:
    """A name or reason as a terminal may show it: control characters (newlines, ANSI escapes)
    written as escapes, so a job name cannot forge lines or colours."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _job_line(job: dict[str, Any]) -> str:
    state = job["state"] + (f" ({job['pause_reason']})" if job.get("pause_reason") else "")
    return (f"{job['id']}  {state:<22} p{job['priority']:<4} v{job['version']:<3} {printable(job['name'])}  "
            f"{printable(job['reason'])}")


def cmd_status(args: argparse.Namespace) -> int:
    report = _call(args, {"cmd": "status"})
    if args.json:
        print_json(report)
        return 0
    printer = report["components"].get("printer", {})
    runner = report["components"].get("runner", {})
    print(f"node {report['node_id']} (printnode {report['version']})  sim time {report['sim_time']}"
          f"  x{report['time_scale']:g}")
    temps = printer.get("temperatures")
    temp_text = "" if not temps else (f"  hotend {temps['hotend_c']:.0f}/{temps['hotend_target_c']:.0f} C"
                                      f"  bed {temps['bed_c']:.0f}/{temps['bed_target_c']:.0f} C")
    print(f"printer: {printer.get('state', '?')}{temp_text}")
    progress = printer.get("progress")
    if runner.get("current_job") and progress:
        print(f"printing {runner['current_job']}: {progress['percent']:.1f} %  ({progress['lines_sent']} lines)")
    power = report["components"].get("telemetry", {})
    sample = power.get("last_sample") or {}
    if power.get("link") == "lost":
        from datetime import UTC, datetime

        from node.power.telemetry import duration_text

        since = power.get("lost_since_t_s")
        when = "" if since is None else " since " + datetime.fromtimestamp(since, tz=UTC).isoformat(timespec="minutes")
        print(f"telemetry: {power.get('source', '?')} charge controller LOST{when} "
              f"({duration_text(power.get('lost_for_s') or 0.0)}): {power.get('last_error') or 'silent'}; "
              f"SoC estimated without it (own draw out, no PV in)")
    if sample:
        stale = "  (STALE: no fresh reading)" if sample.get("stale") else ""
        print(f"power: PV {_num(sample.get('pv_w'), 'W')}  battery {_num(sample.get('battery_v'), 'V', 2)} "
              f"{_num(sample.get('battery_a'), 'A', 1)}  SoC {_num(power.get('soc_pct'), '%')} "
              f"({power.get('level', '?')})  printer {_num(sample.get('printer_w'), 'W')}"
              f"  [{power.get('source', '?')}]{stale}")
    planner = report["components"].get("planner")
    if planner and planner.get("next_start_s"):
        from datetime import UTC, datetime
        when = datetime.fromtimestamp(planner["next_start_s"], tz=UTC).isoformat(timespec="minutes")
        print(f"plan: next print window {when}; {planner.get('planned', 0)} planned, "
              f"{planner.get('waiting', 0)} waiting (`printnode plan` says why)")
    for problem in report.get("problems") or []:
        print(f"PROBLEM: {problem}")
    print(f"plate: {'clear' if runner.get('plate_clear') else 'occupied (run `printnode plate-cleared`)'}")
    jobs = report["jobs"]
    print(f"jobs pending: {len(jobs)}")
    waiting = runner.get("waiting") or {}
    for job in jobs:
        print("  " + _job_line(job))
        if job["id"] in waiting:
            print(f"      waits: {printable(waiting[job['id']])}")
    return 0


def _num(value: Any, unit: str, digits: int = 0) -> str:
    return "?" if value is None else f"{value:.{digits}f} {unit}"


def cmd_queue_add(args: argparse.Namespace) -> int:
    path: Path = args.file
    if not path.is_file():
        print(f"printnode: {path}: no such file", file=sys.stderr)
        return 1
    if path.stat().st_size == 0:
        print(f"printnode: {path}: the file is empty", file=sys.stderr)
        return 1
    job = _call(args, {"cmd": "queue_add", "name": args.name or path.name, "size_bytes": path.stat().st_size,
                       "priority": args.priority}, body=path)
    rejected = job["state"] == "rejected"
    if args.json:
        print_json(job)
    elif rejected:
        print(f"printnode: REJECTED {job['id']}  {printable(job['name'])}: {printable(job['reason'])}", file=sys.stderr)
    else:
        print(f"queued {job['id']}  {printable(job['name'])}")
    return 3 if rejected else 0


def cmd_queue_list(args: argparse.Namespace) -> int:
    jobs = _call(args, {"cmd": "queue_list", "all": args.all})
    if args.json:
        print_json(jobs)
    else:
        for job in jobs:
            print(_job_line(job))
        if not jobs:
            print("no jobs")
    return 0


def cmd_queue_move(args: argparse.Namespace) -> int:
    job = _call(args, {"cmd": "queue_move", "job": args.job, "to": args.to, "by": args.by, "priority": args.priority})
    if args.json:
        print_json(job)
        return 0
    listed = _call(args, {"cmd": "queue_list"})
    waiting = [j for j in listed if j["state"] in ("queued", "waiting_plate", "waiting_energy")]
    position = next((i for i, j in enumerate(waiting, 1) if j["id"] == job["id"]), None)
    print(f"moved {job['id']}  {printable(job['name'])}: "
          + (f"{position} of {len(waiting)} waiting, " if position else "") + f"priority {job['priority']}")
    return 0


def cmd_job_show(args: argparse.Namespace) -> int:
    shown = _call(args, {"cmd": "job_show", "job": args.job})
    if args.json:
        print_json(shown)
        return 0
    print(_job_line(shown["job"]))
    for t in shown["history"]:
        print(f"  v{t['version']:<3} {t['from_state'] or '-':>14} -> {t['to_state']:<14} {printable(t['reason'])}")
    return 0


def _job_command(args: argparse.Namespace, verb: str) -> int:
    job = _call(args, {"cmd": verb, "job": args.job})
    print_json(job) if args.json else print(_job_line(job))
    return 0


def _simple(args: argparse.Namespace, payload: dict[str, Any], text: str) -> int:
    result = _call(args, payload)
    print_json(result) if args.json else print(text)
    return 0
