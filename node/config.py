"""node.toml: one pydantic model per component section, validated at load.

Layers, later ones winning: the embedded defaults (the models below: a virtual
printer, simulated sun and battery, offline), the config file (``/etc/printnode/
node.toml`` on a Pi; none in development), the override file
``<state_dir>/overrides.toml`` written by run-time changes (CLI, hub; never
``/etc``, which the systemd unit makes read-only), and ``--set key=value``.

Every error names the dotted key and why, e.g.
``printer.baud: Input should be a valid integer (got 'fast')``.
"""
from __future__ import annotations

import os
import re
import socket
import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import Field, ValidationError, field_validator

from node.gcode.config import AnalysisSection
from node.power.battery import BatterySection
from node.plan.config import ArraySection, ForecastSection, PlannerSection
from node.power.config import LowBatterySection, TelemetrySection
from node.power.site import SiteSection
from node.printer.pausing import PausePolicies
from node.printer.safety import SafetySection
from node.section import Section

from node.field.config import GpioSection, StorageSection, TimeSection, WatchdogSection
from node.sync.config import SyncSection

OVERRIDES_FILE = "overrides.toml"


def _default_node_id() -> str:
    host = socket.gethostname().split(".")[0].lower()
    return "".join(ch if ch.isalnum() or ch == "-" else "-" for ch in host) or "node"


class NodeSection(Section):
    id: str = Field(default_factory=_default_node_id, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
                    description="node id: MQTT topics, hub ledger, logs")
    state_dir: Path = Field(Path("var"), description="store, files, control socket, overrides")
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class ClockSection(Section):
    time_scale: float = Field(1.0, ge=0, le=100_000, description="sim seconds per real second; 0 = instant")
    start: str = Field("now", description="'now', an ISO 8601 time, or 'HH:MM': today at that local time at [site]")

    @field_validator("start")
    @classmethod
    def _iso_or_now(cls, value: str) -> str:
        if value != "now" and not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
            from datetime import datetime

            try:
                datetime.fromisoformat(value)
            except ValueError as exc:
                raise ValueError(f"not 'now', 'HH:MM' nor an ISO 8601 time: {exc}") from None
        return value


class VirtualPrinterSection(Section):
    """The Marlin-like printer on a pseudo-terminal that stands in for hardware."""

    ambient_c: float = Field(22.0, ge=-30, le=60)
    planner_depth: int | None = Field(None, ge=1, le=64, description="default: the profile's")
    autostart: bool = Field(True, description="the daemon starts it when printer.port = 'virtual'")


class PrinterSection(Section):
    port: str = Field("virtual", description="'virtual', 'auto' (first /dev/serial/by-id), or a device path")
    baud: int = Field(115200, gt=0)
    profile: str = Field("ender3", description="built-in profile name or path to a profile TOML")
    connect_timeout_s: float = Field(20.0, gt=0)
    boot_wait_s: float = Field(2.0, ge=0, le=30, description="after opening: wait this long for a reset-on-open banner")
    reply_timeout_s: float = Field(30.0, gt=0, description="longest silence for an ordinary command")
    progress_interval_s: float = Field(2.0, gt=0, description="real seconds between progress logs")
    max_commands: int = Field(4, ge=1, le=64, description="lines in flight: the firmware's command queue (BUFSIZE)")
    rx_buffer_bytes: int = Field(128, ge=32, le=65536, description="bytes in flight: the firmware's RX buffer")
    coalesce_s: float = Field(0.0, ge=0, le=0.05,
                              description="sleep before each read while 2+ lines are in flight, so replies are read in batches")
    ping_pong: bool = Field(False, description="one line in flight (for firmware that mishandles a window)")
    resend_has_ok: bool = Field(True, description="the firmware follows 'Resend:' with 'ok' (Marlin does)")
    tickle_s: float = Field(3.0, gt=0, description="silence with lines in flight before the oldest is probed")
    max_probes: int = Field(5, ge=1, le=100, description="unanswered probes before the job fails")
    long_timeout_s: float = Field(900.0, gt=0, description="longest silence for G28/G29/M109/M190/M400/G4/M600")
    max_consecutive_resends: int = Field(25, ge=1, description="refusals of one line before the job fails")
    poll_interval_s: float = Field(2.0, gt=0, description="M105 polling when the firmware has no autoreport")
    checkpoint_interval_s: float = Field(5.0, gt=0, description="real seconds between checkpoints while printing")
    resume_rewind_moves: int = Field(24, ge=0, le=1000,
                                     description="acknowledged lines resent on resume: planner depth + queue + margin")
    auto_resume: bool = Field(False, description="resume an interrupted job on its own once the printer is back")
    auto_resume_suspended: bool = Field(True, description="resume a job the node suspended (energy, battery) on "
                                                          "its own once every start gate allows it")
    pause: PausePolicies = PausePolicies()
    virtual: VirtualPrinterSection = VirtualPrinterSection()


