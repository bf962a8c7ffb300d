"""Readings as columns: blocks round-trip to dicts, and the twin's block path equals its
per-reading path on in-order, disordered, duplicate and late data."""

from __future__ import annotations

import math
import pickle
import random

import numpy as np
import pytest

from transforms.columns import ReadingBlock
from transforms.twin import AssetTwin
from transforms.windowing import WindowBuffer


def reading(ts: int, asset: str = "p1", flow: float = 0.05, bad: bool = False) -> dict:
    values = {"flow": flow, "speed": 150.0 + ts % 7}
    return {"reading_id": f"helios:{asset}:{ts}", "asset_id": asset, "asset_type": "pump",
            "vendor": "helios", "ts_ms": ts, "values": values,
            "bad_quality": ["vibration"] if bad else []}


def test_block_rebuilds_every_reading_exactly():
    rs = [reading(1_000, bad=True), reading(2_000, asset="p2", flow=0.07)]
    block = ReadingBlock.from_readings(rs)
    block.dicts = None  # force the rebuild from columns
    assert block.readings() == rs
    assert math.isnan(block.values[0, block.sensors.index("vibration")])
    assert block.bad[0].tolist() == [s == "vibration" for s in block.sensors]
    again = pickle.loads(pickle.dumps(block))
    assert again.readings() == rs


def test_by_asset_keeps_row_order_and_rejects_mixed_types():
    rs = [reading(t, asset=a) for t, a in ((1, "a"), (2, "b"), (3, "a"), (4, "b"), (5, "a"))]
    parts = ReadingBlock.from_readings(rs).by_asset()
    assert {a: b.ts_ms.tolist() for a, b in parts.items()} == {"a": [1, 3, 5], "b": [2, 4]}
    motor = {**reading(6), "asset_type": "motor", "values": {"torque": 1.0}}
    with pytest.raises(ValueError, match="one asset type"):
        ReadingBlock.from_readings([reading(1), motor])
    with pytest.raises(ValueError, match="no sensor"):
        ReadingBlock.from_readings([{**reading(1), "values": {"torque": 1.0}}])


def _stream(seed: int, n: int = 400) -> list[int]:
    """Event times with disorder, duplicates and stragglers far behind."""
    rng = random.Random(seed)
    ts, out = 0, []
    for _ in range(n):
        ts += rng.choice((700, 1_000, 1_300))
        r = rng.random()
        if r < 0.05:
            out.append(out[-1] if out else ts)  # duplicate
        elif r < 0.10:
            out.append(ts - rng.randrange(1_000, 60_000))  # disorder, some of it late
        else:
            out.append(ts)
    return out


def _summary(windows):
    return [(w.start_ms, w.end_ms, w.count, w.duplicates,
             None if w.block is None else w.block.ts_ms.tolist()) for w in windows]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("chunk", [1, 7, 50])
def test_add_block_equals_adding_each_reading(seed, chunk):
    times = _stream(seed)
    one = WindowBuffer(10_000, 5_000, 3_000)
    many = WindowBuffer(10_000, 5_000, 3_000)
    ref_late, ref_dup, ref_closed = [], [], []
    for t in times:
        status, closed = one.add(reading(t))
        ref_closed += closed
        (ref_late if status == "late" else ref_dup if status == "duplicate" else []).append(t)
    late, dup, closed = [], [], []
    for i in range(0, len(times), chunk):
        block = ReadingBlock.from_readings([reading(t) for t in times[i:i + chunk]])
        block.dicts = None
        lt, dp, cl = many.add_block(block)
        late += [r["ts_ms"] for r in lt]
        dup += [r["ts_ms"] for r in dp]
        closed += cl
        if i % 3 == 0:  # the engine's watermark moves too, now and then
            ref_closed += one.advance(times[i] - 30_000)
            closed += many.advance(times[i] - 30_000)
    assert late == ref_late and dup == ref_dup
    ref_closed += one.flush()
    closed += many.flush()
    assert _summary(closed) == _summary(ref_closed)
    assert sum(w.count for w in closed) + len(late) + len(dup) == len(times)


