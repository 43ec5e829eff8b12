"""PV forecast: pvlib in a short-lived worker process, plain lists back.

The daemon never imports pvlib, pandas, numpy or scipy (a Pi Zero has little
memory and the import alone takes seconds): every function that needs them runs
in a worker, a fresh interpreter (:mod:`node.plan.worker`: no fork of the
daemon's threads and sockets), and returns lists of floats.

The model chain (all pvlib):

1. Sun position (NREL SPA) and clear-sky irradiance: Ineichen & Perez (2002)
   with Linke turbidity from pvlib's shipped monthly climatology
   (``pvlib.clearsky.lookup_linke_turbidity``, Remund et al. 2003).
2. Cloud cover -> global horizontal irradiance by clear-sky scaling,
   Kasten & Czeplak (1980)::

       GHI = GHI_clear * (1 - 0.75 * (cc / 100) ** 3.4)

   then split into beam and diffuse with DISC (Maxwell 1987,
   ``pvlib.irradiance.disc``): DHI = GHI - DNI * cos(zenith).
3. Transposition to the plane of the array: Hay & Davies (1980).
4. Cell temperature: the Sandia (SAPM) model, King et al. (2004), with the
   configured mounting's parameters.
5. DC power: PVWatts (Dobos 2014) with the array's temperature coefficient,
   then the lumped system losses (wiring, soiling, MPPT charger).

A cloud-cover forecast (:class:`CloudCoverForecast`) arrives from the hub or a
file; a stale or missing one is replaced by ``stale_cloud_cover_pct`` (a
pessimistic climatology) so the planner never plans on clear sky it has not
been told about.

Bias and uncertainty (both pure, no pvlib): :class:`BiasTracker` is an
exponentially weighted ratio of measured to forecast PV energy in daylight,
clamped to [0.3, 1.5], applied to every new forecast.  The planner plans on a
pessimistic quantile: the relative forecast error is taken as normal with a
standard deviation growing linearly with lead time,
``sigma(lead) = min(sigma_max, sigma_0 + sigma_per_h * lead_h)`` (day-ahead PV
forecasts have relative RMSE of 20-40 %, e.g. Lorenz et al. 2009), and the
planner uses ``pv * max(0, 1 + z_q * sigma(lead))`` with ``z_q`` the normal
quantile (q = 0.2: about 0.83x at lead 0, 0.5x at 72 h).
"""
from __future__ import annotations

import pickle
import subprocess
from collections.abc import Sequence
from datetime import datetime, timedelta
from statistics import NormalDist
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from node.plan.config import ForecastSection
from node.plan.fit import BestClearDay
from node.power.config import ArraySection, SiteSection

# the cloud-cover forecast is the wire's model (node/sync/protocol.py: the hub sends it whole), re-exported
# here, where the planner, the plan command and the tests find it
from node.sync.protocol import CloudCoverForecast, CloudCoverPoint, ForecastSite  # noqa: F401

# --- requests to the worker and its answers (plain data both ways) ---------------------------------


class PvForecastRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    site: SiteSection
    array: ArraySection
    start_s: float
    step_s: float = Field(gt=0)
    n_steps: int = Field(gt=0, le=100_000)
    cloud_cover_pct: list[float] | None = Field(None, description="per step; None = clear sky")
    temp_air_c: float = 20.0
    wind_m_s: float = 1.0
    with_best_day: bool = Field(False, description="also the site's best clear-sky day (node.plan.fit), in the "
                                                   "same worker: one spawn, not two")


class PvForecast(BaseModel):
    """The forecast as the planner takes it: watts at the battery per step, plus the clear-sky bound."""

    start_s: float
    step_s: float
    pv_w: list[float]
    clear_sky_pv_w: list[float]
    ghi_w_m2: list[float]
    best_day: BestClearDay | None = None


# --- the worker side (runs only in the spawned process) --------------------------------------------


