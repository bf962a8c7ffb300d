"""Orca: plant gateways exporting semicolon-separated CSV snippets inside Avro.

A record (``vendor/orca_raw.v1``) holds one sample of one asset, one row per sensor,
usually after a header row::

    {"gateway": "orca-gw-03", "seq": 81723,
     "csv": "asset_id;asset_type;epoch_s;tag;value;unit;quality\\n"
            "pump-003;centrifugal_pump;1795860005.250;flow;50.0;l/s;G\\n..."}

- asset class: ``centrifugal_pump`` or ``induction_motor`` (:data:`ASSET_CLASSES`);
- tags: lower-case names (:data:`TAGS`) in K, kPa, l/s, mm/s, Hz (shaft revolutions per
  second; some gateways are configured for rpm instead), A, V, N*m;
- quality: one letter, ``G``/``U``/``B``; a bad row may have an empty value;
- time: epoch *seconds* as a decimal with up to 3 fractional digits (read exactly, no
  float rounding); every row of a record must name the same asset, type and time.

Rows are separated by ``\\n`` (``\\r\\n`` tolerated); blank lines are skipped. Numbers use
a dot as decimal separator; ``nan``/``inf`` are read as such and refused by validation.

>>> from transforms.sample import Sample
>>> rec = encode(Sample("pump-1", "pump", 1_795_860_005_250, {"flow": 0.05}))
>>> print(rec["csv"])
asset_id;asset_type;epoch_s;tag;value;unit;quality
pump-1;centrifugal_pump;1795860005.250;flow;50.0;l/s;G
>>> normalize(rec)["values"]
{'flow': 0.05}
"""

from __future__ import annotations

import random
import re
import sys
from decimal import Decimal
from typing import Any

from transforms.catalog import sensor
from transforms.errors import InvalidReading
from transforms.normalize.common import (
    BAD,
    GOOD,
    UNCERTAIN,
    canonical_reading,
    pick,
    vendor_precision,
)
from transforms.normalize.frames import TextTemplate, key_between, varint_pattern, zigzag
from transforms.sample import Sample
from transforms.units import from_si
from transforms.validate import show

VENDOR = "orca"
SCHEMA = "vendor/orca_raw.v1"
HEADER = "asset_id;asset_type;epoch_s;tag;value;unit;quality"
COLUMNS = HEADER.count(";") + 1

# Tag -> (canonical sensor, default unit). Shaft speed is reported in Hz or rpm depending
# on the gateway configuration; the row's unit column always says which.
TAGS: dict[str, dict[str, tuple[str, str]]] = {
    "pump": {
        "flow": ("flow", "l/s"),
        "p_out": ("discharge_pressure", "kPa"),
        "p_in": ("suction_pressure", "kPa"),
        "amps": ("motor_current", "A"),
        "t_bearing": ("bearing_temp", "K"),
        "vib_rms": ("vibration", "mm/s"),
        "shaft_speed": ("speed", "Hz"),
        "t_ambient": ("ambient_temp", "K"),
    },
    "motor": {
        "shaft_speed": ("speed", "Hz"),
        "amps": ("current", "A"),
        "volts": ("voltage", "V"),
        "t_winding": ("winding_temp", "K"),
        "t_bearing": ("bearing_temp", "K"),
        "vib_rms": ("vibration", "mm/s"),
        "torque": ("torque", "N*m"),
        "t_ambient": ("ambient_temp", "K"),
    },
}
SPEED_UNITS: tuple[str, ...] = ("Hz", "rpm")

ASSET_CLASSES: dict[str, str] = {"centrifugal_pump": "pump", "induction_motor": "motor"}
_CLASS_OF: dict[str, str] = {t: c for c, t in ASSET_CLASSES.items()}
QUALITY_CODES: dict[str, str] = {GOOD: "G", UNCERTAIN: "U", BAD: "B"}
_QUALITY: dict[str, str] = {code: q for q, code in QUALITY_CODES.items()}

