"""The fleet simulator: determinism, ground truth that matches what is emitted, defects."""

from __future__ import annotations

import hashlib
import math
from collections import Counter

import numpy as np
import pytest

from schemas import wire
from transforms.catalog import sensors_of
from transforms.errors import InvalidReading
from transforms.normalize import VENDORS, normalize_message
from transforms.simulator import FAULTS, Fleet, FleetConfig
from transforms.simulator.defects import malformed_kinds

START_MS = 1_795_800_000_000
HOUR_MS = 3_600_000


def fleet(**kw) -> Fleet:
    base = {"assets": 3, "duration_s": 3 * 3600, "seed": 1, "start_ms": START_MS}
    return Fleet(FleetConfig(**{**base, **kw}))


@pytest.fixture(scope="module")
def small():
    f = fleet(malformed_rate=0.03)
    return f, list(f.messages())


def digest(messages) -> str:
    h = hashlib.sha256()
    for m in messages:
        h.update(m.topic.encode() + m.key + m.value + str(m.arrival_ms).encode())
    return h.hexdigest()


def test_same_config_same_bytes_other_seed_other_bytes(small):
    f, messages = small
    assert digest(fleet(malformed_rate=0.03).messages()) == digest(messages)
    assert digest(fleet(malformed_rate=0.03, seed=2).messages()) != digest(messages)


def test_assets_alternate_types_and_vendors():
    f = fleet(assets=6)
    assert [a.asset_id for a in f.assets] == [
        "pump-000", "motor-001", "pump-002", "motor-003", "pump-004", "motor-005"]
    assert [a.vendor for a in f.assets] == ["helios", "kestrel", "orca"] * 2


def test_messages_arrive_in_order_on_their_vendor_topic(small):
    f, messages = small
    arrivals = [m.arrival_ms for m in messages]
    assert arrivals == sorted(arrivals)
    vendor_of = {a.asset_id: a.vendor for a in f.assets}
    for m in messages:
        assert m.topic == f"twin.raw.{m.vendor}" and vendor_of[m.key.decode()] == m.vendor
        assert m.arrival_ms >= m.event_ms or m.defect.startswith("malformed")


def test_ground_truth_counts_exactly_what_is_emitted(small):
    f, messages = small
    truth = f.ground_truth()
    assert truth["messages"] == dict(Counter(m.defect for m in messages))
    assert sum(truth["messages"].values()) == len(messages)
    n_samples = sum(1 for _ in f.samples())
    duplicated = truth["messages"].get("duplicate", 0) // 2
    assert len(messages) == n_samples - truth["dropouts"] + duplicated


def test_every_malformed_message_dead_letters_with_its_expected_reason(small):
    f, messages = small
    truth = f.ground_truth()
    reasons = Counter()
    for m in messages:
        try:
            normalize_message(m.value, now_ms=m.arrival_ms)
        except InvalidReading as exc:
            assert m.defect.startswith("malformed:"), (m.defect, exc)
            kind = m.defect.split(":", 1)[1]
            assert exc.reason == malformed_kinds(m.vendor)[kind], (kind, exc)
            reasons[exc.reason] += 1
        else:
            assert not m.defect.startswith("malformed:"), m.defect
    assert dict(reasons) == truth["expected_dead_letters"]
    assert sum(reasons.values()) == sum(
        v for k, v in truth["messages"].items() if k.startswith("malformed:"))


def test_defect_rates_follow_the_config():
    f = fleet(assets=4, duration_s=6 * 3600, malformed_rate=0.1, dropout_rate=0.05,
              duplicate_rate=0.05, out_of_order_rate=0.1, late_rate=0.05)
    counts, _, dropouts = f.message_counts()
    samples = sum(1 for _ in f.samples())
    malformed = sum(v for k, v in counts.items() if k.startswith("malformed:"))
    assert malformed / samples == pytest.approx(0.1, abs=0.015)
    assert dropouts / samples == pytest.approx(0.05, abs=0.01)
    assert counts["duplicate"] / 2 / samples == pytest.approx(0.05, abs=0.01)
    assert counts["out_of_order"] / samples == pytest.approx(0.1, abs=0.015)
    assert counts["late"] / samples == pytest.approx(0.05, abs=0.01)


def test_late_and_out_of_order_delays_are_what_they_say(small):
    _, messages = small
    delay = {d: [m.arrival_ms - m.event_ms for m in messages if m.defect == d]
             for d in ("clean", "out_of_order", "late")}
    assert max(delay["clean"]) <= 400
    assert delay["out_of_order"] and 1_000 <= min(delay["out_of_order"])
    assert max(delay["out_of_order"]) <= 20_000
    assert delay["late"] and min(delay["late"]) >= 180_000 and max(delay["late"]) <= 600_000


