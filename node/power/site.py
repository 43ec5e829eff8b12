"""``[site]``: where the node is (the sun's geometry and the local clock depend on it).

The site can move (an RV): a changed location takes effect at the next re-plan,
since every forecast request carries the site it is for.
"""
from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Section(BaseModel):
    """Same rules as ``node.config.Section`` (unknown keys are errors); defined here because
    ``node.config`` imports this module to build ``NodeConfig`` (no import cycle)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SiteSection(Section):
    """Default: Tucson, Arizona (a sunny desert site, no daylight saving)."""

    latitude: float = Field(32.2, ge=-90, le=90, description="degrees north")
    longitude: float = Field(-110.95, ge=-180, le=180, description="degrees east (west is negative)")
    altitude_m: float = Field(728.0, ge=-500, le=9000)
    timezone: str = Field("America/Phoenix", description="IANA time zone, for plan times people read")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r}") from None
        return value
