"""Window features: per-sensor statistics of one asset's window, computed as numpy columns.

The readings of a window become one ``(n_readings, n_sensors)`` matrix (NaN where a
sensor was missing or of bad quality) and every statistic is one vectorized reduction
over it, so the cost is a handful of numpy calls per window whatever the sensor count.

>>> from transforms.windowing import Window
>>> w = Window("p1", "pump", 0, 30_000, [
...     {"ts_ms": 0, "values": {"flow": 1.0}},
...     {"ts_ms": 10_000, "values": {"flow": 2.0}},
...     {"ts_ms": 20_000, "values": {"flow": 3.0}}])
>>> f = window_features(w)
>>> f["flow.mean"], f["flow.min"], f["flow.max"], round(f["flow.slope"], 3)
(2.0, 1.0, 3.0, 0.1)
"""

from __future__ import annotations

import warnings

import numpy as np

from transforms.catalog import sensors_of
from transforms.windowing import Window

STATS: tuple[str, ...] = ("mean", "std", "min", "max", "slope", "rstd")


def window_matrix(window: Window) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The window as ``(t_seconds, values, sensor_names)``; values NaN where missing."""
    names = [s.name for s in sensors_of(window.asset_type)]
    n = len(window.readings)
    values = np.full((n, len(names)), np.nan)
    t = np.empty(n)
    for i, r in enumerate(window.readings):
        t[i] = r["ts_ms"]
        v = r["values"]
        values[i] = [v.get(name, np.nan) for name in names]
    return (t - window.start_ms) / 1000.0, values, names


def window_features(window: Window) -> dict[str, float]:
    """``'<sensor>.<stat>' -> value`` for every sensor with at least one good value.

    ``slope`` is the least-squares trend in SI units per second (0 with one reading);
    ``rstd`` the standard deviation of the residuals around that trend.
    """
    t, x, names = window_matrix(window)
    if x.size == 0:
        return {}
    ok = ~np.isnan(x)
    n = ok.sum(axis=0)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(x, axis=0)
        std = np.nanstd(x, axis=0)
        lo = np.nanmin(x, axis=0)
        hi = np.nanmax(x, axis=0)
        tt = np.where(ok, t[:, None], np.nan)
        tc = tt - np.nanmean(tt, axis=0)
        xc = x - mean
        var_t = np.nansum(tc * tc, axis=0)
        slope = np.where(var_t > 0, np.nansum(tc * xc, axis=0) / var_t, 0.0)
        # spread around the trend: a ramp (thermal lag after a load change) is not noise
        rvar = (np.nansum(xc * xc, axis=0) - slope * slope * var_t) / np.maximum(n, 1)
        rstd = np.sqrt(np.maximum(rvar, 0.0))
    out: dict[str, float] = {}
    for j, name in enumerate(names):
        if n[j] == 0:
            continue
        out[f"{name}.mean"] = float(mean[j])
        out[f"{name}.std"] = float(std[j])
        out[f"{name}.min"] = float(lo[j])
        out[f"{name}.max"] = float(hi[j])
        out[f"{name}.slope"] = float(slope[j])
        out[f"{name}.rstd"] = float(rstd[j])
    return out
