"""The node ⇄ hub wire protocol, version 1.1: topics and every message as a pydantic model.

``docs/protocol.md`` explains the why; this module is the single source of the shapes.  Both the
node (``node.sync.client``) and the reference hub (``node.hub``) import it, so they cannot drift.
The major version is in the topic root (``printnode/v1``); the minor version (``PROTOCOL_MINOR``)
rides in ``Hello`` and ``OnlineState`` so a hub can talk to each node in the form it understands.
"""
from __future__ import annotations

import itertools
import json
import math
import struct
import uuid
import zlib
from collections.abc import Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Literal, Union

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from node.plan.config import ForecastSection

PROTOCOL_VERSION = 1
#: minor versions add optional fields and message kinds; absent from a hello = 0.
#: 1: the ``forecast`` command (a whole CloudCoverForecast), cumulative energy counters, the waiting
#: reason and job version in the state documents, every state field present (null when unknown)
PROTOCOL_MINOR = 1
TOPIC_ROOT = f"printnode/v{PROTOCOL_VERSION}"
NODE_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
REPLAY_WINDOW = 4096


# --- topics ------------------------------------------------------------------------------------
def node_root(node_id: str) -> str:
    return f"{TOPIC_ROOT}/{node_id}"


def state_topic(node_id: str, name: str) -> str:
    return f"{node_root(node_id)}/state/{name}"


def up_topic(node_id: str, kind: str) -> str:
    return f"{node_root(node_id)}/up/{kind}"


def down_topic(node_id: str, kind: str) -> str:
    return f"{node_root(node_id)}/down/{kind}"


def ha_command_topic(node_id: str) -> str:
    """Where Home Assistant's buttons publish ``pause``/``resume``/``cancel``; the hub signs and forwards."""
    return f"{node_root(node_id)}/ha/command"


def parse_topic(topic: str) -> tuple[str, str, str] | None:
    """``printnode/v1/<node>/<up|down|state|ha>/<kind>`` -> (node, direction, kind), else None."""
    parts = topic.split("/")
    if len(parts) != 5 or f"{parts[0]}/{parts[1]}" != TOPIC_ROOT:
        return None
    return parts[2], parts[3], parts[4]


def new_id() -> str:
    return uuid.uuid4().hex


class Wire(BaseModel):
    # defer_build: a model's validator is built when first used, not at import: an offline node (and a node
    # that never receives, say, a key rotation) does not keep the hub's messages' validators (issue #19: 0.6 MB);
    # what the node sends is built when Sync is made (build_outgoing), not in its first re-plan or report
    model_config = ConfigDict(extra="forbid", defer_build=True)


NodeId = Annotated[str, Field(pattern=NODE_ID_PATTERN)]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


# --- wire states -------------------------------------------------------------------------------
class WireState(StrEnum):
    """AWS-IoT-Jobs-like states the hub sees (``docs/protocol.md``: wire states)."""

    QUEUED = "QUEUED"
    IN_PROGRESS = "IN_PROGRESS"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    REJECTED = "REJECTED"
    CANCELED = "CANCELED"
    TIMED_OUT = "TIMED_OUT"


_WIRE_OF_NODE_STATE = {
    "received": WireState.QUEUED, "downloading": WireState.QUEUED, "queued": WireState.QUEUED,
    "waiting_plate": WireState.QUEUED, "waiting_energy": WireState.QUEUED,
    "printing": WireState.IN_PROGRESS, "paused": WireState.IN_PROGRESS,
    "suspended": WireState.IN_PROGRESS, "interrupted": WireState.IN_PROGRESS,
    "completed": WireState.SUCCEEDED, "failed": WireState.FAILED,
    "rejected": WireState.REJECTED, "cancelled": WireState.CANCELED,
}
TERMINAL_WIRE_STATES = frozenset({WireState.SUCCEEDED, WireState.REJECTED, WireState.CANCELED,
                                  WireState.TIMED_OUT})


def wire_state(node_state: str) -> WireState:
    """Map a ``node.jobs.JobState`` value onto the wire (KeyError for an unknown state)."""
    return _WIRE_OF_NODE_STATE[str(node_state)]


