"""Kestrel adapter: JSON documents in an Avro envelope, imperial units, ISO times."""

from __future__ import annotations

import json
import math
import random
from datetime import timedelta

import pytest

from schemas import wire
from tests.transforms.normalize.samples import NOW_MS, TS_MS, TYPICAL, typical
from transforms.errors import InvalidReading
from transforms.normalize import encode_message, kestrel, normalize_message


def envelope(document, content_type=kestrel.CONTENT_TYPE):
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    return {
        "source": "kestrel-cloud/site-1",
        "content_type": content_type,
        "body": body,
        "received_ms": None,
    }


def doc(readings, asset_class="pump", time="2026-11-28T07:59:54.750Z", asset_id="pump-001"):
    return {"assetId": asset_id, "assetClass": asset_class, "time": time, "readings": readings}


def reason_of(record):
    with pytest.raises(InvalidReading) as err:
        normalize_message(wire.encode(kestrel.SCHEMA, record), now_ms=NOW_MS)
    return err.value.reason


@pytest.mark.parametrize("asset_type", ["pump", "motor"])
@pytest.mark.parametrize("asset_id", [f"asset-{i}" for i in range(8)])
def test_round_trip_returns_the_sample_in_si(asset_type, asset_id):
    sample = typical(asset_type, asset_id)
    reading = normalize_message(encode_message("kestrel", sample), now_ms=NOW_MS)
    assert reading["values"] == pytest.approx(TYPICAL[asset_type], rel=1e-9)
    assert reading["ts_ms"] == TS_MS
    assert reading["reading_id"] == f"kestrel:{asset_id}:{TS_MS}"
    assert (reading["asset_type"], reading["vendor"], reading["bad_quality"]) == (
        asset_type,
        "kestrel",
        [],
    )


def test_assets_report_in_varied_utc_offsets():
    times = {
        json.loads(kestrel.encode(typical("pump", f"pump-{i:03d}"))["body"])["time"][-6:]
        for i in range(40)
    }
    assert len(times) >= 4  # e.g. {'+02:00', '-05:00', '.750Z', ...}


def test_encode_uses_imperial_units():
    body = json.loads(kestrel.encode(typical("pump"))["body"])
    r = body["readings"]
    assert r["bearing_temperature"]["u"] == "degF"
    assert r["bearing_temperature"]["v"] == pytest.approx(134.6)  # 330.15 K = 57 degC
    assert r["discharge_pressure"] == {
        "v": pytest.approx(87.0226, rel=1e-5),
        "u": "psi",
        "q": "GOOD",
    }
    assert r["flow_rate"]["u"] == "gpm"
    assert r["flow_rate"]["v"] == pytest.approx(792.5161, rel=1e-6)  # 0.05 m3/s
    assert body["assetClass"] == "pump"


@pytest.mark.parametrize(
    ("name", "value", "unit", "sensor", "si"),
    [
        ("bearing_temperature", 212.0, "degF", "bearing_temp", 373.15),
        ("ambient_temperature", 32.0, "degF", "ambient_temp", 273.15),
        ("discharge_pressure", 100.0, "psi", "discharge_pressure", 689475.7293168),
        ("vibration_velocity", 1.0, "in/s", "vibration", 0.0254),
        ("flow_rate", 1.0, "gpm", "flow", 6.30901964e-5),
        ("shaft_speed", 60.0, "rpm", "speed", 2 * math.pi),
        ("motor_current", 20.0, "A", "motor_current", 20.0),
    ],
)
def test_imperial_units_convert_to_si(name, value, unit, sensor, si):
    reading = kestrel.normalize(envelope(doc({name: {"v": value, "u": unit, "q": "GOOD"}})))
    assert reading["values"] == {sensor: pytest.approx(si, rel=1e-12)}


def test_motor_torque_in_pound_feet():
    rec = envelope(doc({"shaft_torque": {"v": 100.0, "u": "lbf*ft"}}, asset_class="motor"))
    assert kestrel.normalize(rec)["values"] == {"torque": pytest.approx(135.58179483314)}


