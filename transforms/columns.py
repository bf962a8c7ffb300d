"""Canonical readings as columns: the hot path's unit of work.

A :class:`ReadingBlock` holds ``n`` canonical readings of *one asset type* as arrays: event
times (``int64`` ms), a value matrix ``(n, sensors)`` in the catalog's sensor order with
NaN where a sensor is absent or of bad quality, a bad-quality mask, and the asset id and
vendor of each row. Normalization produces blocks, the twin buffers and windows them,
window features are reductions over their matrix. Nothing is lost against the dict form
(``twin/reading.v1``): :meth:`ReadingBlock.reading` rebuilds row ``i`` exactly (for late
readings and the per-reading engines), and a block made from dicts keeps them.

>>> b = ReadingBlock.from_readings([
...     {"reading_id": "helios:p1:1000", "asset_id": "p1", "asset_type": "pump",
...      "vendor": "helios", "ts_ms": 1000, "values": {"flow": 0.1}, "bad_quality": ["speed"]}])
>>> float(b.values[0, 0]), bool(b.bad[0, 6]), b.sensors[6]
(0.1, True, 'speed')
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from transforms.catalog import sensors_of

_SENSORS: dict[str, tuple[str, ...]] = {}


def sensor_names(asset_type: str) -> tuple[str, ...]:
    """The catalog's sensor names of ``asset_type``, in catalog order (cached)."""
    names = _SENSORS.get(asset_type)
    if names is None:
        names = _SENSORS[asset_type] = tuple(s.name for s in sensors_of(asset_type))
    return names


class ReadingBlock:
    """``n`` canonical readings of one asset type as columns (see the module doc).

    Attributes
    ----------
    asset_type, sensors
        The asset type and its sensor names (column order of ``values`` / ``bad``).
    asset_ids, vendors
        Per row (lists of ``str``).
    ts_ms
        ``int64`` event times, UTC epoch ms.
    values
        ``float64 (n, len(sensors))``, SI units, NaN where absent or bad quality.
    bad
        ``bool (n, len(sensors))``, True where the vendor flagged the sensor not good.
    dicts
        The original reading dicts when the block was made from them, else ``None``.
    """

    __slots__ = ("asset_type", "sensors", "asset_ids", "vendors", "ts_ms", "values", "bad",
                 "dicts")

    def __init__(self, asset_type: str, asset_ids: list[str], vendors: list[str],
                 ts_ms: np.ndarray, values: np.ndarray, bad: np.ndarray,
                 dicts: list[dict[str, Any]] | None = None) -> None:
        self.asset_type = asset_type
        self.sensors = sensor_names(asset_type)
        self.asset_ids = asset_ids
        self.vendors = vendors
        self.ts_ms = ts_ms
        self.values = values
        self.bad = bad
        self.dicts = dicts

    def __len__(self) -> int:
        return len(self.ts_ms)

    def __getstate__(self):
        return tuple(getattr(self, k) for k in self.__slots__)

    def __setstate__(self, state) -> None:
        for k, v in zip(self.__slots__, state, strict=True):
            setattr(self, k, v)

    @classmethod
    def from_readings(cls, readings: Sequence[dict[str, Any]]) -> ReadingBlock:
        """A block of canonical reading dicts, all of one asset type (kept in ``dicts``)."""
        if not readings:
            raise ValueError("a block needs at least one reading (its asset type)")
        asset_type = readings[0]["asset_type"]
        names = sensor_names(asset_type)
        n, k = len(readings), len(names)
        values = np.full((n, k), np.nan)
        bad = np.zeros((n, k), dtype=bool)
        index = {s: j for j, s in enumerate(names)}
        for i, r in enumerate(readings):
            if r["asset_type"] != asset_type:
                raise ValueError(f"one block, one asset type: {r['asset_type']!r} != "
                                 f"{asset_type!r}")
            for s, v in r["values"].items():
                j = index.get(s)
                if j is None:
                    raise ValueError(f"{asset_type} has no sensor {s!r}")
                values[i, j] = v
            for s in r.get("bad_quality") or ():
                bad[i, index[s]] = True
        return cls(asset_type, [r["asset_id"] for r in readings],
                   [r.get("vendor", "") for r in readings],
                   np.fromiter((r["ts_ms"] for r in readings), dtype=np.int64, count=n),
                   values, bad, list(readings))

    @classmethod
    def concat(cls, blocks: Sequence[ReadingBlock]) -> ReadingBlock:
        """Rows of ``blocks`` one after the other (all of one asset type)."""
        if len(blocks) == 1:
            return blocks[0]
        first = blocks[0]
        dicts = None
        if all(b.dicts is not None for b in blocks):
            dicts = [d for b in blocks for d in b.dicts]
        return cls(first.asset_type, [a for b in blocks for a in b.asset_ids],
                   [v for b in blocks for v in b.vendors],
                   np.concatenate([b.ts_ms for b in blocks]),
                   np.concatenate([b.values for b in blocks]),
                   np.concatenate([b.bad for b in blocks]), dicts)

    def take(self, index) -> ReadingBlock:
        """The rows at ``index`` (a slice or an integer array), as a new block."""
        if isinstance(index, slice):
            ids, vendors = self.asset_ids[index], self.vendors[index]
            dicts = self.dicts[index] if self.dicts is not None else None
        else:
            idx = index.tolist()
            ids = [self.asset_ids[i] for i in idx]
            vendors = [self.vendors[i] for i in idx]
            dicts = [self.dicts[i] for i in idx] if self.dicts is not None else None
        return ReadingBlock(self.asset_type, ids, vendors, self.ts_ms[index],
                            self.values[index], self.bad[index], dicts)

    def by_asset(self) -> dict[str, ReadingBlock]:
        """One block per asset id, each in this block's row order."""
        ids = self.asset_ids
        first = ids[0]
        if all(a == first for a in ids):
            return {first: self}
        rows: dict[str, list[int]] = {}
        for i, a in enumerate(ids):
            rows.setdefault(a, []).append(i)
        return {a: self.take(np.asarray(r, dtype=np.intp)) for a, r in rows.items()}

    def reading(self, i: int) -> dict[str, Any]:
        """Row ``i`` as a canonical reading dict (``twin/reading.v1``)."""
        if self.dicts is not None:
            return self.dicts[i]
        row, bad = self.values[i], self.bad[i]
        ts = int(self.ts_ms[i])
        asset_id, vendor = self.asset_ids[i], self.vendors[i]
        return {
            "reading_id": f"{vendor}:{asset_id}:{ts}",
            "asset_id": asset_id, "asset_type": self.asset_type, "vendor": vendor,
            "ts_ms": ts,
            "values": {s: float(row[j]) for j, s in enumerate(self.sensors)
                       if row[j] == row[j]},
            "bad_quality": sorted(s for j, s in enumerate(self.sensors) if bad[j]),
        }

    def readings(self) -> list[dict[str, Any]]:
        """Every row as a canonical reading dict."""
        if self.dicts is not None:
            return list(self.dicts)
        return [self.reading(i) for i in range(len(self))]
