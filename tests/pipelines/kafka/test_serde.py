"""The schema-registry serde against a real HTTP registry (tests/.../registry_server.py)."""

from __future__ import annotations

import json
import pickle
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import schemas
from pipelines.kafka.broker import free_port
from pipelines.kafka.serde import (
    LocalSerde,
    RegistryError,
    RegistrySerde,
    RegistryUnavailable,
    make_serde,
    redact_url,
    subject_for,
)
from schemas import wire
from tests.schemas.test_schemas import FIXTURES
from transforms.errors import InvalidReading
from transforms.normalize import VENDORS, normalize_message
from transforms.sample import Sample

SAMPLE = Sample("pump-7", "pump", 1_795_860_005_250,
                {"flow": 0.05, "discharge_pressure": 4.2e5}, {})
FAST = {"max.retries": 0, "timeout": 2}  # a down registry is reported at once


def examples() -> dict[str, dict[str, Any]]:
    """A valid record of every schema in the repo: twin fixtures and each vendor's raw."""
    out = dict(FIXTURES)
    for module in VENDORS.values():
        out[module.SCHEMA] = module.encode(SAMPLE)
    assert set(out) == set(schemas.names())
    return out


def plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def framed_id(data: bytes) -> int:
    return wire.HEADER.unpack_from(data)[1]


def test_every_schema_round_trips_with_registry_ids(registry):
    serde = RegistrySerde(registry.url)
    ids = {}
    for name, record in examples().items():
        data = serde.encode(name, record)
        ids[name] = framed_id(data)
        got_name, got = serde.decode(data)
        assert got_name == name
        assert plain(got) == plain(record)
    # the registry handed out small sequential ids, not the local CRC ids
    assert sorted(ids.values()) == list(range(1, len(schemas.names()) + 1))
    assert all(ids[n] != schemas.schema_id(n) for n in ids)
    # one subject per record full name (RecordNameStrategy), holding that schema
    assert sorted(registry.state.subjects) == sorted(subject_for(n) for n in ids)
    assert registry.state.subjects["twin.prediction.Prediction"] == [ids["twin/prediction.v1"]]
    stored = json.loads(registry.state.schemas[ids["twin/action.v1"]]["schema"])
    assert stored == schemas.raw("twin/action.v1")


def test_ids_are_stable_across_instances_and_lookups_are_cached(registry):
    records = examples()
    first = RegistrySerde(registry.url)
    sent = {n: first.encode(n, r) for n, r in records.items()}
    registrations = [r for r in registry.state.requests if r[0] == "POST"]
    assert len(registrations) == len(records)  # each schema registered once ...
    for n, r in records.items():
        first.encode(n, r)
    assert [r for r in registry.state.requests if r[0] == "POST"] == registrations  # ... only

    second = RegistrySerde(registry.url)  # another process: same ids from the registry
    for n, r in records.items():
        assert framed_id(second.encode(n, r)) == framed_id(sent[n])
    third = RegistrySerde(registry.url)  # a pure reader: looks each id up, once
    for _ in range(3):
        for n, data in sent.items():
            assert third.decode(data)[0] == n
    lookups = [p for m, p in registry.state.requests if m == "GET"]
    assert sorted(lookups) == sorted(f"/schemas/ids/{framed_id(d)}" for d in sent.values())


def test_an_id_the_registry_does_not_know_is_unknown_schema_and_asked_once(registry):
    serde = RegistrySerde(registry.url)
    body = wire.encode("twin/state.v1", FIXTURES["twin/state.v1"])[wire.HEADER.size:]
    for _ in range(3):
        with pytest.raises(InvalidReading) as err:
            serde.decode(wire.HEADER.pack(0, 4242) + body)
        assert err.value.reason == "unknown_schema"
        assert "4242" in err.value.detail
    assert registry.state.requests.count(("GET", "/schemas/ids/4242")) == 1
    # locally framed bytes carry the local id, which this registry never issued
    with pytest.raises(InvalidReading) as err:
        serde.decode(wire.encode("twin/state.v1", FIXTURES["twin/state.v1"]))
    assert err.value.reason == "unknown_schema"


def test_someone_elses_schema_in_the_registry_is_unknown_schema(registry):
    other = {"type": "record", "name": "Invoice", "namespace": "acme",
             "fields": [{"name": "n", "type": "long"}]}
    sid = registry.state.add_raw(json.dumps(other))
    json_sid = registry.state.add_raw('{"type": "object"}', "JSON")
    serde = RegistrySerde(registry.url)
    for i, why in ((sid, "acme.Invoice"), (json_sid, "JSON")):
        with pytest.raises(InvalidReading) as err:
            serde.decode(wire.HEADER.pack(0, i) + b"\x02")
        assert err.value.reason == "unknown_schema" and why in err.value.detail


def test_an_older_writer_version_of_our_record_is_resolved_to_ours(registry):
    """Same full name, other fields: read with Avro schema resolution (defaults filled)."""
    current = schemas.raw("twin/state.v1")
    old = {**current, "fields": [f for f in current["fields"] if "default" not in f]}
    sid = registry.state.add_raw(json.dumps(old))
    import io

    import fastavro

    buf = io.BytesIO()
    buf.write(wire.HEADER.pack(0, sid))
    old_record = {k: v for k, v in FIXTURES["twin/state.v1"].items()
                  if k in {f["name"] for f in old["fields"]}}
    fastavro.schemaless_writer(buf, fastavro.parse_schema(old), old_record)
    name, record = RegistrySerde(registry.url).decode(buf.getvalue())
    assert name == "twin/state.v1"
    assert record["setpoints"] == {} and record["drift_events"] == 0
    assert record["last_drift_ms"] is None and record["windows_seen"] == 1234


