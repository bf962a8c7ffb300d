"""Helios: European edge controllers sending typed Avro frames in metric units.

A frame (``vendor/helios_raw.v1``) is one device at one instant::

    {"device": "pump-003", "model": "CP-200 pump", "ts_ms": 1795860005250,
     "points": [{"tag": "FLOW", "value": 180.0, "unit": "m3/h", "quality": 192}, ...],
     "firmware": "4.2.1"}

- asset class: from the model's family prefix (``CP-*`` pumps, ``EM-*`` motors);
- tags: short point codes (:data:`TAGS`), units degC, bar, m3/h, mm/s, rpm, A, V, N*m;
- quality: the OPC quality byte; its top two bits decide (``11`` good, ``01`` uncertain,
  ``00``/``10`` bad), the low six bits are sub-status and ignored;
- time: ``ts_ms`` is already UTC epoch ms, or null when the device lost time sync.

>>> from transforms.sample import Sample
>>> rec = encode(Sample("pump-1", "pump", 1_795_860_005_250, {"bearing_temp": 333.15}))
>>> rec["points"]
[{'tag': 'T_BRG', 'value': 60.0, 'unit': 'degC', 'quality': 192}]
>>> normalize(rec)["values"]
{'bearing_temp': 333.15}
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from typing import Any

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
from transforms.sample import Sample
from transforms.units import from_si
from transforms.validate import show

VENDOR = "helios"
SCHEMA = "vendor/helios_raw.v1"
FIRMWARE = "4.2.1"

TAGS: dict[str, dict[str, tuple[str, str]]] = {
    "pump": {
        "FLOW": ("flow", "m3/h"),
        "P_DIS": ("discharge_pressure", "bar"),
        "P_SUC": ("suction_pressure", "bar"),
        "I_MOT": ("motor_current", "A"),
        "T_BRG": ("bearing_temp", "degC"),
        "VIB": ("vibration", "mm/s"),
        "SPD": ("speed", "rpm"),
        "T_AMB": ("ambient_temp", "degC"),
    },
    "motor": {
        "SPD": ("speed", "rpm"),
        "I_PH": ("current", "A"),
        "U_PH": ("voltage", "V"),
        "T_WDG": ("winding_temp", "degC"),
        "T_BRG": ("bearing_temp", "degC"),
        "VIB": ("vibration", "mm/s"),
        "TRQ": ("torque", "N*m"),
        "T_AMB": ("ambient_temp", "degC"),
    },
}

# Model family prefix -> asset type; the models each family ships as.
MODEL_FAMILIES: dict[str, str] = {"CP": "pump", "EM": "motor"}
MODELS: dict[str, tuple[str, ...]] = {
    "pump": ("CP-200 pump", "CP-350 pump"),
    "motor": ("EM-75 motor", "EM-110 motor"),
}

QUALITY_CODES: dict[str, int] = {GOOD: 0xC0, UNCERTAIN: 0x40, BAD: 0x00}

CORRUPTION_REASON: dict[str, str] = {
    "unknown_tag": "unknown_tag",  # a point code the tag map does not know
    "unknown_unit": "unknown_unit",  # a unit string nobody can convert
    "missing_timestamp": "missing_field",  # ts_ms null: the device lost time sync
    "unknown_model": "unknown_asset_type",  # a model family that is not a pump or a motor
    "empty_device": "bad_asset_id",  # controller not commissioned: device name blank
    "nan_value": "non_finite_value",  # a sensor reporting NaN with good quality
    "bad_quality_code": "malformed_payload",  # quality outside the OPC byte 0..255
    "duplicate_point": "malformed_payload",  # the same tag twice in one frame
    "clock_reset": "timestamp_too_old",  # RTC reset to the epoch after a power loss
}
CORRUPTIONS: tuple[str, ...] = tuple(CORRUPTION_REASON)


def asset_type_of(model: str) -> str:
    """The asset type of a Helios model string; ``unknown_asset_type`` if not a known family."""
    family = model.split("-", 1)[0].strip().upper()
    asset_type = MODEL_FAMILIES.get(family)
    if asset_type is None:
        raise InvalidReading("unknown_asset_type", f"helios model {show(model)}")
    return asset_type


def quality_of(code: int) -> str:
    """Map an OPC quality byte to ``good``/``uncertain``/``bad`` by its top two bits."""
    if not 0 <= code <= 0xFF:
        raise InvalidReading("malformed_payload", f"quality {code} outside the OPC byte 0..255")
    status = code & 0xC0
    if status == 0xC0:
        return GOOD
    if status == 0x40:
        return UNCERTAIN
    return BAD


def encode(sample: Sample) -> dict[str, Any]:
    """The Helios frame a controller would send for ``sample``."""
    by_sensor = sensor_tags(TAGS, sample.asset_type)
    points = []
    for name, value in sample.values.items():
        tag, unit = by_sensor[name]
        points.append(
            {
                "tag": tag,
                "value": vendor_precision(from_si(value, unit, _si_unit(sample.asset_type, tag))),
                "unit": unit,
                "quality": QUALITY_CODES[sample.quality.get(name, GOOD)],
            }
        )
    return {
        "device": sample.asset_id,
        "model": pick(sample.asset_id, MODELS[sample.asset_type]),
        "ts_ms": sample.ts_ms,
        "points": points,
        "firmware": FIRMWARE,
    }


def envelope(record: dict[str, Any]) -> tuple[Any, str, Any, Iterable[tuple]]:
    """``(asset_id, asset_type, ts_ms, points)`` of a Helios frame; points are lazy
    ``(tag, value, unit, quality)`` (a bad quality byte raises when its point is reached)."""
    asset_type = asset_type_of(record["model"])
    ts_ms = record.get("ts_ms")
    if ts_ms is None:
        raise InvalidReading("missing_field", "helios ts_ms is null (device has no time sync)")
    points = ((p["tag"], p["value"], p["unit"], quality_of(p["quality"])) for p in record["points"])
    return record["device"], asset_type, ts_ms, points


def normalize(record: dict[str, Any]) -> dict[str, Any]:
    """The canonical reading of a Helios frame (values in SI), or ``InvalidReading``."""
    return canonical_reading(VENDOR, *envelope(record), TAGS)


def corrupt(record: dict[str, Any], kind: str, rng: random.Random) -> dict[str, Any]:
    """A copy of ``record`` broken the way ``kind`` names; see :data:`CORRUPTION_REASON`."""
    if kind not in CORRUPTION_REASON:
        raise ValueError(f"unknown helios corruption {kind!r} (known: {', '.join(CORRUPTIONS)})")
    out = {**record, "points": [dict(p) for p in record["points"]]}
    if not out["points"]:  # something to break: a good ambient temperature point
        out["points"].append({"tag": "T_AMB", "value": 20.0, "unit": "degC", "quality": 0xC0})
    point = rng.choice(out["points"])
    if kind == "unknown_tag":
        point["tag"] = rng.choice(("XV_101", "FLOW2", "T_OIL", "spd"))
    elif kind == "unknown_unit":
        point["unit"] = rng.choice(("%", "counts", "raw", "degC?"))
    elif kind == "missing_timestamp":
        out["ts_ms"] = None
    elif kind == "unknown_model":
        out["model"] = rng.choice(("FX-10 fan", "VX-3 valve", "", "unknown"))
    elif kind == "empty_device":
        out["device"] = rng.choice(("", " ", "\t"))
    elif kind == "nan_value":
        point["value"] = rng.choice((math.nan, math.inf, -math.inf))
        point["quality"] = 0xC0
    elif kind == "bad_quality_code":
        point["quality"] = rng.choice((-1, 256, 4096, -(2**31)))
    elif kind == "duplicate_point":
        out["points"].append(dict(point))
    elif kind == "clock_reset":
        out["ts_ms"] = rng.randrange(0, 86_400_000)
    return out


def _si_unit(asset_type: str, tag: str) -> str:
    return sensor(asset_type, TAGS[asset_type][tag][0]).unit
