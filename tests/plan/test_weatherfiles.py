"""Weather files of every common format, read through pvlib.iotools.

The EPW and PVGIS fixtures are written here, in the formats as EnergyPlus and PVGIS publish them (header
lines, hourly table, PVGIS's legend), from the real TMY3 file pvlib ships: no network, and the same weather
in every format so the readers can be compared.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pvlib
import pytest

from node.plan.weatherfiles import WeatherFileError, detect_format, read_weather_file

DATA = Path(pvlib.__file__).parent / "data"


@pytest.fixture(scope="module")
def greensboro():
    data, meta = pvlib.iotools.read_tmy3(str(DATA / "723170TYA.CSV"), map_variables=True)
    return data, meta


def write_epw(path: Path, data, meta) -> None:
    """EnergyPlus weather: 8 header lines, then 35 comma-separated fields per hour (hour 1..24, hour ending)."""
    location = f"LOCATION,GREENSBORO,NC,USA,TMY3,723170,{meta['latitude']},{meta['longitude']},{meta['TZ']},"
    lines = [location + f"{meta['altitude']}",
             "DESIGN CONDITIONS,0", "TYPICAL/EXTREME PERIODS,0", "GROUND TEMPERATURES,0",
             "HOLIDAYS/DAYLIGHT SAVINGS,No,0,0,0", "COMMENTS 1,written by the test from pvlib's 723170TYA.CSV",
             "COMMENTS 2,", "DATA PERIODS,1,1,Data,Sunday, 1/ 1,12/31"]
    calendar = np.datetime64("1999-01-01T00") + np.arange(len(data)).astype("timedelta64[h]")
    for i, (hour_start, (_, row)) in enumerate(zip(calendar, data.iterrows(), strict=True)):
        # row i is local hour [i, i + 1) of a non-leap year; EPW numbers it 1..24 (hour ending)
        day = hour_start.astype("datetime64[D]")
        month = int(str(day)[5:7])
        dom = int(str(day)[8:10])
        hour = i % 24 + 1
        fields = [1999, month, dom, hour, 60, "?9?9?9?9E0?9?9?9?9?9?9?9?9?9?9?9?9?9?9?9*9*9?9?9?9",
                  row["temp_air"], row["temp_dew"], row["relative_humidity"], row["pressure"] * 100, 9999, 9999,
                  9999, row["ghi"], row["dni"], row["dhi"], 999999, 999999, 999999, 9999, row["wind_direction"],
                  row["wind_speed"], 99, 99, 9999, 99999, 9, 999999999, 999, 0.999, 999, 99, 0.2, 999, 99]
        lines.append(",".join(str(f) for f in fields))
        assert i < 8760
    path.write_text("\r\n".join(lines) + "\r\n")


PVGIS_COLUMNS = ["T2m", "RH", "G(h)", "Gb(n)", "Gd(h)", "IR(h)", "WS10m", "WD10m", "SP"]


def _pvgis_rows(data, meta) -> list[list]:
    """PVGIS stamps hours in UTC at their start: shift the file's local hour-ending stamps."""
    rows = []
    for stamp, row in data.iterrows():
        start_utc = (stamp - np.timedelta64(1, "h")).tz_convert("UTC")
        rows.append([start_utc.strftime("%Y%m%d:%H%M"), row["temp_air"], row["relative_humidity"], row["ghi"],
                     row["dni"], row["dhi"], 300.0, row["wind_speed"], row["wind_direction"], row["pressure"] * 100])
    # a TMY is a calendar year in UTC: the last hours of the local year open the file
    shift = int(-meta["TZ"])
    return rows[-shift:] + rows[:-shift] if shift else rows


def write_pvgis_csv(path: Path, data, meta) -> None:
    lines = [f"Latitude (decimal degrees): {meta['latitude']:.3f}", f"Longitude (decimal degrees): {meta['longitude']:.3f}",
             f"Elevation (m): {meta['altitude']:.1f}", "Irradiance Time Offset (h): 0.0", "month,year"]
    lines += [f"{m},1999" for m in range(1, 13)]
    lines.append("time(UTC)," + ",".join(PVGIS_COLUMNS))
    lines += [",".join(str(v) for v in row) for row in _pvgis_rows(data, meta)]
    lines += ["", "T2m: 2-m air temperature (degree Celsius)", "G(h): Global irradiance on the horizontal plane (W/m2)",
              "", "PVGIS (c) European Union, 2001-2025"]
    path.write_text("\r\n".join(lines) + "\r\n")


