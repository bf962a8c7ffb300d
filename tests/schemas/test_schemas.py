"""Every schema parses, has a unique id, round-trips, and evolves backward compatibly."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro
import pytest

import schemas
from schemas import wire
from transforms.errors import InvalidReading

TS = 1_795_852_800_000

FIXTURES: dict[str, dict[str, Any]] = {
    "twin/reading.v1": {
        "reading_id": f"helios:pump-1:{TS}",
        "asset_id": "pump-1",
        "asset_type": "pump",
        "vendor": "helios",
        "ts_ms": TS,
        "values": {"flow": 0.05, "bearing_temp": 330.15},
        "bad_quality": ["vibration"],
    },
    "twin/features.v1": {
        "asset_id": "pump-1",
        "asset_type": "pump",
        "window_start_ms": TS - 60_000,
        "window_end_ms": TS,
        "count": 60,
        "duplicates": 2,
        "features": {"flow.mean": 0.05, "flow.std": 0.001},
    },
    "twin/prediction.v1": {
        "prediction_id": f"pump-1:{TS}:prediction",
        "asset_id": "pump-1",
        "asset_type": "pump",
        "window_start_ms": TS - 60_000,
        "window_end_ms": TS,
        "anomaly_score": 0.97,
        "is_anomaly": True,
        "warming_up": False,
        "drift": True,
        "drift_sensors": ["flow"],
        "contributors": ["vibration.rms", "bearing_temp.slope"],
        "health_index": 0.42,
        "forecast_health": 0.3,
        "forecast_horizon_s": 3600,
        "rul_s": 86400.0,
        "alarm": True,
        "fidelity_error": 0.021,
        "fidelity_coverage": 0.9,
    },
    "twin/action.v1": {
        "action_id": f"pump-1:{TS}:SETPOINT",
        "asset_id": "pump-1",
        "kind": "SETPOINT",
        "ts_ms": TS,
        "severity": "warning",
        "reason": "vibration rising",
        "anomaly_score": 0.9,
        "health_index": 0.5,
        "rul_s": None,
        "setpoint_name": "speed",
        "setpoint_value": 140.0,
        "setpoint_previous": 155.0,
        "dry_run": True,
    },
    "twin/state.v1": {
        "asset_id": "motor-2",
        "asset_type": "motor",
        "ts_ms": TS,
        "values": {"current": 80.5},
        "health_index": 0.9,
        "anomaly_score": 0.1,
        "alert_open": False,
        "setpoints": {"speed": 150.0},
        "windows_seen": 1234,
        "drift_events": 3,
        "last_drift_ms": TS - 3_600_000,
        "model": "builtin-fleet@1",
        "fidelity_error": 0.021,
        "fidelity_coverage": 0.9,
        "learned": None,
    },
    "twin/deadletter.v1": {
        "stage": "decode",
        "reason": "bad_magic",
        "detail": "magic byte 7 != 0",
        "source": "kafka:raw.helios",
        "key": b"pump-1",
        "payload": b"\x07\x00\x01",
        "ts_ms": TS,
    },
}


def _plain(value: Any) -> Any:
    """Decoded timestamp-millis datetimes back to epoch ms, for comparison with fixtures."""
    if isinstance(value, datetime):
        return (value - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _example(schema: Any, named: dict[str, Any]) -> Any:
    """A valid value of any (raw JSON) Avro schema, for the generic compatibility checks."""
    if isinstance(schema, list):
        return _example(schema[-1], named)
    if isinstance(schema, str):
        if schema in named:
            return _example(named[schema], named)
        return {
            "null": None,
            "boolean": True,
            "int": 3,
            "long": 4,
            "float": 1.5,
            "double": 2.5,
            "bytes": b"x",
            "string": "s",
        }[schema]
    kind = schema["type"]
    if kind == "record":
        named[schema["name"]] = schema
        if "namespace" in schema:
            named[f"{schema['namespace']}.{schema['name']}"] = schema
        return {f["name"]: _example(f["type"], named) for f in schema["fields"]}
    if kind == "enum":
        named[schema["name"]] = schema
        return schema["symbols"][0]
    if kind == "array":
        return [_example(schema["items"], named)]
    if kind == "map":
        return {"k": _example(schema["values"], named)}
    if kind == "fixed":
        return b"\x00" * schema["size"]
    return _example(kind, named)  # {"type": "long", "logicalType": ...}


def _fields(schema: dict[str, Any]):
    """Every field of every record in ``schema``, nested ones included."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            for f in node.get("fields", []):
                yield f
                stack.append(f["type"])
            for key in ("items", "values"):
                if key in node:
                    stack.append(node[key])


