"""Data formats read by the generic adapter: JSON, CSV lines, Avro; wide and long; every
dead-letter reason; and the batch path judging as the one-message path does."""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path

import fastavro
import pytest

from transforms import catalog
from transforms.errors import InvalidReading
from transforms.formats import check_against, load_format, parse_format
from transforms.model import ModelError, load_model
from transforms.normalize import generic, normalize_batch, normalize_message

EXAMPLE = Path(__file__).resolve().parents[3] / "docs" / "examples" / "compressor"
NOW = 1_796_119_200_000  # 2026-12-01T10:00:00Z
GOOD = {"device": "comp-7", "ts": "2026-12-01T10:00:00Z", "p_bar": 7.1, "t_c": 65.2,
        "vib": 2.3, "amps": 41.0}


@pytest.fixture(scope="module")
def model():
    m = load_model(EXAMPLE / "compressor.model.yaml")
    catalog.use(m)
    return m


def adapter_of(text: str, model, tmp_path, name="f.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    fmt = load_format(path)
    check_against(fmt, model)
    return generic.register(fmt, model)


def judge(adapter, payload: bytes):
    try:
        return normalize_message(payload, now_ms=NOW, decode=adapter.decode)
    except InvalidReading as exc:
        return exc.reason


def test_the_compressor_example_reads_plain_json(model):
    fmt = load_format(EXAMPLE / "compressor.format.yaml")
    check_against(fmt, model)
    a = generic.register(fmt, model)
    r = judge(a, json.dumps(GOOD).encode())
    assert r["asset_id"] == "comp-7" and r["asset_type"] == "compressor"
    assert r["ts_ms"] == NOW and r["reading_id"] == f"compressor-json:comp-7:{NOW}"
    assert r["values"] == pytest.approx({"p_bar": 7.1, "t_c": 65.2, "vib": 2.3, "amps": 41.0})
    assert generic.adapter_for_topic("plant.comp7/2@1234") is a


@pytest.mark.parametrize("change, reason", [
    ({}, None),
    ({"ts": "yesterday"}, "bad_timestamp"),
    ({"ts": None}, "missing_field"),
    ({"device": None}, "missing_field"),
    ({"device": ["x"]}, "bad_asset_id"),
    ({"device": "fan-1"}, "unknown_asset_type"),
    ({"p_bar": 700}, "out_of_range"),
    ({"p_bar": "n/a"}, "malformed_payload"),
    ({"ts": "2026-12-03T10:00:00Z"}, "timestamp_in_future"),
])
def test_each_fault_of_a_json_message_is_its_reason(model, change, reason):
    a = generic.register(load_format(EXAMPLE / "compressor.format.yaml"), model)
    got = judge(a, json.dumps({**GOOD, **change}).encode())
    assert (got if isinstance(got, str) else None) == reason


@pytest.mark.parametrize("payload, reason", [
    (b"", "empty_payload"), (b"{not json", "malformed_payload"), (b"[1, 2]", "malformed_payload"),
    (b"\xff\xfe", "malformed_payload"), (b"x" * (2 << 20), "oversize_payload")])
def test_broken_bytes_are_named(model, payload, reason):
    a = generic.register(load_format(EXAMPLE / "compressor.format.yaml"), model)
    assert judge(a, payload) == reason


def test_the_batch_path_judges_as_the_one_message_path(model):
    a = generic.register(load_format(EXAMPLE / "compressor.format.yaml"), model)
    payloads = [json.dumps({**GOOD, "ts": f"2026-12-01T09:{m:02d}:00Z", "vib": 2 + m / 100})
                .encode() for m in range(40)]
    payloads += [b"", json.dumps({**GOOD, "p_bar": 700}).encode(), b"nope",
                 json.dumps({**GOOD, "device": "fan-1"}).encode()]
    blocks, rejects = normalize_batch(payloads, [NOW] * len(payloads), decode=a.decode)
    assert [(i, e.reason) for i, e in rejects] == [
        (40, "empty_payload"), (41, "out_of_range"), (42, "malformed_payload"),
        (43, "unknown_asset_type")]
    block = blocks["compressor"]
    assert block.values.shape == (40, 4)
    for k in (0, 17, 39):
        alone = normalize_message(payloads[k], now_ms=NOW, decode=a.decode)
        assert block.ts_ms[k] == alone["ts_ms"]
        assert list(block.values[k]) == [alone["values"][s] for s in ("p_bar", "amps", "t_c",
                                                                      "vib")]


def test_csv_lines_epoch_seconds_and_a_local_zone(model, tmp_path):
    a = adapter_of("""\
        format: comp-csv
        version: 1
        encoding: csv
        csv: {columns: [id, when, pressure_psi, temp_f, vib, current], delimiter: ";"}
        asset: id
        asset_type: compressor
        time: {field: when, format: "%d.%m.%Y %H:%M:%S", zone: Europe/Berlin}
        values:
          p_bar: {field: pressure_psi, unit: psi}
          t_c:   {field: temp_f, unit: degF}
          vib:   {field: vib, unit: mm/s}
          amps:  {field: current, unit: A}
        """, model, tmp_path)
    r = judge(a, b"comp-7;01.12.2026 11:00:00;100;212;2.5;40")
    assert r["ts_ms"] == NOW  # 11:00 in Berlin is 10:00 UTC
    assert r["values"]["p_bar"] == pytest.approx(6.894757, rel=1e-6)
    assert r["values"]["t_c"] == pytest.approx(100.0)
    assert judge(a, b"comp-7;01.12.2026 11:00:00;100") == "malformed_payload"
    assert judge(a, b"comp-7;soon;100;212;2.5;40") == "bad_timestamp"


def test_long_layout_one_tag_a_message_with_quality_codes(model, tmp_path):
    a = adapter_of("""\
        format: historian
        version: 1
        encoding: json
        layout: long
        asset: meta.asset
        asset_type: compressor
        time: {field: t, format: epoch_ms}
        tag: tag
        value: v
        unit: {field: u}
        tags: {PT-101: p_bar, TT-102: t_c, VT-103: vib, IT-104: amps}
        quality: {field: q, good: [192], uncertain: [64]}
        """, model, tmp_path)
    msg = {"meta": {"asset": "comp-7"}, "t": NOW, "tag": "PT-101", "v": 7.1, "u": "bar",
           "q": 192}
    r = judge(a, json.dumps(msg).encode())
    assert r["values"] == {"p_bar": 7.1} and r["bad_quality"] == []
    assert judge(a, json.dumps({**msg, "tag": "XX-9"}).encode()) == "unknown_tag"
    assert judge(a, json.dumps({**msg, "u": "furlong"}).encode()) == "unknown_unit"
    assert judge(a, json.dumps({**msg, "q": 0}).encode()) == "no_good_values"


def test_plain_avro_with_its_schema(model, tmp_path):
    schema = {"type": "record", "name": "Comp", "fields": [
        {"name": "id", "type": "string"}, {"name": "t", "type": "long"},
        {"name": "p", "type": "double"}, {"name": "a", "type": "double"}]}
    (tmp_path / "comp.avsc").write_text(json.dumps(schema))
    a = adapter_of("""\
        format: comp-avro
        version: 1
        encoding: avro
        schema: comp.avsc
        asset: id
        asset_type: compressor
        time: {field: t, format: epoch_s}
        values:
          p_bar: {field: p, unit: bar}
          amps:  {field: a, unit: A}
        """, model, tmp_path)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema),
                               {"id": "comp-7", "t": NOW // 1000, "p": 6.5, "a": 30.0})
    r = judge(a, buf.getvalue())
    assert r["values"] == {"p_bar": 6.5, "amps": 30.0} and r["ts_ms"] == NOW
    assert judge(a, buf.getvalue()[:-3]) == "malformed_payload"


@pytest.mark.parametrize("text, says", [
    ("format: x\nversion: 1\nencoding: xml\nasset: a\ntime: {field: t}\n",
     ":3: encoding: 'xml' is not one of json, csv, avro, confluent-avro"),
    ("format: x\nversion: 1\nencoding: csv\nasset: a\ntime: {field: t}\nvalues: {a: "
     "{field: a, unit: bar}}\n", ":3: encoding: a csv format names its columns"),
    ("format: x\nversion: 1\nencoding: json\nasset: a\ntime: {field: t, zone: Mars/Base}\n"
     "values: {a: {field: a, unit: bar}}\n", ":5: time.zone: unknown time zone 'Mars/Base'"),
    ("format: x\nversion: 1\nencoding: json\nasset: a\ntime: {field: t}\n"
     "values: {a: {field: a, unit: furlongs_per_fortnight_squared}}\n",
     ":6: values.a.unit: unknown unit"),
])
def test_bad_format_files_name_file_line_and_field(tmp_path, text, says):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ModelError) as err:
        load_format(path)
    assert str(err.value).startswith(str(path)) and says in str(err.value)


def test_a_format_naming_sensors_its_model_lacks_is_refused(model):
    fmt = parse_format({"format": "x", "version": 1, "encoding": "json", "asset": "a",
                        "time": {"field": "t"}, "asset_type": "compressor",
                        "values": {"flow": {"field": "f", "unit": "bar"}}}, "x.yaml")
    with pytest.raises(ModelError, match=r"sensor\(s\) flow are not in the model's compressor"):
        check_against(fmt, model)