def write_pvgis_json(path: Path, data, meta) -> None:
    doc = {"inputs": {"location": {"latitude": meta["latitude"], "longitude": meta["longitude"],
                                   "elevation": meta["altitude"]},
                      "meteo_data": {"radiation_db": "test", "meteo_db": "test", "year_min": 1999, "year_max": 1999}},
           "outputs": {"months_selected": [{"month": m, "year": 1999} for m in range(1, 13)],
                       "tmy_hourly": [dict(zip(["time(UTC)", *PVGIS_COLUMNS], row, strict=True))
                                      for row in _pvgis_rows(data, meta)]},
           "meta": {"inputs": {"location": {"description": "Selected location"}},
                    "outputs": {"tmy_hourly": {"type": "time series", "timestamp": "hourly"}}}}
    path.write_text(json.dumps(doc))


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory, greensboro) -> dict[str, Path]:
    data, meta = greensboro
    folder = tmp_path_factory.mktemp("weather")
    out = {"EPW": folder / "greensboro.epw", "PVGIS-CSV": folder / "tmy.csv", "PVGIS-JSON": folder / "tmy.json"}
    write_epw(out["EPW"], data, meta)
    write_pvgis_csv(out["PVGIS-CSV"], data, meta)
    write_pvgis_json(out["PVGIS-JSON"], data, meta)
    return out


def test_every_format_is_recognised_by_its_content(fixtures) -> None:
    assert detect_format(str(DATA / "723170TYA.CSV")) == "TMY3"
    assert detect_format(str(DATA / "703165TY.csv")) == "TMY3"
    assert detect_format(str(DATA / "12839.tm2")) == "TMY2"
    for fmt, path in fixtures.items():
        assert detect_format(str(path)) == fmt   # a PVGIS CSV named tmy.csv is not read as TMY3


def test_every_format_reads_the_same_weather(fixtures, greensboro) -> None:
    data, meta = greensboro
    for fmt, path in fixtures.items():
        read, site = read_weather_file(str(path))
        assert site["format"] == fmt
        assert len(read) == 8760
        assert site["latitude"] == pytest.approx(meta["latitude"], abs=1e-3)
        assert site["longitude"] == pytest.approx(meta["longitude"], abs=1e-3)
        # row i covers the same local hour in EPW as in TMY3; PVGIS rows are UTC hours
        assert site["utc_offset_h"] == (0.0 if fmt.startswith("PVGIS") else meta["TZ"])
        ghi = read["ghi"].to_numpy(dtype=float)
        if fmt.startswith("PVGIS"):
            ghi = np.roll(ghi, int(meta["TZ"]))    # back to local rows
        assert np.allclose(ghi, data["ghi"].to_numpy(dtype=float))
        assert np.allclose(read["temp_air"].mean(), data["temp_air"].mean(), atol=0.01)


def test_a_file_that_is_no_weather_is_refused_with_its_name(tmp_path) -> None:
    bad = tmp_path / "notes.csv"
    bad.write_text("hello,world\n1,2\n")
    with pytest.raises(WeatherFileError, match="notes.csv: not a weather file"):
        read_weather_file(str(bad))
    headless = tmp_path / "basic.csv"
    headless.write_text("time(UTC),T2m,RH,G(h),Gb(n),Gd(h),IR(h),WS10m,WD10m,SP\n20180101:0000,1,2,3,4,5,6,7,8,9\n")
    with pytest.raises(WeatherFileError, match="without its location header"):
        read_weather_file(str(headless))
    with pytest.raises(WeatherFileError, match="cannot read it"):
        read_weather_file(str(tmp_path / "missing.epw"))


def test_simulate_reads_epw_and_pvgis_and_names_the_plant(fixtures, capsys) -> None:
    import argparse

    from node.commands import simulate

    parser = argparse.ArgumentParser()
    simulate.register(parser.add_subparsers())
    for fmt, path in fixtures.items():
        args = parser.parse_args(["simulate", "--weather", str(path), "--days", "2", "--start", "2025-06-01",
                                  "--policy", "fit-greedy", "--battery-ah", "20", "--array-w", "300"])
        assert args.func(args) == 0
        out = capsys.readouterr().out
        assert "plant: 20 Ah lifepo4" in out and "300 Wp" in out and f"{fmt} file" in out, out
        assert "completed" in out


def test_simulate_refuses_a_bad_array_with_a_clear_message(capsys) -> None:
    import argparse

    from node.commands import simulate

    parser = argparse.ArgumentParser()
    simulate.register(parser.add_subparsers())
    args = parser.parse_args(["simulate", "--weather", "12839.tm2", "--days", "1", "--array-w", "-5"])
    with pytest.raises(SystemExit, match="array: peak_w"):
        args.func(args)