def _model_pv_w(pd: Any, pvlib: Any, times: Any, site: dict, array: dict, ghi: Any, dni: Any, dhi: Any,
                temp_air: Any, wind: Any, solpos: Any) -> Any:
    """Plane-of-array irradiance -> cell temperature -> PVWatts DC -> after losses (W)."""
    dni_extra = pvlib.irradiance.get_extra_radiation(times)
    airmass = pvlib.atmosphere.get_relative_airmass(solpos["apparent_zenith"])
    poa = pvlib.irradiance.get_total_irradiance(
        array["tilt_deg"], array["azimuth_deg"], solpos["apparent_zenith"], solpos["azimuth"],
        dni, ghi, dhi, dni_extra=dni_extra, airmass=airmass, model="haydavies")
    poa_global = poa["poa_global"].fillna(0.0).clip(lower=0.0)
    params = pvlib.temperature.TEMPERATURE_MODEL_PARAMETERS["sapm"][array["temperature_model"]]
    temp_cell = pvlib.temperature.sapm_cell(poa_global, temp_air, wind, **params)
    pdc = pvlib.pvsystem.pvwatts_dc(poa_global, temp_cell, array["peak_w"], array["gamma_pdc_per_c"])
    return (pdc * (1.0 - array["losses_pct"] / 100.0)).fillna(0.0).clip(lower=0.0)


def _ghi_from_cloud_cover(ghi_clear: Any, cloud_cover_pct: Any) -> Any:
    """Kasten & Czeplak (1980) clear-sky scaling."""
    return ghi_clear * (1.0 - 0.75 * (cloud_cover_pct / 100.0) ** 3.4)


def _split_ghi(pd: Any, pvlib: Any, times: Any, ghi: Any, zenith: Any) -> tuple[Any, Any]:
    """DISC (Maxwell 1987): beam normal from global; diffuse is the rest."""
    dni = pvlib.irradiance.disc(ghi, zenith, times)["dni"].fillna(0.0)
    cos_z = pvlib.tools.cosd(zenith).clip(lower=0.0)
    dhi = (ghi - dni * cos_z).clip(lower=0.0)
    return dni, dhi


def _location(pvlib: Any, site: dict) -> Any:
    return pvlib.location.Location(site["latitude"], site["longitude"], tz="UTC",
                                   altitude=site["altitude_m"])


def compute_pv_forecast(request: dict) -> dict:
    """Worker entry: a PV forecast for ``request`` (a :class:`PvForecastRequest` as a dict)."""
    import pandas as pd
    import pvlib

    req = PvForecastRequest.model_validate(request)
    site, array = req.site.model_dump(), req.array.model_dump()
    # each step's value is its average: evaluate the sun at mid-step
    times = pd.date_range(pd.Timestamp(req.start_s + req.step_s / 2, unit="s", tz="UTC"),
                          periods=req.n_steps, freq=pd.Timedelta(seconds=req.step_s))
    loc = _location(pvlib, site)
    solpos = loc.get_solarposition(times)
    clear = loc.get_clearsky(times, model="ineichen", solar_position=solpos)
    temp_air = pd.Series(req.temp_air_c, index=times)
    wind = pd.Series(req.wind_m_s, index=times)
    clear_pv = _model_pv_w(pd, pvlib, times, site, array, clear["ghi"], clear["dni"], clear["dhi"],
                           temp_air, wind, solpos)
    if req.cloud_cover_pct is None:
        ghi, pv = clear["ghi"], clear_pv
    else:
        if len(req.cloud_cover_pct) != req.n_steps:
            raise ValueError("cloud_cover_pct must have n_steps values")
        cc = pd.Series(req.cloud_cover_pct, index=times).clip(0, 100)
        ghi = _ghi_from_cloud_cover(clear["ghi"], cc)
        dni, dhi = _split_ghi(pd, pvlib, times, ghi, solpos["apparent_zenith"])
        pv = _model_pv_w(pd, pvlib, times, site, array, ghi, dni, dhi, temp_air, wind, solpos)
    best_day = None
    if req.with_best_day:
        best_day = compute_best_clear_day(BestDayRequest(site=req.site, array=req.array, step_s=req.step_s)
                                          .model_dump(mode="json"))
    return PvForecast(start_s=req.start_s, step_s=req.step_s, pv_w=[float(x) for x in pv],
                      clear_sky_pv_w=[float(x) for x in clear_pv],
                      ghi_w_m2=[float(x) for x in ghi], best_day=best_day).model_dump()


