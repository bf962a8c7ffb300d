"""Event-time tumbling windows for one asset, with a watermark and allowed lateness.

A :class:`WindowBuffer` holds the open windows of one key. Windows close when the
watermark passes ``window end + allowed lateness``; the watermark is the larger of

* the *data* watermark, ``max event time seen - max out-of-orderness`` (what Flink's
  bounded-out-of-orderness strategy computes), which lets bounded replays close windows
  as they go, and
* the *engine* watermark, passed to :meth:`WindowBuffer.advance` from an event-time timer
  (Beam, Flink), which closes the windows of quiet assets.

A reading whose window has already closed is *late*: :meth:`add` says so and the
pipeline routes it to the late output (counted, written, never silently dropped).
A reading whose timestamp is already in its window is a *duplicate* and is counted once.

>>> buf = WindowBuffer(size_ms=10_000, allowed_lateness_ms=0, out_of_orderness_ms=0)
>>> r = lambda ts: {"asset_id": "a", "asset_type": "pump", "ts_ms": ts, "values": {"flow": 1.0}}
>>> buf.add(r(1_000))
('ok', [])
>>> status, closed = buf.add(r(12_000))
>>> status, [(w.start_ms, w.end_ms, len(w.readings)) for w in closed]
('ok', [(0, 10000, 1)])
>>> buf.add(r(9_000))[0]
'late'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from transforms.columns import ReadingBlock

NEG_INF = -(2**62)


@dataclass
class Window:
    """The readings of one key in one closed window, in event-time order, as columns."""

    asset_id: str
    asset_type: str
    start_ms: int
    end_ms: int
    block: ReadingBlock | None = None  # None: no readings
    duplicates: int = 0

    @classmethod
    def from_readings(cls, asset_id: str, asset_type: str, start_ms: int, end_ms: int,
                      readings: list[dict[str, Any]], duplicates: int = 0) -> Window:
        """A window of canonical reading dicts (already in event-time order)."""
        block = ReadingBlock.from_readings(readings) if readings else None
        return cls(asset_id, asset_type, start_ms, end_ms, block, duplicates)

    @property
    def count(self) -> int:
        return 0 if self.block is None else len(self.block)

    @property
    def readings(self) -> list[dict[str, Any]]:
        """The readings as canonical dicts (built on demand from the columns)."""
        return [] if self.block is None else self.block.readings()


class _Bucket:
    """One open window: column blocks as they came, plus single readings as dicts."""

    __slots__ = ("parts", "pending", "seen")

    def __init__(self) -> None:
        self.parts: list[ReadingBlock] = []
        self.pending: list[dict[str, Any]] = []
        self.seen: set[int] | None = None  # event times held, built when first needed

    def holds(self, ts: int) -> bool:
        if self.seen is None:
            self.seen = {int(t) for p in self.parts for t in p.ts_ms.tolist()}
            self.seen.update(r["ts_ms"] for r in self.pending)
        return ts in self.seen

    def add_reading(self, reading: dict[str, Any], ts: int) -> None:
        self.pending.append(reading)
        if self.seen is not None:
            self.seen.add(ts)

    def add_block(self, block: ReadingBlock) -> None:
        self.parts.append(block)
        if self.seen is not None:
            self.seen.update(block.ts_ms.tolist())

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts) + len(self.pending)

    def block(self) -> ReadingBlock:
        """Everything held, in event-time order."""
        parts = list(self.parts)
        if self.pending:
            parts.append(ReadingBlock.from_readings(self.pending))
        b = ReadingBlock.concat(parts)
        ts = b.ts_ms
        if len(ts) > 1 and not bool(np.all(ts[1:] > ts[:-1])):
            b = b.take(np.argsort(ts, kind="stable"))
        return b


class WindowBuffer:
    """Open tumbling windows of one key.

    Parameters
    ----------
    size_ms
        Window length.
    allowed_lateness_ms
        How long after the watermark passes a window's end it still accepts readings.
    out_of_orderness_ms
        Bound on disorder used for the data watermark.
    """

    def __init__(
        self, size_ms: int = 60_000, allowed_lateness_ms: int = 60_000,
        out_of_orderness_ms: int = 20_000,
    ) -> None:
        if size_ms <= 0 or allowed_lateness_ms < 0 or out_of_orderness_ms < 0:
            raise ValueError("size_ms must be > 0; lateness and out-of-orderness >= 0")
        self.size_ms = size_ms
        self.allowed_lateness_ms = allowed_lateness_ms
        self.out_of_orderness_ms = out_of_orderness_ms
        self._open: dict[int, _Bucket] = {}
        self._dups: dict[int, int] = {}
        self._meta: tuple[str, str] | None = None
        self.max_ts_ms = NEG_INF
        self.closed_through_ms = NEG_INF  # end of the last closed window

    def window_start(self, ts_ms: int) -> int:
        return ts_ms - ts_ms % self.size_ms

    @property
    def watermark_ms(self) -> int:
        """The data watermark."""
        if self.max_ts_ms == NEG_INF:
            return NEG_INF
        return self.max_ts_ms - self.out_of_orderness_ms

    def next_deadline_ms(self) -> int | None:
        """Watermark at which the earliest open window closes (for an event-time timer)."""
        if not self._open:
            return None
        return min(self._open) + self.size_ms + self.allowed_lateness_ms

    def last_deadline_ms(self) -> int | None:
        """Watermark at which the newest open window closes, and with it every other."""
        if not self._open:
            return None
        return max(self._open) + self.size_ms + self.allowed_lateness_ms

    def add(self, reading: dict[str, Any]) -> tuple[str, list[Window]]:
        """Add one canonical reading.

        Returns
        -------
        status, closed
            ``status`` is ``"ok"``, ``"duplicate"`` or ``"late"`` (the reading was not
            added); ``closed`` are the windows the new data watermark closed, in order.
        """
        ts = int(reading["ts_ms"])
        start = self.window_start(ts)
        if start + self.size_ms <= self.closed_through_ms:
            return "late", []
        if self._meta is None:
            self._meta = (reading["asset_id"], reading["asset_type"])
        bucket = self._open.get(start)
        if bucket is None:
            bucket = self._open[start] = _Bucket()
        if bucket.holds(ts):
            self._dups[start] = self._dups.get(start, 0) + 1
            return "duplicate", []
        bucket.add_reading(reading, ts)
        if ts > self.max_ts_ms:
            self.max_ts_ms = ts
        return "ok", self.advance(self.watermark_ms)

    def add_block(self, block: ReadingBlock
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Window]]:
        """Add the readings of one key in arrival order; the same as :meth:`add` on each row.

        Returns ``(late, duplicates, closed)``: the late and duplicate readings (as dicts,
        not added) and the windows closed, in order. When no row of the block is late or a
        duplicate (the usual case, disorder within the out-of-orderness bound included),
        the rows are added as columns, one slice per window they fall in, and the windows
        the final watermark passes are closed: the windows and their contents are those of
        adding row by row, since a window closes only once the watermark passes it, and a
        row whose window the watermark had passed when it arrived would be late. Any other
        block goes row by row through :meth:`add`.
        """
        ts = block.ts_ms
        n = len(ts)
        if n == 0:
            return [], [], []
        starts = ts - ts % self.size_ms
        if self._columnar_ok(ts, starts):
            if self._meta is None:
                self._meta = (block.asset_ids[0], block.asset_type)
            order = None
            if n > 1 and not bool(np.all(starts[1:] >= starts[:-1])):
                order = np.argsort(starts, kind="stable")
                starts = starts[order]
            cuts = (np.flatnonzero(starts[1:] != starts[:-1]) + 1).tolist()
            whole = order is None and not cuts
            for a, b in zip([0, *cuts], [*cuts, n], strict=True):
                start = int(starts[a])
                bucket = self._open.get(start)
                if bucket is None:
                    bucket = self._open[start] = _Bucket()
                part = (block if whole else
                        block.take(slice(a, b) if order is None else order[a:b]))
                bucket.add_block(part)
            top = int(ts.max())
            if top > self.max_ts_ms:
                self.max_ts_ms = top
            return [], [], self.advance(self.watermark_ms)
        split = self._split(ts.tolist(), starts.tolist())
        if split is not None:  # a few late or repeated rows: the rest as columns
            keep, late_rows, dup_rows = split
            kept = block.take(np.asarray(keep, dtype=np.intp))
            if not keep or self._columnar_ok(kept.ts_ms, kept.ts_ms - kept.ts_ms % self.size_ms):
                for i in dup_rows:
                    start = int(starts[i])
                    self._dups[start] = self._dups.get(start, 0) + 1
                _, _, closed = self.add_block(kept) if keep else ([], [], [])
                return ([block.reading(i) for i in late_rows],
                        [block.reading(i) for i in dup_rows], closed)
        late: list[dict[str, Any]] = []
        dups: list[dict[str, Any]] = []
        closed: list[Window] = []
        for i in range(n):
            reading = block.reading(i)
            status, ws = self.add(reading)
            if status == "late":
                late.append(reading)
            elif status == "duplicate":
                dups.append(reading)
            closed.extend(ws)
        return late, dups, closed

    def _split(self, ts: list[int], starts: list[int]
               ) -> tuple[list[int], list[int], list[int]] | None:
        """Which rows :meth:`add` would take, find late and find repeated, row by row, as
        ``(kept, late, duplicates)`` row numbers, from event times alone (no reading is
        built, no window closed): what :meth:`add` decides depends only on the windows
        open, the times they hold, the newest time taken and the end of the last window
        closed, which this follows. ``None`` when no row is late or repeated (the block
        goes in as columns as it is)."""
        size, wait = self.size_ms, self.size_ms + self.allowed_lateness_ms
        ooo = self.out_of_orderness_ms
        open_starts = set(self._open)
        closed_through, top = self.closed_through_ms, self.max_ts_ms
        held_before = self.max_ts_ms  # times up to this may be held by an open window
        taken: set[int] = set()
        keep: list[int] = []
        late: list[int] = []
        dups: list[int] = []
        for i, (t, start) in enumerate(zip(ts, starts, strict=True)):
            if start + size <= closed_through:
                late.append(i)
                continue
            if t in taken or (t <= held_before and start in self._open
                              and self._open[start].holds(t)):
                dups.append(i)
                continue
            keep.append(i)
            taken.add(t)
            open_starts.add(start)
            # advance(watermark) after each row taken: which open windows it closes
            if t > top:
                top = t
                passed = [w for w in open_starts if w + wait <= top - ooo]
            else:  # the watermark stayed: only the window this row opened may close
                passed = [start] if start + wait <= top - ooo else []
            if passed:
                closed_through = max(closed_through, max(passed) + size)
                open_starts.difference_update(passed)
        if not late and not dups:
            return None
        return keep, late, dups

    def _columnar_ok(self, ts: np.ndarray, starts: np.ndarray) -> bool:
        """Whether no row of ``ts`` (in arrival order; ``starts`` their windows) would be
        late or a duplicate."""
        if int(starts.min()) + self.size_ms <= self.closed_through_ms:
            return False  # a window already closed
        # the watermark each row meets: the largest time before it, minus the bound
        before = np.maximum.accumulate(np.concatenate(([self.max_ts_ms], ts[:-1])))
        deadline = starts + (self.size_ms + self.allowed_lateness_ms)
        if not bool(np.all(deadline > before - self.out_of_orderness_ms)):
            return False  # some row arrives after its window was passed
        n = len(ts)
        if n > 1 and not (bool(np.all(ts[1:] > ts[:-1])) or len(np.unique(ts)) == n):
            return False  # a duplicate inside the block
        if int(ts.min()) <= self.max_ts_ms:  # may repeat a time already held
            for t, start in zip(ts.tolist(), starts.tolist(), strict=True):
                bucket = self._open.get(start)
                if bucket is not None and bucket.holds(t):
                    return False
        return True

    def advance(self, watermark_ms: int) -> list[Window]:
        """Close every window with ``end + allowed lateness <= watermark_ms``."""
        closed: list[Window] = []
        for start in sorted(self._open):
            end = start + self.size_ms
            if end + self.allowed_lateness_ms > watermark_ms:
                break
            closed.append(self._close(start))
        return closed

    def flush(self) -> list[Window]:
        """Close every open window (end of a bounded input)."""
        return [self._close(start) for start in sorted(self._open)]

    def _close(self, start: int) -> Window:
        bucket = self._open.pop(start)
        asset_id, asset_type = self._meta or ("", "")
        end = start + self.size_ms
        self.closed_through_ms = max(self.closed_through_ms, end)
        return Window(asset_id, asset_type, start, end, bucket.block() if len(bucket) else None,
                      self._dups.pop(start, 0))

    def __len__(self) -> int:
        """Number of buffered readings."""
        return sum(len(b) for b in self._open.values())

    # The buffer is pickled with its twin at every engine state commit (Beam: per key
    # and bundle). Its open windows are packed into one set of columns (three arrays, and
    # the asset id and vendor once when every row has the same) instead of a block per
    # part per window, each array pickled on its own.
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        starts = sorted(self._open)
        parts: list[ReadingBlock] = []
        counts, dicts = [], []
        for s in starts:
            held = self._open[s].parts
            parts.extend(held)
            counts.append(sum([len(p.ts_ms) for p in held]))
            dicts.append([d for p in held for d in p.dicts]
                         if held and all(p.dicts is not None for p in held) else None)
        packed = None
        if parts:
            packed = (parts[0].asset_type,
                      _once([a for p in parts for a in p.asset_ids]),
                      _once([v for p in parts for v in p.vendors]),
                      np.concatenate([p.ts_ms for p in parts]),
                      np.concatenate([p.values for p in parts]),
                      np.concatenate([p.bad for p in parts]))
        state["_open"] = (starts, counts, dicts, [self._open[s].pending for s in starts],
                          packed)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        starts, counts, dicts, pending, packed = state["_open"]
        self.__dict__.update(state)
        self._open = {}
        if isinstance(packed, ReadingBlock):  # pickled before ids were packed: still read
            packed = (packed.asset_type, packed.asset_ids, packed.vendors, packed.ts_ms,
                      packed.values, packed.bad)
        if packed is not None:
            asset_type, ids, vendors, ts, values, bad = packed
        at = 0
        for start, count, d, p in zip(starts, counts, dicts, pending, strict=True):
            bucket = self._open[start] = _Bucket()
            if count:
                rows = slice(at, at + count)
                bucket.parts.append(ReadingBlock(
                    asset_type, [ids] * count if type(ids) is str else ids[rows],
                    [vendors] * count if type(vendors) is str else vendors[rows],
                    ts[rows], values[rows], bad[rows], d))
                at += count
            bucket.pending = p


def _once(items: list[str]) -> str | list[str]:
    """``items``, or its one value when every item is the same."""
    return items[0] if items.count(items[0]) == len(items) else items