# --- retained plain-JSON state topics ----------------------------------------------------------
# Since minor 1 a node publishes every field of these documents, null when unknown, so a reader's
# template (Home Assistant's ``value_json.percent``) never meets an undefined field.
class OnlineState(Wire):
    online: bool
    t_s: float | None = None
    protocol: int = PROTOCOL_VERSION
    #: absent (0) from nodes before minor 1
    protocol_minor: int = 0
    software: str | None = None


class PowerState(Wire):
    t_s: float
    soc_pct: float | None = None
    pv_w: float | None = None
    battery_v: float | None = None
    load_w: float | None = None
    #: cumulative PV energy the node has measured since its store was made (never decreases: Home
    #: Assistant's Energy dashboard reads it as ``total_increasing``)
    pv_energy_wh: float | None = None
    #: cumulative energy the printer drew, same rules
    printer_energy_wh: float | None = None


class PrinterStateDoc(Wire):
    t_s: float
    printer: str = "unknown"
    job_id: str | None = None
    job_state: str | None = None
    #: the job's version (``docs/protocol.md``: versions); a pause or resume names it
    job_version: int | None = None
    percent: float | None = None
    #: the printer's own words with its state (an error's text: the fleet's thermal-fault alert reads it)
    detail: str | None = None
    #: the last temperature report (None until the printer sent one)
    hotend_c: float | None = None
    hotend_target_c: float | None = None
    bed_c: float | None = None
    bed_target_c: float | None = None


class PlanState(Wire):
    t_s: float
    next_window_start_s: float | None = None
    next_window_end_s: float | None = None
    queue_length: int = 0
    waiting_jobs: int = 0
    #: why the first job that cannot start now waits, in plain words (None: nothing waits)
    waiting_reason: str | None = None
    #: which forecast the plan used: hub, file, learned, clear_sky
    forecast_source: str | None = None


# --- node -> hub -------------------------------------------------------------------------------
class PrinterCapabilities(Wire):
    """What the node's printer offers; the hub's dispatcher matches requirements against it."""

    profile: str
    build_volume_mm: tuple[float, float, float]
    nozzle_mm: float
    materials: list[str] = []
    max_hotend_c: float
    max_bed_c: float


class NodeSite(Wire):
    """Where the node stands and what its array is: the hub's map and its per-site forecasts need it.

    Copied from the node's ``[site]`` and ``[array]`` sections at every hello, so a node that moved
    (an RV) is placed where it is now.
    """

    latitude_deg: float = Field(ge=-90, le=90)
    longitude_deg: float = Field(ge=-180, le=180)
    altitude_m: float
    timezone: str = Field(description="IANA zone, e.g. 'Africa/Nairobi'")
    array_peak_w: float = Field(gt=0)
    array_tilt_deg: float = Field(ge=0, le=90)
    array_azimuth_deg: float = Field(ge=0, lt=360, description="compass bearing; 180 = south")


class JobVersion(Wire):
    job_id: str
    version: int


class Hello(Wire):
    node_id: NodeId
    t_s: float
    protocol: int = PROTOCOL_VERSION
    #: absent (0) from nodes before minor 1: the hub then sends them the old ``cloud_forecast`` form
    protocol_minor: int = 0
    jobs: list[JobVersion] = []
    #: problems the node started with anyway, in plain words (an override file it set aside)
    problems: list[str] = []
    capabilities: PrinterCapabilities | None = None
    #: None from nodes older than the field (the hub then knows no place and fetches no forecast)
    site: NodeSite | None = None


class Report(Wire):
    """Common fields of every outbox message."""

    id: str = Field(default_factory=new_id, pattern=r"^[0-9a-f]{32}$")
    node_id: NodeId
    t_s: float


class JobStateReport(Report):
    job_id: str
    version: int = Field(ge=0)
    node_state: str
    wire_state: WireState
    reason: str = ""


class JobProgressReport(Report):
    job_id: str
    percent: float = Field(ge=0, le=100)
    bytes_done: int = Field(ge=0)
    bytes_total: int = Field(ge=0)
    elapsed_s: float = Field(ge=0)