class BestDayRequest(BaseModel):
    """Which site and array the best clear-sky day is wanted for (see :mod:`node.plan.fit`)."""

    model_config = ConfigDict(extra="forbid")

    site: SiteSection
    array: ArraySection
    step_s: float = Field(300.0, gt=0, le=3600)
    year: int = 2025


def compute_best_clear_day(request: dict) -> dict:
    """Worker entry: the clear-sky PV of the site's best day (and the clearest day of every other month), per
    step from local midnight.

    The forecast chain's clear sky (Ineichen with the site's monthly Linke turbidity, Hay & Davies, SAPM at
    20 C and 1 m/s, PVWatts, losses) over a whole year; the month with the most clear-sky energy per day is
    the best month, its clearest day the best day (a :class:`node.plan.fit.BestClearDay` as a dict)."""
    import numpy as np
    import pandas as pd
    import pvlib

    req = BestDayRequest.model_validate(request)
    site, array = req.site.model_dump(), req.array.model_dump()
    loc = _location(pvlib, site)
    defaults = PvForecastRequest.model_fields
    first = pd.Timestamp(year=req.year, month=1, day=1, tz=req.site.timezone)
    local_days = pd.date_range(first, periods=365, freq="D")

    def clear_pv(day_index: np.ndarray, step_s: float) -> np.ndarray:
        """Clear-sky PV of the given local days at mid-step instants, shape (days, steps per day)."""
        per_day = round(86400 / step_s)
        midnights_s = np.array([local_days[d].timestamp() for d in day_index])
        # each day from its own midnight (a daylight-saving day keeps 24 h of steps: the sun does not care)
        instants_s = midnights_s[:, None] + (np.arange(per_day) + 0.5)[None, :] * step_s
        times = pd.DatetimeIndex(pd.to_datetime(instants_s.ravel(), unit="s", utc=True))
        solpos = loc.get_solarposition(times)
        clear = loc.get_clearsky(times, model="ineichen", solar_position=solpos)
        pv = _model_pv_w(pd, pvlib, times, site, array, clear["ghi"], clear["dni"], clear["dhi"],
                         pd.Series(defaults["temp_air_c"].default, index=times),
                         pd.Series(defaults["wind_m_s"].default, index=times), solpos)
        return pv.to_numpy().reshape(len(day_index), per_day)

    daily_wh = clear_pv(np.arange(365), 3600.0).sum(axis=1)   # the year, hourly: which day is best
    months = np.asarray(local_days.month)
    best_month = max(range(1, 13), key=lambda m: float(daily_wh[months == m].mean()))
    clearest = {m: int(np.flatnonzero(months == m)[np.argmax(daily_wh[months == m])]) for m in range(1, 13)}
    order = [clearest[best_month]] + [clearest[m] for m in range(1, 13) if m != best_month]
    pv = clear_pv(np.array(order), req.step_s)
    return {"dates": [local_days[d].date().isoformat() for d in order], "step_s": req.step_s,
            "pv_w": [[float(x) for x in day] for day in pv]}


#: effective cloud cover steps of the year-long lookup table (percent)
CLOUD_TABLE_PCT = [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0]


