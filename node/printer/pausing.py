"""What a pause does with the heaters, per reason, and the scripts that park and unpark the head.

Why per reason: the right answer differs.  A person who paused to look keeps
both heaters at temperature; a filament runout needs a hot nozzle to load the
new spool, but not for hours (a nozzle left hot cooks the filament in the
heat break); an energy pause drops the hotend (it is what oozes and it is
quick to reheat) but keeps the bed warm, because a part that cools on the
plate may let go or warp; at a critical battery everything goes off and the
job is *suspended*: the printer's power is cut and the job comes back through
the power-loss resume path (docs/resume.md).

The policies are config (``[printer.pause.<reason>]``); the functions here are
pure and build the G-code the printer worker sends.
"""
from __future__ import annotations

from dataclasses import dataclass

from node.printer.config import PausePolicy

PARK_LIFT_MM = 10.0
RETRACT_MM = 2.0






@dataclass(frozen=True)
class HeaterPlan:
    """What the worker does with the heaters during one pause (node seconds for the timeout)."""

    hotend_off: bool = False
    bed_off: bool = False
    hotend_off_after_s: float = 0.0

    @classmethod
    def from_policy(cls, policy: PausePolicy) -> HeaterPlan:
        return cls(hotend_off=policy.hotend == "off", bed_off=policy.bed == "off",
                   hotend_off_after_s=policy.hotend_off_after_s)


@dataclass(frozen=True)
class Targets:
    """The heater targets before the pause touched them: what the unpause restores."""

    hotend_c: float = 0.0
    bed_c: float = 0.0


def park_script(plan: HeaterPlan) -> list[bytes]:
    """Retract, lift, park at the front left, heaters per ``plan``; steppers stay energised
    (M84 S0: Marlin's idle timeout would drop them and lose the position)."""
    script = [b"M83", b"G1 E-%.2f F2400" % RETRACT_MM, b"G91", b"G1 Z%.2f F600" % PARK_LIFT_MM, b"G90",
              b"G1 X0 Y0 F6000", b"M84 S0"]
    if plan.hotend_off:
        script.append(b"M104 S0")
    if plan.bed_off:
        script.append(b"M140 S0")
    return script


def reheat_script(targets: Targets) -> list[bytes]:
    """Bring both heaters back to where the job had them: bed first (it is slow and the hotend's
    ooze is shortest if it reaches temperature last), each waited for."""
    script = []
    if targets.bed_c > 0:
        script.append(b"M190 S%.0f" % targets.bed_c)
    if targets.hotend_c > 0:
        script.append(b"M109 S%.0f" % targets.hotend_c)
    return script


def suspend_script() -> list[bytes]:
    """Before the printer's power is cut (or, with no relay, instead of it): heaters, fan and
    steppers off.  The job resumes through the power-loss path, which re-homes X/Y."""
    return [b"M104 S0", b"M140 S0", b"M107", b"M84"]
