"""The fleet as an operator reads it: nodes, jobs, one job's history, alerts, telemetry for charts.

One read model for ``printnode hub nodes | jobs | job`` and the hub's fleet page (node/web/fleet.py), so
the CLI and the page can never disagree.  Pure queries over the ledger (SQLite or PostgreSQL: the SQL is
the subset both speak) plus pure functions over what they return; no broker, no web stack.

Two things the old ``hub status`` got wrong are decided here once:

- **the current job** is the job the printer document names *while that job owns the printer*
  (printing, paused, suspended, interrupted), else the hub's own record of an active job on that
  node; a job the node already reported cancelled or completed is never "current".
- **the queue** is what the node's plan counts (it also knows jobs queued at the node itself), or
  what the hub has sent it and it has not finished, whichever is larger (the node's count lags a
  manifest the hub just sent).
"""
from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from node.hub.ledger import Ledger, LedgerConn
from node.sync.protocol import NodeSite

#: node job states in which a job owns the printer (node.jobs.ACTIVE_STATES, by value: the hub reads strings)
ACTIVE_JOB_STATES = frozenset({"printing", "paused", "suspended", "interrupted"})
#: wire states after which a job will not move again (FAILED may be retried, so it is not here)
FINAL_WIRE_STATES = ("SUCCEEDED", "REJECTED", "CANCELED", "TIMED_OUT")
#: words of a printer error or a failure reason that mean the heaters were the problem
THERMAL_WORDS = ("thermal", "runaway", "mintemp", "maxtemp", "heating failed", "heater")
LOW_SINCE_WINDOW_S = 2 * 86400.0


class AlertSettings(BaseModel):
    """When the fleet view raises an alert (``hub nodes --offline-hours`` etc., and the page's server)."""

    offline_after_h: float = Field(6.0, gt=0, description="a node not heard from for this long is offline")
    low_battery_pct: float = Field(20.0, ge=0, le=100, description="state of charge below this is low")
    stalled_after_min: float = Field(30.0, gt=0, description="a printing job whose progress stood still this long")
    failed_within_h: float = Field(24.0, gt=0, description="failed prints (not retried) this recent are shown")


class Alert(BaseModel):
    node_id: str
    kind: str  # offline | low_battery | failed_print | thermal_fault | stalled
    since_s: float | None
    text: str  # a plain sentence with the node and since when
    job_id: str | None = None


class NodeView(BaseModel):
    node_id: str
    online: bool
    last_seen_s: float | None
    soc_pct: float | None
    pv_w: float | None
    battery_v: float | None
    printer: str | None
    printer_detail: str | None
    hotend_c: float | None
    hotend_target_c: float | None
    bed_c: float | None
    bed_target_c: float | None
    current_job: str | None
    current_job_name: str | None
    current_job_state: str | None
    percent: float | None
    queue_length: int = Field(description="jobs waiting at the node (its plan's count or the hub's, the larger)")
    next_window_start_s: float | None
    next_window_end_s: float | None
    site: NodeSite | None
    alerts: list[Alert] = []


class JobView(BaseModel):
    job_id: str
    name: str
    node_id: str | None
    requested_node: str | None
    state: str = Field(description="the node's state of the job, or the hub's: unassigned, sent, cancelled, "
                                   "timed_out")
    wire_state: str
    version: int
    reason: str
    percent: float | None
    created_s: float
    updated_s: float


class JobEvent(BaseModel):
    version: int
    node_state: str
    wire_state: str
    reason: str
    t_s: float


class JobDetail(JobView):
    file_sha256: str
    file_bytes: int
    requirements: dict[str, Any]
    priority: int
    expires_s: float
    events: list[JobEvent]
    waiting: str | None = Field(description="why the job does not print yet, in words (None when it does or is over)")


class TelemetryPoint(BaseModel):
    t_s: float
    soc_pct: float | None
    pv_w: float | None


def when_words(t_s: float | None) -> str:
    """A time as the CLI and the alerts say it: ``2026-06-21 14:05Z`` (UTC; the page shows local time)."""
    if t_s is None:
        return "never"
    return datetime.fromtimestamp(t_s, tz=UTC).strftime("%Y-%m-%d %H:%MZ")


