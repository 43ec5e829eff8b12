"""The catalogue of events on the Node's hub and their payload models.

Every event has exactly one payload model; ``Node.send_event`` refuses an
unknown event or a payload of the wrong type, so this file is the complete,
checked list of what flows between components.  Add a new event here first.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JobStateChanged(Event):
    """Sent by ``jobs`` after every committed transition of a job."""

    job_id: str
    from_state: str | None
    to_state: str
    reason: str
    version: int
    t_s: float


class JobProgress(Event):
    """Sent by the streamer while printing (at most about once a second)."""

    job_id: str
    bytes_done: int
    bytes_total: int
    lines_sent: int
    percent: float = Field(ge=0, le=100)
    layer: int | None = None
    elapsed_s: float


#: the detail of the ``printing`` PrinterState that ends a ``waiting_user`` one (the runner resumes on it)
USER_ANSWERED = "the user answered the printer"


class PrinterState(Event):
    """Sent by the printer link when the connection state changes."""

    #: waiting_user: the firmware waits for a person (M0/M1/M600, 'paused for user'); no timeout runs
    state: Literal["disconnected", "connecting", "ready", "printing", "paused", "waiting_user", "error"]
    detail: str = ""
    #: for "paused" and "printing" during a job: who asked for the pause or the resume, the node or the
    #: firmware (//action:pause|resume); a pause the node took back before the park is still the node's
    asked_by: Literal["node", "printer"] = "node"
    port: str | None = None


class Temperatures(Event):
    """A temperature report from the printer (M105 reply or M155 autoreport)."""

    t_s: float
    hotend_c: float
    hotend_target_c: float
    bed_c: float
    bed_target_c: float
    hotend_pwm: float | None = Field(None, ge=0, le=1)
    bed_pwm: float | None = Field(None, ge=0, le=1)


class PlateCleared(Event):
    """Someone confirmed the build plate is empty (CLI, button, hub, or simulation)."""

    t_s: float
    source: Literal["cli", "button", "hub", "simulation"]


class QueueChanged(Event):
    """A job was added to, or left, the set of runnable jobs: schedulers re-plan."""

    job_id: str
    action: Literal["added", "removed", "priority"]


class TelemetrySample(Event):
    """One normalized reading of the power system (any source).

    Signs: ``battery_a`` is positive while charging.
    """

    t_s: float
    source: str
    pv_w: float | None = None
    pv_v: float | None = None
    battery_v: float | None = None
    battery_a: float | None = None
    load_w: float | None = None
    printer_w: float | None = None
    soc_pct: float | None = Field(None, ge=0, le=100)
    #: when the SoC above was last anchored at a full battery, where its source knows (a BMV's "seconds since
    #: full"; the node's own count, unbroken since its resync); the planner's drift margin starts there
    last_full_s: float | None = None
    charge_state: str | None = None
    error: str | None = None
    stale: bool = False


class BatteryLevelChanged(Event):
    """Sent by ``telemetry`` when the battery crosses a threshold (see node/power/thresholds.py).

    ``critical``: pause and power the printer off; ``node_lvd``: shut the node down cleanly;
    ``below_reserve``: the planner should not start new work; ``ok``: all clear.
    """

    t_s: float
    level: Literal["ok", "below_reserve", "critical", "node_lvd"]
    previous: Literal["ok", "below_reserve", "critical", "node_lvd"]
    soc_pct: float | None = Field(None, ge=0, le=100)
    corrected_v: float | None = None


class TelemetryLink(Event):
    """Sent by ``telemetry`` when the power source is lost (silent or failing for ``stale_after_s``)
    or comes back.  ``since_t_s``: the last accepted reading (None: none since the node started).
    power_guard acts on it: see node/power/power_guard.py (telemetry lost)."""

    t_s: float
    state: Literal["ok", "lost"]
    since_t_s: float | None = None
    lost_for_s: float = Field(0.0, ge=0, description="node seconds without a reading (at a return: the gap)")
    reason: str = ""
    soc_pct: float | None = Field(None, ge=0, le=100)


class NodeLifecycle(Event):
    """The daemon started all components, or began shutting down."""

    phase: Literal["ready", "stopping"]
    t_s: float


class PlannedJobSummary(Event):
    """One print in a plan: when it starts and ends, what it needs, and why then."""

    job_id: str
    name: str
    start_s: float
    end_s: float
    energy_wh: float = Field(ge=0)
    min_soc_pct: float
    reason: str


class WaitingJobSummary(Event):
    """A queued job the plan could not place within its horizon, and why."""

    job_id: str
    name: str
    energy_wh: float | None = None
    reason: str
    never_fits: bool = False   # it can never fit this plant (node.plan.fit): held until a person cancels it


class PlanSummary(Event):
    """Sent by ``planner`` after every re-plan: the schedule and the numbers behind it."""

    t_s: float
    trigger: str
    horizon_h: float
    step_s: float
    soc_pct: float = Field(ge=0, le=100)
    reserve_pct: float
    forecast_source: str
    forecast_stale: bool
    bias_factor: float
    pv_forecast_wh: float
    pv_lost_wh: float
    min_soc_pct: float
    planned: list[PlannedJobSummary] = []
    waiting: list[WaitingJobSummary] = []
    next_start_s: float | None = None


class EnergyPauseRequested(Event):
    """Sent by ``planner``: the running print can no longer finish above the reserve.

    The streamer pauses at the next layer boundary (the job moves to
    ``paused`` with reason ``energy``; bed kept warm, hotend off).  With
    ``printer_off`` the pause has lasted too long or the warm bed itself would
    cross the reserve: park and switch the printer off (``suspended``).
    """

    job_id: str
    t_s: float
    at: Literal["next_layer"] = "next_layer"
    printer_off: bool = False
    soc_pct: float
    reserve_pct: float
    reason: str


class EnergyResumeAllowed(Event):
    """Sent by ``planner``: the energy-paused print can go on (re-heat first if it was switched off)."""

    job_id: str
    t_s: float
    soc_pct: float
    reason: str


class JobAnalysed(Event):
    """Sent by ``analysis`` once a queued job's file is analysed (time, energy): the planner re-plans."""

    job_id: str
    estimated_s: float
    energy_wh: float
    peak_w: float


