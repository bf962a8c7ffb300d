"""The twin's running fidelity is computed from its own predictions, the learned models
travel in its state, and a twin asked for recommendations says them with its work order."""

from __future__ import annotations

import json
import math
import pickle

import pytest

from tests.transforms.test_twin import readings, run
from transforms.twin import ACTION, PREDICTION, STATE, AssetTwin
from transforms.whatif import from_states, whatif
from transforms.whatif.fidelity import Z90, Fidelity, clipped_variance_factor


def test_fidelity_figures_by_hand():
    fid = Fidelity(fading=0.5)
    k = clipped_variance_factor(2.0)
    # window 1: relative errors 1 % and 3 % (median 2 %); one inside its interval
    e, c = fid.update({"vibration": (0.0030, 0.00297, 0.00002, 0.1),
                       "bearing_temp": (30.0, 29.1, 0.1, 0.1)})
    assert e == pytest.approx(0.02)
    assert c == 0.5  # 0.9 K off with a 0.1 K spread is outside; 3e-5 with 2e-5 is inside
    assert abs(0.00003) <= Z90 * 0.00002 / math.sqrt(k) < 0.9
    # window 2: both exact and inside; the running figures average (weight 1/2)
    e, c = fid.update({"vibration": (0.003, 0.003, 0.00002, 0.3),
                       "bearing_temp": (30.0, 30.0, 0.1, 0.2)})
    assert (e, c) == (pytest.approx(0.01), 0.75)
    assert fid.max_leverage == 0.3
    assert fid.resid_level["bearing_temp"] == pytest.approx(0.2 * 0.0 + 0.8 * 0.9)


def test_the_consistency_factor_of_a_clipped_variance():
    import numpy as np

    rng = np.random.default_rng(1)
    z = rng.standard_normal(400_000)
    k = clipped_variance_factor(2.0)
    assert np.mean(np.minimum(z ** 2, 4 * k)) == pytest.approx(k, rel=0.01)
    assert 0.89 < k < 0.91


def _twin(**kw) -> AssetTwin:
    return AssetTwin("p1", "pump", detector={"warmup": 20}, learned_every=10, **kw)


def test_fidelity_is_measured_and_falls_when_the_asset_changes():
    twin = _twin()
    out = run(twin, readings(120, fault_from=80))
    preds = [r for t, r in out if t == PREDICTION]
    states = [r for t, r in out if t == STATE]
    assert all(p["fidelity_error"] is None for p in preds[:20])  # warming up
    healthy = [p for p in preds[30:80]]
    assert all(0 < p["fidelity_error"] < 0.05 for p in healthy)
    assert all(0 <= p["fidelity_coverage"] <= 1 for p in healthy)
    late = preds[-1]
    # the fault: the models miss the condition sensors far more, and less often cover them
    assert late["fidelity_error"] > 3 * healthy[-1]["fidelity_error"]
    assert late["fidelity_coverage"] < healthy[-1]["fidelity_coverage"] - 0.3
    assert [s["fidelity_error"] for s in states] == [p["fidelity_error"] for p in preds]
    # different seeds, different figures: computed, not constants
    other = run(_twin(), readings(60, seed=5))
    assert [r for t, r in other if t == PREDICTION][-1]["fidelity_error"] != preds[59][
        "fidelity_error"]


def test_the_state_carries_the_models_every_n_windows_and_they_answer_what_ifs():
    twin = _twin()
    out = run(twin, readings(45))
    states = [r for t, r in out if t == STATE]
    with_model = [s["windows_seen"] for s in states if s["learned"]]
    assert with_model == [10, 20, 30, 40]
    doc = json.loads(states[39]["learned"])
    assert doc["version"] == 1 and doc["asset_id"] == "p1"
    assert doc["detector"]["targets"] == ["bearing_temp", "vibration"]
    # the twin itself and its state records give the same answer about the last window
    direct = whatif(twin, {"steps": [{"set": {"speed": "-5%"}}]})
    from_records = whatif(from_states(states)["p1"], {"steps": [{"set": {"speed": "-5%"}}]})
    assert from_records["from_ms"] == direct["from_ms"] == states[-1]["ts_ms"]
    a = direct["baseline"]["sensors"]["vibration"]["mean"]
    b = from_records["baseline"]["sensors"]["vibration"]["mean"]
    assert b == pytest.approx(a, rel=0.02)  # weights are 5 windows older in the records
    none = run(AssetTwin("p1", "pump", detector={"warmup": 20}, learned_every=0), readings(45))
    assert not any(r["learned"] for t, r in none if t == STATE)


def test_outputs_other_than_the_new_fields_do_not_depend_on_what_if():
    a = run(_twin(), readings(100, fault_from=60))
    b = run(AssetTwin("p1", "pump", detector={"warmup": 20}, learned_every=0), readings(100,
                                                                                      fault_from=60))
    new = {"fidelity_error", "fidelity_coverage", "learned"}
    strip = [(t, {k: v for k, v in r.items() if k not in new}) for t, r in a]
    assert strip == [(t, {k: v for k, v in r.items() if k not in new}) for t, r in b]


def test_a_twin_pickled_before_what_if_learns_from_then_on():
    twin = _twin()
    run(twin, readings(30))
    for name in ("fidelity", "operating", "learned_every", "recommend", "last_noise_z",
                 "last_score", "last_window"):
        delattr(twin, name)
    clone = pickle.loads(pickle.dumps(twin))
    assert clone.fidelity.error is None and clone.operating.n == 0 and clone.recommend is None
    out = run(clone, list(readings(33))[30 * 12:])
    preds = [r for t, r in out if t == PREDICTION]
    assert len(preds) == 3 and preds[-1]["fidelity_error"] is not None


def test_recommendations_come_with_the_work_order_when_asked_for():
    kw = dict(policy={"setpoint_interval_s": 60, "setpoint_min": 0.85})
    plain = run(_twin(**kw), readings(110, fault_from=50))
    asked = run(_twin(recommend={"min_rul_s": 3600.0}, **kw), readings(110, fault_from=50))
    orders = [r for t, r in asked if t == ACTION and r["kind"] == "WORK_ORDER"]
    assert len(orders) == 1 and "; what-if: " in orders[0]["reason"]
    plain_order = next(r for t, r in plain if t == ACTION and r["kind"] == "WORK_ORDER")
    assert orders[0]["reason"].startswith(plain_order["reason"])
    proposals = [r for t, r in asked if t == ACTION and r["ts_ms"] == orders[0]["ts_ms"] + 1]
    for p in proposals:  # a derating is proposed only if the guardrails allow it now
        assert p["kind"] == "SETPOINT" and p["dry_run"] is True
        assert p["reason"].startswith("what-if recommendation: ")
    others = [(t, r) for t, r in asked if r not in proposals]
    assert len(others) == len(plain)
