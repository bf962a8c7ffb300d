from __future__ import annotations

from transforms.evaluation import evaluate

GT = {
    "config": {"assets": 2, "duration_s": 43_200},
    "fault_episodes": [
        {"asset_id": "a", "fault": "bearing_wear", "start_ms": 10_000, "failure_ms": 100_000},
        {"asset_id": "b", "fault": "cavitation", "start_ms": 10_000, "failure_ms": 50_000},
    ],
    "regime_changes": [{"asset_id": "b", "kind": "load_step", "ts_ms": 200_000}],
}


def alert(asset, ts, kind="ALERT"):
    return {"asset_id": asset, "kind": kind, "ts_ms": ts}


def test_counts_detection_lead_time_and_false_alarms():
    acts = [alert("a", 40_000), alert("a", 60_000), alert("a", 101_000),
            alert("b", 5_000), alert("b", 210_000), alert("a", 200_000, "WORK_ORDER")]
    m = evaluate(GT, acts, grace_ms=5_000)
    assert m["fault_episodes"] == 2 and m["detected_episodes"] == 1
    assert m["recall"] == 0.5
    assert m["alerts"] == 5 and m["true_alerts"] == 3 and m["false_alarms"] == 2
    assert m["precision"] == 0.6
    assert m["median_lead_time_s"] == 60.0
    assert m["regime_change_alerts"] == 1
    assert m["false_alarms_per_asset_day"] == 2.0  # 2 false alarms / (2 assets * 0.5 day)
    assert m["missed"] == [{"asset_id": "b", "fault": "cavitation", "start_ms": 10_000,
                            "failure_ms": 50_000}]
    assert m["by_fault"]["cavitation"] == {"episodes": 1, "detected": 0}


def test_no_alerts():
    m = evaluate(GT, [])
    assert m["recall"] == 0.0 and m["precision"] is None and m["median_lead_time_s"] is None
