"""Fuzzing the whole normalize path: whatever arrives, the answer is a valid reading or an
``InvalidReading`` with a known reason, never any other exception."""

from __future__ import annotations

import io
import json
import math

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import schemas
from schemas import wire
from tests.transforms.normalize.samples import NOW_MS
from transforms.catalog import ASSET_TYPES, sensor
from transforms.errors import REASONS, InvalidReading
from transforms.normalize import VENDORS, encode_message, kestrel, normalize_message, orca
from transforms.sample import Sample
from transforms.units import from_si

MAX_FUTURE_MS = 5 * 60_000
MAX_AGE_MS = 366 * 86_400_000
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(payload: bytes) -> dict | str:
    """The reading, or the reason code; fails the test on anything else."""
    try:
        reading = normalize_message(payload, now_ms=NOW_MS)
    except InvalidReading as exc:
        assert exc.reason in REASONS
        return exc.reason
    check_reading(reading)
    return reading


def check_reading(reading: dict) -> None:
    assert reading["vendor"] in VENDORS
    assert reading["asset_type"] in ASSET_TYPES
    assert reading["asset_id"].strip() and reading["asset_id"].isprintable()
    assert NOW_MS - MAX_AGE_MS <= reading["ts_ms"] <= NOW_MS + MAX_FUTURE_MS
    assert reading["reading_id"] == f"{reading['vendor']}:{reading['asset_id']}:{reading['ts_ms']}"
    assert reading["values"]
    for name, value in reading["values"].items():
        s = sensor(reading["asset_type"], name)
        assert math.isfinite(value) and s.low <= value <= s.high
    assert reading["bad_quality"] == sorted(reading["bad_quality"])
    assert not set(reading["bad_quality"]) & set(reading["values"])
    fastavro.schemaless_writer(io.BytesIO(), schemas.load("twin/reading.v1"), reading)


def header(schema: str) -> bytes:
    return wire.HEADER.pack(wire.MAGIC, schemas.schema_id(schema))


def mostly(
    valid: st.SearchStrategy, anything: st.SearchStrategy, odds: int = 5
) -> st.SearchStrategy:
    """``anything`` one time in ``odds``, else ``valid``: fuzz the happy path too."""
    return st.integers(1, odds).flatmap(lambda i: anything if i == odds else valid)


def vendor_value(module, asset_type: str, tag: str, unit: str) -> st.SearchStrategy:
    """A plausible value of ``tag`` in vendor ``unit`` (a catalog-range SI value converted)."""
    s = sensor(asset_type, module.TAGS[asset_type][tag][0])
    return st.floats(s.low, s.high).map(lambda v: from_si(v, unit, s.unit))


@st.composite
def samples(draw):
    asset_type = draw(st.sampled_from(sorted(ASSET_TYPES)))
    catalog = ASSET_TYPES[asset_type]
    names = [s.name for s in catalog]
    chosen = draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names)))
    vals = {
        s.name: draw(
            mostly(st.floats(s.low, s.high), st.floats(allow_nan=True, allow_infinity=True))
        )
        for s in catalog
        if s.name in chosen
    }
    quality = draw(
        st.dictionaries(st.sampled_from(names), st.sampled_from(["good", "uncertain", "bad"]))
    )
    asset_id = draw(mostly(st.sampled_from([f"{asset_type}-1", "Ünit 7/b"]), st.text(max_size=20)))
    ts_ms = draw(
        mostly(
            st.integers(NOW_MS - 3_600_000, NOW_MS),
            st.integers(0, 4_000_000_000_000),
        )
    )
    return Sample(asset_id, asset_type, ts_ms, vals, quality)


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes(payload):
    assert isinstance(outcome(payload), str)  # random bytes are never a reading


@FUZZ
@given(st.sampled_from(sorted(VENDORS)), st.binary(max_size=512))
def test_arbitrary_body_after_a_vendor_header(vendor, body):
    outcome(header(VENDORS[vendor].SCHEMA) + body)


@FUZZ
@given(st.sampled_from(sorted(VENDORS)), samples(), st.data())
def test_mutated_valid_messages(vendor, sample, data):
    payload = bytearray(encode_message(vendor, sample))
    for _ in range(data.draw(st.integers(0, 4))):
        i = data.draw(st.integers(0, len(payload) - 1))
        payload[i] ^= 1 << data.draw(st.integers(0, 7))
    cut = data.draw(st.integers(0, len(payload)))
    outcome(bytes(payload[:cut]) if data.draw(st.booleans()) else bytes(payload))


