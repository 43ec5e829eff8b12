"""``[analysis]`` in node.toml: how the node analyses G-code (see ``node.gcode.service``)."""
from __future__ import annotations

from pydantic import Field

from node.section import Section


class AnalysisSection(Section):
    """How job files are analysed when they arrive."""

    ambient_c: float = Field(22.0, ge=-40, le=60,
                             description="room temperature for heat-up time and holding power, C "
                                         "(until a sensor reports it)")
    learn_from_prints: bool = Field(True, description="store each completed print's printing time beside "
                                                      "its estimate; the bounded correction learns from it")
