"""What the page shows, in plain words: built from the same status report ``printnode status`` prints
and the planner's snapshot ``printnode plan`` reads, so the page and the CLI say the same things.

Pure: no aiohttp, no I/O; the web component feeds it and sends the result (a :class:`PageState`)
to the page over server-sent events.
"""
from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from node.jobs import ACTIVE_STATES, FINAL_STATES, RUNNABLE_STATES, Job, JobState

STATE_WORDS = {
    JobState.RECEIVED: "announced by the hub, file not here yet",
    JobState.DOWNLOADING: "downloading from the hub",
    JobState.REJECTED: "refused",
    JobState.QUEUED: "queued",
    JobState.WAITING_PLATE: "waiting for the plate to be cleared",
    JobState.WAITING_ENERGY: "waiting for energy",
    JobState.PRINTING: "printing",
    JobState.PAUSED: "paused",
    JobState.SUSPENDED: "paused with the printer switched off",
    JobState.INTERRUPTED: "interrupted",
    JobState.FAILED: "failed",
    JobState.COMPLETED: "completed",
    JobState.CANCELLED: "cancelled",
}
PAUSE_WORDS = {
    "user": "by a person", "energy": "to save energy", "runout": "filament ran out", "door": "the door is open",
    "low_battery": "the battery is low", "printer": "the printer asked",
    "telemetry_lost": "the battery reading is lost",
}
LEVEL_WORDS = {"ok": "fine", "below_reserve": "below the planning reserve", "critical": "CRITICAL: prints pause",
               "node_lvd": "EMPTY: the node is shutting down"}


class JobView(BaseModel):
    id: str
    name: str
    state: str
    words: str  # the state in plain words, with the pause reason
    reason: str  # the job's own last reason (why it was refused, failed, paused)
    waits: str | None = None  # why it waits now (the runner's start gates)
    expected: str | None = None  # when the plan starts it, in local time
    percent: float | None = None
    time_left: str | None = None
    actions: list[str] = []  # pause, resume, cancel, move: what the buttons may do now
    finished: str | None = None


class PageState(BaseModel):
    """One snapshot of the node for the page (sent whole on every change)."""

    node_id: str
    version: str
    now: str  # local time with the zone named
    now_s: float  # node time (the plan's chart draws its "now" line here)
    timezone: str  # the site's zone: the chart's hours are local
    time_scale: float
    printer: str
    temperatures: str | None
    power: str | None
    soc_pct: float | None
    pv_w: float | None
    battery: str | None
    plan: str
    plate_clear: bool
    plate: str
    current: JobView | None
    jobs: list[JobView]
    history: list[JobView]
    alerts: list[str]
    plan_version: float | None  # the plan's time: the page fetches the chart when it changes
    uploaded: list[str] = []  # files uploaded without "print" (a slicer's "Upload"): the page can queue them


def zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except Exception:  # an unknown zone name: say UTC rather than fail the page
        return UTC


def local_time(t_s: float, tz: tzinfo, now_s: float | None = None) -> str:
    """``today 14:05 MST`` / ``tomorrow 07:30 MST`` / ``Tue 3 Jun 08:00 MST``."""
    when = datetime.fromtimestamp(t_s, tz)
    text = when.strftime("%H:%M %Z")
    if now_s is None:
        return text
    days = (when.date() - datetime.fromtimestamp(now_s, tz).date()).days
    if days == 0:
        return f"today {text}"
    if days == 1:
        return f"tomorrow {text}"
    return when.strftime("%a %d %b ") + text


def start_words(t_s: float, tz: tzinfo, now_s: float) -> str:
    """A planned start: ``now`` once its time has come (a plan made a moment ago), else when."""
    return "now" if t_s <= now_s + 60 else local_time(t_s, tz, now_s)


def duration_words(seconds: float) -> str:
    minutes = max(0, round(seconds / 60))
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def _num(value: Any, unit: str, digits: int = 0) -> str:
    return "?" if value is None else f"{value:.{digits}f} {unit}"


def job_actions(job: Job, current_job_id: str | None) -> list[str]:
    actions = []
    if job.state == JobState.PRINTING and job.id == current_job_id:
        actions.append("pause")
    if job.state in (JobState.PAUSED, JobState.SUSPENDED, JobState.INTERRUPTED):
        actions.append("resume")
    if job.state not in FINAL_STATES:
        actions.append("cancel")
    if job.state in RUNNABLE_STATES:
        actions.append("move")  # up/down in the queue: never a job on the printer
    return actions


