"""AssetTwin end to end on canonical readings: windows -> prediction -> actions -> state."""

from __future__ import annotations

import pickle
import random
import zlib

from transforms.twin import ACTION, FEATURES, LATE, PREDICTION, STATE, AssetTwin

SENSORS = {
    "flow": 0.03, "discharge_pressure": 3.4e5, "suction_pressure": 1.4e5,
    "motor_current": 58.0, "bearing_temp": 330.0, "vibration": 0.004, "speed": 155.0,
    "ambient_temp": 293.0,
}


def readings(n_windows: int, fault_from: int | None = None, seed: int = 0):
    """12 readings per 60 s window; vibration and bearing temp climb after ``fault_from``."""
    rng = random.Random(seed)
    for i in range(n_windows * 12):
        w = i // 12
        wear = 0.0 if fault_from is None or w < fault_from else (w - fault_from) / 20
        load = 1 + 0.05 * rng.gauss(0, 1) / 3
        values = {k: v * (load if k in ("flow", "motor_current") else 1)
                  * (1 + rng.gauss(0, 0.01)) for k, v in SENSORS.items()}
        values["vibration"] *= 1 + 2 * wear
        values["bearing_temp"] += 15 * wear
        yield {"reading_id": f"x:p1:{i}", "asset_id": "p1", "asset_type": "pump",
               "vendor": "x", "ts_ms": i * 5_000, "values": values, "bad_quality": []}


def run(twin: AssetTwin, rs) -> list:
    out = []
    for r in rs:
        out += twin.add(r)
    return out + twin.flush()


def test_healthy_asset_gets_predictions_and_no_alert():
    twin = AssetTwin("p1", "pump", detector={"warmup": 20})
    out = run(twin, readings(80))
    tags = [t for t, _ in out]
    assert tags.count(FEATURES) == 80 and tags.count(PREDICTION) == 80
    assert tags.count(STATE) == 80 and ACTION not in tags
    preds = [r for t, r in out if t == PREDICTION]
    assert [p["warming_up"] for p in preds[:21]] == [True] * 20 + [False]
    assert preds[-1]["prediction_id"] == "p1:4800000:prediction"
    assert preds[-1]["health_index"] > 0.8


def test_degradation_alerts_orders_work_and_derates_within_bounds():
    twin = AssetTwin("p1", "pump", detector={"warmup": 20},
                     policy={"setpoint_interval_s": 60, "setpoint_min": 0.85})
    out = run(twin, readings(100, fault_from=50))
    actions = [r for t, r in out if t == ACTION]
    kinds = [a["kind"] for a in actions]
    assert kinds[0] == "ALERT" and kinds.count("ALERT") == 1
    assert "WORK_ORDER" in kinds
    first_alert = actions[0]["ts_ms"] // 60_000
    assert 50 < first_alert < 60, "alert within ten windows of the fault's start"
    sps = [a for a in actions if a["kind"] == "SETPOINT"]
    assert sps, "severe degradation derates the speed setpoint"
    assert all(0.85 * 155 * 0.97 <= a["setpoint_value"] <= 155 * 1.03 for a in sps)
    state = [r for t, r in out if t == STATE][-1]
    assert state["alert_open"] and state["health_index"] < 0.3
    assert set(state["values"]) == set(SENSORS)


def test_late_reading_is_returned_not_dropped_and_twin_pickles():
    twin = AssetTwin("p1", "pump", allowed_lateness_ms=0, out_of_orderness_ms=0)
    run_out = [o for r in readings(5) for o in twin.add(r)]
    assert run_out
    late = {"reading_id": "x:p1:late", "asset_id": "p1", "asset_type": "pump", "vendor": "x",
            "ts_ms": 1_000, "values": {"flow": 0.03}, "bad_quality": []}
    assert twin.add(late) == [(LATE, late)]
    clone = pickle.loads(pickle.dumps(twin))
    assert [t for t, _ in clone.flush()] == [t for t, _ in twin.flush()]


def _fleet_batches(assets: int, hours: float, rates: float, batch: int = 700):
    """The simulator's fleet (late, duplicate, out-of-order and malformed messages at
    ``rates`` times their defaults), normalized in batches: per batch, its
    ``(asset_id, ReadingBlock)`` pairs as a pipeline hands them to its twins."""
    from transforms.normalize import normalize_batch
    from transforms.simulator import Fleet, FleetConfig

    cfg = FleetConfig(assets=assets, duration_s=hours * 3600, interval_s=5.0, seed=3,
                      dropout_rate=0.005 * rates, duplicate_rate=0.003 * rates,
                      out_of_order_rate=0.01 * rates, late_rate=0.002 * rates)
    msgs = list(Fleet(cfg).messages())
    for i in range(0, len(msgs), batch):
        part = msgs[i:i + batch]
        blocks, _ = normalize_batch([m.value for m in part], [m.arrival_ms for m in part])
        yield [pair for b in blocks.values() for pair in b.by_asset().items()]


