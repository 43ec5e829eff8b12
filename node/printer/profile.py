"""The printer profile: one description of a printer shared by the virtual
printer, the G-code analysis and the energy planner.

Built-in profiles live in ``node/printer/profiles/<name>.toml``; a config can name one
of them or give a path to its own TOML file with the same keys.

Heater thermal model (first order, lumped capacitance)::

    heat_capacity_j_per_k * dT/dt = heater_w * pwm - loss_w_per_k * (T - ambient_c)

so a heater at full power settles at ``ambient + heater_w / loss_w_per_k`` and
holding ``T`` costs ``loss_w_per_k * (T - ambient)`` watts.  Reference:
F. P. Incropera et al., *Fundamentals of Heat and Mass Transfer*, lumped
capacitance method.
"""
from __future__ import annotations

import math
import tomllib
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HeaterModel(_Strict):
    """One heater (hotend or bed) as a first-order thermal system."""

    heater_w: float = Field(gt=0, description="electrical power at 100 % PWM")
    heat_capacity_j_per_k: float = Field(gt=0)
    loss_w_per_k: float = Field(gt=0, description="heat lost per kelvin above ambient")
    max_c: float = Field(gt=0, description="highest target the profile allows")
    settle_s: float = Field(60.0, ge=0, description="what a heating wait takes beyond full-power heating: the PID's "
                                                    "slow final approach and the firmware's residency time "
                                                    "(Marlin TEMP_RESIDENCY_TIME, 10 s by default)")

    def holding_w(self, target_c: float, ambient_c: float) -> float:
        """Electrical power needed to hold ``target_c`` (capped at the heater's power)."""
        return min(self.heater_w, max(0.0, self.loss_w_per_k * (target_c - ambient_c)))

    def steady_state_c(self, ambient_c: float) -> float:
        return ambient_c + self.heater_w / self.loss_w_per_k

    def heatup_s(self, from_c: float, to_c: float, ambient_c: float) -> float:
        """Seconds to heat from ``from_c`` to ``to_c`` at full power (inf if unreachable)."""
        if to_c <= from_c:
            return 0.0
        t_inf = self.steady_state_c(ambient_c)
        if to_c >= t_inf:
            return math.inf
        tau_s = self.heat_capacity_j_per_k / self.loss_w_per_k
        return tau_s * math.log((t_inf - from_c) / (t_inf - to_c))

    def step_c(self, temp_c: float, pwm: float, ambient_c: float, dt_s: float) -> float:
        """Exact solution of the first-order model over ``dt_s`` at constant PWM."""
        t_inf = ambient_c + self.heater_w * pwm / self.loss_w_per_k
        tau_s = self.heat_capacity_j_per_k / self.loss_w_per_k
        return t_inf + (temp_c - t_inf) * math.exp(-dt_s / tau_s)


class MotionLimits(_Strict):
    """Firmware motion limits (the values M201/M203/M204/M205 would set)."""

    max_feedrate_mm_s: tuple[float, float, float, float] = (500.0, 500.0, 5.0, 25.0)
    max_accel_mm_s2: tuple[float, float, float, float] = (500.0, 500.0, 100.0, 5000.0)
    print_accel_mm_s2: float = Field(500.0, gt=0)
    retract_accel_mm_s2: float = Field(500.0, gt=0)
    travel_accel_mm_s2: float = Field(500.0, gt=0)
    junction_deviation_mm: float | None = Field(0.013, ge=0)
    classic_jerk: bool = Field(False, description="firmware built with classic jerk (Prusa firmware, "
                               "Marlin CLASSIC_JERK); a file's M205 X/Y also selects it")
    jerk_mm_s: tuple[float, float, float, float] = (10.0, 10.0, 0.4, 5.0)
    min_feedrate_mm_s: float = 0.0
    min_travel_feedrate_mm_s: float = 0.0
    min_segment_time_us: int = 20000


class PowerModel(_Strict):
    """Non-heater electrical loads and conversion losses."""

    electronics_w: float = Field(4.0, ge=0, description="board, display, always on while powered")
    steppers_w: float = Field(10.0, ge=0, description="motors enabled (holding or moving)")
    part_fan_w: float = Field(2.0, ge=0, description="part-cooling fan at 100 %")
    hotend_fan_w: float = Field(1.0, ge=0, description="hotend fan, on while the hotend is hot")
    standby_w: float = Field(3.0, ge=0, description="printer powered, idle, motors off, heaters off")
    psu_efficiency: float = Field(0.85, gt=0, le=1, description="power supply (and inverter) efficiency")
    psu_idle_w: float = Field(1.5, ge=0, description="supply's own draw when powered and unloaded")


class PrinterProfile(_Strict):
    """Everything the node knows about one printer model."""

    name: str
    firmware: str = "marlin"
    bed_x_mm: float = Field(gt=0)
    bed_y_mm: float = Field(gt=0)
    max_z_mm: float = Field(gt=0)
    nozzle_mm: float = Field(0.4, gt=0)
    filament_mm: float = Field(1.75, gt=0)
    tools: int = Field(1, ge=1)
    motion: MotionLimits = MotionLimits()
    hotend: HeaterModel
    bed: HeaterModel
    power: PowerModel = PowerModel()
    planner_depth: int = Field(16, ge=1, description="firmware planner buffer (moves)")
    command_queue: int = Field(4, ge=1, description="firmware command queue (BUFSIZE)")
    rx_buffer_bytes: int = Field(128, ge=64, description="firmware serial receive buffer")
    idle_timeout_s: float = Field(600.0, gt=0, description="firmware disables steppers after this")

    @model_validator(mode="after")
    def _heaters_reach_their_max(self) -> PrinterProfile:
        for label, heater in (("hotend", self.hotend), ("bed", self.bed)):
            if heater.steady_state_c(25.0) <= heater.max_c:
                raise ValueError(
                    f"{label}: heater_w / loss_w_per_k gives a steady state of "
                    f"{heater.steady_state_c(25.0):.0f} C at 25 C ambient, below max_c {heater.max_c}"
                )
        return self

    def electrical_w(self, hotend_pwm: float, bed_pwm: float, part_fan: float = 0.0,
                     steppers_on: bool = True, hotend_fan_on: bool = True) -> float:
        """Power drawn at the wall (battery side of the supply) for a given heater state."""
        dc_w = (
            self.power.electronics_w
            + hotend_pwm * self.hotend.heater_w
            + bed_pwm * self.bed.heater_w
            + part_fan * self.power.part_fan_w
            + (self.power.steppers_w if steppers_on else 0.0)
            + (self.power.hotend_fan_w if hotend_fan_on else 0.0)
        )
        return dc_w / self.power.psu_efficiency + self.power.psu_idle_w


def builtin_profile_names() -> list[str]:
    folder = resources.files("node.printer") / "profiles"
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def load_profile(name_or_path: str) -> PrinterProfile:
    """Load a built-in profile by name, or a profile TOML file by path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        try:
            data = tomllib.loads(path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path} is not a text file (byte {exc.start} is not UTF-8): is it a profile?") from None
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path} is not valid TOML: {exc}") from None
    else:
        resource = resources.files("node.printer") / "profiles" / f"{name_or_path}.toml"
        if not resource.is_file():
            known = ", ".join(builtin_profile_names())
            raise ValueError(f"unknown printer profile {name_or_path!r} (built in: {known}; or a path to a .toml)")
        data = tomllib.loads(resource.read_text())
    return PrinterProfile.model_validate(data)
