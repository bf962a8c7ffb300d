"""Text templates: a device's later Orca (CSV) and Kestrel (JSON) frames are read through
a regular expression of its fixed text, and every frame is judged exactly as the
one-message path judges it: the same readings to the bit, the same dead letters."""

from __future__ import annotations

import json
import random
import re
from dataclasses import replace

import pytest

from schemas import wire
from tests.transforms.normalize.samples import NOW_MS, TS_MS, typical
from tests.transforms.normalize.test_batch import check_same
from transforms.errors import InvalidReading
from transforms.normalize import _FRAMES, encode_message, kestrel, normalize_batch, orca
from transforms.normalize.frames import TextTemplate

DEVICES = [("pump", "pump-1"), ("pump", "pump-2"), ("motor", "motor-3")]


@pytest.fixture(autouse=True)
def fresh_templates():
    _FRAMES.clear()
    yield
    _FRAMES.clear()


def record(module, asset_type, asset_id, ts_ms=TS_MS, scale=1.0, **quality):
    sample = typical(asset_type, asset_id, **quality)
    values = {k: v * scale for k, v in sample.values.items()}
    return module.encode(replace(sample, ts_ms=ts_ms, values=values))


def with_value(module, rec, k: int, text: str):
    """``rec`` with its ``k``-th value written as ``text``."""
    rec = dict(rec)
    if module is orca:
        lines = rec["csv"].split("\n")
        cells = lines[k + 1].split(";")
        cells[4] = text
        lines[k + 1] = ";".join(cells)
        rec["csv"] = "\n".join(lines)
    else:
        body = rec["body"].decode()
        spans = [m.span(1) for m in re.finditer(r'"v":([^,]+),', body)]
        a, b = spans[k]
        rec["body"] = (body[:a] + text + body[b:]).encode()
    return rec


def with_time(module, rec, text: str):
    rec = dict(rec)
    if module is orca:
        rec["csv"] = re.sub(r"(?m)^([^;]+;[^;]+;)[^;]+;", lambda m: m.group(1) + text + ";",
                            rec["csv"].split("\n", 1)[1])
        rec["csv"] = orca.HEADER + "\n" + rec["csv"]
    else:
        doc = json.loads(rec["body"])
        rec["body"] = rec["body"].replace(doc["time"].encode(), text.encode())
    return rec


VALUE_FORMS = ["1.5e-07", "-0.0", "0.1", "12", "1e5", "+1.0", ".5", "1.", "1E5", "1e-00001",
               "123456789012345678.25", "0.30000000000000004441", "1.0e400", "nan", "",
               "1.7976931348623157e308", "4.9e-324", "2,5"]
TIMES = {orca: ["1795852794.75", "1795852794.7500", "-1795852794.750", "1795852794",
                "01795852794.750", "1795852794.750 "],
         kestrel: ["2026-02-30T08:00:00.000Z", "2026-11-28T24:00:00.000Z",
                   "2026-11-28T07:59:54.7509Z", "2026-11-28T07:59:54Z",
                   "2026-11-28T07:59:54.750+00:00", "2026-11-28 07:59:54.750Z"]}