def duration_words(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


# --- jobs -----------------------------------------------------------------------------------------
def _job_state(row: Any) -> str:
    if row["version"] and row["node_state"]:
        return str(row["node_state"])
    wire = row["wire_state"]
    if wire == "CANCELED":
        return "cancelled"
    if wire == "TIMED_OUT":
        return "timed_out"
    if wire == "REJECTED":
        return "rejected"
    return "sent" if row["hub_state"] == "sent" else "unassigned"


def _job_view(row: Any, cls: type[JobView] = JobView, **extra: Any) -> Any:
    return cls(job_id=row["job_id"], name=row["name"], node_id=row["node_id"], requested_node=row["requested_node"],
               state=_job_state(row), wire_state=row["wire_state"], version=row["version"], reason=row["reason"],
               percent=row["percent"], created_s=row["created_s"], updated_s=row["updated_s"], **extra)


_JOB_SELECT = ("SELECT j.*, pr.percent AS percent FROM jobs j LEFT JOIN progress pr ON pr.job_id = j.job_id")

#: ``--state`` words an operator may use for wire states
STATE_ALIASES = {"cancelled": "CANCELED", "canceled": "CANCELED", "queued": "QUEUED", "in_progress": "IN_PROGRESS",
                 "succeeded": "SUCCEEDED", "failed": "FAILED", "rejected": "REJECTED", "timed_out": "TIMED_OUT"}


def list_jobs(ledger: Ledger, node_id: str | None = None, state: str | None = None,
              limit: int = 200) -> list[JobView]:
    """Newest first.  ``state`` matches the shown state (``printing``, ``unassigned``, ``sent`` ...) or a wire
    state (``queued``, ``in_progress``, ``failed``, ``cancelled`` ...); ``node_id`` the assigned or requested node."""
    wanted = None if state is None else state.strip().lower()
    wire = STATE_ALIASES.get(wanted or "")

    def read(conn: LedgerConn) -> list[JobView]:
        where, args = [], []
        if node_id is not None:
            where.append("(j.node_id = ? OR (j.node_id IS NULL AND j.requested_node = ?))")
            args += [node_id, node_id]
        if wanted is not None:  # the shown state (_job_state) spelled in SQL, so LIMIT applies to the matches
            where.append("(j.wire_state = ? OR (j.version > 0 AND j.node_state = ?)"
                         " OR (j.version = 0 AND j.wire_state = 'QUEUED' AND j.hub_state = ?))")
            args += [wire or "", wanted, {"unassigned": "new", "sent": "sent"}.get(wanted, "")]
        sql = _JOB_SELECT + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY j.created_s DESC, j.job_id LIMIT ?"
        return [_job_view(r) for r in conn.execute(sql, [*args, int(limit)]).fetchall()]

    jobs = ledger.read(read)
    if wanted is not None:  # the same test in Python: what a row shows is _job_state's word
        jobs = [j for j in jobs if j.state == wanted or (wire is not None and j.wire_state == wire)]
    return jobs


def find_job_id(conn: LedgerConn, ref: str) -> str:
    """The job an id or its unambiguous prefix names (KeyError with a sentence otherwise)."""
    rows = conn.execute("SELECT job_id FROM jobs WHERE job_id LIKE ?",
                        (ref.replace("%", "").replace("_", "") + "%",)).fetchall()
    if len(rows) != 1:
        raise KeyError(f"no job {ref!r} on this hub" if not rows else
                       f"{ref!r} matches {len(rows)} jobs; give more of the id")
    return str(rows[0]["job_id"])


def job_detail(ledger: Ledger, ref: str, now_s: float | None = None) -> JobDetail:
    """One job with every version the node reported (time and reason) and why it waits, if it does."""
    now = time.time() if now_s is None else now_s

    def read(conn: LedgerConn) -> JobDetail:
        job_id = find_job_id(conn, ref)
        row = conn.execute(_JOB_SELECT + " WHERE j.job_id = ?", (job_id,)).fetchone()
        events = [JobEvent(version=e["version"], node_state=e["node_state"], wire_state=e["wire_state"],
                           reason=e["reason"], t_s=e["t_s"])
                  for e in conn.execute("SELECT * FROM job_events WHERE job_id = ? ORDER BY version, t_s",
                                        (job_id,)).fetchall()]
        node = None
        if row["node_id"] is not None:
            node = conn.execute("SELECT online, last_seen_s FROM nodes WHERE node_id = ?", (row["node_id"],)).fetchone()
        return _job_view(row, JobDetail, file_sha256=row["file_sha256"], file_bytes=row["file_bytes"],
                         requirements=json.loads(row["requirements"] or "{}"), priority=row["priority"],
                         expires_s=row["expires_s"], events=events, waiting=_waiting_words(row, node, now))

    return ledger.read(read)


def _waiting_words(row: Any, node: Any, now: float) -> str | None:
    """Why a job is not printing, from what the hub knows: the dispatcher's refusals, the node's reason."""
    state = _job_state(row)
    if row["wire_state"] in FINAL_WIRE_STATES or state in ACTIVE_JOB_STATES or state == "completed":
        return None
    if state == "unassigned":
        if row["reason"]:
            return row["reason"]  # the dispatcher's: "no eligible node: vm: material PETG not loaded (PLA)"
        if row["requested_node"]:
            return f"waiting for the hub to send it to {row['requested_node']} (is `printnode hub serve` running?)"
        return "waiting for the hub's dispatcher to choose a node (is `printnode hub serve` running?)"
    if state == "sent":
        seen = "" if node is None else (" (the node is online)" if node["online"] else
                                        f" (the node was last seen {when_words(node['last_seen_s'])})")
        return f"sent to {row['node_id']}; waiting for the node to take it{seen}"
    if state == "failed":
        return f"failed on {row['node_id']}: {row['reason'] or 'no reason given'} (it may be retried at the node)"
    return f"{state.replace('_', ' ')} on {row['node_id']}" + (f": {row['reason']}" if row["reason"] else "")


# --- nodes ----------------------------------------------------------------------------------------
def list_nodes(ledger: Ledger, now_s: float | None = None, settings: AlertSettings | None = None) -> list[NodeView]:
    """Every node the hub knows, with its current job, queue, site and alerts."""
    now = time.time() if now_s is None else now_s
    settings = settings or AlertSettings()

    def read(conn: LedgerConn) -> list[NodeView]:
        open_jobs = {r["node_id"]: int(r["n"]) for r in conn.execute(
            "SELECT node_id, COUNT(*) AS n FROM jobs WHERE node_id IS NOT NULL AND wire_state = 'QUEUED'"
            " GROUP BY node_id").fetchall()}
        active = {}
        for r in conn.execute(_JOB_SELECT + " WHERE j.node_state IN ('printing', 'paused', 'suspended',"
                              " 'interrupted') ORDER BY j.updated_s").fetchall():
            active[r["node_id"]] = r  # the latest active job the hub has on file per node
        views = []
        for n in conn.execute("SELECT * FROM nodes ORDER BY node_id").fetchall():
            views.append(_node_view(conn, n, open_jobs.get(n["node_id"], 0), active.get(n["node_id"]), now, settings))
        return views

    return ledger.read(read)


def _node_view(conn: LedgerConn, n: Any, hub_queue: int, hub_active: Any, now: float,
               settings: AlertSettings) -> NodeView:
    current, state, percent, name = None, None, None, None
    if n["current_job"] and n["job_state"] in ACTIVE_JOB_STATES:
        known = conn.execute(_JOB_SELECT + " WHERE j.job_id = ?", (n["current_job"],)).fetchone()
        # the hub may already have a later report (the job finished) than the retained document
        if known is None or known["wire_state"] not in (*FINAL_WIRE_STATES, "FAILED") or not known["version"]:
            current, state, percent = n["current_job"], n["job_state"], n["percent"]
            name = known["name"] if known is not None else None
    if current is None and hub_active is not None:
        current, state, percent, name = (hub_active["job_id"], hub_active["node_state"], hub_active["percent"],
                                         hub_active["name"])
    view = NodeView(
        node_id=n["node_id"], online=bool(n["online"]),
        last_seen_s=n["last_seen_s"] if n["online"] else _last_heard(conn, n), soc_pct=n["soc_pct"],
        pv_w=n["pv_w"], battery_v=n["battery_v"], printer=n["printer"], printer_detail=n["printer_detail"],
        hotend_c=n["hotend_c"], hotend_target_c=n["hotend_target_c"], bed_c=n["bed_c"], bed_target_c=n["bed_target_c"],
        current_job=current, current_job_name=name, current_job_state=state, percent=percent,
        queue_length=max(int(n["queue_length"] or 0), hub_queue), next_window_start_s=n["next_window_start_s"],
        next_window_end_s=n["next_window_end_s"], site=NodeSite.model_validate_json(n["site"]) if n["site"] else None)
    view.alerts = _node_alerts(conn, view, n, now, settings)
    return view


# --- alerts ---------------------------------------------------------------------------------------
def _node_alerts(conn: LedgerConn, view: NodeView, n: Any, now: float, s: AlertSettings) -> list[Alert]:
    node = view.node_id
    alerts: list[Alert] = []
    last = view.last_seen_s
    if not view.online and last is not None and now - last > s.offline_after_h * 3600:
        alerts.append(Alert(node_id=node, kind="offline", since_s=last,
                            text=f"{node} has been offline since {when_words(last)} ({duration_words(now - last)})."))
    elif (not view.online and last is None and n["provisioned_s"] is not None
          and now - n["provisioned_s"] > s.offline_after_h * 3600):
        alerts.append(Alert(node_id=node, kind="offline", since_s=n["provisioned_s"],
                            text=f"{node} has never connected since it was provisioned at "
                                 f"{when_words(n['provisioned_s'])}."))
    if view.soc_pct is not None and view.soc_pct < s.low_battery_pct:
        since = _low_since(conn, node, s.low_battery_pct, now) or n["last_seen_s"]
        alerts.append(Alert(node_id=node, kind="low_battery", since_s=since,
                            text=f"{node}'s battery is low: {view.soc_pct:.0f} % (below {s.low_battery_pct:.0f} %)"
                                 f" since {when_words(since)}."))
    if view.printer == "error" and _thermal(view.printer_detail):
        alerts.append(Alert(node_id=node, kind="thermal_fault", since_s=n["state_t_s"],
                            text=f"{node}'s printer stopped on a thermal fault at {when_words(n['state_t_s'])}: "
                                 f"{view.printer_detail}."))
    failed = conn.execute("SELECT job_id, name, reason, updated_s FROM jobs WHERE node_id = ? AND wire_state = 'FAILED'"
                          " AND updated_s >= ? ORDER BY updated_s", (node, now - s.failed_within_h * 3600)).fetchall()
    for job in failed:
        thermal = _thermal(job["reason"])
        if thermal and any(a.kind == "thermal_fault" for a in alerts):
            continue  # the printer's own alert already says it
        what = "A thermal fault ended the print" if thermal else "The print"
        outcome = "" if thermal else " failed"
        alerts.append(Alert(node_id=node, kind="thermal_fault" if thermal else "failed_print",
                            since_s=job["updated_s"], job_id=job["job_id"],
                            text=f"{what} {job['name']} ({job['job_id']}){outcome} on {node} at "
                                 f"{when_words(job['updated_s'])}: {job['reason'] or 'no reason given'}."))
    if view.current_job is not None and view.current_job_state == "printing":
        moved = conn.execute("SELECT moved_s FROM progress WHERE job_id = ?", (view.current_job,)).fetchone()
        if moved is not None and moved["moved_s"] is not None and now - moved["moved_s"] > s.stalled_after_min * 60:
            alerts.append(Alert(node_id=node, kind="stalled", since_s=moved["moved_s"], job_id=view.current_job,
                                text=f"{node}'s print {view.current_job_name or view.current_job} has not moved from "
                                     f"{view.percent or 0:.0f} % since {when_words(moved['moved_s'])} "
                                     f"({duration_words(now - moved['moved_s'])})."))
    return alerts


def _last_heard(conn: LedgerConn, n: Any) -> float | None:
    """When an offline node was last heard from, by the times its own data carries (its last telemetry sample,
    its last printer document): the hub's ``last_seen_s`` is also set when a restarted hub is handed the
    node's retained documents again, which would make a node offline for days look seen a minute ago."""
    row = conn.execute("SELECT MAX(t_s) AS t FROM telemetry WHERE node_id = ?", (n["node_id"],)).fetchone()
    stamps = [t for t in (row["t"], n["state_t_s"]) if t is not None]
    return max(stamps) if stamps else n["last_seen_s"]


def _thermal(text: str | None) -> bool:
    return bool(text) and any(word in text.lower() for word in THERMAL_WORDS)  # type: ignore[union-attr]


def _low_since(conn: LedgerConn, node_id: str, below_pct: float, now: float) -> float | None:
    """When the state of charge last went below ``below_pct``, from the telemetry of the last two days (a
    year of a node's telemetry is not read on every refresh of the page; older than that: two days ago)."""
    start = now - LOW_SINCE_WINDOW_S
    last_ok = conn.execute("SELECT MAX(t_s) AS t FROM telemetry WHERE node_id = ? AND t_s > ? AND soc_pct >= ?",
                           (node_id, start, below_pct)).fetchone()["t"]
    row = conn.execute("SELECT MIN(t_s) AS t FROM telemetry WHERE node_id = ? AND soc_pct < ? AND t_s > ?",
                       (node_id, below_pct, last_ok if last_ok is not None else start)).fetchone()
    return None if row["t"] is None else float(row["t"])


def fleet_alerts(nodes: list[NodeView]) -> list[Alert]:
    """Every node's alerts, newest first."""
    return sorted((a for n in nodes for a in n.alerts), key=lambda a: -(a.since_s or 0.0))


# --- telemetry for charts -------------------------------------------------------------------------
def telemetry_series(ledger: Ledger, node_id: str, since_s: float, max_points: int = 240) -> list[TelemetryPoint]:
    """SoC and PV since ``since_s``, averaged into at most ``max_points`` equal time buckets."""
    rows = ledger.read(lambda c: c.execute(
        "SELECT t_s, soc_pct, pv_w FROM telemetry WHERE node_id = ? AND t_s >= ? ORDER BY t_s",
        (node_id, since_s)).fetchall())
    if len(rows) <= max_points:
        return [TelemetryPoint(t_s=r["t_s"], soc_pct=r["soc_pct"], pv_w=r["pv_w"]) for r in rows]
    t0, t1 = rows[0]["t_s"], rows[-1]["t_s"]
    width = (t1 - t0) / max_points or 1.0
    buckets: dict[int, list[Any]] = {}
    for r in rows:
        buckets.setdefault(min(max_points - 1, int((r["t_s"] - t0) / width)), []).append(r)
    out = []
    for members in buckets.values():
        socs = [m["soc_pct"] for m in members if m["soc_pct"] is not None]
        pvs = [m["pv_w"] for m in members if m["pv_w"] is not None]
        out.append(TelemetryPoint(t_s=sum(m["t_s"] for m in members) / len(members),
                                  soc_pct=sum(socs) / len(socs) if socs else None,
                                  pv_w=sum(pvs) / len(pvs) if pvs else None))
    return out


# --- what the CLI and the page say after an action -------------------------------------------------
def submitted_sentence(job_id: str, name: str, node_id: str | None) -> str:
    if node_id is not None:
        where = (f"queued for {node_id}: the hub sends it there (while `printnode hub serve` runs) and the node "
                 "prints it when its energy plan allows")
    else:
        where = ("queued for the best node: the hub's dispatcher sends it to the node that can print it with the "
                 "earliest energy window (while `printnode hub serve` runs)")
    return f"Job {job_id} ({name}) {where}. `printnode hub job {job_id}` follows it."


def cancelled_sentence(job_id: str, how: str) -> str:
    if how.startswith("cancel sent to "):
        node = how.removeprefix("cancel sent to ")
        return (f"Job {job_id}: a signed cancel is on its way to {node}; the job shows as cancelled once the node "
                "confirms it.")
    return f"Job {job_id} is cancelled ({how})."