class JobRecord(Report):
    """A finished job, for traceability."""

    job_id: str
    outcome: WireState
    node_state: str
    created_s: float
    started_s: float | None = None
    finished_s: float | None = None
    duration_s: float | None = None
    energy_wh: float | None = None
    filament_mm: float | None = None
    file_sha256: str | None = None


class PlanSummaryReport(Report):
    """The node's plan, as much as the hub's dispatcher and a fleet dashboard need.

    ``next_window_start_s``: when the node expects to print next — its next planned start, or the
    plan's own time when its queue is empty and its battery is above the reserve (it could start a
    new job now); None when it cannot say.  ``energy_available_wh``: PV the plan expects to spill
    (battery full) within its horizon — energy a new job would use at no cost.
    """

    next_window_start_s: float | None = None
    next_window_end_s: float | None = None
    energy_available_wh: float | None = None
    pv_forecast_wh: float | None = None
    horizon_h: float | None = None
    queue_length: int = 0
    waiting_jobs: int = 0
    soc_pct: float | None = None


class CommandResult(Report):
    command_id: str
    ok: bool
    detail: str = ""


class TelemetryBatch(Report):
    """Columnar telemetry: ``t = t0_s + cumsum(t_offsets) * step_s``; ``v = cumsum(field) * scale``."""

    t0_s: float
    step_s: float = Field(gt=0)
    t_offsets: list[int]
    fields: dict[str, list[int | None]]
    scale: dict[str, float]
    level: int = Field(0, ge=0, description="times this batch was halved by the backlog budget")


class ChunkRequest(Wire):
    job_id: str
    offset: int = Field(ge=0)
    length: int = Field(gt=0, le=4 * 1024 * 1024)
    req_id: str


#: up-topic kind -> model (telemetry is zlib-compressed JSON)
UP_MESSAGES: dict[str, type[Wire]] = {
    "hello": Hello, "job_state": JobStateReport, "job_progress": JobProgressReport,
    "job_record": JobRecord, "plan": PlanSummaryReport, "telemetry": TelemetryBatch,
    "command_result": CommandResult, "chunk_req": ChunkRequest,
}
OUTBOX_KINDS = frozenset({"job_state", "job_progress", "job_record", "plan", "telemetry", "command_result"})


# --- hub -> node -------------------------------------------------------------------------------
class Ack(Wire):
    ids: list[str] = Field(max_length=10_000)
    hub_time_s: float | None = None


class SignedEnvelope(Wire):
    signed: str = Field(min_length=2)
    key_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    sig: str = Field(min_length=1)


class SignedBody(Wire):
    """Fields every signed hub message carries (replay and expiry protection, hub time)."""

    node_id: NodeId
    seq: int = Field(ge=1)
    issued_s: float
    expires_s: float
    hub_time_s: float


class PrinterRequirements(Wire):
    min_build_volume_mm: tuple[float, float, float] | None = None
    nozzle_mm: float | None = Field(None, gt=0)
    material: str | None = None
    max_hotend_c: float | None = Field(None, gt=0, description="the job heats the hotend to this")
    max_bed_c: float | None = Field(None, ge=0, description="the job heats the bed to this")

    def unmet_by(self, caps: PrinterCapabilities) -> list[str]:
        """Why ``caps`` cannot print this job (empty list: it can)."""
        why = []
        if self.min_build_volume_mm is not None:
            for axis, need, have in zip("xyz", self.min_build_volume_mm, caps.build_volume_mm, strict=True):
                if need > have:
                    why.append(f"build volume {axis} {need} mm > {have} mm")
        if self.nozzle_mm is not None and abs(self.nozzle_mm - caps.nozzle_mm) > 1e-6:
            why.append(f"nozzle {self.nozzle_mm} mm != {caps.nozzle_mm} mm")
        if self.material is not None and caps.materials and self.material.lower() not in \
                [m.lower() for m in caps.materials]:
            why.append(f"material {self.material} not loaded ({', '.join(caps.materials)})")
        if self.max_hotend_c is not None and self.max_hotend_c > caps.max_hotend_c:
            why.append(f"hotend {self.max_hotend_c} C > max {caps.max_hotend_c} C")
        if self.max_bed_c is not None and self.max_bed_c > caps.max_bed_c:
            why.append(f"bed {self.max_bed_c} C > max {caps.max_bed_c} C")
        return why