def _by_asset(outputs) -> dict[str, list]:
    out: dict[str, list] = {}
    for tag, record in outputs:
        out.setdefault(record["asset_id"], []).append((tag, record))
    return out


def test_a_shard_of_twins_gives_each_twin_exactly_its_own_outputs():
    """A TwinShard (what the Beam job keeps per state key) steps many assets together and
    computes their closed windows' features as stacks; every asset's outputs are the same
    records, in the same order, to the bit, as its own AssetTwin fed the same blocks
    (late, duplicate and out-of-order readings included), through data watermarks, engine
    watermarks (advance) and the end of input (flush)."""
    from transforms.twin import DUPLICATE, TwinShard, shard_of

    kwargs = {"window_ms": 30_000, "allowed_lateness_ms": 30_000, "detector": {"warmup": 10}}
    batches = list(_fleet_batches(assets=8, hours=1.5, rates=10))
    alone: dict[str, AssetTwin] = {}
    shards = {k: TwinShard(kwargs) for k in range(3)}
    expected: list[list] = []  # per step (a batch, an engine watermark, the end): outputs
    got: list[list] = []
    for n, pairs in enumerate(batches):
        expected.append([])
        for asset_id, block in pairs:
            twin = alone.setdefault(asset_id, AssetTwin(asset_id, block.asset_type, **kwargs))
            expected[-1] += twin.add_block(block)
        got.append([])
        for k, shard in shards.items():
            got[-1] += shard.add([p for p in pairs if shard_of(p[0], 3) == k])
        if n % 7 == 6:  # the engine's watermark passes, ahead of the data's (20 s behind)
            wm = max(int(b.ts_ms.max()) for _, b in pairs)
            expected.append([o for twin in alone.values() for o in twin.advance(wm)])
            got.append([o for shard in shards.values() for o in shard.advance(wm)])
            assert expected[-1], "the engine's watermark closes some windows"
    deadlines = {k: (s.next_deadline_ms(), s.last_deadline_ms()) for k, s in shards.items()}
    for k in shards:
        mine = [t for a, t in alone.items() if shard_of(a, 3) == k]
        assert deadlines[k] == (min(t.next_deadline_ms() for t in mine),
                                max(t.last_deadline_ms() for t in mine))
    expected.append([o for twin in alone.values() for o in twin.flush()])
    got.append([o for shard in shards.values() for o in shard.flush()])
    assert sorted(len(s) for s in shards.values()) == sorted(
        sum(shard_of(a, 3) == k for a in alone) for k in range(3))
    assert len(got) == len(expected) and len(alone) == 8
    for step, (want, have) in enumerate(zip(expected, got, strict=True)):
        assert _by_asset(have) == _by_asset(want), step
    tags = [t for step in expected for t, _ in step]
    assert tags.count(PREDICTION) > 800 and tags.count(LATE) > 10
    assert tags.count(DUPLICATE) > 10
    preds = [r for step in expected for t, r in step if t == PREDICTION]
    assert sum(r["anomaly_score"] > 0 for r in preds) > 500


def test_a_shard_restores_saved_twins_and_takes_reading_dicts():
    """New assets start from ``restore`` when it has them; readings may come as dicts."""
    from transforms.twin import TwinShard

    saved = AssetTwin("p1", "pump", detector={"warmup": 20})
    run(saved, readings(5))  # five windows seen, all flushed
    shard = TwinShard({"detector": {"warmup": 20}})
    r = next(readings(7))
    r = {**r, "ts_ms": 6 * 60_000 + 1_000}
    out = shard.add([r, {**r, "asset_id": "p2", "reading_id": "x:p2:0"}],
                    restore={"p1": pickle.loads(pickle.dumps(saved))}.get)
    assert out == [] and sorted(shard.twins) == ["p1", "p2"]
    assert shard.twins["p1"].windows_seen == 5 and shard.twins["p2"].windows_seen == 0
    assert shard.twins["p1"].detector.n_seen == 5
    feats = [(rec["asset_id"], rec["window_start_ms"], rec["count"])
             for t, rec in shard.flush() if t == FEATURES]
    assert sorted(feats) == [("p1", 360_000, 1), ("p2", 360_000, 1)]