def test_the_repo_has_twin_and_vendor_schemas():
    names = schemas.names()
    assert set(FIXTURES) <= set(names)
    assert {"vendor/helios_raw.v1", "vendor/kestrel_raw.v1", "vendor/orca_raw.v1"} <= set(names)


@pytest.mark.parametrize("name", schemas.names())
def test_schema_parses_and_follows_naming(name):
    parsed = schemas.load(name)
    domain, entity = name.split("/")
    assert parsed["type"] == "record" and parsed["name"].startswith("twin.")
    assert entity.rsplit(".", 1)[1][1:].isdigit() and entity.rsplit(".", 1)[1][0] == "v"
    assert schemas.by_id()[schemas.schema_id(name)] == name


def test_schema_ids_are_unique_and_stable():
    ids = [schemas.schema_id(n) for n in schemas.names()]
    assert len(set(ids)) == len(ids)
    assert all(0 < i < 2**31 for i in ids)
    assert schemas.schema_id("twin/reading.v1") == 1000342821  # crc32: never changes


def test_every_twin_schema_has_a_fixture():
    assert {n for n in schemas.names() if n.startswith("twin/")} == set(FIXTURES)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_round_trips_through_the_wire_format(name):
    payload = wire.encode(name, FIXTURES[name])
    assert payload[0] == 0 and int.from_bytes(payload[1:5], "big") == schemas.schema_id(name)
    decoded_name, record = wire.decode(payload)
    assert decoded_name == name
    assert _plain(record) == FIXTURES[name]


@pytest.mark.parametrize("name", schemas.names())
def test_optional_fields_have_defaults(name):
    for field in _fields(schemas.raw(name)):
        if isinstance(field["type"], list) and "null" in field["type"]:
            assert "default" in field, f"{name}: optional field {field['name']!r} has no default"
            assert field["type"][0] == "null" and field["default"] is None


@pytest.mark.parametrize("name", schemas.names())
def test_an_old_writer_without_defaulted_fields_is_readable(name):
    """Fields with defaults are the ones added after v1: a writer that predates them works."""
    current = schemas.raw(name)
    old = {**current, "fields": [f for f in current["fields"] if "default" not in f]}
    old_record = _example(old, {})
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(old), old_record)
    buf.seek(0)
    record = fastavro.schemaless_reader(buf, fastavro.parse_schema(old), schemas.load(name))
    for field in current["fields"]:
        if "default" in field:
            assert record[field["name"]] == field["default"]
        else:
            assert field["name"] in record


@pytest.mark.parametrize(
    ("payload", "reason", "kw"),
    [
        (b"", "empty_payload", {}),
        (b"\x00" * 101, "oversize_payload", {"max_bytes": 100}),
        (b"\x00\x00", "bad_magic", {}),
        (
            b"\x01" + schemas.schema_id("twin/reading.v1").to_bytes(4, "big") + b"\x00",
            "bad_magic",
            {},
        ),
        (b"\x00\x7f\xff\xff\xfe\x00", "unknown_schema", {}),
    ],
)
def test_wire_decode_framing_errors(payload, reason, kw):
    with pytest.raises(InvalidReading) as err:
        wire.decode(payload, **kw)
    assert err.value.reason == reason


def test_wire_decode_truncated_body_and_trailing_bytes():
    good = wire.encode("twin/reading.v1", FIXTURES["twin/reading.v1"])
    for payload in (good[:-3], good[:6], good + b"\x00"):
        with pytest.raises(InvalidReading) as err:
            wire.decode(payload)
        assert err.value.reason == "malformed_avro"
    assert wire.decode(good, max_bytes=len(good))[0] == "twin/reading.v1"