_EPOCH_S = re.compile(r"-?[0-9]{1,12}(\.[0-9]{1,3})?")
_NUMBER = re.compile(
    r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,4})?|[+-]?(nan|inf|infinity)",
    re.IGNORECASE,
)
# a column of cells, each a number or empty, one per line (checks a whole record at once)
_NUMBERS = re.compile(rf"(?:{_NUMBER.pattern})?(?:\n(?:{_NUMBER.pattern})?)*", re.IGNORECASE)

CORRUPTION_REASON: dict[str, str] = {
    "unknown_unit": "unknown_unit",  # a unit nobody can convert
    "unknown_tag": "unknown_tag",  # a tag with no mapping
    "short_row": "malformed_payload",  # a row with a column missing
    "decimal_comma": "malformed_payload",  # "12,5": a gateway with a German locale
    "bad_epoch": "bad_timestamp",  # a formatted date where epoch seconds belong
    "mixed_assets": "malformed_payload",  # rows of two assets in one record
    "empty_csv": "malformed_payload",  # header only, no data rows
    "bad_quality_letter": "malformed_payload",  # quality not G/U/B
    "unknown_class": "unknown_asset_type",  # an asset class outside the catalog
    "celsius_as_kelvin": "out_of_range",  # a temperature in degC labelled K
}
CORRUPTIONS: tuple[str, ...] = tuple(CORRUPTION_REASON)


def format_epoch(ts_ms: int) -> str:
    """Epoch seconds with exactly three decimals, exact for any integer ms.

    >>> format_epoch(1_795_860_005_250), format_epoch(-1)
    ('1795860005.250', '-0.001')
    """
    sign = "-" if ts_ms < 0 else ""
    seconds, millis = divmod(abs(ts_ms), 1000)
    return f"{sign}{seconds}.{millis:03d}"


def parse_epoch(text: str) -> int:
    """UTC epoch ms of decimal epoch seconds; ``bad_timestamp`` if it is not one.

    >>> parse_epoch("1795860005.25")
    1795860005250
    """
    if not _EPOCH_S.fullmatch(text):
        raise InvalidReading("bad_timestamp", f"epoch_s {text[:40]!r} is not decimal seconds")
    return int(Decimal(text) * 1000)


def parse_number(text: str, where: str) -> float | None:
    """A decimal number (dot separator), ``nan``/``inf``, or ``None`` for an empty cell."""
    if text == "":
        return None
    if not _NUMBER.fullmatch(text):
        raise InvalidReading("malformed_payload", f"{where}: value {text[:40]!r} is not a number")
    return float(text)


