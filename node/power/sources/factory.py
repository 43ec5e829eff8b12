"""Build the configured source (the daemon's Telemetry component and ``printnode telemetry`` share it)."""
from __future__ import annotations

from node.clock import ClockSpec
from node.power.config import ArraySection, BatterySection, SiteSection, TelemetrySection
from node.power.sources import Source


def make_source(telemetry: TelemetrySection, battery: BatterySection, site: SiteSection, array: ArraySection,
                clock_spec: ClockSpec) -> Source:
    """A closed source for ``telemetry.source``; ``ValueError`` names a missing setting."""
    kind = telemetry.source
    if kind == "simulated":
        from node.power.sources.simulated import SimulatedSource

        return SimulatedSource(clock_spec, site, array, battery, telemetry.simulated)
    if kind in ("vedirect", "epever", "renogy") and not telemetry.port:
        raise ValueError(f"telemetry.port: required for source {kind!r} (e.g. /dev/ttyUSB0)")
    if kind == "vedirect":
        from node.power.sources.vedirect import BAUD, VEDirectSource

        return VEDirectSource(telemetry.port or "", telemetry.baud or BAUD)
    if kind in ("epever", "renogy"):
        from node.power.sources.modbus import ModbusSource

        return ModbusSource(kind, telemetry.port or "", telemetry.baud, telemetry.unit)
    from node.power.sources.ina import InaSource

    return InaSource(telemetry.ina.model_copy(update={"chip": kind}), role="battery")
