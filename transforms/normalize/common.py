"""What every vendor adapter does once it has pulled points out of its own format.

A vendor module parses its envelope (typed Avro, JSON, CSV) into plain points
``(tag, value, unit, quality)`` and hands them to :func:`canonical_reading`, which maps
tags to canonical sensors, converts units to SI, sorts out quality flags and builds the
``twin/reading.v1`` dict. Keeping this here means the vendor modules only contain what is
genuinely vendor-specific.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from transforms.catalog import SI_UNIT
from transforms.errors import InvalidReading
from transforms.units import factors
from transforms.validate import show

GOOD, UNCERTAIN, BAD = "good", "uncertain", "bad"
QUALITIES = (GOOD, UNCERTAIN, BAD)

_SI_UNIT = SI_UNIT  # the catalog's live units (asset type -> sensor -> unit)

# asset type -> vendor tag -> (canonical sensor, unit the vendor reports it in)
TagMap = Mapping[str, Mapping[str, tuple[str, str]]]


def reading_id(vendor: str, asset_id: str, ts_ms: int) -> str:
    """The stable id of a reading: ``vendor:asset_id:ts_ms``."""
    return f"{vendor}:{asset_id}:{ts_ms}"


def pick(key: str, options: tuple[Any, ...]) -> Any:
    """Deterministically choose one of ``options`` for ``key`` (same on every run and host).

    Vendors configure each asset once (its model number, its UTC offset, its speed unit);
    encoders use this to give every asset a fixed but varied configuration.
    """
    digest = hashlib.blake2b(key.encode(), digest_size=4).digest()
    return options[int.from_bytes(digest, "big") % len(options)]


def sensor_tags(tags: TagMap, asset_type: str) -> dict[str, tuple[str, str]]:
    """Inverse tag map for encoders: canonical sensor -> (vendor tag, vendor unit)."""
    return {sensor: (tag, unit) for tag, (sensor, unit) in tags[asset_type].items()}


def vendor_precision(value: float) -> float:
    """``value`` rounded to the 10 significant digits vendor devices publish.

    >>> vendor_precision(49.99999999999999), vendor_precision(float("nan"))
    (50.0, nan)
    """
    return float(f"{value:.10g}")


def as_float(value: Any, where: str) -> float:
    """``value`` as a float if it is a real number (not a bool), else ``malformed_payload``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidReading("malformed_payload", f"{where}: value {show(value)} is not a number")
    try:
        return float(value)
    except OverflowError as exc:  # a JSON integer too large for a double
        raise InvalidReading("non_finite_value", f"{where}: value too large") from exc


def canonical_reading(
    vendor: str,
    asset_id: str,
    asset_type: str,
    ts_ms: int,
    points: Iterable[tuple[str, Any, Any, str]],
    tags: TagMap,
) -> dict[str, Any]:
    """Build a canonical reading from vendor points.

    Parameters
    ----------
    vendor, asset_id, asset_type, ts_ms
        Identity and event time (UTC epoch ms) already extracted by the adapter;
        ``asset_type`` must be a catalog asset type.
    points
        ``(tag, value, unit, quality)`` with ``quality`` one of :data:`QUALITIES`. ``value``
        is only read for good points (bad ones may carry anything, including ``None``).
    tags
        The vendor's tag map.

    Raises
    ------
    InvalidReading
        ``unknown_tag``, ``unknown_unit`` (checked for every point, whatever its quality:
        they are configuration errors), ``malformed_payload`` (duplicate tag, non-numeric
        value) or ``missing_field`` (good point without a value).
    """
    tag_map = tags.get(asset_type, {})
    si_units = _SI_UNIT[asset_type]
    values: dict[str, float] = {}
    seen: set[str] = set()
    bad: list[str] = []
    for tag, value, unit, quality in points:
        mapped = tag_map.get(tag)
        if mapped is None:
            raise InvalidReading("unknown_tag", f"{vendor} {asset_type} tag {show(tag)}")
        sensor = mapped[0]
        if sensor in seen:
            raise InvalidReading("malformed_payload", f"tag {show(tag)} appears more than once")
        seen.add(sensor)
        scale, offset = factors(unit, si_units[sensor])
        if quality != GOOD:
            bad.append(sensor)
            continue
        if value is None:
            raise InvalidReading("missing_field", f"tag {show(tag)} has good quality but no value")
        values[sensor] = as_float(value, f"tag {tag!r}") * scale + offset
    return {
        "reading_id": reading_id(vendor, asset_id, ts_ms),
        "asset_id": asset_id,
        "asset_type": asset_type,
        "vendor": vendor,
        "ts_ms": ts_ms,
        "values": values,
        "bad_quality": sorted(bad),
    }
