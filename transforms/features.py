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
from collections.abc import Sequence

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
    return windows_features([window])[0]


def windows_features(windows: Sequence[Window]) -> list[dict[str, float]]:
    """:func:`window_features` of each window, in order.

    Windows of one shape (sensor names and reading count, no value missing: the usual
    case) are computed as one stack, a handful of numpy calls for all of them (~1.5 us a
    window at 50 windows against ~16 alone), bit for bit what each gives alone: every
    reduction runs over the readings in the same order whatever the stack's height.
    """
    out: list[dict[str, float]] = [{} for _ in windows]  # (each its own: records hold them)
    stacks: dict[tuple[tuple[str, ...], int], list[tuple[int, np.ndarray, np.ndarray]]] = {}
    for i, w in enumerate(windows):
        t, x, names = window_matrix(w)
        if x.size == 0:
            continue
        ok = ~np.isnan(x)
        if ok.all():  # the usual case: plain reductions, no NaN bookkeeping
            stacks.setdefault((names, x.shape[0]), []).append((i, t, x))
        else:
            out[i] = _partial(t, x, ok, names)
    for (names, _), held in stacks.items():
        if len(held) == 1:
            _, t, x = held[0]
            rows = _plain(t, x).T.reshape(1, -1)
        else:
            table = _plain(np.stack([h[1] for h in held]), np.stack([h[2] for h in held]))
            rows = table.transpose(1, 2, 0).reshape(len(held), -1)
        keys = _keys(names)
        for (i, _, _), row in zip(held, rows.tolist(), strict=True):
            out[i] = dict(zip(keys, row, strict=True))
    return out


def _partial(t: np.ndarray, x: np.ndarray, ok: np.ndarray, names: tuple[str, ...]
             ) -> dict[str, float]:
    """A window with values missing: the statistics of the sensors that have any."""
    full = ok.all(axis=0)
    if not bool((ok.any(axis=0) & ~full).any()):  # sensors in every reading or none
        present = np.flatnonzero(full).tolist()
        if not present:
            return {}
        table = _plain(t, x[:, present]).T
    else:
        table, n = _nan_aware(t, x, ok)
        present = None
        if not bool((n > 0).all()):
            present = np.flatnonzero(n > 0).tolist()
            table = table[present]
    # one row per sensor, its statistics in STATS order, flattened against the cached keys
    keys = _keys(names)
    if present is not None:
        k = len(STATS)
        keys = [key for j in present for key in keys[j * k:(j + 1) * k]]
    return dict(zip(keys, table.ravel().tolist(), strict=True))


def _plain(t: np.ndarray, x: np.ndarray) -> np.ndarray:
    """STATS of each column of ``x`` (no NaN) over its readings: ``t`` ``(..., rows)``
    seconds, ``x`` ``(..., rows, sensors)``; returns ``(len(STATS), ..., sensors)``. One
    window or a stack of windows of one shape; the values :func:`_nan_aware` gives such
    columns, to rounding. Every reduction over the readings is a ufunc reduce along that
    axis, never BLAS (whose summation order depends on the shapes), so a window's
    statistics are the same bits alone and in any stack. Written into one table: a dozen
    small numpy calls are most of a window's cost (no temporaries, no stack)."""
    rows = x.shape[-2]
    table = np.empty((len(STATS), *x.shape[:-2], x.shape[-1]))
    mean, std, lo, hi, slope, rstd = table  # in STATS order
    np.add.reduce(x, axis=-2, out=mean)
    mean /= rows
    xc = x - mean[..., None, :]
    sq = np.multiply(xc, xc)
    ss = np.add.reduce(sq, axis=-2)
    np.divide(ss, rows, out=std)
    np.sqrt(std, out=std)
    np.minimum.reduce(x, axis=-2, out=lo)
    np.maximum.reduce(x, axis=-2, out=hi)
    tc = t - (np.add.reduce(t, axis=-1) / rows)[..., None]
    var_t = np.add.reduce(np.multiply(tc, tc), axis=-1)[..., None]
    np.multiply(xc, tc[..., None], out=sq)
    np.add.reduce(sq, axis=-2, out=slope)
    if var_t.min() > 0:
        slope /= var_t
    else:  # one reading, or all at one time: no trend
        slope[...] = np.where(var_t > 0, slope / np.where(var_t > 0, var_t, 1.0), 0.0)
    # spread around the trend: a ramp (thermal lag after a load change) is not noise;
    # sqrt(max((ss - slope * slope * var_t) / rows, 0)), in place
    np.multiply(slope, slope, out=rstd)
    rstd *= var_t
    np.subtract(ss, rstd, out=rstd)
    rstd /= rows
    np.maximum(rstd, 0.0, out=rstd)
    np.sqrt(rstd, out=rstd)
    return table


def _nan_aware(t: np.ndarray, x: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """STATS per column of ``x`` over its non-NaN values, and their counts."""
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
        rvar = (np.nansum(xc * xc, axis=0) - slope * slope * var_t) / np.maximum(n, 1)
        rstd = np.sqrt(np.maximum(rvar, 0.0))
    return np.stack((mean, std, lo, hi, slope, rstd), axis=1), n


class _Suffixed(dict):
    """``name -> '<name>.<stat>'``, made once per name: the twin and the detector read a
    window's features by catalog sensor names (a bounded set) many times per window."""

    def __init__(self, stat: str) -> None:
        super().__init__()
        self.suffix = "." + stat

    def __missing__(self, name: str) -> str:
        key = self[name] = name + self.suffix
        return key


# the feature key of a sensor's statistic: FEATURE_KEY["mean"]["flow"] == "flow.mean"
FEATURE_KEY: dict[str, _Suffixed] = {stat: _Suffixed(stat) for stat in STATS}

_KEYS: dict[tuple[str, ...], tuple[str, ...]] = {}


def _keys(names: tuple[str, ...]) -> tuple[str, ...]:
    """``'<sensor>.<stat>'`` for every sensor and statistic, sensor-major (cached)."""
    keys = _KEYS.get(names)
    if keys is None:
        keys = _KEYS[names] = tuple(FEATURE_KEY[stat][name] for name in names
                                    for stat in STATS)
    return keys
