"""Recommended setpoints: the search, and the guardrails every recommendation passes."""

from __future__ import annotations

import pytest

from tests.transforms.whatif.test_rollforward import document
from transforms.whatif.model import ModelError
from transforms.whatif.optimize import (
    GuardrailError,
    check_guardrails,
    ramp,
    recommend,
    setpoint_action,
)


def faulty(**over):
    """The hand-checked motor with a bearing fault developing: 50 windows of life left."""
    return document(policy__alert_open=True, **over)


def test_ramp_respects_step_and_rate():
    doc = document()
    assert ramp(doc, 0.85) == [(0.0, 0.95), (600.0, 0.9), (1200.0, 0.85)]
    assert ramp(doc, 1.0) == []
    assert ramp(doc, 0.5) == [(0.0, 0.95), (600.0, 0.9), (1200.0, 0.85), (1800.0, 0.8)]
    assert ramp(doc, 1.2) == [(0.0, 1.05)]  # clipped to the bounds
    # the last change was 4 minutes ago: the first step waits for the rate limit
    recent = document(policy__setpoint_changed_ms=1_000_000 - 240_000)
    assert ramp(recent, 0.9)[0] == (360.0, 0.95)


@pytest.mark.parametrize("value, at_s, over, message", [
    (0.75, 0, {}, "outside the bounds"),
    (1.10, 0, {}, "outside the bounds"),
    (0.90, 0, {}, "larger than 0.05 per change"),
    (0.95, 0, {"policy__setpoint_changed_ms": 1_000_000 - 60_000}, "rate limit"),
    (float("nan"), 0, {}, "not a finite setpoint"),
])
def test_guardrails_refuse(value, at_s, over, message):
    with pytest.raises(GuardrailError, match=message):
        check_guardrails(document(**over), value, at_s)


def test_guardrails_pass():
    check_guardrails(document(), 0.95)
    check_guardrails(document(), 1.05)
    check_guardrails(document(policy__setpoint_changed_ms=1_000_000 - 60_000), 0.95, 540.0)


def test_a_fault_asks_for_the_fastest_speed_that_lasts():
    doc = faulty()
    rec = recommend(doc, min_rul_s=4500.0, horizon_s=3 * 3600)
    assert rec["feasible"]
    assert 0.8 <= rec["fraction"] < 1.0
    assert rec["recommended"]["rul_s"] >= 4500.0
    # one percent faster would not last: the answer is the fastest that does
    faster = [c for c in rec["candidates"] if c["fraction"] > rec["fraction"] + 1e-9]
    assert round(faster[0]["fraction"] - rec["fraction"], 6) == 0.01
    assert not any(c["feasible"] for c in faster)
    assert rec["rul_gain"] == pytest.approx(rec["recommended"]["rul_s"] / 3000.0)
    assert rec["text"].startswith(f"derate to {rec['fraction']:.0%} speed: RUL 0.8 h -> ")
    # its first step is a guardrail-sized one
    assert rec["steps"][0] == (0.0, 0.95)


def test_no_constraint_keeps_the_asset_where_it_does_the_most():
    rec = recommend(document(), horizon_s=3600)
    assert rec["feasible"] and rec["fraction"] == 1.05  # the bounds' top: most speed
    limited = recommend(document(), limits={"vibration": 0.0033}, horizon_s=3600)
    assert limited["feasible"] and limited["fraction"] < 1.0
    assert limited["recommended"]["peaks"]["vibration"] <= 0.0033


def test_when_nothing_lasts_long_enough_the_longest_lived_is_named():
    rec = recommend(faulty(), min_rul_s=100 * 3600.0, horizon_s=3600)
    assert not rec["feasible"]
    assert any("RUL" in w for w in rec["why"])
    # the slowest speed whose answer does not extrapolate: a derating lengthens life here
    judged = [c for c in rec["candidates"] if not any("extrapolates" in w for w in c["why"])]
    assert rec["fraction"] == min(c["fraction"] for c in judged) < 1.0
    assert rec["text"].endswith("(no setpoint meets every constraint: the longest-lived one)")


