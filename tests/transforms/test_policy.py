from __future__ import annotations

import pickle

import pytest

from transforms.policy import ActionPolicy


def pred(t: int, anomalous: bool, health: float = 0.9, rul=None) -> dict:
    return {"asset_id": "p1", "window_end_ms": t * 60_000, "is_anomaly": anomalous,
            "anomaly_score": 0.9999 if anomalous else 0.2, "health_index": health,
            "rul_s": rul, "contributors": ["vibration.mean"]}


def run(policy: ActionPolicy, flags, health=None):
    out = []
    for t, f in enumerate(flags):
        h = health[t] if health else 0.9
        out += policy.decide(pred(t, bool(f), h))
    return out


def test_hysteresis_needs_consecutive_windows():
    pol = ActionPolicy(alarm_windows=3, clear_windows=2)
    assert run(pol, [1, 1, 0, 1, 1, 0, 0]) == []  # never three in a row
    acts = run(ActionPolicy(alarm_windows=3, clear_windows=2), [1, 1, 1, 1, 0, 1, 0, 0])
    assert [(a["kind"], a["ts_ms"] // 60_000) for a in acts] == [
        ("ALERT", 2), ("ALERT_CLEARED", 7)]
    assert acts[0]["action_id"] == "p1:120000:ALERT"
    assert "vibration.mean" in acts[0]["reason"]


def test_dedup_and_cooldown():
    pol = ActionPolicy(alarm_windows=1, clear_windows=1, cooldown_s=5 * 60)
    acts = run(pol, [1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 1])
    kinds = [(a["kind"], a["ts_ms"] // 60_000) for a in acts]
    # one alert while open; re-alarm at t=4 is within the 5-minute cooldown; t=10 is not
    assert kinds == [("ALERT", 0), ("ALERT_CLEARED", 3), ("ALERT", 10)]


def test_work_order_once_per_episode_and_setpoint_guardrails():
    pol = ActionPolicy(alarm_windows=1, clear_windows=3, derate_health=0.3, derate_step=0.05,
                       setpoint_min=0.9, setpoint_interval_s=60)
    health = [0.2] * 8 + [0.9] * 3
    acts = run(pol, [1] * 8 + [0] * 3, health)
    kinds = [a["kind"] for a in acts]
    assert kinds.count("WORK_ORDER") == 1 and kinds.count("ALERT") == 1
    sps = [a for a in acts if a["kind"] == "SETPOINT"]
    values = [round(a["setpoint_value"], 4) for a in sps]
    assert values == [0.95, 0.9, 0.95]  # two derate steps, floor 0.9, then restore step
    assert all(a["setpoint_previous"] is not None for a in sps)


def test_setpoint_rate_limit():
    pol = ActionPolicy(alarm_windows=1, derate_health=0.5, setpoint_interval_s=600)
    acts = run(pol, [1] * 12, [0.1] * 12)
    sps = [a["ts_ms"] // 60_000 for a in acts if a["kind"] == "SETPOINT"]
    assert sps == [0, 10]


def test_dry_run_marks_actions_and_state_pickles():
    pol = ActionPolicy(alarm_windows=1, dry_run=True)
    acts = run(pol, [1])
    assert acts and all(a["dry_run"] for a in acts)
    clone = pickle.loads(pickle.dumps(pol))
    assert clone.alert_open and clone.dry_run


def test_bad_bounds_rejected():
    with pytest.raises(ValueError):
        ActionPolicy(setpoint_min=1.1)
