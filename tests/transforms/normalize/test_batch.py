"""normalize_batch (columns, many messages at once) judges every message exactly as
normalize_message judges it alone: same readings, same dead-letter reasons and details."""

from __future__ import annotations

import random

import pytest

from schemas import wire
from tests.transforms.normalize.samples import NOW_MS, typical
from transforms.errors import InvalidReading
from transforms.normalize import VENDORS, encode_message, normalize_batch, normalize_message
from transforms.simulator import Fleet, FleetConfig


def one_by_one(payloads, nows, clock_ms=None):
    out = []
    for p, now in zip(payloads, nows, strict=True):
        try:
            out.append(normalize_message(p, now_ms=now, clock_ms=clock_ms))
        except InvalidReading as exc:
            out.append((exc.reason, exc.detail))
    return out


def check_same(payloads, nows, clock_ms=None):
    ref = one_by_one(payloads, nows, clock_ms)
    blocks, rejects = normalize_batch(payloads, nows, clock_ms=clock_ms)
    rejected = {i: (e.reason, e.detail) for i, e in rejects}
    assert all(isinstance(e, InvalidReading) for _, e in rejects)
    assert rejected == {i: r for i, r in enumerate(ref) if isinstance(r, tuple)}
    for asset_type, block in blocks.items():
        want = [r for r in ref if isinstance(r, dict) and r["asset_type"] == asset_type]
        assert [block.reading(k) for k in range(len(block))] == want
    assert sum(len(b) for b in blocks.values()) + len(rejects) == len(payloads)
    return ref


def test_a_fleet_with_every_kind_of_bad_message():
    cfg = FleetConfig(assets=12, duration_s=900, interval_s=5, seed=11, malformed_rate=0.25,
                      dropout_rate=0.05, duplicate_rate=0.02)
    msgs = list(Fleet(cfg).messages())
    ref = check_same([m.value for m in msgs], [m.arrival_ms for m in msgs])
    reasons = {r[0] for r in ref if isinstance(r, tuple)}
    assert len(reasons) >= 8 and sum(isinstance(r, dict) for r in ref) > len(ref) // 2


@pytest.mark.parametrize("vendor", sorted(VENDORS))
def test_every_corruption_kind_and_quality_mix(vendor):
    module = VENDORS[vendor]
    rng = random.Random(5)
    payloads = []
    for asset_type in ("pump", "motor"):
        for k, kind in enumerate(module.CORRUPTIONS * 3):
            sample = typical(asset_type, f"{asset_type}-{k % 4}")
            good = module.encode(sample)
            payloads.append(encode_message(vendor, sample))
            payloads.append(wire.encode(module.SCHEMA, module.corrupt(good, kind, rng)))
        # mixed quality: a bad and an uncertain sensor
        names = list(typical(asset_type).values)
        payloads.append(encode_message(vendor, typical(asset_type, **{names[0]: "bad",
                                                                      names[3]: "uncertain"})))
    nows = [NOW_MS] * len(payloads)
    ref = check_same(payloads, nows)
    assert {r[0] for r in ref if isinstance(r, tuple)} >= set(module.CORRUPTION_REASON.values())


def test_clock_decides_per_message():
    payloads = [encode_message("helios", typical("pump")) for _ in range(4)]
    nows = [NOW_MS, NOW_MS - 10 * 60_000, NOW_MS + 400 * 86_400_000, NOW_MS]
    ref = check_same(payloads, nows)
    assert [r if isinstance(r, dict) else r[0] for r in ref][1:3] == [
        "timestamp_in_future", "timestamp_too_old"]


def test_the_machine_clock_judges_every_path_alike():
    """Messages of known devices are read as columns through frame templates; forged
    copies of them (event time and arrival 10 days ahead, same frame widths) fit those
    templates, and are refused by this machine's clock exactly as alone."""
    from transforms.sample import Sample

    cfg = FleetConfig(assets=6, duration_s=1200, interval_s=5, seed=2, malformed_rate=0.0)
    msgs = [m for m in Fleet(cfg).messages() if m.defect == "clean"]
    clock = max(m.arrival_ms for m in msgs) + 60_000
    normalize_batch([m.value for m in msgs], [m.arrival_ms for m in msgs], clock_ms=clock)
    ahead = 10 * 86_400_000
    forged, forged_nows = [], []
    for m in msgs[::25]:  # every vendor and device, its templates learned above
        r = normalize_message(m.value, now_ms=m.arrival_ms)
        forged.append(encode_message(m.vendor, Sample(r["asset_id"], r["asset_type"],
                                                      r["ts_ms"] + ahead, r["values"])))
        forged_nows.append(m.arrival_ms + ahead)
    payloads = [m.value for m in msgs] + forged
    nows = [m.arrival_ms for m in msgs] + forged_nows
    ref = check_same(payloads, nows, clock_ms=clock)
    assert {r[0] for r in ref[len(msgs):]} == {"timestamp_in_future"}
    assert all(isinstance(r, dict) for r in ref[:len(msgs)])
    assert {m.vendor for m in msgs[::25]} == set(VENDORS)
    # without the clock they pass: the arrival time alone cannot tell
    assert all(isinstance(r, dict) for r in check_same(forged, forged_nows))


def test_lengths_must_match():
    with pytest.raises(ValueError, match="clocks"):
        normalize_batch([b""], [])


def test_blocks_come_in_the_order_their_asset_types_first_appear():
    """Whatever the hash seed (a set used to decide it), so runs are reproducible."""
    from transforms.catalog import ASSET_TYPES

    types = sorted(ASSET_TYPES, reverse=True)
    payloads = [encode_message("orca", typical(t, f"{t}-1")) for t in types]
    payloads += [encode_message("helios", typical(t, f"{t}-2")) for t in reversed(types)]
    blocks, rejects = normalize_batch(payloads, [NOW_MS] * len(payloads))
    assert rejects == [] and list(blocks) == types
    assert [len(b) for b in blocks.values()] == [2] * len(types)


def test_a_null_value_is_its_own_dead_letter_and_the_rest_of_the_batch_goes_on():
    """A Kafka tombstone has no value at all (``None``, not empty bytes)."""
    good = encode_message("helios", typical("pump"))
    payloads = [good, None, good, b""]
    ref = check_same(payloads, [NOW_MS] * len(payloads))
    assert ref[1] == ("null_value", wire.NULL_VALUE_DETAIL) and "tombstone" in ref[1][1]
    assert ref[3][0] == "empty_payload"
    assert isinstance(ref[0], dict) and isinstance(ref[2], dict)
