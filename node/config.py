"""node.toml: assembled from the sections that live beside their owners, layered and validated.

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
import tomllib
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import ValidationError

from node.clock import ClockSection
from node.control import ControlSection
from node.field.config import StorageSection, TimeSection, WatchdogSection
from node.gcode.config import AnalysisSection
from node.hw.config import GpioSection
from node.node import NodeSection
from node.plan.config import ForecastSection, PlannerSection
from node.power.config import ArraySection, BatterySection, LowBatterySection, SiteSection, TelemetrySection
from node.printer.config import PrinterSection, SafetySection
from node.runner import JobsSection
from node.section import ConfigError, Section
from node.store.config import StoreSection
from node.sync.config import SyncSection

OVERRIDES_FILE = "overrides.toml"


class NodeConfig(Section):
    """The whole node.toml: each field one section, defined beside the component that reads it
    (the table in ARCHITECTURE.md names the owner of each)."""

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
    watchdog: WatchdogSection = WatchdogSection()
    gpio: GpioSection = GpioSection()
    time: TimeSection = TimeSection()
    storage: StorageSection = StorageSection()
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
    def files_dir(self) -> Path:
        """Job files, stored by sha256 (control uploads, hub transfers, the runner)."""
        return self.state_dir / "files"

    @property
    def simulated(self) -> bool:
        return self.printer.port == "virtual"

    @property
    def simulated_clock(self) -> bool:
        """A scaled or shifted sim clock (or a simulated printer) needs no time source."""
        return self.clock.time_scale != 1.0 or self.clock.start != "now" or self.simulated

    @property
    def auto_plate_clear(self) -> bool:
        return self.simulated if self.jobs.auto_plate_clear is None else self.jobs.auto_plate_clear


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


def write_override(state_dir: Path, assignment: str) -> Path:
    """Persist a run-time setting in the override file, refusing one that would not validate;
    return the file it went to."""
    overrides_path = state_dir / OVERRIDES_FILE
    current = _read_toml(overrides_path) if overrides_path.exists() else {}
    merged = _merge(current, parse_set(assignment))
    validate(_merge({"node": {"state_dir": str(state_dir)}}, merged), str(overrides_path))
    tmp = overrides_path.with_suffix(".tmp")
    tmp.write_text(tomli_w.dumps(merged))
    os.replace(tmp, overrides_path)
    return overrides_path
