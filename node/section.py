"""The base of every config section, in a module of its own.

``node.config`` assembles ``NodeConfig`` from sections that live beside their
components (``node.power.battery``, ``node.gcode.config``, …); those modules
import ``Section`` from here, so nothing imports ``node.config`` back.
"""
from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Unknown keys are errors (a misspelt key must not be silently ignored); assignments validate."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ConfigError(ValueError):
    """A config that cannot be used; ``problems`` lists ``key: why`` lines."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))