class JobsSection(Section):
    queue_sample_when_empty: bool = Field(True, description="queue the built-in sample jobs at start if nothing is pending")
    sample_jobs: int = Field(1, ge=1, le=20, description="how many (parts of growing size: a day's work for make run)")
    auto_plate_clear: bool | None = Field(None, description="confirm the plate clear by itself; default: only with the virtual printer")
    max_file_mb: float = Field(512.0, gt=0)


class StoreSection(Section):
    batch_commit_s: float = Field(5.0, gt=0, description="real seconds high-rate rows wait before one commit")


class ControlSection(Section):
    socket: str = Field("control.sock", description="path, relative to state_dir unless absolute")
    mode: int = Field(0o660, ge=0, le=0o777, description="socket permissions: the node's user and group")




class NodeConfig(Section):
    node: NodeSection = NodeSection()
    clock: ClockSection = ClockSection()
    printer: PrinterSection = PrinterSection()
    jobs: JobsSection = JobsSection()
    store: StoreSection = StoreSection()
    control: ControlSection = ControlSection()
    analysis: AnalysisSection = AnalysisSection()
    telemetry: TelemetrySection = TelemetrySection()
    battery: BatterySection = BatterySection()
    low_battery: LowBatterySection = LowBatterySection()
    site: SiteSection = SiteSection()
    array: ArraySection = ArraySection()
    forecast: ForecastSection = ForecastSection()
    planner: PlannerSection = PlannerSection()
    watchdog: WatchdogSection = WatchdogSection()  # node/field/watchdog.py
    gpio: GpioSection = GpioSection()  # node/hw/
    time: TimeSection = TimeSection()  # node/field/timesync.py
    storage: StorageSection = StorageSection()  # node/field/storage.py (SD-card care)
    safety: SafetySection = SafetySection()
    sync: SyncSection = SyncSection()

    @property
    def state_dir(self) -> Path:
        return self.node.state_dir

    @property
    def control_socket(self) -> Path:
        path = Path(self.control.socket)
        return path if path.is_absolute() else self.state_dir / path

    @property
    def simulated(self) -> bool:
        return self.printer.port == "virtual"

    @property
    def auto_plate_clear(self) -> bool:
        return self.simulated if self.jobs.auto_plate_clear is None else self.jobs.auto_plate_clear


class ConfigError(ValueError):
    """A config that cannot be used; ``problems`` lists ``key: why`` lines."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


def _format_validation(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key (misspelt, or not in this version)"
        elif "input" in err and not isinstance(err["input"], dict):
            message += f" (got {err['input']!r})"
        problems.append(f"{key}: {message}")
    return problems


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(str(path), ["file not found"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"not valid TOML: {exc}"]) from None


def parse_set(assignment: str) -> dict[str, Any]:
    """``printer.baud=250000`` -> ``{"printer": {"baud": 250000}}`` (value parsed as TOML, else a string)."""
    if "=" not in assignment:
        raise ConfigError("--set", [f"{assignment!r}: expected key=value"])
    key, raw = assignment.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    tree: dict[str, Any] = {}
    cursor = tree
    parts = key.strip().split(".")
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return tree


def validate(data: dict[str, Any], source: str) -> NodeConfig:
    try:
        return NodeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _format_validation(exc)) from None


def load_config(path: Path | None = None, sets: list[str] | None = None,
                use_overrides: bool = True) -> NodeConfig:
    """Defaults, then the file, then the state directory's overrides, then ``--set``."""
    data: dict[str, Any] = _read_toml(path) if path else {}
    cli = {}
    for assignment in sets or []:
        cli = _merge(cli, parse_set(assignment))
    first = validate(_merge(data, cli), str(path or "defaults"))
    overrides_path = first.state_dir / OVERRIDES_FILE
    if use_overrides and overrides_path.exists():
        overrides = _read_toml(overrides_path)
        if "node" in overrides and "state_dir" in overrides["node"]:
            raise ConfigError(str(overrides_path), ["node.state_dir: cannot be overridden at run time"])
        data = _merge(data, overrides)
        return validate(_merge(data, cli), f"{path or 'defaults'} + {overrides_path}")
    return first


def write_override(state_dir: Path, assignment: str) -> NodeConfig:
    """Persist a run-time setting in the override file, refusing one that would not validate."""
    overrides_path = state_dir / OVERRIDES_FILE
    current = _read_toml(overrides_path) if overrides_path.exists() else {}
    merged = _merge(current, parse_set(assignment))
    validate(_merge({"node": {"state_dir": str(state_dir)}}, merged), str(overrides_path))
    tmp = overrides_path.with_suffix(".tmp")
    tmp.write_text(tomli_w.dumps(merged))
    os.replace(tmp, overrides_path)
    return validate(_merge({"node": {"state_dir": str(state_dir)}}, merged), str(overrides_path))