def encode(sample: Sample) -> dict[str, Any]:
    """The Orca gateway record for ``sample`` (header plus one row per sensor)."""
    by_sensor = {s: t for t, (s, _) in TAGS[sample.asset_type].items()}
    speed_unit = pick(sample.asset_id, SPEED_UNITS)
    prefix = f"{sample.asset_id};{_CLASS_OF[sample.asset_type]};{format_epoch(sample.ts_ms)}"
    rows = [HEADER]
    for name, value in sample.values.items():
        tag = by_sensor[name]
        unit = speed_unit if name == "speed" else TAGS[sample.asset_type][tag][1]
        vendor_value = vendor_precision(from_si(value, unit, sensor(sample.asset_type, name).unit))
        quality = QUALITY_CODES[sample.quality.get(name, GOOD)]
        rows.append(f"{prefix};{tag};{vendor_value!r};{unit};{quality}")
    gateway = f"orca-gw-{pick(sample.asset_id, tuple(range(1, 5))):02d}"
    return {"gateway": gateway, "seq": sample.ts_ms // 1000, "csv": "\n".join(rows)}


def _rows(csv: str) -> list[list[str]]:
    if "\r" not in csv:  # the usual record: split at once, exact checks below if odd
        rows = [line.split(";") for line in csv.split("\n") if line and line != HEADER]
        if rows and all(len(r) == COLUMNS for r in rows):
            return rows  # (a blank-but-spaces line would have 1 column and land below)
    rows = []
    for number, line in enumerate(csv.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip() or line == HEADER:
            continue
        cells = line.split(";")
        if len(cells) != COLUMNS:
            raise InvalidReading(
                "malformed_payload", f"csv row {number} has {len(cells)} columns, not {COLUMNS}"
            )
        rows.append(cells)
    if not rows:
        raise InvalidReading("malformed_payload", "csv has no data rows")
    return rows


# Text templates (transforms.normalize.frames.TextTemplate): the forms of a time and a value
# a template reads itself. Each is a subset of what parse_epoch and _NUMBER accept, read
# to the same number (int(s) * 1000 + int(ms); float), so a frame read through a template
# gives the reading the one-message path gives.
_HEADER_LINE = (HEADER + "\n").encode()
_TEMPLATE_EPOCH = re.compile(r"[0-9]{1,12}\.[0-9]{3}")
_TEMPLATE_NUMBER = rb"-?[0-9]+(?:\.[0-9]+)?(?:e[-+]?[0-9]{1,4})?"
_TEMPLATE_VALUE = re.compile(_TEMPLATE_NUMBER.decode())


def frame_key(frame: bytes) -> bytes | None:
    """The asset id in an Orca frame's bytes (the first data row's first cell after the
    header row), to find its device's template; ``None`` without a header row."""
    return key_between(frame, _HEADER_LINE, b";")


def text_template(frame: bytes, record: dict[str, Any]):
    """The :class:`~transforms.normalize.frames.TextTemplate` of a device's Orca frame (one
    the one-message path accepted), or ``None`` when this frame cannot be one: the
    record's CSV must be the header row, then rows of one asset and time, every value a
    plain number (not empty), the time with three decimals, in the encoding fastavro
    writes. Everything but the digits of the time and values is fixed: gateway, asset,
    class, tags, units, qualities, row order; the sequence number may be any long of the
    same varint width (the envelope never reads it).
    """
    from schemas import wire

    csv = record.get("csv")
    if not isinstance(csv, str) or "\r" in csv:
        return None
    lines = csv.split("\n")
    rows = [line.split(";") for line in lines[1:]]
    if lines[0] != HEADER or not rows or any(len(r) != COLUMNS for r in rows):
        return None
    first = rows[0][:3]
    if (any(r[:3] != first for r in rows) or not _TEMPLATE_EPOCH.fullmatch(first[2])
            or not all(_TEMPLATE_VALUE.fullmatch(r[4]) for r in rows)):
        return None
    try:
        asset_id, asset_type, _, points = envelope(record)
        body = csv.encode()
        gateway = record["gateway"].encode()
        seq, size = zigzag(record["seq"]), zigzag(len(body))
    except Exception:  # noqa: BLE001 - not a frame to learn from
        return None
    head = frame[:wire.HEADER.size] + zigzag(len(gateway)) + gateway
    if len(seq) > 9 or frame != head + seq + size + body:  # the bytes fastavro writes
        return None
    parts = [re.escape(head), varint_pattern(len(seq)), varint_pattern(len(size), group=True),
             re.escape(_HEADER_LINE)]
    for k, (_, _, _, tag, _, unit, letter) in enumerate(rows):
        if k:
            parts.append(b"\n")
        parts.append(rb"([^;\n]{1,200});" if k == 0 else rb"\2;")  # the asset: group 2
        parts.append(re.escape(f"{first[1]};".encode()))
        parts.append(rb"([0-9]{1,12})\.([0-9]{3})" if k == 0 else rb"\3\.\4")
        parts.append(re.escape(f";{tag};".encode()) + b"(" + _TEMPLATE_NUMBER + b")"
                     + re.escape(f";{unit};{letter}".encode()))
    tags, _, units, qualities = zip(*points, strict=True)
    return TextTemplate(sys.modules[__name__], asset_id, asset_type,
                        (VENDOR, asset_type, tags, units, qualities), b"".join(parts),
                        first[0].encode(), _template_ts)


def _template_ts(groups: tuple[bytes, ...]) -> int:
    return int(groups[2]) * 1000 + int(groups[3])


def normalize(record: dict[str, Any]) -> dict[str, Any]:
    """The canonical reading of an Orca record (values in SI), or ``InvalidReading``."""
    return canonical_reading(VENDOR, *envelope(record), TAGS)


def envelope(record: dict[str, Any]) -> tuple[str, str, int, list[tuple]]:
    """``(asset_id, asset_type, ts_ms, points)`` of an Orca record, points
    ``(tag, value, unit, quality)``."""
    rows = _rows(record["csv"])
    asset_id, asset_class, epoch_s = rows[0][:3]
    for row in rows[1:]:
        if row[0] != asset_id or row[1] != asset_class or row[2] != epoch_s:
            raise InvalidReading(
                "malformed_payload",
                f"rows of different samples in one record: {';'.join(row[:3])[:80]!r}",
            )
    asset_type = ASSET_CLASSES.get(asset_class)
    if asset_type is None:
        raise InvalidReading("unknown_asset_type", f"orca asset_type {asset_class[:40]!r}")
    ts_ms = parse_epoch(epoch_s)
    points = []
    if _NUMBERS.fullmatch("\n".join(row[4] for row in rows)):  # all numbers: one regex
        for _, _, _, tag, value, unit, letter in rows:
            quality = _QUALITY.get(letter)
            if quality is None:
                raise InvalidReading("malformed_payload",
                                     f"tag {show(tag)}: quality {letter[:10]!r}")
            points.append((tag, float(value) if value else None, unit, quality))
        return asset_id, asset_type, ts_ms, points
    for _, _, _, tag, value, unit, letter in rows:
        quality = _QUALITY.get(letter)
        if quality is None:
            raise InvalidReading("malformed_payload", f"tag {show(tag)}: quality {letter[:10]!r}")
        points.append((tag, parse_number(value, f"tag {tag!r}"), unit, quality))
    return asset_id, asset_type, ts_ms, points


def corrupt(record: dict[str, Any], kind: str, rng: random.Random) -> dict[str, Any]:
    """A copy of ``record`` broken the way ``kind`` names; see :data:`CORRUPTION_REASON`."""
    if kind not in CORRUPTION_REASON:
        raise ValueError(f"unknown orca corruption {kind!r} (known: {', '.join(CORRUPTIONS)})")
    lines = [ln for ln in record["csv"].split("\n") if ln and ln != HEADER]
    if not lines:  # something to break: a good ambient temperature row
        lines = [f"orca-asset;centrifugal_pump;{record['seq']}.000;t_ambient;293.15;K;G"]
    rows = [ln.split(";") for ln in lines]
    row = rng.choice(rows)
    if kind == "unknown_unit":
        row[5] = rng.choice(("%", "counts", "degK", "kpa "))
    elif kind == "unknown_tag":
        row[3] = rng.choice(("t_oil", "FLOW", "level", "speed"))
    elif kind == "short_row":
        del row[rng.randrange(0, COLUMNS)]
    elif kind == "decimal_comma":
        row[4], row[6] = rng.choice(("12,5", "1.013,25", "0,0")), "G"
    elif kind == "bad_epoch":
        epoch = rng.choice(("2026-11-22 10:00:05", "1795860005,250", "", "17958600052500000"))
        for r in rows:
            r[2] = epoch
    elif kind == "mixed_assets":
        rows.append([f"{row[0]}-other", *row[1:]])
    elif kind == "empty_csv":
        rows = []
    elif kind == "bad_quality_letter":
        row[6] = rng.choice(("g", "OK", "", "X"))
    elif kind == "unknown_class":
        asset_class = rng.choice(("pump", "screw_compressor", "MOTOR", ""))
        for r in rows:
            r[1] = asset_class
    elif kind == "celsius_as_kelvin":
        row[3:7] = ["t_ambient", repr(rng.uniform(-40.0, 60.0)), "K", "G"]
        rows = [r for r in rows if r is row or r[3] != "t_ambient"]
    return {**record, "csv": "\n".join([HEADER, *(";".join(r) for r in rows)])}
