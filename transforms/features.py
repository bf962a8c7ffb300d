"""Window features: per-sensor statistics of one asset's window, computed as numpy columns.

A window's readings already are one ``(n_readings, n_sensors)`` matrix (its
:class:`~transforms.columns.ReadingBlock`, NaN where a sensor was missing or of bad
quality) and every statistic is one vectorized reduction over it, so the cost is a
handful of numpy calls per window whatever the sensor and reading counts.

>>> from transforms.windowing import Window
>>> w = Window.from_readings("p1", "pump", 0, 30_000, [
...     {"asset_id": "p1", "asset_type": "pump", "ts_ms": t, "values": {"flow": v}}
...     for t, v in ((0, 1.0), (10_000, 2.0), (20_000, 3.0))])
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


def window_matrix(window: Window) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """The window as ``(t_seconds, values, sensor_names)``; values NaN where missing."""
    b = window.block
    if b is None:
        names = tuple(s.name for s in sensors_of(window.asset_type))
        return np.empty(0), np.empty((0, len(names))), names
    return (b.ts_ms - window.start_ms) / 1000.0, b.values, b.sensors


def window_features(window: Window) -> dict[str, float]:
    """``'<sensor>.<stat>' -> value`` for every sensor with at least one good value.

    ``slope`` is the least-squares trend in SI units per second (0 with one reading);
    ``rstd`` the standard deviation of the residuals around that trend.
    """
    t, x, names = window_matrix(window)
    if x.size == 0:
        return {}
    ok = ~np.isnan(x)
    if ok.all():  # the usual case: plain reductions, no NaN bookkeeping
        n = np.full(x.shape[1], x.shape[0])
        mean = x.mean(axis=0)
        xc = x - mean
        std = np.sqrt((xc * xc).mean(axis=0))
        lo = x.min(axis=0)
        hi = x.max(axis=0)
        tc = t - t.mean()
        var_t = float(tc @ tc)
        slope = (tc @ xc) / var_t if var_t > 0 else np.zeros(x.shape[1])
        rvar = ((xc * xc).sum(axis=0) - slope * slope * var_t) / n
        rstd = np.sqrt(np.maximum(rvar, 0.0))
    else:
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
    cols = zip(names, n.tolist(), mean.tolist(), std.tolist(), lo.tolist(), hi.tolist(),
               slope.tolist(), rstd.tolist(), strict=True)
    for name, nj, m, sd, a, b, sl, rs in cols:
        if nj == 0:
            continue
        out[f"{name}.mean"] = m
        out[f"{name}.std"] = sd
        out[f"{name}.min"] = a
        out[f"{name}.max"] = b
        out[f"{name}.slope"] = sl
        out[f"{name}.rstd"] = rs
    return out