def test_twin_block_path_gives_the_same_predictions():
    rng = np.random.default_rng(3)
    rs = [reading(1_000 * i, flow=0.05 + 0.001 * float(rng.normal())) for i in range(900)]
    kw = {"window_ms": 10_000, "detector": {"warmup": 12}}
    one, many = AssetTwin("p1", "pump", **kw), AssetTwin("p1", "pump", **kw)
    ref = [o for r in rs for o in one.add(r)] + one.flush()
    got = []
    for i in range(0, len(rs), 37):
        block = ReadingBlock.from_readings(rs[i:i + 37])
        block.dicts = None
        got += many.add_block(block)
    got += many.flush()
    assert [t for t, _ in got] == [t for t, _ in ref]
    assert [rec for _, rec in got] == [rec for _, rec in ref]
    preds = [rec for t, rec in got if t == "prediction"]
    assert len(preds) == 90 and sum(not p["warming_up"] for p in preds) == 90 - 12


def test_mild_disorder_is_added_as_columns(monkeypatch):
    buf = WindowBuffer(10_000, 5_000, 3_000)
    times = [1_000, 3_000, 2_000, 12_000, 11_500, 14_000, 13_000]  # within the 3 s bound
    block = ReadingBlock.from_readings([reading(t) for t in times])
    block.dicts = None

    def per_row(self, i):
        raise AssertionError("went row by row")

    monkeypatch.setattr(ReadingBlock, "reading", per_row)
    late, dups, closed = buf.add_block(block)
    assert (late, dups, closed) == ([], [], [])
    monkeypatch.undo()
    (w0, w1) = buf.flush()
    assert w0.block.ts_ms.tolist() == [1_000, 2_000, 3_000]
    assert w1.block.ts_ms.tolist() == [11_500, 12_000, 13_000, 14_000]


def test_a_block_with_a_few_late_or_repeated_rows_is_still_added_as_columns(monkeypatch):
    """Transport defects (a repeated message, a straggler) in a poll's block: those rows
    are the only ones built as readings; the rest go in as columns."""
    buf = WindowBuffer(10_000, 5_000, 3_000)
    buf.add_block(ReadingBlock.from_readings([reading(t) for t in (1_000, 2_000, 30_000)]))
    times = [31_000, 2_000, 32_000, 32_000, 33_000, 41_000, 40_500]  # late, repeat
    block = ReadingBlock.from_readings([reading(t) for t in times])
    block.dicts = None
    built = []
    real = ReadingBlock.reading

    def counted(self, i):
        built.append(i)
        return real(self, i)

    monkeypatch.setattr(ReadingBlock, "reading", counted)
    late, dups, closed = buf.add_block(block)
    assert [r["ts_ms"] for r in late] == [2_000] and [r["ts_ms"] for r in dups] == [32_000]
    assert sorted(built) == [1, 3]  # only the late and the repeated row
    monkeypatch.undo()
    windows = buf.flush()
    assert [(w.start_ms, w.count, w.duplicates) for w in windows] == [
        (30_000, 4, 1), (40_000, 2, 0)]


@pytest.mark.parametrize("seed", range(6, 26))
@pytest.mark.parametrize("chunk,lateness,ooo", [(25, 5_000, 3_000), (200, 0, 0),
                                                (60, 30_000, 10_000)])
def test_blocks_with_defects_equal_adding_each_reading(seed, chunk, lateness, ooo):
    """Heavier defects, bigger blocks, other bounds: the same late and repeated readings,
    the same windows (contents, duplicates) as adding row by row."""
    rng = random.Random(seed)
    times = _stream(seed, n=600)
    one, many = WindowBuffer(10_000, lateness, ooo), WindowBuffer(10_000, lateness, ooo)
    ref_late, ref_dup, ref_closed, late, dup, closed = [], [], [], [], [], []
    i = 0
    while i < len(times):
        n = rng.randint(1, chunk)
        part = times[i:i + n]
        for t in part:
            status, ws = one.add(reading(t))
            ref_closed += ws
            (ref_late if status == "late" else ref_dup if status == "duplicate"
             else []).append(t)
        block = ReadingBlock.from_readings([reading(t) for t in part])
        block.dicts = None
        lt, dp, cl = many.add_block(block)
        late += [r["ts_ms"] for r in lt]
        dup += [r["ts_ms"] for r in dp]
        closed += cl
        i += n
    assert late == ref_late and dup == ref_dup
    assert _summary(closed) == _summary(ref_closed)
    assert _summary(many.flush()) == _summary(one.flush())
    assert (many.closed_through_ms, many.max_ts_ms) == (one.closed_through_ms, one.max_ts_ms)
