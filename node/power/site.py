"""``[site]``: where the node stands.  pvlib-free, so the daemon can load it cheaply.

Used by the simulated charge controller (pvlib sun position and clear-sky
irradiance) and by the planner's forecast.  The site can move (an RV): a
changed location takes effect at the next re-plan, since every forecast
request carries the site it is for.  Default: Tucson, Arizona — a sunny desert
site without daylight saving, so ``make run`` shows the sun doing something.
"""
from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from node.section import Section


class SiteSection(Section):
    latitude: float = Field(32.2, ge=-90, le=90, description="degrees north")
    longitude: float = Field(-110.95, ge=-180, le=180, description="degrees east (west is negative)")
    altitude_m: float = Field(728.0, ge=-500, le=9000)
    timezone: str = Field("America/Phoenix", description="IANA zone: plan times people read; daily counters roll over at local midnight")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r} (e.g. 'Europe/Berlin', 'UTC')") from None
        return value