def compute_weather_year(path: str, array: dict, year: int = 2025) -> dict:
    """Worker entry for the year-long simulation: everything pvlib has to say about one weather file.

    Returns hourly lists over the file's 8760 hours, each hour's values being
    its average (TMY hours are "hour ending": the sun is placed mid-hour):

    * ``pv_w`` — the array's output from the file's measured irradiance (the truth);
    * ``cloud_cover_pct`` — the effective cloud cover: the Kasten & Czeplak
      relation inverted on the measured GHI against Ineichen clear sky (so it
      exists for PVGIS files too, which carry no cloud observations);
    * ``pv_by_cloud_w`` — for each of :data:`CLOUD_TABLE_PCT`, the array's
      output that the forecast chain (clear sky -> K&C -> DISC -> POA -> PVWatts)
      gives at that cloud cover: forecasts for the whole year are interpolated
      in this table instead of calling pvlib once per forecast.  Like the live
      node's forecast it knows no future temperature or wind: it uses
      :class:`PvForecastRequest`'s defaults (20 C, 1 m/s), not the file's.

    Reads TMY3, TMY2, EPW and PVGIS TMY (CSV, JSON): :mod:`node.plan.weatherfiles`.
    """
    import numpy as np
    import pandas as pd
    import pvlib

    from node.plan.weatherfiles import read_weather_file

    data, site = read_weather_file(path)
    n = len(data)
    # one calendar year: row i covers local standard hours [i, i + 1) -> mid-hour UTC instants
    utc_offset_h = float(site["utc_offset_h"])
    start_local = pd.Timestamp(year=year, month=1, day=1)
    mid_local = start_local + pd.to_timedelta(np.arange(n) + 0.5, unit="h")
    times = pd.DatetimeIndex(mid_local - pd.Timedelta(hours=utc_offset_h)).tz_localize("UTC")
    # the file's hour h (1..8760, hour ending) covers local [h-1, h)
    loc = _location(pvlib, site)
    solpos = loc.get_solarposition(times)
    clear = loc.get_clearsky(times, model="ineichen", solar_position=solpos)
    ghi = pd.Series(data["ghi"].to_numpy(dtype=float), index=times).clip(lower=0)
    dni = pd.Series(data["dni"].to_numpy(dtype=float), index=times).clip(lower=0)
    dhi = pd.Series(data["dhi"].to_numpy(dtype=float), index=times).clip(lower=0)
    temp_air = pd.Series(data["temp_air"].to_numpy(dtype=float), index=times)
    wind = pd.Series(data["wind_speed"].to_numpy(dtype=float), index=times)
    truth_pv = _model_pv_w(pd, pvlib, times, site, array, ghi, dni, dhi, temp_air, wind, solpos)

    ghi_clear = clear["ghi"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        kt = np.where(ghi_clear > 20.0, ghi.to_numpy() / ghi_clear, np.nan)
    loss = np.clip((1.0 - kt) / 0.75, 0.0, 1.0)
    cloud = 100.0 * loss ** (1.0 / 3.4)
    cloud = pd.Series(cloud, index=times).ffill().bfill().fillna(50.0).to_numpy()

    defaults = PvForecastRequest.model_fields
    forecast_temp = pd.Series(defaults["temp_air_c"].default, index=times)
    forecast_wind = pd.Series(defaults["wind_m_s"].default, index=times)
    table = []
    for cc in CLOUD_TABLE_PCT:
        g = _ghi_from_cloud_cover(clear["ghi"], cc)
        d_n, d_h = _split_ghi(pd, pvlib, times, g, solpos["apparent_zenith"])
        table.append([float(x) for x in _model_pv_w(pd, pvlib, times, site, array, g, d_n, d_h,
                                                    forecast_temp, forecast_wind, solpos)])
    start_s = (start_local - pd.Timedelta(hours=utc_offset_h)).tz_localize("UTC").timestamp()
    return {
        "site": site | {"utc_offset_h": utc_offset_h},
        "start_s": float(start_s),
        "hours": n,
        "pv_w": [float(x) for x in truth_pv],
        "ghi_w_m2": [float(x) for x in ghi],
        "temp_air_c": [float(x) for x in temp_air],
        "cloud_cover_pct": [float(x) for x in cloud],
        "pv_by_cloud_w": table,
    }


# --- the daemon side: run a worker, get lists back ------------------------------------------------


class WorkerFailed(RuntimeError):
    """The worker process died or answered nothing readable."""


def run_in_worker(function: Any, *args: Any, timeout_s: float = 300.0) -> Any:
    """Call ``function(*args)`` (a module-level function of ``node``) in a fresh process
    (:mod:`node.plan.worker`) and return its (plain) result; an exception it raised is raised here.

    Blocking: call it from a thread (``asyncio.to_thread``) inside the daemon.  Past ``timeout_s`` the
    worker is killed (``subprocess.TimeoutExpired``).
    """
    from node.child import python_module_command

    call = pickle.dumps((function.__module__, function.__qualname__, args))
    done = subprocess.run(python_module_command("node.plan.worker"), input=call, stdout=subprocess.PIPE,
                          timeout=timeout_s, check=False)
    try:
        ok, value = pickle.loads(done.stdout)
    except Exception:
        raise WorkerFailed(f"the forecast worker exited with {done.returncode} and no answer") from None
    if not ok:
        raise value
    return value


def forecast_pv(request: PvForecastRequest, timeout_s: float = 120.0) -> PvForecast:
    return PvForecast.model_validate(run_in_worker(compute_pv_forecast, request.model_dump(mode="json"),
                                                   timeout_s=timeout_s))


# --- bias and the pessimistic quantile (pure) ------------------------------------------------------


class BiasTracker:
    """Measured / forecast PV energy, exponentially weighted in time, in daylight only.

    Why a ratio of energies rather than of instants: at dawn and dusk small
    watts divide into wild ratios; summing energies weights each sample by how
    much it matters to the plan.  The weight of the past halves every
    ``halflife_h`` hours; the factor is clamped to [0.3, 1.5] so one bad sensor
    day cannot stop all printing or promise double the sun.
    """

    MIN_W = 20.0

    def __init__(self, halflife_h: float = 48.0) -> None:
        self.halflife_h = halflife_h
        self.measured_wh = 0.0
        self.forecast_wh = 0.0
        self.last_t_s: float | None = None

    def add(self, t_s: float, measured_w: float, forecast_w: float, dt_s: float) -> None:
        if self.last_t_s is not None and t_s > self.last_t_s:
            decay = 0.5 ** ((t_s - self.last_t_s) / 3600.0 / self.halflife_h)
            self.measured_wh *= decay
            self.forecast_wh *= decay
        self.last_t_s = t_s if self.last_t_s is None else max(self.last_t_s, t_s)
        if forecast_w < self.MIN_W and measured_w < self.MIN_W:
            return
        self.measured_wh += measured_w * dt_s / 3600.0
        self.forecast_wh += forecast_w * dt_s / 3600.0

    @property
    def factor(self) -> float:
        if self.forecast_wh < 50.0:  # less than ~ an hour of meaningful sun: no opinion yet
            return 1.0
        return min(1.5, max(0.3, self.measured_wh / self.forecast_wh))


def error_sigma(lead_h: float, section: ForecastSection) -> float:
    return min(section.error_sigma_max, section.error_sigma_0 + section.error_sigma_per_h * max(0.0, lead_h))


def pessimistic_pv_w(pv_w: Sequence[float], step_s: float, section: ForecastSection,
                     lead0_h: float = 0.0) -> list[float]:
    """The ``section.quantile`` quantile of PV per step, under the normal relative-error model."""
    z = NormalDist().inv_cdf(section.quantile)
    out = []
    for k, watts in enumerate(pv_w):
        lead_h = lead0_h + (k + 0.5) * step_s / 3600.0
        out.append(max(0.0, watts * (1.0 + z * error_sigma(lead_h, section))))
    return out


def quantile_factors(n_steps: int, step_s: float, section: ForecastSection) -> list[float]:
    """The per-step multipliers of :func:`pessimistic_pv_w` (so a simulation can apply them in bulk)."""
    return pessimistic_pv_w([1.0] * n_steps, step_s, section)


def load_cloud_forecast(text: str) -> CloudCoverForecast:
    """Parse a cloud-cover forecast JSON document (raises pydantic.ValidationError naming the field)."""
    return CloudCoverForecast.model_validate_json(text)


def hours_ahead(now_s: float, t_s: float) -> float:
    return (t_s - now_s) / 3600.0


def iso(t_s: float) -> str:
    return (datetime(1970, 1, 1) + timedelta(seconds=t_s)).isoformat() + "Z"
