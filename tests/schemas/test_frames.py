"""Leaf spans and identity prefixes of Avro bodies, checked against fastavro."""

from __future__ import annotations

import pytest

from schemas import raw
from schemas.frames import prefix_reader, spans
from schemas.wire import HEADER, decode, encode
from tests.transforms.normalize.samples import typical
from transforms.normalize import VENDORS, encode_message


@pytest.mark.parametrize("vendor", sorted(VENDORS))
def test_spans_tile_the_body_and_hold_what_fastavro_decodes(vendor):
    payload = encode_message(vendor, typical("motor"))
    name, record = decode(payload)
    leaves = spans(raw(name), payload, HEADER.size)
    assert leaves is not None
    for (path, kind, _, end), nxt in zip(leaves, [*leaves[1:], None], strict=True):
        value = record
        for step in path:
            value = value[step]
        if kind in ("string", "bytes"):
            data = value.encode() if kind == "string" else value
            assert payload[end - len(data):end] == data
        assert nxt is None or nxt[2] >= end
    assert leaves[-1][3] == len(payload)
    assert spans(raw(name), payload + b"\x00", HEADER.size) is None  # trailing byte
    assert spans(raw(name), payload[:-1], HEADER.size) is None  # truncated


def test_prefix_ends_at_the_first_number_through_null_branches():
    schema = {"type": "record", "name": "R", "fields": [
        {"name": "id", "type": "string"},
        {"name": "maybe", "type": ["null", "long"]},
        {"name": "flag", "type": "boolean"},
        {"name": "x", "type": "double"}]}
    read = prefix_reader(schema)
    # id "ab", maybe null (branch 0), flag, then x: the prefix stops before x
    body = b"\x04ab" + b"\x00" + b"\x01" + b"\x00" * 8
    assert read(body) == 5
    # maybe = 3 (branch 1): stops right after the branch index
    assert read(b"\x04ab" + b"\x02\x06" + b"\x01" + b"\x00" * 8) == 4
    assert read(b"\x04a") is None  # ends inside the string
    assert read(b"\x03ab") is None  # a negative length
    # no number before the union's null branch is followed by an array: no prefix here
    late = {"type": "record", "name": "L", "fields": [
        {"name": "maybe", "type": ["null", "long"]},
        {"name": "xs", "type": {"type": "array", "items": "double"}}]}
    assert prefix_reader(late)(b"\x02\x06\x00") == 1
    assert prefix_reader(late)(b"\x00\x00") is None
    # a record that starts with an array has no prefix at all: no reader
    assert prefix_reader({"type": "record", "name": "A", "fields": [
        {"name": "xs", "type": {"type": "array", "items": "double"}}]}) is None


def test_arrays_in_blocks_with_byte_sizes_are_walked():
    schema = {"type": "record", "name": "R", "fields": [
        {"name": "xs", "type": {"type": "array", "items": "long"}}]}
    # one block of -2 items (zig-zag 3) with its byte size (2 -> 4), items 1 and 2, end
    body = b"\x03\x04\x02\x04\x00"
    assert [(p, k) for p, k, _, _ in spans(schema, body)] == [(("xs", 0), "long"),
                                                              (("xs", 1), "long")]
    assert spans(schema, encode("vendor/orca_raw.v1", {"gateway": "g", "seq": 1,
                                                      "csv": ""})) is None  # not this schema
