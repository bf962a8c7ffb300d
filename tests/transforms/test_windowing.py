from __future__ import annotations

import pickle

import pytest

from transforms.columns import ReadingBlock
from transforms.windowing import WindowBuffer


def r(ts: int, x: float = 1.0) -> dict:
    return {"asset_id": "a", "asset_type": "pump", "ts_ms": ts, "values": {"flow": x}}


def test_windows_close_on_data_watermark_in_order():
    buf = WindowBuffer(size_ms=10_000, allowed_lateness_ms=5_000, out_of_orderness_ms=2_000)
    closed = []
    for ts in range(0, 40_000, 1_000):
        status, ws = buf.add(r(ts))
        assert status == "ok"
        closed += ws
    # watermark = 39_000 - 2_000 = 37_000 closes windows whose end + 5s <= 37s
    assert [(w.start_ms, w.end_ms, len(w.readings)) for w in closed] == [
        (0, 10_000, 10), (10_000, 20_000, 10), (20_000, 30_000, 10)]
    rest = buf.flush()
    assert [(w.start_ms, len(w.readings)) for w in rest] == [(30_000, 10)]
    assert len(buf) == 0


def test_out_of_order_within_lateness_is_kept_and_sorted():
    buf = WindowBuffer(size_ms=10_000, allowed_lateness_ms=5_000, out_of_orderness_ms=0)
    for ts in (1_000, 3_000, 12_000, 2_000):  # 2_000 arrives after 12_000: still in time
        assert buf.add(r(ts))[0] == "ok"
    (w, *_), = [buf.flush()]
    assert [x["ts_ms"] for x in w.readings] == [1_000, 2_000, 3_000]


def test_late_after_window_closed_and_duplicates_counted():
    buf = WindowBuffer(size_ms=10_000, allowed_lateness_ms=0, out_of_orderness_ms=0)
    buf.add(r(1_000))
    assert buf.add(r(1_000))[0] == "duplicate"
    status, closed = buf.add(r(15_000))
    assert status == "ok" and closed[0].duplicates == 1 and len(closed[0].readings) == 1
    assert buf.add(r(9_999))[0] == "late"
    assert buf.add(r(10_000))[0] == "ok"


def test_engine_watermark_closes_quiet_key_and_deadline():
    buf = WindowBuffer(size_ms=10_000, allowed_lateness_ms=5_000, out_of_orderness_ms=0)
    buf.add(r(3_000))
    assert buf.next_deadline_ms() == buf.last_deadline_ms() == 15_000
    assert buf.advance(14_999) == []
    (w,) = buf.advance(15_000)
    assert (w.start_ms, w.end_ms) == (0, 10_000)
    assert buf.next_deadline_ms() is None and buf.last_deadline_ms() is None


def test_last_deadline_closes_every_open_window():
    buf = WindowBuffer(size_ms=10_000, allowed_lateness_ms=50_000, out_of_orderness_ms=0)
    for t in (3_000, 12_000, 27_000, 31_000):
        assert buf.add(r(t)) == ("ok", [])
    assert (buf.next_deadline_ms(), buf.last_deadline_ms()) == (60_000, 90_000)
    closed = buf.advance(buf.last_deadline_ms())
    assert [w.start_ms for w in closed] == [0, 10_000, 20_000, 30_000]
    assert buf.last_deadline_ms() is None


def test_pickle_round_trip_keeps_buffer():
    buf = WindowBuffer(size_ms=10_000, allowed_lateness_ms=0, out_of_orderness_ms=0)
    buf.add(r(1_000, 2.0))
    clone = pickle.loads(pickle.dumps(buf))
    (w,) = clone.flush()
    assert w.readings[0]["values"]["flow"] == 2.0


def _columns(ts_list, x, keep_dicts):
    block = ReadingBlock.from_readings([r(t, x + t / 1e6) for t in ts_list])
    if not keep_dicts:
        block.dicts = None
    return block


def _shape(windows):
    return [(w.start_ms, w.end_ms, w.duplicates, w.readings) for w in windows]


def test_pickled_buffer_packs_its_windows_and_continues_identically():
    """Column parts (with and without their dicts), single readings and duplicate counts
    survive the packed pickle; the clone then judges repeats and closes windows as the
    original does."""
    buf = WindowBuffer(size_ms=10_000, allowed_lateness_ms=20_000, out_of_orderness_ms=0)
    buf.add_block(_columns([1_000, 2_000, 11_000], 1.0, keep_dicts=False))
    buf.add_block(_columns([3_000, 12_000, 21_000], 2.0, keep_dicts=True))
    assert buf.add(r(4_000, 3.0)) == ("ok", [])
    assert buf.add(r(2_000, 9.0))[0] == "duplicate"
    buf.add(r(25_000, 4.0))
    clone = pickle.loads(pickle.dumps(buf))
    assert len(clone) == len(buf) == 8
    for b in (buf, clone):
        assert b.add(r(12_000, 5.0))[0] == "duplicate"  # held in a packed part
        assert b.add(r(4_000, 5.0))[0] == "duplicate"  # held as a single reading
        late, dups, closed = b.add_block(_columns([13_000, 35_000], 6.0, keep_dicts=False))
        assert (late, dups) == ([], [])
    assert _shape(clone.flush()) == _shape(buf.flush())


def test_pickled_buffer_keeps_each_rows_id_and_vendor_when_they_differ():
    """Ids and vendors are packed once when every row has the same; otherwise per row."""
    buf = WindowBuffer(size_ms=10_000, allowed_lateness_ms=20_000, out_of_orderness_ms=0)
    block = _columns([1_000, 2_000, 11_000], 1.0, keep_dicts=False)
    block.vendors = ["helios", "orca", "helios"]
    buf.add_block(block)
    buf.add_block(_columns([12_000, 21_000], 2.0, keep_dicts=False))
    clone = pickle.loads(pickle.dumps(buf))
    got = [(w.start_ms, [(x.asset_ids, x.vendors) for x in [w.block]]) for w in clone.flush()]
    want = [(w.start_ms, [(x.asset_ids, x.vendors) for x in [w.block]]) for w in buf.flush()]
    assert got == want
    assert want[0] == (0, [(["a", "a"], ["helios", "orca"])])


def test_buffer_pickled_in_the_previous_format_is_still_read():
    """State files written before ids were packed hold the windows as one ReadingBlock."""
    buf = WindowBuffer(size_ms=10_000, allowed_lateness_ms=20_000, out_of_orderness_ms=0)
    buf.add_block(_columns([1_000, 2_000, 11_000], 1.0, keep_dicts=False))
    buf.add(r(4_000, 3.0))
    state = buf.__getstate__()
    starts, counts, dicts, pending, (asset_type, ids, vendors, ts, values, bad) = state["_open"]
    n = len(ts)
    state["_open"] = (starts, counts, dicts, pending, ReadingBlock(
        asset_type, [ids] * n, [vendors] * n, ts, values, bad))
    old = WindowBuffer.__new__(WindowBuffer)
    old.__setstate__(state)
    assert _shape(old.flush()) == _shape(buf.flush())


def test_bad_settings_rejected():
    with pytest.raises(ValueError):
        WindowBuffer(size_ms=0)