@pytest.mark.parametrize(
    ("text", "utc_ms"),
    [
        ("2026-11-22T10:00:05.250+02:00", 1795334405250),
        ("2026-11-22T03:00:05.250-05:00", 1795334405250),
        ("2026-11-22T08:00:05.250Z", 1795334405250),
        ("2026-11-22T08:00:05.250+00:00", 1795334405250),
        ("2026-11-22T13:30:05.250+05:30", 1795334405250),
        ("2026-11-22T08:00:05Z", 1795334405000),
        ("2026-11-22T08:00:05.250999Z", 1795334405250),  # sub-ms truncated
        ("1970-01-01T00:00:00.001Z", 1),
        ("1969-12-31T23:59:59.999Z", -1),
    ],
)
def test_iso_offsets_give_utc_epoch_ms(text, utc_ms):
    assert kestrel.parse_time(text) == utc_ms


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-22T10:00:05.250",
        "2026-11-22",
        "yesterday",
        "",
        "2026-02-30T00:00Z",
        17,
        None,
        "0001-01-01T00:00:00+14:00",
    ],
)
def test_bad_times(text):
    with pytest.raises(InvalidReading) as err:
        kestrel.parse_time(text)
    assert err.value.reason == "bad_timestamp"


@pytest.mark.parametrize("ts_ms", [0, TS_MS, -1, 1, 999, 253402300799999 - 86_400_000])
@pytest.mark.parametrize("minutes", [0, 120, -300, 330, -210])
def test_format_and_parse_time_are_inverse(ts_ms, minutes):
    assert kestrel.parse_time(kestrel.format_time(ts_ms, timedelta(minutes=minutes))) == ts_ms


def test_quality_codes_and_null_values_of_bad_readings():
    rec = envelope(
        doc(
            {
                "motor_current": {"v": 20.0, "u": "A", "q": "GOOD"},
                "shaft_speed": {"v": None, "u": "rpm", "q": "BAD"},
                "bearing_temperature": {"v": 150.0, "u": "degF", "q": "UNCERTAIN"},
                "ambient_temperature": {"v": 68.0, "u": "degF"},  # no q: good
            }
        )
    )
    reading = kestrel.normalize(rec)
    assert reading["bad_quality"] == ["bearing_temp", "speed"]
    assert reading["values"] == {"motor_current": 20.0, "ambient_temp": pytest.approx(293.15)}


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (envelope(b"{}"), "missing_field"),
        (envelope(b"[1, 2]"), "malformed_payload"),
        (envelope(b"\xef\xbb\xbf{}"), "malformed_payload"),  # BOM is not JSON
        (envelope(doc({}, asset_class=None)), "missing_field"),
        (envelope(doc({}, asset_id=42)), "bad_asset_id"),
        (envelope(doc([])), "malformed_payload"),
        (envelope(doc({"flow_rate": 3})), "malformed_payload"),
        (envelope(doc({"flow_rate": {"v": 3}})), "missing_field"),
        (envelope(doc({"flow_rate": {"v": None, "u": "gpm"}})), "missing_field"),
        (envelope(doc({"flow_rate": {"v": True, "u": "gpm"}})), "malformed_payload"),
        (envelope(doc({"flow_rate": {"v": 1.0, "u": "gpm", "q": "OK"}})), "malformed_payload"),
        (envelope(doc({"flow_rate": {"v": 1e400, "u": "gpm"}})), "non_finite_value"),
        (envelope(doc({"flow_rate": {"v": 10**400, "u": "gpm"}})), "non_finite_value"),
        (envelope(b'{"a": NaN}', content_type="text/plain"), "malformed_payload"),
        (envelope(b"[" * 100_000), "malformed_payload"),
        (envelope(doc({"flow_rate": {"v": 1.0, "u": "gpm"}}), "application/json"), None),
        (
            envelope(doc({"flow_rate": {"v": 1.0, "u": "gpm"}}), "Application/JSON; charset=UTF-8"),
            None,
        ),
    ],
)
def test_document_errors(record, reason):
    if reason is None:
        assert normalize_message(wire.encode(kestrel.SCHEMA, record), now_ms=NOW_MS)["values"]
    else:
        assert reason_of(record) == reason


def test_json_nan_is_read_and_refused_by_validation():
    body = (
        b'{"assetId": "p", "assetClass": "pump", "time": "2026-11-28T07:59:00Z",'
        b' "readings": {"flow_rate": {"v": NaN, "u": "gpm"}}}'
    )
    assert reason_of(envelope(body)) == "non_finite_value"


@pytest.mark.parametrize("kind", kestrel.CORRUPTIONS)
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("asset_type", ["pump", "motor"])
def test_each_corruption_ends_in_its_documented_reason(kind, seed, asset_type):
    sample = typical(asset_type, f"{asset_type}-{seed}")
    record = kestrel.corrupt(kestrel.encode(sample), kind, random.Random(seed))
    assert reason_of(record) == kestrel.CORRUPTION_REASON[kind]
