"""Telemetry sources: each turns one kind of device into :class:`Reading` objects.

A source is blocking and single-threaded on purpose: the Telemetry component
runs it in its own thread (pyserial, Modbus and I2C calls all block), and the
``printnode telemetry`` command runs it directly.  A source never knows the
node's clock: the caller stamps each reading with sim time.

Protocol of a source (duck-typed, see :class:`Source`):

- ``open()`` opens the port or bus (raises :class:`SourceError` naming the problem);
- ``read(timeout_s)`` blocks at most about ``timeout_s`` real seconds and returns
  the next :class:`Reading`, or ``None`` if the device said nothing in time;
- ``close()`` releases the port (idempotent);
- ``counters()`` returns a dict of fault counters for ``status()``.
"""
from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field


class SourceError(RuntimeError):
    """The device cannot be reached or answered garbage; the caller retries with backoff."""


class Reading(BaseModel):
    """What one device reports, in SI units; absent quantities are ``None``.

    ``battery_a`` is positive while charging.  ``extra`` keeps every other
    documented quantity the device gave (e.g. VE.Direct history ``H1``..``H23``)
    under readable names, for ``printnode telemetry --json`` and the logs.
    """

    model_config = ConfigDict(extra="forbid")

    source: str
    pv_w: float | None = None
    pv_v: float | None = None
    battery_v: float | None = None
    battery_a: float | None = None
    battery_temperature_c: float | None = None
    load_w: float | None = None
    printer_w: float | None = None
    soc_pct: float | None = None
    charge_state: str | None = None
    error: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


class Source(Protocol):
    name: str

    def open(self) -> None: ...

    def read(self, timeout_s: float) -> Reading | None: ...

    def close(self) -> None: ...

    def counters(self) -> dict[str, int]: ...