def test_duplicates_are_byte_identical_pairs(small):
    _, messages = small
    dups = Counter((m.key, m.value) for m in messages if m.defect == "duplicate")
    assert dups and set(dups.values()) == {2}


def test_every_kind_of_malformed_message_occurs_over_a_big_enough_run():
    f = fleet(assets=6, duration_s=6 * 3600, malformed_rate=0.2)
    counts, _, _ = f.message_counts()
    seen = {k.split(":", 1)[1] for k in counts if k.startswith("malformed:")}
    for vendor in VENDORS:
        missing = set(malformed_kinds(vendor)) - seen - {"oversize"}
        assert not missing, (vendor, missing)


def test_oversize_message_is_over_the_wire_limit():
    f = fleet(assets=3, duration_s=6 * 3600, malformed_rate=0.5)
    sizes = [len(m.value) for m in f.messages() if m.defect == "malformed:oversize"]
    assert sizes and min(sizes) > wire.DEFAULT_MAX_BYTES


def test_config_is_validated():
    with pytest.raises(ValueError, match="assets"):
        FleetConfig(assets=0)
    with pytest.raises(ValueError, match="malformed_rate"):
        FleetConfig(malformed_rate=1.5)
    with pytest.raises(ValueError, match="add up"):
        FleetConfig(malformed_rate=0.6, dropout_rate=0.6)
    for k in (0, 9):
        with pytest.raises(ValueError, match=r"sensors must be in \[1, 8\]"):
            FleetConfig(sensors=k)


def test_true_values_stay_within_the_catalog_ranges():
    f = fleet(assets=12, duration_s=6 * 3600, seed=3)
    lo_hi = {t: {s.name: (s.low, s.high) for s in sensors_of(t)} for t in ("pump", "motor")}
    n = 0
    for s in f.samples():
        for name, v in s.values.items():
            lo, hi = lo_hi[s.asset_type][name]
            assert math.isfinite(v) and lo <= v <= hi, (s.asset_id, name, v)
        n += 1
    assert n > 12 * 6 * 720 * 0.9


def test_setpoints_inside_the_interlock_change_speed_others_are_refused():
    f = fleet(assets=2, duration_s=3600)
    pump = f.assets[0]
    at = START_MS + 1_800_000
    assert f.apply_setpoint(pump.asset_id, "speed", 0.9 * pump.nominal_speed, at)[0]
    for args in ((pump.asset_id, "speed", 0.2 * pump.nominal_speed),
                 (pump.asset_id, "speed", float("nan")),
                 (pump.asset_id, "flow", 1.0),
                 ("pump-999", "speed", pump.nominal_speed)):
        ok, why = f.apply_setpoint(*args, at)
        assert not ok and why
    assert [e["accepted"] for e in f.setpoint_log] == [True, False, False, False, False]
    before, after = [], []
    for s in f.samples():
        if s.asset_id == pump.asset_id:
            (after if s.ts_ms >= at + 1000 else before).append(s)
    speed = lambda ss: np.mean([s.values["speed"] for s in ss])  # noqa: E731
    current = lambda ss: np.mean([s.values["motor_current"] for s in ss])  # noqa: E731
    assert speed(after) / speed(before) == pytest.approx(0.9, abs=0.01)
    assert current(after) < 0.85 * current(before)  # shaft power ~ speed^3


def test_faults_start_late_enough_and_regime_changes_keep_away_from_them():
    for seed in range(5):
        f = fleet(assets=12, duration_s=6 * 3600, seed=seed)
        truth = f.ground_truth()
        episodes = {e["asset_id"]: e for e in truth["fault_episodes"]}
        assert len(episodes) >= 6
        for e in episodes.values():
            assert e["fault"] in FAULTS
            assert e["start_ms"] >= START_MS + 1.5 * HOUR_MS
            assert e["start_ms"] < e["failure_ms"] < e["repaired_ms"] <= START_MS + 6 * HOUR_MS
            assert e["failure_ms"] - e["start_ms"] >= 30 * 60_000
        for r in truth["regime_changes"]:
            e = episodes.get(r["asset_id"])
            if e:
                assert not e["start_ms"] - 1_800_000 <= r["ts_ms"] <= e["repaired_ms"] + 1_800_000
        for a in f.assets:
            if a.asset_id in episodes:
                e = episodes[a.asset_id]
                down = [s for s in f.samples() if s.asset_id == a.asset_id
                        and e["failure_ms"] + 100 <= s.ts_ms < e["repaired_ms"] - 100]
                assert down == [], "a failed asset is down until repaired"
                break