def job_view(job: Job, *, runner: dict[str, Any], printer: dict[str, Any], expected: dict[str, tuple[float, str]],
             tz: tzinfo, now_s: float) -> JobView:
    words = STATE_WORDS.get(job.state, job.state.value)
    if job.pause_reason is not None and job.state in ACTIVE_STATES:
        words += f" ({PAUSE_WORDS.get(job.pause_reason.value, job.pause_reason.value)})"
    view = JobView(id=job.id, name=job.name, state=job.state.value, words=words, reason=job.reason,
                   waits=(runner.get("waiting") or {}).get(job.id),
                   actions=job_actions(job, runner.get("current_job")))
    if job.id in expected and job.state not in ACTIVE_STATES:
        start_s, why = expected[job.id]
        view.expected = f"expected to start {start_words(start_s, tz, now_s)} ({why})"
    progress = printer.get("progress")
    if progress and progress.get("job_id") == job.id:
        view.percent = round(progress["percent"], 1)
        if 0 < progress["percent"] < 100 and progress.get("elapsed_s"):
            left_s = progress["elapsed_s"] * (100 - progress["percent"]) / progress["percent"]
            view.time_left = f"about {duration_words(left_s)} left"
    if job.finished_s is not None:
        view.finished = local_time(job.finished_s, tz, now_s)
    return view


def page_state(report: Any, plan: dict[str, Any] | None, history: list[Job], *, tz: tzinfo,
               alerts_seen: list[str], library: list[str] | None = None) -> PageState:
    """``report`` is the control API's StatusReport (what ``printnode status`` prints)."""
    components: dict[str, dict[str, Any]] = report.components
    printer = components.get("printer", {})
    runner = components.get("runner", {})
    power = components.get("telemetry", {})
    planner = components.get("planner") or {}
    now_s = datetime.fromisoformat(report.sim_time).timestamp()

    temps = printer.get("temperatures")
    temperatures = None if not temps else (f"hotend {temps['hotend_c']:.0f} / {temps['hotend_target_c']:.0f} °C, "
                                           f"bed {temps['bed_c']:.0f} / {temps['bed_target_c']:.0f} °C")
    printer_text = printer.get("state", "unknown")
    if printer.get("detail"):
        printer_text += f": {printer['detail']}"

    sample = power.get("last_sample") or {}
    power_text = battery_text = None
    if sample:
        power_text = f"sun {_num(sample.get('pv_w'), 'W')}, printer {_num(sample.get('printer_w'), 'W')}"
        level = LEVEL_WORDS.get(power.get("level"), power.get("level"))
        battery_text = (f"{_num(power.get('soc_pct'), '%')} charged ({level}),"
                        f" {_num(sample.get('battery_v'), 'V', 2)}, {_num(sample.get('battery_a'), 'A', 1)}")
        if sample.get("stale"):
            battery_text += " (no fresh reading)"
        for why in (planner.get("finishing") or {}).values():   # the guard lets a print near its end finish
            battery_text += f"; the print finishes below the reserve: {why}"

    expected: dict[str, tuple[float, str]] = {}  # job id -> (planned start, the plan's reason)
    plan_text = "no plan yet (the planner is off or has not planned since the start)"
    plan_version = None
    if plan is not None:
        summary = plan["summary"]
        plan_version = summary["t_s"]
        expected = {p["job_id"]: (p["start_s"], p["reason"]) for p in summary.get("planned", [])}
        if summary.get("next_start_s"):
            plan_text = (f"next print window {start_words(summary['next_start_s'], tz, now_s)}; "
                         f"{len(summary.get('planned', []))} planned, {len(summary.get('waiting', []))} waiting")
        elif summary.get("waiting"):
            plan_text = f"no window in the next {summary['horizon_h']:.0f} h: {summary['waiting'][0]['reason']}"
        else:
            plan_text = "nothing to plan: the queue is empty"
    if planner.get("clock_problem"):
        plan_text = f"no plan: the clock is not trusted ({planner['clock_problem']})"

    jobs = [job_view(j, runner=runner, printer=printer, expected=expected, tz=tz, now_s=now_s) for j in report.jobs]
    current = next((v for v in jobs if v.id == runner.get("current_job")), None)
    plate_clear = bool(runner.get("plate_clear", True))

    alerts = list(report.problems) + list(alerts_seen)
    if power.get("link") == "lost":
        alerts.append(f"battery reading lost ({power.get('last_error') or 'the charge controller is silent'}): "
                      "the charge is estimated, prints are held and then paused")
    if power.get("level") in ("critical", "node_lvd"):
        alerts.append(f"battery {LEVEL_WORDS[power['level']]} at {_num(power.get('soc_pct'), '%')}")
    if printer.get("state") in ("error", "disconnected", "offline"):
        alerts.append(f"printer {printer_text}")
    if planner.get("clock_problem"):
        alerts.append(f"clock not trusted: {planner['clock_problem']}")

    return PageState(
        node_id=report.node_id, version=report.version, now=local_time(now_s, tz), now_s=now_s, timezone=str(tz),
        time_scale=report.time_scale,
        printer=printer_text, temperatures=temperatures, power=power_text, soc_pct=power.get("soc_pct"),
        pv_w=sample.get("pv_w") if sample else None, battery=battery_text, plan=plan_text,
        plate_clear=plate_clear,
        plate="clear" if plate_clear else "occupied: take the print off, then press “Plate cleared”",
        current=current, jobs=jobs,
        history=[job_view(j, runner=runner, printer=printer, expected={}, tz=tz, now_s=now_s) for j in history],
        alerts=alerts, plan_version=plan_version, uploaded=list(library or []))
