"""Kestrel: a US cloud platform forwarding JSON documents in an Avro envelope.

The envelope (``vendor/kestrel_raw.v1``) carries the vendor's document as opaque bytes::

    {"source": "kestrel-cloud/site-7", "content_type": "application/json; charset=utf-8",
     "body": b'{"assetId": "motor-002", "assetClass": "motor",
                "time": "2026-11-22T10:00:05.250+02:00",
                "readings": {"winding_temperature": {"v": 180.2, "u": "degF", "q": "GOOD"}}}',
     "received_ms": 1795852805900}

- asset class: ``assetClass`` (:data:`ASSET_CLASSES`);
- names: long snake-case reading names (:data:`TAGS`) in imperial units: degF, psi, in/s,
  gpm (US gallons per minute), rpm, A, V, lbf*ft;
- quality: ``q`` is ``GOOD``/``UNCERTAIN``/``BAD`` (absent means ``GOOD``); a non-good
  reading may have ``"v": null``;
- time: ISO-8601 with the asset's local UTC offset (``+02:00``, ``-05:00``, ``Z``, ...);
  a time without an offset is ambiguous and refused (``bad_timestamp``). Sub-millisecond
  digits are truncated.

>>> from transforms.sample import Sample
>>> rec = encode(Sample("motor-1", "motor", 1_795_860_005_250, {"winding_temp": 373.15}))
>>> round(normalize(rec)["values"]["winding_temp"], 9)
373.15
"""

from __future__ import annotations

import functools
import json
import random
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson

from transforms.catalog import sensor
from transforms.errors import InvalidReading
from transforms.normalize.common import (
    BAD,
    GOOD,
    UNCERTAIN,
    canonical_reading,
    pick,
    sensor_tags,
    vendor_precision,
)
from transforms.normalize.frames import (
    TextTemplate,
    compiled,
    key_between,
    varint_pattern,
    zigzag,
)
from transforms.sample import Sample
from transforms.units import from_si
from transforms.validate import show

VENDOR = "kestrel"
SCHEMA = "vendor/kestrel_raw.v1"
CONTENT_TYPE = "application/json; charset=utf-8"

TAGS: dict[str, dict[str, tuple[str, str]]] = {
    "pump": {
        "flow_rate": ("flow", "gpm"),
        "discharge_pressure": ("discharge_pressure", "psi"),
        "suction_pressure": ("suction_pressure", "psi"),
        "motor_current": ("motor_current", "A"),
        "bearing_temperature": ("bearing_temp", "degF"),
        "vibration_velocity": ("vibration", "in/s"),
        "shaft_speed": ("speed", "rpm"),
        "ambient_temperature": ("ambient_temp", "degF"),
    },
    "motor": {
        "shaft_speed": ("speed", "rpm"),
        "phase_current": ("current", "A"),
        "line_voltage": ("voltage", "V"),
        "winding_temperature": ("winding_temp", "degF"),
        "bearing_temperature": ("bearing_temp", "degF"),
        "vibration_velocity": ("vibration", "in/s"),
        "shaft_torque": ("torque", "lbf*ft"),
        "ambient_temperature": ("ambient_temp", "degF"),
    },
}

ASSET_CLASSES: dict[str, str] = {"pump": "pump", "motor": "motor"}
QUALITY_CODES: dict[str, str] = {GOOD: "GOOD", UNCERTAIN: "UNCERTAIN", BAD: "BAD"}
_QUALITY: dict[str, str] = {code: q for q, code in QUALITY_CODES.items()}

