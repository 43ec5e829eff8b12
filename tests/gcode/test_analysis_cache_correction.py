"""Store cache by sha256 and the learned, bounded per-printer correction."""
from __future__ import annotations

import hashlib
import math
import random

import pytest

from node.gcode import analysis
from node.gcode.analysis import analyze_cached
from node.gcode.correction import F_MAX, F_MIN, correction_factor, load_correction, record_print
from node.printer.profile import load_profile
from node.store.db import Store, transaction
from tests.gcode.conftest import square_layers


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "node.db").open()
    yield s
    s.close()


def test_schema_version_2(store):
    assert store.schema_version >= 2


def test_cache_hit_by_content_not_path(store, write, ender3, monkeypatch):
    text = "M190 S60\n" + square_layers(5)
    first = analyze_cached(store, write(text), ender3, 22.0)
    assert first.file_sha256 == hashlib.sha256(text.encode()).hexdigest()
    calls = []
    real = analysis.analyze_file
    monkeypatch.setattr(analysis, "analyze_file", lambda *a, **k: calls.append(a) or real(*a, **k))
    again = analyze_cached(store, write(text, "renamed.gcode"), ender3, 22.0)
    assert calls == []
    assert again == first
    analyze_cached(store, write(text), ender3, 30.0)           # other ambient: computed
    analyze_cached(store, write(text), load_profile("bed300"), 22.0)  # other printer: computed
    analyze_cached(store, write(text + "G1 X1\n"), ender3, 22.0)   # other content: computed
    assert len(calls) == 3
    assert store.run_sync(lambda c: c.execute("SELECT COUNT(*) FROM gcode_analysis").fetchone()[0]) == 4


def test_correction_converges_on_synthetic_history():
    rng = random.Random(1)
    true_ratio = 1.12
    history: list[float] = []
    factors = []
    for _ in range(40):
        history.insert(0, true_ratio * math.exp(rng.gauss(0, 0.03)))
        factors.append(correction_factor(history))
    assert abs(factors[0] - 1.0) < abs(factors[-1] - 1.0)    # shrunk toward 1 with one print
    assert factors[-1] == pytest.approx(true_ratio, rel=0.03)
    # later estimates improve: the error of estimate*factor shrinks
    assert abs(factors[-1] - true_ratio) < abs(1.0 - true_ratio) / 3


def test_correction_is_bounded_and_ignores_outliers():
    assert correction_factor([3.0] * 20) == 1.0            # all outliers: no correction
    assert correction_factor([1.9] * 20) == F_MAX
    assert correction_factor([0.55] * 20) == F_MIN
    assert correction_factor([1.1] * 19 + [0.01]) == pytest.approx(correction_factor([1.1] * 19))
    assert correction_factor([]) == 1.0


def test_history_in_store_corrects_later_estimates(store, write, ender3):
    path = write(square_layers(10))
    raw = analyze_cached(store, path, ender3, 22.0)
    assert raw.correction_factor == 1.0

    def history(conn):
        with transaction(conn):
            for i in range(20):
                record_print(conn, printer_profile="ender3", estimated_s=1000.0, measured_s=1100.0,
                             finished_s=float(i), estimated_wh=100.0, measured_wh=90.0)
            record_print(conn, printer_profile="other", estimated_s=1000.0, measured_s=700.0, finished_s=1.0)

    store.run_sync(history)
    correction = store.run_sync(lambda c: load_correction(c, "ender3"))
    assert correction.prints_used == 20
    corrected = analyze_cached(store, path, ender3, 22.0)
    assert corrected.correction_factor == pytest.approx(correction.time_factor)
    assert 1.05 < corrected.correction_factor <= 1.1
    assert corrected.estimated_seconds == pytest.approx(
        (raw.motion_seconds + raw.heatup_seconds) * corrected.correction_factor, abs=2e-3)
    assert corrected.motion_seconds == raw.motion_seconds
    assert corrected.energy_wh < raw.energy_wh


def test_record_print_refuses_nonsense(store):
    with pytest.raises(ValueError):
        store.run_sync(lambda c: record_print(c, printer_profile="x", estimated_s=0, measured_s=5, finished_s=0))