BAD = [
    (None, "null_value", {}),  # a Kafka tombstone
    (b"", "empty_payload", {}),
    (b"\x00" * 101, "oversize_payload", {"max_bytes": 100}),
    (b"\x00\x00", "bad_magic", {}),
    (b"hello world", "bad_magic", {}),
    (b"\x01\x00\x00\x00\x01\x00", "bad_magic", {}),
]


@pytest.mark.parametrize(("payload", "reason", "kw"), BAD)
def test_bad_bytes_give_the_same_reasons_as_wire_decode(registry, payload, reason, kw):
    for decode in (RegistrySerde(registry.url).decode, wire.decode):
        with pytest.raises(InvalidReading) as err:
            decode(payload, **kw)
        assert err.value.reason == reason
    assert registry.state.requests == []  # framing errors never reach the registry


def test_corrupt_bodies_are_malformed_avro(registry):
    serde = RegistrySerde(registry.url)
    good = serde.encode("twin/reading.v1", FIXTURES["twin/reading.v1"])
    for payload in (good[:-3], good[:6], good + b"\x00"):
        with pytest.raises(InvalidReading) as err:
            serde.decode(payload)
        assert err.value.reason == "malformed_avro"
        assert err.value.detail.startswith("twin/reading.v1: ")
    assert serde.decode(good, max_bytes=len(good))[0] == "twin/reading.v1"


def test_registry_down_is_its_own_clear_error_not_a_dead_letter():
    url = f"http://user:s3cret@127.0.0.1:{free_port()}"
    serde = RegistrySerde(url, FAST)
    t0 = time.monotonic()
    with pytest.raises(RegistryUnavailable) as err:
        serde.encode("twin/action.v1", FIXTURES["twin/action.v1"])
    assert "cannot reach the schema registry" in str(err.value)
    assert "s3cret" not in str(err.value) and "user:***@127.0.0.1" in str(err.value)
    with pytest.raises(RegistryUnavailable) as err:
        serde.decode(wire.HEADER.pack(0, 7) + b"\x00")
    assert not isinstance(err.value, InvalidReading)
    assert "look up schema id 7" in str(err.value)
    assert time.monotonic() - t0 < 5


def test_registry_server_errors_are_unavailable_and_not_remembered(registry):
    writer = RegistrySerde(registry.url)
    data = writer.encode("twin/action.v1", FIXTURES["twin/action.v1"])
    reader = RegistrySerde(registry.url, FAST)
    registry.state.fail_with = 503
    with pytest.raises(RegistryUnavailable, match="HTTP status code 503"):
        reader.decode(data)
    registry.state.fail_with = 401
    with pytest.raises(RegistryError, match="refused") as err:
        reader.decode(data)
    assert not isinstance(err.value, RegistryUnavailable)
    registry.state.fail_with = None  # back up: the same message now decodes
    assert reader.decode(data)[0] == "twin/action.v1"


def test_normalize_message_takes_the_registry_decode(registry):
    serde = RegistrySerde(registry.url)
    helios = VENDORS["helios"]
    data = serde.encode(helios.SCHEMA, helios.encode(SAMPLE))
    now = SAMPLE.ts_ms + 1000
    reading = normalize_message(data, now_ms=now, decode=serde.decode)
    assert reading["reading_id"] == f"helios:pump-7:{SAMPLE.ts_ms}"
    assert reading["values"]["flow"] == pytest.approx(0.05)
    with pytest.raises(InvalidReading) as err:  # the default decoder knows only local ids
        normalize_message(data, now_ms=now)
    assert err.value.reason == "unknown_schema"
    with pytest.raises(InvalidReading) as err:  # and max_bytes reaches the given decoder
        normalize_message(data, now_ms=now, decode=serde.decode, max_bytes=len(data) - 1)
    assert err.value.reason == "oversize_payload"


def test_serde_pickles_for_beam_and_make_serde_picks_by_url(registry):
    serde = RegistrySerde(registry.url)
    data = serde.encode("twin/prediction.v1", FIXTURES["twin/prediction.v1"])
    clone = pickle.loads(pickle.dumps(serde))
    assert clone.decode(data)[1]["prediction_id"] == FIXTURES["twin/prediction.v1"][
        "prediction_id"]
    assert isinstance(make_serde(None), LocalSerde) and isinstance(make_serde(""), LocalSerde)
    made = make_serde(registry.url, {"max.retries": 1})
    assert isinstance(made, RegistrySerde) and made.conf["max.retries"] == 1
    with pytest.raises(RegistryError, match="bad schema registry settings"):
        RegistrySerde(registry.url, {"no.such.setting": 1}).encode(
            "twin/action.v1", FIXTURES["twin/action.v1"])
    assert redact_url("https://u:p@h:8081,http://h2") == "https://u:***@h:8081,http://h2"