# Sites span time zones; each asset reports in its site's fixed offset.
UTC_OFFSETS: tuple[timedelta, ...] = tuple(
    timedelta(minutes=m) for m in (0, 120, -300, -480, 60, 330, -210, -360)
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

CORRUPTION_REASON: dict[str, str] = {
    "truncated_json": "malformed_payload",  # body cut off mid-document
    "bad_utf8": "malformed_payload",  # body is not UTF-8
    "wrong_content_type": "malformed_payload",  # envelope says the body is not JSON
    "string_value": "malformed_payload",  # "v": "n/a" with good quality
    "missing_time": "missing_field",  # no "time" in the document
    "missing_asset_id": "missing_field",  # no "assetId" in the document
    "naive_time": "bad_timestamp",  # ISO time without a UTC offset
    "garbled_time": "bad_timestamp",  # not ISO-8601 at all
    "unknown_unit": "unknown_unit",  # a unit nobody can convert
    "wrong_dimension": "unknown_unit",  # a temperature reported in psi
    "unknown_tag": "unknown_tag",  # a reading name with no mapping
    "unknown_class": "unknown_asset_type",  # an asset class outside the catalog
}
CORRUPTIONS: tuple[str, ...] = tuple(CORRUPTION_REASON)


def format_time(ts_ms: int, offset: timedelta) -> str:
    """ISO-8601 local time with offset, millisecond precision, ``Z`` for UTC.

    >>> format_time(0, timedelta(hours=-5))
    '1969-12-31T19:00:00.000-05:00'
    """
    local = (_EPOCH + ts_ms * _MS).astimezone(timezone(offset))
    text = local.isoformat(timespec="milliseconds")
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def parse_time(text: Any) -> int:
    """UTC epoch ms of an ISO-8601 time with offset; ``bad_timestamp`` otherwise.

    >>> parse_time("1970-01-01T02:00:01.250+02:00")
    1250
    """
    if not isinstance(text, str):
        raise InvalidReading("bad_timestamp", f"time {show(text)} is not a string")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidReading("bad_timestamp", f"time {show(text)} is not ISO-8601") from exc
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise InvalidReading("bad_timestamp", f"time {show(text)} has no UTC offset")
    try:
        if parsed.year in (1, 9999):  # UTC may fall outside datetime's years: refused
            parsed.replace(tzinfo=None) - parsed.utcoffset()
        return (parsed - _EPOCH) // _MS  # aware arithmetic applies the offset
    except OverflowError as exc:
        raise InvalidReading("bad_timestamp", f"time {show(text)} is out of range") from exc


def encode(sample: Sample) -> dict[str, Any]:
    """The Kestrel envelope the cloud would forward for ``sample``."""
    by_sensor = sensor_tags(TAGS, sample.asset_type)
    readings = {}
    for name, value in sample.values.items():
        tag, unit = by_sensor[name]
        readings[tag] = {
            "v": vendor_precision(from_si(value, unit, sensor(sample.asset_type, name).unit)),
            "u": unit,
            "q": QUALITY_CODES[sample.quality.get(name, GOOD)],
        }
    document = {
        "assetId": sample.asset_id,
        "assetClass": sample.asset_type,
        "time": format_time(sample.ts_ms, pick(sample.asset_id, UTC_OFFSETS)),
        "readings": readings,
    }
    return {
        "source": f"kestrel-cloud/site-{pick(sample.asset_id, tuple(range(1, 10)))}",
        "content_type": CONTENT_TYPE,
        "body": json.dumps(document, separators=(",", ":")).encode(),
        "received_ms": sample.ts_ms + 650,
    }


def _document(record: dict[str, Any]) -> dict[str, Any]:
    media_type, _, params = record["content_type"].partition(";")
    charset = params.strip().lower().removeprefix("charset=").strip('"') if params else "utf-8"
    if media_type.strip().lower() != "application/json" or charset not in ("utf-8", "utf8"):
        raise InvalidReading(
            "malformed_payload", f"content type {show(record['content_type'])} is not UTF-8 JSON"
        )
    body = record["body"]
    try:
        document = orjson.loads(body)  # 4x the stdlib's speed on these documents
    except orjson.JSONDecodeError:
        # what orjson refuses but the stdlib reads (NaN, integers beyond 64 bits) or the
        # stdlib's own error: the stdlib decides, so reasons never depend on the parser
        try:
            document = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise InvalidReading("malformed_payload",
                                 f"body: {type(exc).__name__}: {exc}") from exc
    if not isinstance(document, dict):
        raise InvalidReading("malformed_payload", "body is not a JSON object")
    return document


def _required(document: dict[str, Any], key: str) -> Any:
    value = document.get(key)
    if value is None:
        raise InvalidReading("missing_field", f"kestrel document has no {show(key)}")
    return value


def _points(readings: dict[str, Any]):
    for tag, entry in readings.items():
        if not isinstance(entry, dict):
            raise InvalidReading("malformed_payload", f"reading {show(tag)} is not an object")
        code = entry.get("q", "GOOD")
        quality = _QUALITY.get(code) if isinstance(code, str) else None
        if quality is None:
            raise InvalidReading("malformed_payload", f"reading {show(tag)} quality {show(code)}")
        unit = entry.get("u")
        if unit is None:
            raise InvalidReading("missing_field", f"reading {show(tag)} has no unit 'u'")
        yield tag, entry.get("v"), unit, quality


# Text templates (transforms.normalize.frames.TextTemplate): the forms of a time and a value
# a template reads itself. A time of this form is what datetime.fromisoformat reads it as
# (the date and clock through datetime(), which refuses what fromisoformat refuses; the
# offset is the template's); a value is a JSON number with a fraction, which orjson and
# float() both read to the correctly rounded double.
_TEMPLATE_TIME = re.compile(
    r"(?:19[7-9][0-9]|2[0-9]{3})-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}"
    r"(Z|[+-][0-9]{2}:[0-9]{2})")
_TIME_GROUPS = (rb"(19[7-9][0-9]|2[0-9]{3})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):"
                rb"([0-9]{2})\.([0-9]{3})")
_TEMPLATE_NUMBER = rb"(-?(?:0|[1-9][0-9]{0,20})\.[0-9]+(?:[eE][-+]?[0-9]{1,3})?)"
_ASSET_PREFIX = b'{"assetId":"'
_NAIVE_EPOCH = datetime(1970, 1, 1)


def frame_key(frame: bytes) -> bytes | None:
    """The asset id in a Kestrel frame's bytes (its document's leading ``assetId``), to
    find its device's template; ``None`` when the document does not start with it."""
    return key_between(frame, _ASSET_PREFIX, b'"')


def text_template(frame: bytes, record: dict[str, Any]):
    """The :class:`~transforms.normalize.frames.TextTemplate` of a device's Kestrel frame
    (one the one-message path accepted), or ``None`` when this frame cannot be one: its
    document must be compact JSON with ``assetId``, ``assetClass``, ``time`` and
    ``readings`` in that order, each reading ``{"v": <number with a fraction>, "u", "q"}``,
    the time with milliseconds and an offset, in the encoding fastavro writes.
    Everything but the digits of the time and values is fixed: source, content type,
    asset, class, the offset, tags, units, qualities; ``received_ms`` may be any long of
    the same varint width (the envelope never reads it).
    """
    from schemas import wire

    try:
        asset_id, asset_type, _, points = envelope(record)
        points = list(points)
        document = orjson.loads(record["body"])
        offset = _TEMPLATE_TIME.fullmatch(document["time"]).group(1)
    except Exception:  # noqa: BLE001 - not a frame to learn from
        return None
    parts = [b'\\{"assetId":"([^"\\\\]{1,200})"',  # the asset: group 2
             re.escape(b',"assetClass":' + json.dumps(document["assetClass"]).encode()
                       + b',"time":"'),
             _TIME_GROUPS, re.escape(offset.encode() + b'","readings":{')]
    for k, (tag, entry) in enumerate(document["readings"].items()):
        if list(entry) != ["v", "u", "q"]:
            return None
        parts.append(re.escape((("," if k else "") + json.dumps(tag) + ':{"v":').encode()))
        parts.append(_TEMPLATE_NUMBER)
        parts.append(re.escape((',"u":' + json.dumps(entry["u"]) + ',"q":'
                                + json.dumps(entry["q"]) + "}").encode()))
    parts.append(b"}}")
    body = record["body"]
    received = record.get("received_ms")
    tail = b"\x00" if received is None else b"\x02" + zigzag(received)
    head = (frame[:wire.HEADER.size] + zigzag(len(record["source"].encode()))
            + record["source"].encode() + zigzag(len(record["content_type"].encode()))
            + record["content_type"].encode())
    size = zigzag(len(body))
    if len(tail) > 10 or frame != head + size + body + tail:  # the bytes fastavro writes
        return None
    tail_pattern = re.escape(tail[:1]) + (varint_pattern(len(tail) - 1) if len(tail) > 1
                                          else b"")
    pattern = (re.escape(head) + varint_pattern(len(size), group=True) + b"".join(parts)
               + tail_pattern)
    # the frame is head, size, body and tail (above), so this is the body's own check;
    # compiled once per device shape, and the template's own expression is this one
    if not compiled(pattern).fullmatch(frame):
        return None
    if offset == "Z":
        offset_ms = 0
    else:
        sign = -1 if offset[0] == "-" else 1
        offset_ms = sign * (int(offset[1:3]) * 60 + int(offset[4:6])) * 60_000
    tags, _, units, qualities = zip(*points, strict=True)
    return TextTemplate(
        sys.modules[__name__], asset_id, asset_type, (VENDOR, asset_type, tags, units, qualities),
        pattern, json.dumps(asset_id)[1:-1].encode(),
        functools.partial(_template_ts, offset_ms=offset_ms), tail=len(tail))


def _template_ts(groups: tuple[bytes, ...], offset_ms: int) -> int:
    year, month, day, hour, minute, second, ms = map(int, groups[2:9])
    local = datetime(year, month, day, hour, minute, second)  # ValueError: no such time
    return (local - _NAIVE_EPOCH) // _MS + ms - offset_ms


def normalize(record: dict[str, Any]) -> dict[str, Any]:
    """The canonical reading of a Kestrel envelope (values in SI), or ``InvalidReading``."""
    return canonical_reading(VENDOR, *envelope(record), TAGS)


def envelope(record: dict[str, Any]) -> tuple[Any, str, int, Iterable[tuple]]:
    """``(asset_id, asset_type, ts_ms, points)`` of a Kestrel envelope; points are lazy
    ``(tag, value, unit, quality)``."""
    document = _document(record)
    asset_id = _required(document, "assetId")
    if not isinstance(asset_id, str):
        raise InvalidReading("bad_asset_id", f"assetId {show(asset_id)} is not a string")
    asset_class = _required(document, "assetClass")
    asset_type = ASSET_CLASSES.get(asset_class) if isinstance(asset_class, str) else None
    if asset_type is None:
        raise InvalidReading("unknown_asset_type", f"kestrel assetClass {show(asset_class)}")
    ts_ms = parse_time(_required(document, "time"))
    readings = _required(document, "readings")
    if not isinstance(readings, dict):
        raise InvalidReading("malformed_payload", "readings is not a JSON object")
    return asset_id, asset_type, ts_ms, _points(readings)


def corrupt(record: dict[str, Any], kind: str, rng: random.Random) -> dict[str, Any]:
    """A copy of ``record`` broken the way ``kind`` names; see :data:`CORRUPTION_REASON`."""
    if kind not in CORRUPTION_REASON:
        raise ValueError(f"unknown kestrel corruption {kind!r} (known: {', '.join(CORRUPTIONS)})")
    out = dict(record)
    body: bytes = record["body"]
    if kind == "truncated_json":
        out["body"] = body[: rng.randrange(0, len(body) - 1)]
        return out
    if kind == "bad_utf8":
        cut = rng.randrange(0, len(body))
        out["body"] = body[:cut] + rng.choice((b"\xff", b"\xc3\x28", b"\xed\xa0\x80")) + body[cut:]
        return out
    if kind == "wrong_content_type":
        out["content_type"] = rng.choice(
            ("text/csv", "application/xml", "application/json; charset=utf-16")
        )
        return out
    document = json.loads(body)
    readings = document["readings"]
    if kind == "string_value":
        tag = rng.choice(sorted(readings)) if readings else "ambient_temperature"
        unit = readings.get(tag, {}).get("u", "degF")
        readings[tag] = {"v": rng.choice(("n/a", "", "12,5")), "u": unit, "q": "GOOD"}
    elif kind == "missing_time":
        del document["time"]
    elif kind == "missing_asset_id":
        del document["assetId"]
    elif kind == "naive_time":
        document["time"] = document["time"].removesuffix("Z")[:23]
    elif kind == "garbled_time":
        document["time"] = rng.choice(("22/11/2026 10:00", "yesterday", "2026-13-40T99:00Z", ""))
    elif kind == "unknown_unit":
        tag = rng.choice(sorted(readings)) if readings else "ambient_temperature"
        readings[tag] = {
            **readings.get(tag, {"v": 70.0, "q": "GOOD"}),
            "u": rng.choice(("%", "counts", "F", "inH2O?")),
        }
    elif kind == "wrong_dimension":
        readings["ambient_temperature"] = {"v": 14.7, "u": "psi", "q": "GOOD"}
    elif kind == "unknown_tag":
        readings[rng.choice(("oil_level", "Shaft_Speed", "temp"))] = {"v": 1.0, "u": "A"}
    elif kind == "unknown_class":
        document["assetClass"] = rng.choice(("compressor", "Pump", "fan", ""))
    out["body"] = json.dumps(document).encode()
    return out
