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


def _window(rng, asset_type: str, start: int, rows: int, gap: bool = False) -> Window:
    from transforms.columns import sensor_names

    names = sensor_names(asset_type)
    readings = [{"asset_id": "a", "asset_type": asset_type,
                 "ts_ms": start + 1_000 * i + int(rng.integers(0, 900)),
                 "values": {s: float(rng.normal(100.0, 3.0) * 10.0 ** int(rng.integers(-3, 4)))
                            for s in names}}
                for i in range(rows)]
    if gap:
        readings[rows // 2]["values"].pop(names[1])
    return Window.from_readings("a", asset_type, start, start + 60_000, readings)


def test_windows_computed_as_stacks_are_bit_for_bit_the_windows_alone():
    """Many windows of one shape are one stack of reductions; each window's features are
    the same bits as computed alone (and its own window alone is the one-window stack).
    A mix of shapes: two asset types, 1 to 12 readings, windows with a gap (the NaN-aware
    path), empty windows."""
    from transforms.features import windows_features

    rng = np.random.default_rng(11)
    windows = []
    for i in range(300):
        kind = ("pump", "motor")[int(rng.integers(0, 2))]
        rows = int(rng.choice([1, 2, 10, 10, 10, 12]))
        if i % 37 == 0:
            windows.append(Window.from_readings("a", kind, 0, 60_000, []))
        else:
            windows.append(_window(rng, kind, 60_000 * i, rows, gap=(i % 11 == 0 and rows > 2)))
    together = windows_features(windows)
    alone = [window_features(w) for w in windows]
    assert together == alone
    assert sum(f == {} for f in together) == len(range(0, 300, 37))
    assert len({id(f) for f in together}) == len(together)  # no two windows share a dict
    stacked = [f for f, w in zip(together, windows, strict=True) if w.count == 10]
    assert len(stacked) > 100 and all(len(f) == 8 * len(STATS) for f in stacked)
    # and the values are the statistics (not merely the same in both paths)
    w = next(w for w in windows if w.count == 10 and not np.isnan(w.block.values).any())
    x, t = w.block.values, (w.block.ts_ms - w.start_ms) / 1000.0
    f = windows_features([w, w, w])[1]
    name = w.block.sensors[0]
    assert f[f"{name}.mean"] == pytest.approx(x[:, 0].mean(), rel=1e-13)
    assert f[f"{name}.std"] == pytest.approx(x[:, 0].std(), rel=1e-12)
    assert f[f"{name}.slope"] == pytest.approx(np.polyfit(t, x[:, 0], 1)[0], rel=1e-9)
    resid = x[:, 0] - np.polyval(np.polyfit(t, x[:, 0], 1), t)
    assert f[f"{name}.rstd"] == pytest.approx(resid.std(), rel=1e-6)


def test_readings_at_one_instant_have_no_trend_in_a_stack():
    """A window whose readings share one time has no slope (0, not NaN), also when
    stacked with a window of the same shape that has one."""
    from transforms.columns import sensor_names
    from transforms.features import windows_features

    def window(times):
        return Window.from_readings("a", "pump", 0, 60_000, [
            {"asset_id": "a", "asset_type": "pump", "ts_ms": t,
             "values": dict.fromkeys(sensor_names("pump"), v)}
            for t, v in zip(times, (1.0, 2.0), strict=True)])

    # Window.from_readings keeps both rows (duplicates are the buffer's business)
    flat, rising = window((5_000, 5_000)), window((0, 10_000))
    f_flat, f_rising = windows_features([flat, rising])
    assert f_flat["flow.slope"] == 0.0 and f_flat["flow.rstd"] == pytest.approx(0.5)
    assert f_rising["flow.slope"] == pytest.approx(0.1) and f_rising["flow.rstd"] == 0.0
    assert [f_flat, f_rising] == [window_features(flat), window_features(rising)]