def test_shard_of_is_stable_across_processes():
    """Shards key state that outlives a process (checkpoints): no salted hash."""
    from transforms.twin import shard_of

    assert [shard_of(f"pump-{i:03d}", 64) for i in range(4)] == [
        zlib.crc32(f"pump-{i:03d}".encode()) % 64 for i in range(4)]
    assert shard_of("pump-000", 64) == 18 and shard_of("motor-001", 7) == 2


def _forged(r: dict, ts_ms: int) -> dict:
    return {**r, "ts_ms": ts_ms, "reading_id": f"x:p1:{ts_ms}"}


def _by_tag(outputs) -> dict[str, list]:
    out: dict[str, list] = {}
    for tag, record in outputs:
        out.setdefault(tag, []).append(record)
    return out


def test_a_forged_event_time_is_a_dead_letter_and_moves_no_watermark():
    """One reading in 2100 and one a day ahead (what a replay of old history cannot judge
    by the clock): each is a dead letter of the twin, and the asset's windows,
    predictions and late readings are exactly those without them."""
    from schemas import wire
    from transforms.deadletter import DEAD_LETTER

    clean = list(readings(40))
    poisoned = list(clean)
    poisoned.insert(100, _forged(clean[99], 4_102_444_800_000))
    poisoned.insert(200, _forged(clean[198], clean[198]["ts_ms"] + 86_400_000))
    want = run(AssetTwin("p1", "pump", detector={"warmup": 20}), clean)
    got = _by_tag(run(AssetTwin("p1", "pump", detector={"warmup": 20}), poisoned))
    dead = got.pop(DEAD_LETTER)
    assert got == _by_tag(want)
    assert [d["reason"] for d in dead] == ["timestamp_jump"] * 2
    decoded = [wire.decode(d["payload"]) for d in dead]  # the canonical reading, as Avro
    assert [name for name, _ in decoded] == ["twin/reading.v1"] * 2
    assert [{**r, "ts_ms": round(r["ts_ms"].timestamp() * 1000)} for _, r in decoded] == [
        poisoned[100], poisoned[200]]
    assert dead[0]["stage"] == "twin" and dead[0]["key"] == b"p1"
    assert dead[0]["source"] == "x" and dead[0]["ts_ms"] == clean[99]["ts_ms"]
    assert dead[0]["detail"].startswith(
        f"asset p1: ts_ms 4102444800000 is 130 y ahead of the asset's latest event time "
        f"{clean[99]['ts_ms']}; held back until 3 readings in a row confirm the jump")


def test_blocks_are_judged_as_readings_one_by_one():
    """The Beam path hands the twin blocks; forged times, a real day-long gap and its
    confirmation land in any place of a block: the same outputs as reading by reading."""
    from transforms.columns import ReadingBlock
    from transforms.deadletter import DEAD_LETTER

    rs = list(readings(60))
    day = 86_400_000
    stream = rs[:300] + [_forged(rs[0], 4_102_444_800_000)] + rs[300:400] + [
        {**r, "ts_ms": r["ts_ms"] + day, "reading_id": f"x:p1:{r['ts_ms'] + day}"}
        for r in rs[400:]]  # offline for a day from reading 400 on
    kwargs = {"detector": {"warmup": 20}}
    one_by_one = _by_tag(run(AssetTwin("p1", "pump", **kwargs), stream))
    for size in (1, 7, 37, 1000):
        twin = AssetTwin("p1", "pump", **kwargs)
        out = []
        for i in range(0, len(stream), size):
            out += twin.add_block(ReadingBlock.from_readings(stream[i:i + size]))
        assert _by_tag(out + twin.flush()) == one_by_one, size
    dead = one_by_one[DEAD_LETTER]
    assert len(dead) == 3  # the forged one, and two of the gap's before it was confirmed
    assert all(d["detail"].endswith(f"({k} so far)")
               for d, k in zip(dead, (1, 1, 2), strict=True))
    assert len(one_by_one[PREDICTION]) > 50


def test_a_twin_saved_before_the_guard_gets_the_default_one():
    from transforms.eventtime import DEFAULT_CONFIRMATIONS, DEFAULT_MAX_JUMP_MS

    twin = AssetTwin("p1", "pump")
    del twin.guard  # as pickled by an older version
    clone = pickle.loads(pickle.dumps(twin))
    assert clone.guard.max_jump_ms == DEFAULT_MAX_JUMP_MS
    assert clone.guard.confirmations == DEFAULT_CONFIRMATIONS
