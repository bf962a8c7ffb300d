from __future__ import annotations

import numpy as np
import pytest

from transforms.features import STATS, window_features
from transforms.windowing import Window


def test_stats_match_numpy_and_missing_sensors_are_skipped():
    rng = np.random.default_rng(0)
    x = rng.normal(300.0, 2.0, size=12)
    readings = [{"asset_id": "p", "asset_type": "pump", "ts_ms": 5_000 * i,
                 "values": {"bearing_temp": float(v)}}
                for i, v in enumerate(x)]
    readings[3]["values"]["flow"] = 0.05  # one flow value only
    f = window_features(Window.from_readings("p", "pump", 0, 60_000, readings))
    assert f["bearing_temp.mean"] == pytest.approx(x.mean())
    assert f["bearing_temp.std"] == pytest.approx(x.std())
    assert f["bearing_temp.min"] == pytest.approx(x.min())
    assert f["bearing_temp.max"] == pytest.approx(x.max())
    t = np.arange(12) * 5.0
    assert f["bearing_temp.slope"] == pytest.approx(np.polyfit(t, x, 1)[0])
    assert f["flow.mean"] == 0.05 and f["flow.std"] == 0.0 and f["flow.slope"] == 0.0
    assert "vibration.mean" not in f


def test_empty_window_has_no_features():
    assert window_features(Window.from_readings("p", "pump", 0, 60_000, [])) == {}


def test_absent_sensors_take_the_plain_path_with_the_nan_aware_values():
    """A device that never sends some sensors (whole columns absent) is reduced without
    NaN bookkeeping, to the values the NaN-aware reductions give (to rounding)."""
    from transforms.features import _nan_aware

    rng = np.random.default_rng(3)
    readings = [{"asset_id": "p", "asset_type": "pump",
                 "ts_ms": 1_000 * i + int(rng.integers(0, 900)),
                 "values": {"flow": float(rng.normal(0.1, 0.01)),
                            "bearing_temp": float(rng.normal(330.0, 0.5)),
                            "speed": float(rng.normal(150.0, 1.0))}}
                for i in range(10)]
    w = Window.from_readings("p", "pump", 0, 10_000, readings)
    f = window_features(w)
    x = w.block.values
    t = (w.block.ts_ms - w.start_ms) / 1000.0
    table, n = _nan_aware(t, x, ~np.isnan(x))
    names = w.block.sensors
    expected = {f"{names[j]}.{s}": float(table[j, k])
                for j in np.flatnonzero(n > 0) for k, s in enumerate(STATS)}
    assert list(f) == list(expected) and len(f) == 3 * len(STATS)
    assert f == pytest.approx(expected, rel=1e-12, abs=1e-15)
    readings[4]["values"].pop("speed")  # now one gap: the NaN-aware path itself
    g = window_features(Window.from_readings("p", "pump", 0, 10_000, readings))
    assert g["flow.mean"] == pytest.approx(f["flow.mean"], rel=1e-12)
    assert g["speed.mean"] != pytest.approx(f["speed.mean"], rel=1e-9)