def test_when_every_other_setpoint_extrapolates_nothing_moves():
    rec = recommend(faulty(fidelity__max_leverage=0.0101), min_rul_s=100 * 3600.0,
                    horizon_s=3600)
    assert rec["fraction"] == 1.0 and rec["steps"] == []
    assert "every other speed would be an extrapolation" in rec["text"]


def test_a_failed_asset_gets_no_setpoint():
    rec = recommend(faulty(health__health=0.05, health__level=0.05), min_rul_s=3600.0)
    assert not rec["feasible"] and rec["fraction"] == 1.0
    assert rec["why"] == ["health is at the failure level: maintain now"]
    assert setpoint_action(faulty(), rec) is None


def test_extrapolating_setpoints_are_refused_unless_allowed():
    doc = faulty(fidelity__max_leverage=0.0101)
    rec = recommend(doc, min_rul_s=4500.0, horizon_s=3600)
    assert all(not c["feasible"] and any("extrapolates" in w for w in c["why"])
               for c in rec["candidates"] if c["fraction"] != 1.0)
    allowed = recommend(doc, min_rul_s=4500.0, horizon_s=3600, allow_extrapolation=True)
    assert allowed["feasible"] and allowed["fraction"] < 1.0


def test_the_action_is_a_dry_run_setpoint_within_the_guardrails():
    doc = faulty()
    rec = recommend(doc, min_rul_s=4500.0, horizon_s=3600)
    a = setpoint_action(doc, rec)
    assert a["kind"] == "SETPOINT" and a["dry_run"] is True
    assert a["ts_ms"] == doc["ts_ms"] + 1
    assert a["action_id"] == f"motor-h:{doc['ts_ms'] + 1}:SETPOINT"
    assert a["setpoint_value"] == pytest.approx(0.95 * 150.0)
    assert a["setpoint_previous"] == pytest.approx(150.0)
    assert a["reason"].startswith("what-if recommendation: derate to")
    assert setpoint_action(doc, rec, dry_run=False)["dry_run"] is False
    from schemas import wire

    wire.encode("twin/action.v1", a)  # a valid action record


def test_an_action_the_rate_limit_forbids_now_is_refused():
    doc = faulty(policy__setpoint_changed_ms=1_000_000 - 60_000)
    rec = recommend(doc, min_rul_s=4500.0, horizon_s=3600)
    assert rec["steps"][0][0] == 540.0
    with pytest.raises(GuardrailError, match="rate limit"):
        setpoint_action(doc, rec)


def test_a_ramp_starts_from_what_the_asset_runs_at():
    # a dry-run policy commands nothing: its setpoint is what it would have commanded
    doc = faulty(policy__dry_run=True, policy__setpoint=0.85,
                 policy__setpoint_changed_ms=1_000_000)
    assert ramp(doc, 0.9) == [(0.0, 0.95), (600.0, 0.9)]  # measured 150/150, no rate wait
    # a command the asset does not follow (refused, not applied yet): from the measured
    doc = faulty(policy__setpoint=0.8, policy__setpoint_changed_ms=1_000_000)
    assert ramp(doc, 0.95) == [(0.0, 0.95)]
    # within half a step of the command: the policy's own setpoint and rate limit
    doc = faulty(policy__setpoint=0.98, policy__setpoint_changed_ms=1_000_000 - 60_000)
    assert ramp(doc, 0.93) == [(540.0, 0.93)]


def test_unknown_objective_or_limit():
    with pytest.raises(ModelError, match="no sensor 'flow'"):
        recommend(document(), objective="flow")
    with pytest.raises(ModelError, match="no sensor 'temp'"):
        recommend(document(), limits={"temp": 1.0})
    with pytest.raises(ModelError, match="no nominal"):
        recommend(document(policy__nominal=None))