class JobManifest(SignedBody):
    job_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    name: str = Field(max_length=200)
    file_sha256: Sha256Hex
    file_bytes: int = Field(gt=0)
    requirements: PrinterRequirements = PrinterRequirements()
    priority: int = 0
    deadline_s: float | None = None
    energy_wh: float | None = None


class CancelArgs(Wire):
    kind: Literal["cancel"] = "cancel"
    job_id: str


class PauseArgs(Wire):
    kind: Literal["pause"] = "pause"
    job_id: str
    expected_version: int


class ResumeArgs(Wire):
    kind: Literal["resume"] = "resume"
    job_id: str
    expected_version: int


class PlateClearedArgs(Wire):
    kind: Literal["plate_cleared"] = "plate_cleared"


class CloudPoint(Wire):
    t_s: float
    cloud_pct: float = Field(ge=0, le=100)


class CloudForecastArgs(Wire):
    """Minor 0's forecast: bare points, taken as issued on arrival for the node's own site.

    Nodes still accept it; a hub sends it only to nodes whose hello says minor 0.
    """

    kind: Literal["cloud_forecast"] = "cloud_forecast"
    points: list[CloudPoint] = Field(max_length=10_000)


class ForecastSite(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)


class CloudCoverPoint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    t_utc: AwareDatetime
    cloud_cover_pct: float = Field(ge=0, le=100)