@FUZZ
@given(st.sampled_from(sorted(VENDORS)), samples())
def test_random_floats_in_samples(vendor, sample):
    result = outcome(encode_message(vendor, sample))
    good = {n: v for n, v in sample.values.items() if sample.quality.get(n, "good") == "good"}
    in_window = NOW_MS - MAX_AGE_MS <= sample.ts_ms <= NOW_MS + MAX_FUTURE_MS
    if isinstance(result, dict):
        assert result["ts_ms"] == sample.ts_ms
        assert result["values"] == pytest.approx(good, rel=1e-9, abs=1e-12)
    elif any(not math.isfinite(v) for v in good.values()) and in_window:
        assert result in {"non_finite_value", "out_of_range", "bad_asset_id", "malformed_payload"}


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def kestrel_readings(draw, asset_type: str):
    tags = kestrel.TAGS[asset_type]
    readings = {}
    for name in draw(st.lists(st.sampled_from(sorted(tags)), unique=True, max_size=8)):
        unit = tags[name][1]
        entry = {
            "v": draw(mostly(vendor_value(kestrel, asset_type, name, unit), json_values, 20)),
            "u": draw(mostly(st.just(unit), json_values, 20)),
            "q": draw(mostly(st.sampled_from(["GOOD", "UNCERTAIN", "BAD"]), json_values, 20)),
        }
        if draw(st.integers(0, 19)) == 0:
            del entry[draw(st.sampled_from(["v", "u", "q"]))]
        readings[name] = entry
    if draw(st.integers(0, 19)) == 0:
        readings[draw(st.text(max_size=8))] = draw(json_values)
    return readings


@st.composite
def kestrel_documents(draw):
    asset_type = draw(st.sampled_from(sorted(ASSET_TYPES)))
    doc = {
        "assetId": draw(mostly(st.sampled_from(["pump-1", "motor 2"]), json_values, 10)),
        "assetClass": draw(mostly(st.just(asset_type), json_values, 10)),
        "time": draw(
            mostly(
                st.sampled_from(
                    [
                        "2026-11-28T07:59:54.750Z",
                        "2026-11-28T09:59:54.750+02:00",
                        "2026-11-28T02:59:54-05:00",
                    ]
                ),
                st.sampled_from(
                    [
                        "2026-11-28T07:59:54",
                        "1970-01-01T00:00:00Z",
                        "9999-12-31T23:59:59-14:00",
                        "0001-01-01T00:00+14:00",
                        "2026-11-28T08:10:00Z",
                    ]
                )
                | json_values,
            )
        ),
        "readings": draw(mostly(kestrel_readings(asset_type), json_values, 10)),
    }
    if draw(st.integers(0, 9)) == 0:
        del doc[draw(st.sampled_from(sorted(doc)))]
    return doc


@FUZZ
@given(
    mostly(
        kestrel_documents().map(lambda d: json.dumps(d).encode()),
        json_values.map(lambda d: json.dumps(d).encode()) | st.binary(max_size=200),
    ),
    mostly(
        st.just(kestrel.CONTENT_TYPE), st.sampled_from(["application/json", "text/plain", ""]), 10
    ),
)
def test_random_json_bodies_in_kestrel(body, content_type):
    record = {"source": "fuzz", "content_type": content_type, "body": body, "received_ms": None}
    outcome(wire.encode(kestrel.SCHEMA, record))


GARBAGE_CELL = st.text(max_size=6)


@st.composite
def orca_csv(draw):
    asset_type = draw(st.sampled_from(sorted(ASSET_TYPES)))
    tags = orca.TAGS[asset_type]
    asset_id = draw(mostly(st.sampled_from(["pump-1", "m 2"]), GARBAGE_CELL, 10))
    asset_class = draw(
        mostly(st.just({t: c for c, t in orca.ASSET_CLASSES.items()}[asset_type]), GARBAGE_CELL, 10)
    )
    epoch = draw(
        mostly(
            st.integers(NOW_MS - 3_600_000, NOW_MS).map(orca.format_epoch),
            st.sampled_from(["0.000", "-1", "1e9", "", "1795852795,250"])
            | st.decimals(allow_nan=False, places=3).map(str),
            10,
        )
    )
    rows = []
    for tag in draw(st.lists(st.sampled_from(sorted(tags)), unique=True, max_size=8)):
        unit = "rpm" if tag == "shaft_speed" and draw(st.booleans()) else tags[tag][1]
        cells = [
            asset_id,
            asset_class,
            epoch,
            draw(mostly(st.just(tag), GARBAGE_CELL, 30)),
            draw(
                mostly(
                    vendor_value(orca, asset_type, tag, unit).map(repr),
                    st.floats().map(repr)
                    | st.sampled_from(["", "1,5", "NaN", ".5", "1e400"])
                    | GARBAGE_CELL,
                    20,
                )
            ),
            draw(mostly(st.just(unit), GARBAGE_CELL, 30)),
            draw(mostly(st.sampled_from(["G", "U", "B"]), st.sampled_from(["X", "", "g"]), 30)),
        ]
        if draw(st.integers(0, 29)) == 0:
            cells = cells[: draw(st.integers(0, 6))]
        rows.append(";".join(cells))
    if draw(st.booleans()):
        rows.insert(0, orca.HEADER)
    return draw(st.sampled_from(["\n", "\r\n"])).join(rows)


@FUZZ
@given(mostly(orca_csv(), st.text(max_size=300)))
def test_random_csv_text_in_orca(csv):
    outcome(wire.encode(orca.SCHEMA, {"gateway": "fuzz", "seq": 0, "csv": csv}))


def test_fuzz_strategies_do_reach_valid_readings():
    """Guard against fuzzers that only ever exercise the error paths."""
    sample = Sample("pump-1", "pump", NOW_MS, {"flow": 0.05})
    for vendor in VENDORS:
        assert isinstance(outcome(encode_message(vendor, sample)), dict)
