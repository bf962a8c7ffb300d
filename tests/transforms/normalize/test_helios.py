"""Helios adapter: typed Avro frames, metric units, OPC quality bytes."""

from __future__ import annotations

import math
import random

import pytest

from schemas import wire
from tests.transforms.normalize.samples import NOW_MS, TS_MS, TYPICAL, typical
from transforms.errors import InvalidReading
from transforms.normalize import encode_message, helios, normalize_message


def frame(points, model="CP-200 pump", device="pump-001", ts_ms=TS_MS):
    return {"device": device, "model": model, "ts_ms": ts_ms, "points": points, "firmware": None}


def point(tag, value, unit, quality=192):
    return {"tag": tag, "value": value, "unit": unit, "quality": quality}


@pytest.mark.parametrize("asset_type", ["pump", "motor"])
@pytest.mark.parametrize("asset_id", ["x-1", "pump-003", "motor-017", "Ünit 7"])
def test_round_trip_returns_the_sample_in_si(asset_type, asset_id):
    sample = typical(asset_type, asset_id)
    reading = normalize_message(encode_message("helios", sample), now_ms=NOW_MS)
    assert reading["values"] == pytest.approx(TYPICAL[asset_type], rel=1e-9)
    assert set(reading["values"]) == set(TYPICAL[asset_type])
    assert reading["reading_id"] == f"helios:{asset_id}:{TS_MS}"
    assert (reading["asset_id"], reading["asset_type"]) == (asset_id, asset_type)
    assert (reading["vendor"], reading["ts_ms"], reading["bad_quality"]) == ("helios", TS_MS, [])


def test_encode_uses_helios_tags_units_and_models():
    rec = helios.encode(typical("pump"))
    by_tag = {p["tag"]: p for p in rec["points"]}
    assert set(by_tag) == set(helios.TAGS["pump"])
    assert by_tag["T_BRG"]["unit"] == "degC" and by_tag["T_BRG"]["value"] == pytest.approx(57.0)
    assert by_tag["P_DIS"]["unit"] == "bar" and by_tag["P_DIS"]["value"] == pytest.approx(6.0)
    assert by_tag["FLOW"]["unit"] == "m3/h" and by_tag["FLOW"]["value"] == pytest.approx(180.0)
    assert by_tag["VIB"]["value"] == pytest.approx(3.1)
    assert rec["model"] in helios.MODELS["pump"]
    assert helios.encode(typical("motor"))["model"].startswith("EM-")


def test_quality_flags_become_bad_quality_and_values_are_left_out():
    sample = typical("motor", torque="bad", voltage="uncertain")
    reading = normalize_message(encode_message("helios", sample), now_ms=NOW_MS)
    assert reading["bad_quality"] == ["torque", "voltage"]
    assert "torque" not in reading["values"] and "voltage" not in reading["values"]
    assert len(reading["values"]) == 6


@pytest.mark.parametrize(
    ("code", "quality"),
    [
        (0xC0, "good"),
        (0xD8, "good"),
        (0x40, "uncertain"),
        (0x54, "uncertain"),
        (0x00, "bad"),
        (0x18, "bad"),
        (0x80, "bad"),
    ],
)
def test_opc_quality_byte_uses_the_top_two_bits(code, quality):
    assert helios.quality_of(code) == quality


def test_all_points_bad_is_no_good_values():
    sample = typical("pump", **{s: "bad" for s in TYPICAL["pump"]})
    with pytest.raises(InvalidReading) as err:
        normalize_message(encode_message("helios", sample), now_ms=NOW_MS)
    assert err.value.reason == "no_good_values"


@pytest.mark.parametrize(
    ("tag", "value", "unit", "sensor", "si"),
    [
        ("T_BRG", 100.0, "degC", "bearing_temp", 373.15),
        ("P_DIS", 10.0, "bar", "discharge_pressure", 1.0e6),
        ("FLOW", 36.0, "m3/h", "flow", 0.01),
        ("VIB", 4.5, "mm/s", "vibration", 0.0045),
        ("SPD", 60.0, "rpm", "speed", 2 * math.pi),
        ("I_MOT", 12.5, "A", "motor_current", 12.5),
    ],
)
def test_metric_units_convert_to_si(tag, value, unit, sensor, si):
    reading = helios.normalize(frame([point(tag, value, unit)]))
    assert reading["values"] == {sensor: pytest.approx(si, rel=1e-12)}


def test_motor_torque_and_voltage():
    rec = frame([point("TRQ", -120.0, "N*m"), point("U_PH", 690.0, "V")], model="EM-110 motor")
    assert helios.normalize(rec)["values"] == {"torque": -120.0, "voltage": 690.0}


def test_a_pump_tag_on_a_motor_is_unknown():
    with pytest.raises(InvalidReading) as err:
        helios.normalize(frame([point("FLOW", 1.0, "m3/h")], model="EM-75 motor"))
    assert err.value.reason == "unknown_tag" and "FLOW" in err.value.detail


@pytest.mark.parametrize("kind", helios.CORRUPTIONS)
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("asset_type", ["pump", "motor"])
def test_each_corruption_ends_in_its_documented_reason(kind, seed, asset_type):
    record = helios.corrupt(helios.encode(typical(asset_type)), kind, random.Random(seed))
    payload = wire.encode(helios.SCHEMA, record)
    with pytest.raises(InvalidReading) as err:
        normalize_message(payload, now_ms=NOW_MS)
    assert err.value.reason == helios.CORRUPTION_REASON[kind]


def test_corrupt_leaves_the_original_record_alone():
    record = helios.encode(typical("pump"))
    before = repr(record)
    for kind in helios.CORRUPTIONS:
        helios.corrupt(record, kind, random.Random(0))
    assert repr(record) == before


def test_unknown_corruption_kind_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown helios corruption"):
        helios.corrupt(helios.encode(typical("pump")), "meteor_strike", random.Random(0))
