"""The one injectable clock.

Simulated time ("sim time") is what the virtual printer, the simulated sun and
battery, the planner and job timestamps read.  It runs ``time_scale`` times
faster than the wall clock (1 = real time; 60 = a simulated hour per real
minute; 0 = instant: sleeps return at once and advance sim time by what was
asked).  Tests use :class:`ManualClock` and move time by hand.

I/O timeouts (serial, MQTT, sockets) do *not* read this clock: a printer does
not answer faster because the simulation runs faster.  They use
``time.monotonic()`` directly.

Several processes (the daemon, the virtual printer, the simulated charge
controller) share one sim time through :class:`ClockSpec`: the sim epoch, the
wall time it corresponds to, and the scale.
"""
from __future__ import annotations

import asyncio
import re
import threading
import time
from datetime import UTC, datetime

from pydantic import BaseModel, Field, field_validator

from node.section import Section


class ClockSection(Section):
    """``[clock]``: how fast sim time runs and where it starts (``make run`` starts a day at 05:00)."""

    time_scale: float = Field(1.0, ge=0, le=100_000, description="sim seconds per real second; 0 = instant")
    start: str = Field("now", description="'now', an ISO 8601 time, or 'HH:MM': today at that local time at [site]")

    @field_validator("start")
    @classmethod
    def _iso_or_now(cls, value: str) -> str:
        if value != "now" and not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
            try:
                datetime.fromisoformat(value)
            except ValueError as exc:
                raise ValueError(f"not 'now', 'HH:MM' nor an ISO 8601 time: {exc}") from None
        return value


def clock_start_s(section: ClockSection, timezone: str, now_s: float) -> float | None:
    """``clock.start`` as POSIX seconds: None for 'now'; 'HH:MM' is today at that local time in ``timezone``."""
    value = section.start
    if value == "now":
        return None
    if len(value) == 5 and value[2] == ":":
        from zoneinfo import ZoneInfo

        local = datetime.fromtimestamp(now_s, tz=ZoneInfo(timezone))
        return local.replace(hour=int(value[:2]), minute=int(value[3:]), second=0, microsecond=0).timestamp()
    return datetime.fromisoformat(value).timestamp()


class ClockSpec(BaseModel):
    """What another process needs to reproduce this clock."""

    time_scale: float = Field(ge=0)
    sim_epoch_s: float
    wall_epoch_s: float


class Clock:
    """Sim time derived from the wall clock: ``sim = sim_epoch + (wall - wall_epoch) * scale``."""

    def __init__(
        self,
        time_scale: float = 1.0,
        sim_start_s: float | None = None,
        wall_epoch_s: float | None = None,
    ) -> None:
        if time_scale < 0:
            raise ValueError("time_scale must be >= 0")
        self.time_scale = float(time_scale)
        self._wall_epoch_s = time.time() if wall_epoch_s is None else wall_epoch_s
        self._sim_epoch_s = self._wall_epoch_s if sim_start_s is None else sim_start_s
        self._instant_offset_s = 0.0  # sim time skipped by sleeps at scale 0
        self._lock = threading.Lock()

    @classmethod
    def from_spec(cls, spec: ClockSpec) -> Clock:
        return cls(spec.time_scale, spec.sim_epoch_s, spec.wall_epoch_s)

    def spec(self) -> ClockSpec:
        return ClockSpec(
            time_scale=self.time_scale,
            sim_epoch_s=self._sim_epoch_s + self._instant_offset_s,
            wall_epoch_s=self._wall_epoch_s,
        )

    def time(self) -> float:
        """Sim time as POSIX seconds (UTC)."""
        wall_elapsed_s = time.time() - self._wall_epoch_s
        return self._sim_epoch_s + wall_elapsed_s * self.time_scale + self._instant_offset_s

    def now(self) -> datetime:
        """Sim time as an aware UTC datetime."""
        return datetime.fromtimestamp(self.time(), tz=UTC)

    def sim_to_wall_s(self, sim_s: float) -> float:
        """How many real seconds a sim duration takes (0 at scale 0)."""
        return 0.0 if self.time_scale == 0 else sim_s / self.time_scale

    def _skip(self, sim_s: float) -> None:
        with self._lock:
            self._instant_offset_s += max(0.0, sim_s)

    async def sleep(self, sim_s: float) -> None:
        """Sleep a sim duration without blocking the event loop."""
        if self.time_scale == 0:
            self._skip(sim_s)
            await asyncio.sleep(0)
        else:
            await asyncio.sleep(max(0.0, self.sim_to_wall_s(sim_s)))

    def sleep_blocking(self, sim_s: float) -> None:
        """Sleep a sim duration in a worker thread or a helper process."""
        if self.time_scale == 0:
            self._skip(sim_s)
        else:
            time.sleep(max(0.0, self.sim_to_wall_s(sim_s)))


class ManualClock(Clock):
    """A clock that moves only when a test calls :meth:`advance`.

    Sleepers wake in deadline order as time passes them, so a scaled
    simulation driven by a test is deterministic.
    """

    def __init__(self, start_s: float = 1_750_000_000.0) -> None:
        super().__init__(time_scale=1.0, sim_start_s=start_s, wall_epoch_s=0.0)
        self._now_s = start_s
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._counter = 0
        self._cond = threading.Condition()

    def time(self) -> float:
        return self._now_s

    def spec(self) -> ClockSpec:
        return ClockSpec(time_scale=0.0, sim_epoch_s=self._now_s, wall_epoch_s=time.time())

    async def advance(self, sim_s: float) -> None:
        """Move time forward, waking every sleeper whose deadline passes, in order."""
        target_s = self._now_s + sim_s
        while True:
            self._sleepers.sort(key=lambda item: (item[0], item[1]))
            due = [s for s in self._sleepers if s[0] <= target_s]
            if not due:
                break
            deadline_s, _, future = due[0]
            self._sleepers.remove(due[0])
            self._now_s = max(self._now_s, deadline_s)
            if not future.done():
                future.set_result(None)
            # let the woken task run (and maybe sleep again) before going on
            for _ in range(5):
                await asyncio.sleep(0)
        self._now_s = target_s
        with self._cond:
            self._cond.notify_all()

    async def sleep(self, sim_s: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._counter += 1
        self._sleepers.append((self._now_s + max(0.0, sim_s), self._counter, future))
        await future

    def sleep_blocking(self, sim_s: float) -> None:
        deadline_s = self._now_s + sim_s
        with self._cond:
            self._cond.wait_for(lambda: self._now_s >= deadline_s)

    @property
    def pending_sleepers(self) -> int:
        return sum(1 for _, _, f in self._sleepers if not f.done())
