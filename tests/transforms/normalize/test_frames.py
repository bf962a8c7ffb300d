"""Frame templates: a device's later Helios frames are read as columns, and every one of
them is judged exactly as the one-message path judges it."""

from __future__ import annotations

import math
import random
import struct
from dataclasses import replace

import numpy as np
import pytest

from schemas import wire
from tests.transforms.normalize.samples import NOW_MS, TS_MS, typical
from tests.transforms.normalize.test_batch import check_same
from transforms.errors import InvalidReading
from transforms.normalize import _FRAMES, encode_message, helios, kestrel, normalize_batch, orca
from transforms.normalize.frames import Templates


@pytest.fixture(autouse=True)
def fresh_templates():
    _FRAMES.clear()
    yield
    _FRAMES.clear()


def frame(asset_type="pump", asset_id=None, ts_ms=TS_MS, **values):
    sample = typical(asset_type, asset_id)
    sample = replace(sample, ts_ms=ts_ms, values={**sample.values, **values})
    return encode_message("helios", sample)


def learned(*frames_):
    out = Templates()
    for f in frames_:
        assert out.learn(f, helios.SCHEMA, wire.decode(f)[1], helios) is not None
    return out


def test_a_template_reads_exactly_what_fastavro_reads():
    first = frame()
    t = learned(first).match(first)
    rng = random.Random(3)
    specials = [math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308]
    frames_, want = [], []
    for k in range(200):
        record = wire.decode(first)[1]
        record["ts_ms"] = TS_MS + rng.randrange(-10**9, 10**9)  # same varint width
        for p in record["points"]:
            p["value"] = specials[k % 6] if k < 12 else rng.uniform(-1e6, 1e6)
        frames_.append(wire.encode(helios.SCHEMA, record))
        want.append(record)
    ok, ts, values = t.read(frames_)
    assert ok.all()
    assert ts.tolist() == [r["ts_ms"] for r in want]
    got = values.view(np.uint64).tolist()
    assert got == [[struct.unpack("<Q", struct.pack("<d", p["value"]))[0] for p in r["points"]]
                   for r in want]


def test_any_changed_fixed_byte_or_varint_width_is_refused():
    first = frame()
    t = learned(first).match(first)
    body = bytearray(first)
    numbers = set(t._ts.tolist()) | set(t._values.tolist())
    fixed = [i for i in range(len(body)) if i not in numbers]
    changed = []
    for i in fixed:
        b = bytearray(body)
        b[i] ^= 0x01
        changed.append(bytes(b))
    ok, _, _ = t.read(changed)
    assert not ok.any() and len(fixed) == len(body) - 8 * 8 - 6
    # a time stamp whose varint has another shape but the same length
    b = bytearray(body)
    b[int(t._ts[0])] &= 0x7F  # ends the varint early: the rest would be read as fields
    assert not t.read([bytes(b)])[0].any()
    # another width is another length: no template at all
    assert learned(first).match(frame(ts_ms=1000)) is None


def test_later_batches_use_templates_and_judge_every_message_the_same():
    devices = [("pump", f"pump-{k}") for k in range(3)] + [("motor", "motor-9")]
    check_same([frame(t, a) for t, a in devices], [NOW_MS] * len(devices))  # teaches
    assert len(_FRAMES._by_key) == len(devices)
    rng = random.Random(8)
    payloads, nows = [], []
    for step in range(40):
        for t, a in devices:
            payloads.append(frame(t, a, ts_ms=TS_MS + 1000 * step,
                                  vibration=0.003 * (1 + rng.random())))
            nows.append(NOW_MS + 1000 * step)
    bad = {
        3: frame("pump", "pump-0", vibration=math.nan),  # NaN: dead letter
        7: frame("pump", "pump-1", flow=-1.0),  # out of range
        11: frame("pump", "pump-2", ts_ms=TS_MS + 86_400_000),  # from the future
        15: frame("pump", "pump-0", ts_ms=NOW_MS - 400 * 86_400_000),  # too old
        19: encode_message("helios", typical("pump", "pump-1", vibration="uncertain")),
        23: encode_message("helios", typical("pump", "pump-77")),  # a device not yet seen
        27: frame("motor", "motor-9")[:-3],  # truncated
    }
    for i, p in bad.items():
        payloads[i] = p
        nows[i] = NOW_MS
    ref = check_same(payloads, nows)
    hits = sum(t.hits for t in _FRAMES._by_key.values() if t)
    # all but the truncated frame, the new device and the uncertain quality byte; the
    # stamps out of the window fit their template, then go the one-message path
    assert hits == len(payloads) - 3
    reasons = sorted(r[0] for r in ref if isinstance(r, tuple))
    assert reasons == ["malformed_avro", "non_finite_value", "out_of_range",
                       "timestamp_in_future", "timestamp_too_old"]


def test_text_vendors_get_text_templates_not_byte_templates():
    """Their numbers are text of varying width: never a byte template (their envelopes
    would touch the number leaves anyway); their own text templates instead
    (test_text_templates.py)."""
    from transforms.normalize.frames import TextTemplate

    for module in (orca, kestrel):
        p = encode_message(module.VENDOR, typical("pump"))
        frames_ = Templates()
        t = frames_.learn(p, module.SCHEMA, wire.decode(p)[1], module)
        assert isinstance(t, TextTemplate) and frames_.match(p) is t
        assert not frames_._by_key and not frames_._readers


def test_an_adapter_that_computes_on_a_number_gets_no_template():
    class Seconds:  # reads the time as seconds: arithmetic on the number leaf
        VENDOR, SCHEMA = "helios", helios.SCHEMA

        @staticmethod
        def envelope(record):
            a, t, ts, points = helios.envelope(record)
            return a, t, ts * 1, points

    p = frame()
    frames_ = Templates()
    assert frames_.learn(p, helios.SCHEMA, wire.decode(p)[1], Seconds) is None
    assert p[1:5] in frames_._refused


def test_a_device_whose_frames_stop_fitting_gets_a_new_template():
    old = frame()
    new = encode_message("helios", typical("pump", vibration="uncertain"))
    assert len(old) == len(new) and old[:40] == new[:40]
    normalize_batch([old], [NOW_MS])
    for _ in range(2):  # the first batch misses and re-learns; the second fits
        blocks, rejects = normalize_batch([new] * 3, [NOW_MS] * 3)
        assert rejects == [] and len(blocks["pump"]) == 3
    (t,) = _FRAMES._by_key.values()
    assert (t.hits, t.misses) == (3, 0)


def test_a_replaced_adapter_voids_its_templates(monkeypatch):
    p = frame()
    normalize_batch([p], [NOW_MS])  # teaches
    assert normalize_batch([p], [NOW_MS])[1] == []

    def strict(record):
        raise InvalidReading("unknown_asset_type", "no longer served")

    monkeypatch.setattr(helios, "envelope", strict)
    _, rejects = normalize_batch([p], [NOW_MS])
    assert [e.reason for _, e in rejects] == ["unknown_asset_type"]
    assert not _FRAMES._by_key
