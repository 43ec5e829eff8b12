"""``[site]``: where the node stands.  pvlib-free, so the daemon can load it cheaply.

Used by the simulated charge controller (pvlib sun position and clear-sky irradiance)
and by the planner's forecast.  Default: Tucson, Arizona — sunny, so ``make run`` shows
the sun doing something.
"""
from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator


class SiteSection(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    latitude: float = Field(32.2, ge=-90, le=90, description="degrees north")
    longitude: float = Field(-110.95, ge=-180, le=180, description="degrees east (west is negative)")
    altitude_m: float = Field(728.0, ge=-500, le=9000)
    timezone: str = Field("America/Phoenix", description="IANA zone: daily counters (yield today) roll over at local midnight")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r} (e.g. 'Europe/Berlin', 'UTC')") from None
        return value