class CloudCoverForecast(BaseModel):
    """A cloud-cover forecast for one site.  Points are instants; values between them are interpolated.

    The planner's model (``node.plan.forecast`` re-exports it) and, since minor 1, the wire's: the hub
    sends it whole in a ``forecast`` command, and ``forecast.source = "file"`` reads the same JSON::

        {"issued_at": "2025-06-21T06:00:00+00:00",
         "site": {"latitude": 32.2, "longitude": -110.95},
         "points": [{"t_utc": "2025-06-21T07:00:00+00:00", "cloud_cover_pct": 10},
                    {"t_utc": "2025-06-21T08:00:00+00:00", "cloud_cover_pct": 35}]}

    Staleness rule: a forecast issued more than ``forecast.stale_after_h`` ago
    (or more than an hour in the future), or for a place more than 50 km from
    the node's site, is not used; nor is it outside its own span (30 min
    either side).  Where it is not used, ``forecast.stale_cloud_cover_pct``
    is assumed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    issued_at: AwareDatetime
    site: ForecastSite
    points: list[CloudCoverPoint] = Field(min_length=1, max_length=10_000)

    @field_validator("points")
    @classmethod
    def _in_time_order(cls, points: list[CloudCoverPoint]) -> list[CloudCoverPoint]:
        for a, b in itertools.pairwise(points):
            if b.t_utc <= a.t_utc:
                raise ValueError(f"points must be in increasing time order ({b.t_utc} after {a.t_utc})")
        return points

    def is_stale(self, now_s: float, stale_after_h: float) -> bool:
        """Stale when issued more than ``stale_after_h`` ago (or in the future: a wrong clock)."""
        age_h = (now_s - self.issued_at.timestamp()) / 3600.0
        return age_h > stale_after_h or age_h < -1.0

    def distance_km(self, latitude: float, longitude: float) -> float:
        """Great-circle distance to a site (haversine, mean Earth radius 6371 km)."""
        p1, p2 = math.radians(self.site.latitude), math.radians(latitude)
        dp, dl = p2 - p1, math.radians(longitude - self.site.longitude)
        a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
        return 2 * 6371.0 * math.asin(math.sqrt(min(1.0, a)))

    def cloud_cover_at(self, times_s: Sequence[float], now_s: float, section: ForecastSection,
                       latitude: float, longitude: float, max_distance_km: float = 50.0) -> list[float]:
        """Cloud cover per time: interpolated inside the forecast, ``stale_cloud_cover_pct`` outside it,
        and everywhere when the forecast is stale or for another place (the site moved)."""
        fallback = section.stale_cloud_cover_pct
        if self.is_stale(now_s, section.stale_after_h) or self.distance_km(latitude, longitude) > max_distance_km:
            return [fallback] * len(times_s)
        ts = [p.t_utc.timestamp() for p in self.points]
        cc = [p.cloud_cover_pct for p in self.points]
        out = []
        for t in times_s:
            if t < ts[0] - 1800 or t > ts[-1] + 1800:
                out.append(fallback)
                continue
            if t <= ts[0]:
                out.append(cc[0])
                continue
            if t >= ts[-1]:
                out.append(cc[-1])
                continue
            lo, hi = 0, len(ts) - 1
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if ts[mid] <= t:
                    lo = mid
                else:
                    hi = mid
            frac = (t - ts[lo]) / (ts[hi] - ts[lo])
            out.append(cc[lo] + frac * (cc[hi] - cc[lo]))
        return out


class ForecastArgs(Wire):
    """Minor 1's forecast: the planner's whole model, with when it was issued and for which place."""

    kind: Literal["forecast"] = "forecast"
    #: who made it, e.g. "open-meteo" (shown in the node's log and the command result)
    provider: str = Field(min_length=1, max_length=64)
    forecast: CloudCoverForecast


class ConfigArgs(Wire):
    kind: Literal["config"] = "config"
    assignments: list[str] = Field(min_length=1, max_length=100)


CommandArgs = Annotated[Union[CancelArgs, PauseArgs, ResumeArgs, PlateClearedArgs,  # noqa: UP007
                              CloudForecastArgs, ForecastArgs, ConfigArgs], Field(discriminator="kind")]


class Command(SignedBody):
    command_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    args: CommandArgs


class KeyAnnouncement(SignedBody):
    new_public_key: str = Field(pattern=r"^[0-9a-f]{64}$")
    retire_key_ids: list[str] = []


# --- chunk frames ------------------------------------------------------------------------------
class ChunkReply(Wire):
    job_id: str
    offset: int = Field(ge=0)
    length: int = Field(ge=0)
    total_bytes: int = Field(ge=0)
    req_id: str
    error: str | None = None


def encode_chunk(header: ChunkReply, data: bytes) -> bytes:
    head = header.model_dump_json().encode()
    return struct.pack(">I", len(head)) + head + data


def decode_chunk(payload: bytes) -> tuple[ChunkReply, bytes]:
    """Split a ``down/chunk`` frame; ValueError on anything malformed."""
    if len(payload) < 4:
        raise ValueError("chunk frame shorter than its header length")
    (head_len,) = struct.unpack(">I", payload[:4])
    if head_len > 4096 or 4 + head_len > len(payload):
        raise ValueError(f"chunk header length {head_len} out of range")
    header = ChunkReply.model_validate_json(payload[4:4 + head_len])
    data = payload[4 + head_len:]
    if len(data) != header.length:
        raise ValueError(f"chunk carries {len(data)} bytes, header says {header.length}")
    return header, data


# --- telemetry encoding ------------------------------------------------------------------------
#: quantum of each telemetry field (what one integer step means)
TELEMETRY_SCALE: dict[str, float] = {
    "pv_w": 0.1, "pv_v": 0.01, "battery_v": 0.01, "battery_a": 0.01, "load_w": 0.1,
    "printer_w": 0.1, "soc_pct": 0.1,
}


#: zlib preset dictionary of protocol v1 (RFC 1950 FDICT): the keys and constants every batch
#: repeats, so a 10-sample batch costs its numbers and its id, not its field names.  Changing it
#: is a protocol change (both sides must use the same bytes).
TELEMETRY_ZDICT = (
    b'"level":1,"level":2,"scale":{"battery_a":0.01,"battery_v":0.01,"load_w":0.1,"printer_w":0.1,'
    b'"pv_v":0.01,"pv_w":0.1,"soc_pct":0.1},"fields":{"battery_a":[,"battery_v":[,"load_w":[,'
    b'"printer_w":[,"pv_v":[,"pv_w":[,"soc_pct":[null,0,0,0,1,1,1,1,1,1,1,1,1,-1,-1,-1],'
    b'"step_s":60.0,"t_offsets":[0,1,1,1,1,1,1,1,1,1],{"id":"","node_id":"","t_s":17,"t0_s":17'
)


def encode_telemetry(batch: TelemetryBatch) -> bytes:
    deflater = zlib.compressobj(9, zdict=TELEMETRY_ZDICT)
    return deflater.compress(batch.model_dump_json().encode()) + deflater.flush()


def decode_telemetry(payload: bytes) -> TelemetryBatch:
    """ValueError on a bad frame (zlib bomb guarded: at most 16 MiB inflated)."""
    try:
        inflater = zlib.decompressobj(zdict=TELEMETRY_ZDICT)
        raw = inflater.decompress(payload, 16 * 1024 * 1024)
        if inflater.unconsumed_tail:
            raise ValueError("telemetry batch inflates beyond 16 MiB")
    except zlib.error as exc:
        raise ValueError(f"telemetry batch is not zlib data: {exc}") from None
    return TelemetryBatch.model_validate_json(raw)


def telemetry_rows(batch: TelemetryBatch) -> list[dict[str, float | None]]:
    """Expand a batch into ``{"t_s": ..., field: value}`` rows."""
    times: list[float] = []
    tick = 0
    for offset in batch.t_offsets:
        tick += offset
        times.append(batch.t0_s + tick * batch.step_s)
    rows: list[dict[str, float | None]] = [{"t_s": t} for t in times]
    for name, deltas in batch.fields.items():
        if len(deltas) != len(times):
            raise ValueError(f"telemetry field {name} has {len(deltas)} values for {len(times)} times")
        scale = batch.scale.get(name, 1.0)
        acc = 0
        for row, delta in zip(rows, deltas, strict=True):
            if delta is None:
                row[name] = None
                continue
            acc += delta
            row[name] = round(acc * scale, 6)
    return rows


def build_telemetry(node_id: str, t_s: float, rows: list[dict[str, float | None]], step_s: float,
                    level: int = 0, batch_id: str | None = None) -> TelemetryBatch:
    """Columnar, delta-encoded integers: what compresses best (see ``docs/protocol.md``)."""
    if not rows:
        raise ValueError("a telemetry batch needs at least one row")
    rows = sorted(rows, key=lambda r: r["t_s"] or 0.0)
    t0_s = float(rows[0]["t_s"] or 0.0)
    offsets, prev = [], 0
    for row in rows:
        tick = round((float(row["t_s"] or 0.0) - t0_s) / step_s)
        offsets.append(tick - prev)
        prev = tick
    names = sorted({k for r in rows for k in r if k != "t_s" and k in TELEMETRY_SCALE})
    fields: dict[str, list[int | None]] = {}
    for name in names:
        scale, acc, column = TELEMETRY_SCALE[name], 0, []
        for row in rows:
            value = row.get(name)
            if value is None:
                column.append(None)
                continue
            q = round(float(value) / scale)
            column.append(q - acc)
            acc = q
        fields[name] = column
    return TelemetryBatch(id=batch_id or new_id(), node_id=node_id, t_s=t_s, t0_s=t0_s, step_s=step_s,
                          t_offsets=offsets, fields=fields, scale={n: TELEMETRY_SCALE[n] for n in names},
                          level=level)


def dumps_compact(model: BaseModel) -> bytes:
    return model.model_dump_json(exclude_none=True).encode()


def loads_json(payload: bytes) -> object:
    return json.loads(payload)


def build_outgoing() -> None:
    """Build the validators of everything the node sends (the Wire models are deferred): at construction,
    so a re-plan's first plan report or the first telemetry batch does not pay for it (issue #19)."""
    for model in (OnlineState, PowerState, PrinterStateDoc, PlanState, PrinterCapabilities, NodeSite, JobVersion,
                  Hello, JobStateReport, JobProgressReport, JobRecord, PlanSummaryReport, CommandResult,
                  TelemetryBatch, ChunkRequest):
        model.model_rebuild()