class ClockSync(Event):
    """The node's trust in its wall clock changed, or the clock stepped (node/field/timesync.py).

    ``synchronized`` false: the planner must not plan (a stale boot clock would
    put the sun at the wrong hour).  ``jump_s`` is set when the wall clock
    stepped by more than ``time.jump_threshold_s``.
    """

    t_s: float
    synchronized: bool
    source: str
    reason: str
    offset_s: float | None = None
    jump_s: float | None = None


class PrinterEmergency(Event):
    """The host's thermal watchdog sent M112: whoever controls the printer's power cuts it now."""

    t_s: float
    reason: str


class JobPauseRequested(Event):
    """Someone (the hub, a person) asks to pause a job; the print runner decides and transitions."""

    job_id: str
    source: Literal["cli", "hub", "button"]
    expected_version: int | None = None


class JobResumeRequested(Event):
    """Someone asks to resume a paused job; the print runner decides and transitions."""

    job_id: str
    source: Literal["cli", "hub", "button"]
    expected_version: int | None = None


class CloudForecast(Event):
    """Cloud cover expected at the node (from the hub): the forecast may use it instead of its own.

    Since protocol 1.1 the hub says when it was issued and for which place (``issued_s``, ``latitude``,
    ``longitude``, ``provider``); the old form leaves them None and is taken as issued on arrival for
    the node's own site.
    """

    t_s: float
    source: Literal["hub"]
    points: list[tuple[float, float]] = Field(description="(t_s, cloud_pct 0..100)")
    issued_s: float | None = None
    latitude: float | None = None
    longitude: float | None = None
    provider: str | None = None


class ConfigChangeRequested(Event):
    """Run-time config assignments (``key=value``) from the hub; the daemon validates and persists them."""

    assignments: list[str]
    source: Literal["hub", "cli"]


class HubTimeObserved(Event):
    """A signed hub message told the hub's time; the node's clock read ``node_t_s`` then."""

    hub_time_s: float
    node_t_s: float


class SyncLink(Event):
    """Sent by ``sync`` when the hub became reachable or unreachable (the status LED shows it)."""

    t_s: float
    online: bool


EVENT_CATALOGUE: dict[str, type[Event]] = {
    "job_analysed": JobAnalysed,
    "job_state_changed": JobStateChanged,
    "job_progress": JobProgress,
    "printer_state": PrinterState,
    "temperatures": Temperatures,
    "plate_cleared": PlateCleared,
    "queue_changed": QueueChanged,
    "telemetry_sample": TelemetrySample,
    "node_lifecycle": NodeLifecycle,
    "job_pause_requested": JobPauseRequested,
    "job_resume_requested": JobResumeRequested,
    "cloud_forecast": CloudForecast,
    "config_change_requested": ConfigChangeRequested,
    "hub_time_observed": HubTimeObserved,
    "sync_link": SyncLink,
    "battery_level_changed": BatteryLevelChanged,
    "telemetry_link": TelemetryLink,
    "plan_updated": PlanSummary,
    "energy_pause_requested": EnergyPauseRequested,
    "energy_resume_allowed": EnergyResumeAllowed,
    "clock_sync": ClockSync,
    "printer_emergency": PrinterEmergency,
}
