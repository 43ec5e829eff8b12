"""node.toml: assembled from the sections that live beside their owners, layered and validated.

Layers, later ones winning: the embedded defaults (the models below: a virtual
printer, simulated sun and battery, offline), the config file (``/etc/printnode/
node.toml`` on a Pi; none in development), the override file
``<state_dir>/overrides.toml`` written by run-time changes (CLI, hub; never
``/etc``, which the systemd unit makes read-only), and ``--set key=value``.

A run-time setting is checked against the node's whole merged config before it is written
(``battery.absorption_v`` must stay above *this* node's ``float_v``), keys of identity and
place are never set at run time, and an override file that does not load at start is set
aside (kept beside, named in the log, in ``status`` and in the hub's hello): an unattended
node always comes up.

Every error names the dotted key and why, e.g.
``printer.baud: Input should be a valid integer (got 'fast')``.
"""
from __future__ import annotations

import logging
import os
import time
import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import PrivateAttr, ValidationError

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
from node.web.config import WebSection

log = logging.getLogger(__name__)

OVERRIDES_FILE = "overrides.toml"
#: identity and place: set in node.toml by whoever installs the node, never at run time
NEVER_AT_RUN_TIME = ("node.", "control.", "store.")
#: also never from the hub: who the node trusts, what a job may do, which devices it opens
NEVER_FROM_THE_HUB = (*NEVER_AT_RUN_TIME, "sync.", "safety.", "storage.", "printer.port", "printer.profile",
                      "printer.virtual.", "telemetry.", "gpio.", "watchdog.", "web.")
SettingSource = Literal["cli", "hub"]


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
    web: WebSection = WebSection()
    #: an override file that did not load at start, and where it was set aside (None: all loaded)
    _overrides_problem: str | None = PrivateAttr(None)

    @property
    def overrides_problem(self) -> str | None:
        return self._overrides_problem

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
    def web_credentials(self) -> Path:
        """The web page's API key and password hash ([web] credentials, relative to state_dir)."""
        path = Path(self.web.credentials)
        return path if path.is_absolute() else self.state_dir / path

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
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), ["file not found"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [f"not a text file (byte {exc.start} is not UTF-8): is this a TOML file?"]) \
            from None
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot be read: {exc.strerror or exc}"]) from None
    try:
        return tomllib.loads(text)
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
                use_overrides: bool = True, set_aside_bad_overrides: bool = False) -> NodeConfig:
    """Defaults, then the file, then the state directory's overrides, then ``--set``.

    With ``set_aside_bad_overrides`` (the daemon), an override file that does not load is moved
    aside and the node starts without it (``overrides_problem`` says so); otherwise its error
    is raised like any other."""
    data: dict[str, Any] = _read_toml(path) if path else {}
    cli = {}
    for assignment in sets or []:
        cli = _merge(cli, parse_set(assignment))
    first = validate(_merge(data, cli), str(path or "defaults"))
    overrides_path = first.state_dir / OVERRIDES_FILE
    if not use_overrides or not overrides_path.exists():
        return first
    try:
        overrides = _read_toml(overrides_path)
        refused = [key for key in _dotted_keys(overrides) if key.startswith(NEVER_AT_RUN_TIME)]
        if refused:
            raise ConfigError(str(overrides_path), [f"{key}: cannot be overridden at run time" for key in refused])
        return validate(_merge(_merge(data, overrides), cli), f"{path or 'defaults'} + {overrides_path}")
    except ConfigError as exc:
        problem = f"{overrides_path} did not load ({'; '.join(exc.problems)})"
        if not set_aside_bad_overrides:
            raise
        aside = overrides_path.with_name(f"{OVERRIDES_FILE}.bad-{time.strftime('%Y%m%dT%H%M%S')}")
        try:
            os.replace(overrides_path, aside)
            problem += f"; set aside as {aside.name}, started without it"
        except OSError as move_error:
            problem += f"; could not set it aside ({move_error.strerror}), started without it"
        log.error("config: %s", problem)
        first._overrides_problem = problem
        return first


def _dotted_keys(tree: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            keys += _dotted_keys(value, f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys


def write_override(config: NodeConfig, assignment: str, source: SettingSource = "cli") -> Path:
    """Persist a run-time setting in the override file; return the file it went to.

    Refused (ConfigError naming the key) if the key is one of identity or place (or, from the
    hub, of trust, safety or devices), or if *this node's* whole config with it would not
    validate, so a saved setting can never stop the next start."""
    parsed = parse_set(assignment)
    forbidden = NEVER_FROM_THE_HUB if source == "hub" else NEVER_AT_RUN_TIME
    for key in _dotted_keys(parsed):
        if key.startswith(forbidden) or f"{key}.".startswith(forbidden):
            where = "from the hub" if source == "hub" else "at run time (set it in node.toml)"
            raise ConfigError(assignment, [f"{key}: cannot be set {where}"])
    overrides_path = config.state_dir / OVERRIDES_FILE
    current = _read_toml(overrides_path) if overrides_path.exists() else {}
    merged = _merge(current, parsed)
    node_now = config.model_dump(mode="json", exclude_unset=True, exclude_none=True)
    validate(_merge(node_now, parsed), f"{assignment} (checked against this node's config)")
    tmp = overrides_path.with_suffix(".tmp")
    tmp.write_text(tomli_w.dumps(merged))
    os.replace(tmp, overrides_path)
    return overrides_path
