"""Recorded weather files, read through ``pvlib.iotools``: TMY3, TMY2, EPW, PVGIS TMY (CSV and JSON).

Worker side only (pvlib and pandas are imported inside the functions): the year
study calls :func:`read_weather_file` from the spawned pvlib worker.

The format is recognised from the file's first bytes, not its name: a PVGIS
CSV saved as ``tmy.csv`` is not a TMY3 file, and a user who renamed a download
should not get a pandas tokenizer error.  What each format's first line looks
like (from the formats' own documentation and the files pvlib reads):

* EPW (EnergyPlus): ``LOCATION,city,state,country,source,WMO,lat,lon,tz,elevation``;
* PVGIS TMY CSV as PVGIS serves it: ``Latitude (decimal degrees): 45.000``,
  then longitude, elevation, the months selected, the hourly table and a legend;
* PVGIS TMY JSON: a JSON object with ``inputs`` and ``outputs.tmy_hourly``;
* TMY3 (NSRDB): ``USAF,"Station name",ST,tz,lat,lon,elevation``;
* TMY2 (NSRDB, fixed width): `` WBAN CITY ST tz N dd mm W ddd mm elev``.

Every reader returns hourly rows in file order; row ``i`` covers local standard
hours ``[i, i + 1)`` of the year (TMY3 and TMY2 stamp the end of the hour, EPW
as pvlib returns it and PVGIS the start: the same hour), with the file's fixed
UTC offset (PVGIS: UTC).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

WeatherFormat = Literal["TMY3", "TMY2", "EPW", "PVGIS-CSV", "PVGIS-JSON"]
COLUMNS = ("ghi", "dni", "dhi", "temp_air", "wind_speed")


class WeatherFileError(ValueError):
    """A weather file that cannot be read, with the file and the reason."""


def detect_format(path: str) -> WeatherFormat:
    """Which format ``path`` is in, from its first line (raises :class:`WeatherFileError` naming the file)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError as exc:
        raise WeatherFileError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    first = text.lstrip().split("\n", 1)[0].strip()
    if first.startswith("{"):
        return "PVGIS-JSON"
    if first.upper().startswith("LOCATION,"):
        return "EPW"
    if first.lower().startswith("latitude"):
        return "PVGIS-CSV"
    if first.lower().startswith("time(utc)"):
        raise WeatherFileError(f"{path}: a PVGIS table without its location header (PVGIS 'basic' output); "
                               "download it from PVGIS as 'csv' or 'json', which name the site")
    fields = first.split(",")
    if len(fields) >= 7 and fields[0].strip().isdigit():
        return "TMY3"
    words = first.split()
    if len(words) >= 9 and words[0].isdigit() and ("N" in words or "S" in words):
        return "TMY2"
    raise WeatherFileError(
        f"{path}: not a weather file this tool reads (TMY3, TMY2, EPW, PVGIS TMY CSV or JSON); "
        f"its first line is {first[:80]!r}")


def read_weather_file(path: str) -> tuple[Any, dict]:
    """A weather file as (DataFrame with :data:`COLUMNS`, site dict: latitude, longitude, altitude_m, name, format,
    utc_offset_h)."""
    import pvlib

    fmt = detect_format(path)
    try:
        data, site = _READERS[fmt](pvlib, path)
    except WeatherFileError:
        raise
    except (ValueError, KeyError, IndexError, TypeError, json.JSONDecodeError) as exc:
        raise WeatherFileError(f"{path}: looks like {fmt} but pvlib cannot read it ({type(exc).__name__}: {exc})"
                               ) from None
    missing = [c for c in COLUMNS if c not in data.columns]
    if missing:
        raise WeatherFileError(f"{path}: read as {fmt}, but it has no {', '.join(missing)} column")
    if len(data) < 24 * 28:
        raise WeatherFileError(f"{path}: read as {fmt}, but it holds only {len(data)} hours (a year is 8760)")
    site["format"] = fmt
    site["file"] = Path(path).name
    return data, site


def _offset_h(data: Any) -> float:
    return data.index[0].utcoffset().total_seconds() / 3600.0 if data.index.tz is not None else 0.0


def _read_tmy3(pvlib: Any, path: str) -> tuple[Any, dict]:
    data, meta = pvlib.iotools.read_tmy3(path, map_variables=True)
    return data, {"latitude": meta["latitude"], "longitude": meta["longitude"], "altitude_m": meta["altitude"],
                  "name": f"{str(meta['Name']).strip(chr(34))} {meta['State']}", "utc_offset_h": float(meta["TZ"])}


def _read_tmy2(pvlib: Any, path: str) -> tuple[Any, dict]:
    data, meta = pvlib.iotools.read_tmy2(path)
    data = data.rename(columns={"GHI": "ghi", "DNI": "dni", "DHI": "dhi", "DryBulb": "temp_air",
                                "Wspd": "wind_speed"})
    # TMY2 stores temperature in tenths of a degree C and wind in tenths of m/s (NREL TMY2 manual)
    data["temp_air"] = data["temp_air"] / 10.0
    data["wind_speed"] = data["wind_speed"] / 10.0
    return data, {"latitude": meta["latitude"], "longitude": meta["longitude"], "altitude_m": meta["altitude"],
                  "name": f"{meta['City'].strip()} {meta['State']}".strip(), "utc_offset_h": float(meta["TZ"])}


def _read_epw(pvlib: Any, path: str) -> tuple[Any, dict]:
    data, meta = pvlib.iotools.read_epw(path)
    city = str(meta.get("city", "")).strip()
    country = str(meta.get("country", "")).strip()
    name = " ".join(p for p in (city, country) if p and p.lower() not in ("unknown", "-")) or \
        f"{meta['latitude']:.2f}, {meta['longitude']:.2f}"
    return data, {"latitude": meta["latitude"], "longitude": meta["longitude"], "altitude_m": meta["altitude"],
                  "name": name, "utc_offset_h": float(meta["TZ"])}


def _read_pvgis(pvlib: Any, path: str, fmt: str) -> tuple[Any, dict]:
    data, meta = pvlib.iotools.read_pvgis_tmy(path, pvgis_format=fmt, map_variables=True)
    inputs = meta.get("inputs", {}) if isinstance(meta, dict) else {}
    location = inputs.get("location", inputs)
    try:
        lat, lon = float(location["latitude"]), float(location["longitude"])
    except KeyError:
        raise WeatherFileError(f"{path}: a PVGIS file without its location header (download it with the "
                               "header: PVGIS 'csv' or 'json' output)") from None
    return data, {"latitude": lat, "longitude": lon, "altitude_m": float(location.get("elevation", 0.0)),
                  "name": f"PVGIS TMY {lat:.3f}, {lon:.3f}", "utc_offset_h": _offset_h(data)}


_READERS = {
    "TMY3": _read_tmy3,
    "TMY2": _read_tmy2,
    "EPW": _read_epw,
    "PVGIS-CSV": lambda pvlib, path: _read_pvgis(pvlib, path, "csv"),
    "PVGIS-JSON": lambda pvlib, path: _read_pvgis(pvlib, path, "json"),
}
