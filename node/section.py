"""The base of every config section, and the error a config that cannot be used raises.

``node.config`` assembles ``NodeConfig`` from sections that live beside their owners (each
feature package's ``config.py``; ``[node]``, ``[clock]``, ``[jobs]``, ``[control]`` in the
owner's module); they import ``Section`` from here, so only the outer doors import
``node.config`` (tests/test_layers.py keeps it so).
"""
from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Unknown keys are errors (a misspelt key must not be silently ignored); assignments validate;
    no number is infinite or NaN (``battery.capacity_ah = inf`` would make every plan look fine)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ConfigError(ValueError):
    """A config that cannot be used; ``problems`` lists ``key: why`` lines."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))
