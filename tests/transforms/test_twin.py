"""AssetTwin end to end on canonical readings: windows -> prediction -> actions -> state."""

from __future__ import annotations

import pickle
import random

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
