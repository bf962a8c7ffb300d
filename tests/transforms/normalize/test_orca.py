"""Orca adapter: semicolon CSV inside Avro, K/kPa/l/s, Hz or rpm, epoch seconds."""

from __future__ import annotations

import math
import random

import pytest

from schemas import wire
from tests.transforms.normalize.samples import NOW_MS, TS_MS, TYPICAL, typical
from transforms.errors import InvalidReading
from transforms.normalize import encode_message, normalize_message, orca

EPOCH = orca.format_epoch(TS_MS)


def record(*rows, header=True):
    lines = ([orca.HEADER] if header else []) + list(rows)
    return {"gateway": "orca-gw-01", "seq": 7, "csv": "\n".join(lines)}


def row(tag, value, unit, quality="G", asset="pump-001", cls="centrifugal_pump", epoch=EPOCH):
    return f"{asset};{cls};{epoch};{tag};{value};{unit};{quality}"


def reason_of(rec):
    with pytest.raises(InvalidReading) as err:
        normalize_message(wire.encode(orca.SCHEMA, rec), now_ms=NOW_MS)
    return err.value.reason


@pytest.mark.parametrize("asset_type", ["pump", "motor"])
@pytest.mark.parametrize("asset_id", [f"asset-{i}" for i in range(6)])
def test_round_trip_returns_the_sample_in_si(asset_type, asset_id):
    sample = typical(asset_type, asset_id)
    reading = normalize_message(encode_message("orca", sample), now_ms=NOW_MS)
    assert reading["values"] == pytest.approx(TYPICAL[asset_type], rel=1e-9)
    assert reading["ts_ms"] == TS_MS
    assert reading["reading_id"] == f"orca:{asset_id}:{TS_MS}"
    assert (reading["asset_type"], reading["vendor"], reading["bad_quality"]) == (
        asset_type,
        "orca",
        [],
    )


def test_encode_writes_one_row_per_sensor_after_a_header():
    lines = orca.encode(typical("motor"))["csv"].split("\n")
    assert lines[0] == orca.HEADER
    assert len(lines) == 1 + len(TYPICAL["motor"])
    cells = {ln.split(";")[3]: ln.split(";") for ln in lines[1:]}
    assert cells["t_winding"][:3] == ["motor-001", "induction_motor", EPOCH]
    assert cells["t_winding"][4:] == ["360.0", "K", "G"]
    assert cells["shaft_speed"][5] in ("Hz", "rpm")


def test_both_speed_units_occur_across_a_fleet():
    units = set()
    for i in range(20):
        csv = orca.encode(typical("pump", f"pump-{i}"))["csv"]
        units |= {ln.split(";")[5] for ln in csv.split("\n") if ";shaft_speed;" in ln}
    assert units == {"Hz", "rpm"}


@pytest.mark.parametrize(
    ("tag", "value", "unit", "sensor", "si"),
    [
        ("t_bearing", "373.15", "K", "bearing_temp", 373.15),
        ("p_out", "689.4757", "kPa", "discharge_pressure", 689475.7),
        ("p_in", "-20", "kPa", "suction_pressure", -20000.0),
        ("flow", "12.5", "l/s", "flow", 0.0125),
        ("vib_rms", "2.5", "mm/s", "vibration", 0.0025),
        ("shaft_speed", "1", "Hz", "speed", 2 * math.pi),
        ("shaft_speed", "60", "rpm", "speed", 2 * math.pi),
        ("shaft_speed", "24.75", "Hz", "speed", 24.75 * 2 * math.pi),
        ("amps", "1.5e2", "A", "motor_current", 150.0),
    ],
)
def test_units_convert_to_si(tag, value, unit, sensor, si):
    assert orca.normalize(record(row(tag, value, unit)))["values"] == {
        sensor: pytest.approx(si, rel=1e-12)
    }


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("1795860005.250", 1795860005250),
        ("1795860005.25", 1795860005250),
        ("1795860005", 1795860005000),
        ("0.001", 1),
        ("-0.001", -1),
        ("1795860005.999", 1795860005999),
    ],
)
def test_epoch_seconds_are_read_exactly(text, ms):
    assert orca.parse_epoch(text) == ms


@pytest.mark.parametrize("ts_ms", [0, 1, -1, -999, -1000, TS_MS, 10**12 - 1])
def test_format_and_parse_epoch_are_inverse(ts_ms):
    assert orca.parse_epoch(orca.format_epoch(ts_ms)) == ts_ms


@pytest.mark.parametrize(
    "text", ["1795860005.2500", "1e9", "2026-11-22", "", " 1795860005", "0x10", "1_000"]
)
def test_bad_epochs(text):
    with pytest.raises(InvalidReading) as err:
        orca.parse_epoch(text)
    assert err.value.reason == "bad_timestamp"


def test_quality_letters_and_empty_bad_values():
    rec = record(
        row("amps", "40", "A"),
        row("t_bearing", "", "K", "B"),
        row("vib_rms", "3.0", "mm/s", "U"),
    )
    reading = orca.normalize(rec)
    assert reading["values"] == {"motor_current": 40.0}
    assert reading["bad_quality"] == ["bearing_temp", "vibration"]


def test_crlf_blank_lines_and_missing_header_are_tolerated():
    rec = {
        "gateway": "g",
        "seq": 1,
        "csv": row("amps", "40", "A") + "\r\n\r\n" + row("flow", "10", "l/s") + "\r\n",
    }
    assert orca.normalize(rec)["values"] == {"motor_current": 40.0, "flow": 0.01}


@pytest.mark.parametrize(
    ("rec", "reason"),
    [
        (record(), "malformed_payload"),
        (record(row("amps", "4 0", "A")), "malformed_payload"),
        (record(row("amps", "", "A")), "missing_field"),
        (record(row("amps", "nan", "A")), "non_finite_value"),
        (record(row("amps", "-inf", "A")), "non_finite_value"),
        (record(row("amps", "1e999", "A")), "non_finite_value"),
        (record(row("amps", "4000", "A")), "out_of_range"),
        (record(row("amps", "40", "A"), row("amps", "41", "A")), "malformed_payload"),
        (
            record(row("amps", "40", "A"), row("flow", "1", "l/s", epoch="1795860006.000")),
            "malformed_payload",
        ),
        (record(row("amps", "40", "A", cls="pump")), "unknown_asset_type"),
        (record(row("t_winding", "300", "K")), "unknown_tag"),
        (record(row("t_bearing", "300", "kPa")), "unknown_unit"),
        (record(row("t_bearing", "300", "K", asset="")), "bad_asset_id"),
        (record(row("amps", "40", "A", epoch="1.000")), "timestamp_too_old"),
        (record(row("amps", "40", "A", epoch="99999999999.000")), "timestamp_in_future"),
    ],
)
def test_record_errors(rec, reason):
    assert reason_of(rec) == reason


@pytest.mark.parametrize("kind", orca.CORRUPTIONS)
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("asset_type", ["pump", "motor"])
def test_each_corruption_ends_in_its_documented_reason(kind, seed, asset_type):
    sample = typical(asset_type, f"{asset_type}-{seed}")
    rec = orca.corrupt(orca.encode(sample), kind, random.Random(seed))
    assert reason_of(rec) == orca.CORRUPTION_REASON[kind]