@pytest.mark.parametrize("module", [orca, kestrel], ids=["orca", "kestrel"])
def test_later_frames_read_through_templates_are_judged_as_alone(module):
    teach = [wire.encode(module.SCHEMA, record(module, t, a)) for t, a in DEVICES]
    check_same(teach, [NOW_MS] * len(teach))
    held = [t for t in _FRAMES._by_text.values() if t is not None]
    assert len(held) == len(DEVICES) and all(isinstance(t, TextTemplate) for t in held)
    rng = random.Random(4)
    payloads, clean = [], 0
    for step in range(60):  # the devices' frames with other numbers: all through templates
        for t, a in DEVICES:
            rec = record(module, t, a, ts_ms=TS_MS - 1000 * step, scale=rng.uniform(0.9, 1.1))
            payloads.append(wire.encode(module.SCHEMA, rec))
            clean += 1
    odd = []  # the other value and time forms, every corruption, tampered bytes
    base = record(module, "pump", "pump-1")
    odd += [wire.encode(module.SCHEMA, with_value(module, base, 2, v)) for v in VALUE_FORMS]
    odd += [wire.encode(module.SCHEMA, with_time(module, base, t)) for t in TIMES[module]]
    odd += [wire.encode(module.SCHEMA, module.corrupt(base, kind, rng))
            for kind in module.CORRUPTIONS for _ in range(3)]
    odd.append(encode_message(module.VENDOR, typical("pump", "pump-1", vibration="bad")))
    good = wire.encode(module.SCHEMA, base)
    odd.append(good[:-1])  # truncated
    odd.append(good + b"\x00")  # a trailing byte
    size_at = good.index(b'{"assetId"' if module is kestrel else orca.HEADER.encode()) - 2
    odd.append(good[:size_at] + bytes([good[size_at] ^ 0x02]) + good[size_at + 1:])  # length
    payloads += odd
    order = list(range(len(payloads)))
    rng.shuffle(order)
    payloads = [payloads[i] for i in order]
    nows = [NOW_MS] * len(payloads)
    ref = check_same(payloads, nows)
    hits = sum(t.hits for t in held)
    assert clean <= hits < clean + len(odd)  # every clean frame; odd ones only if read alike
    reasons = {r[0] for r in ref if isinstance(r, tuple)}
    assert reasons >= set(module.CORRUPTION_REASON.values()) | {"malformed_avro"}
    assert sum(isinstance(r, dict) for r in ref) >= clean


@pytest.mark.parametrize("module", [orca, kestrel], ids=["orca", "kestrel"])
def test_a_template_reads_the_values_float_reads(module):
    first = wire.encode(module.SCHEMA, record(module, "motor", "motor-3"))
    normalize_batch([first], [NOW_MS])
    (template,) = _FRAMES._by_text.values()
    rng = random.Random(9)
    frames, want = [], []
    for _ in range(300):
        rec = record(module, "motor", "motor-3")
        texts = [repr(rng.uniform(-1e3, 1e3) * 10.0 ** rng.randint(-30, 30)) for _ in range(8)]
        texts = [t if "." in t else t.replace("e", ".0e") for t in texts]  # a JSON fraction
        for k, text in enumerate(texts):
            rec = with_value(module, rec, k, text)
        frames.append(wire.encode(module.SCHEMA, rec))
        want.append([float(t) for t in texts])
    ok, ts, values = template.read(frames)
    assert ok.all() and ts.tolist() == [TS_MS] * 300
    assert values.tolist() == want


def test_frames_without_a_template_form_get_none():
    rec = record(orca, "pump", "pump-1")
    bad = with_value(orca, rec, 0, "")  # an empty (bad quality) cell: not a template
    p = wire.encode(orca.SCHEMA, bad)
    assert _FRAMES.learn(p, orca.SCHEMA, wire.decode(p)[1], orca) is None
    rec = record(kestrel, "pump", "pump-1")
    spaced = dict(rec, body=json.dumps(json.loads(rec["body"])).encode())  # ", " and ": "
    p = wire.encode(kestrel.SCHEMA, spaced)
    assert kestrel.normalize(spaced)["asset_id"] == "pump-1"
    assert _FRAMES.learn(p, kestrel.SCHEMA, wire.decode(p)[1], kestrel) is None


def test_a_replaced_text_adapter_voids_its_templates(monkeypatch):
    p = wire.encode(orca.SCHEMA, record(orca, "pump", "pump-1"))
    normalize_batch([p], [NOW_MS])  # teaches
    assert normalize_batch([p], [NOW_MS])[1] == []
    assert sum(t.hits for t in _FRAMES._by_text.values()) == 1

    def strict(record):
        raise InvalidReading("unknown_asset_type", "no longer served")

    monkeypatch.setattr(orca, "envelope", strict)
    _, rejects = normalize_batch([p], [NOW_MS])
    assert [e.reason for _, e in rejects] == ["unknown_asset_type"]
    assert not _FRAMES._by_text
