from __future__ import annotations

import numpy as np
import pytest

from transforms.features import window_features
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
