"""Checks every canonical reading passes before it enters the twin.

Vendor adapters make a reading *canonical* (names, SI units, UTC ms); this module decides
whether it is *plausible*: a printable asset id of a known type, a timestamp inside the
accepted window around the processing clock, and finite values inside the catalog's
physical ranges.

The processing clock is the message's arrival time (``now_ms``: its Kafka timestamp), so
a replay of old data is judged as it was received. A producer sets that timestamp
itself, though: a message whose event time and Kafka timestamp are both forged into the
future would pass. So a reading is also refused when it is ahead of this machine's own
clock (``clock_ms``) by more than the allowed skew, whatever its arrival time says.
Readings ahead of their own asset's history are judged later, per asset
(:mod:`transforms.eventtime`). The first failed check raises
:class:`~transforms.errors.InvalidReading`; the checks run in a fixed order (identity,
time, values) so a reading always gets the same reason.

>>> r = {"reading_id": "helios:p1:1000", "asset_id": "p1", "asset_type": "pump",
...      "vendor": "helios", "ts_ms": 1000, "values": {"flow": 0.1}, "bad_quality": []}
>>> validate(r, now_ms=2000, max_future_ms=0, max_age_ms=10_000)["values"]
{'flow': 0.1}
"""

from __future__ import annotations

import math
from typing import Any

from transforms.catalog import RANGES
from transforms.errors import InvalidReading

MAX_ASSET_ID_LEN = 128
DEFAULT_MAX_FUTURE_MS = 5 * 60_000
DEFAULT_MAX_AGE_MS = 366 * 86_400_000

_RANGES = RANGES  # the catalog's live ranges (asset type -> sensor -> (low, high))


def show(value: Any, limit: int = 60) -> str:
    """``repr(value)`` clipped to ``limit`` characters, for error details of untrusted input.

    >>> show("x" * 100, limit=10)
    "'xxxxxxxx…"
    """
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_asset_id(asset_id: Any) -> str:
    """``asset_id`` if it is a non-blank printable string of at most 128 characters.

    Raises ``InvalidReading("bad_asset_id")`` otherwise.
    """
    if not isinstance(asset_id, str):
        raise InvalidReading("bad_asset_id", f"asset id {show(asset_id)} is not a string")
    if not asset_id.strip():
        raise InvalidReading("bad_asset_id", "asset id is empty")
    if len(asset_id) > MAX_ASSET_ID_LEN:
        raise InvalidReading(
            "bad_asset_id", f"asset id of {len(asset_id)} characters > {MAX_ASSET_ID_LEN}"
        )
    if not asset_id.isprintable():
        raise InvalidReading(
            "bad_asset_id", f"asset id {show(asset_id)} has non-printable characters"
        )
    return asset_id


def validate(
    reading: dict[str, Any],
    *,
    now_ms: int,
    max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
    max_age_ms: int = DEFAULT_MAX_AGE_MS,
    clock_ms: int | None = None,
) -> dict[str, Any]:
    """Return ``reading`` unchanged if it is plausible, else raise ``InvalidReading``.

    Parameters
    ----------
    reading
        A canonical reading (``twin/reading.v1`` shape) produced by a vendor adapter.
    now_ms
        The processing clock, UTC epoch milliseconds.
    max_future_ms
        Allowed clock skew: readings later than ``now_ms + max_future_ms`` are refused
        (``timestamp_in_future``).
    max_age_ms
        Readings earlier than ``now_ms - max_age_ms`` are refused (``timestamp_too_old``).
    clock_ms
        This machine's clock, UTC epoch ms (``None``: not checked): readings later than
        ``clock_ms + max_future_ms`` are refused too (``timestamp_in_future``), so a
        forged arrival time cannot carry a forged event time in.

    Raises
    ------
    InvalidReading
        ``bad_asset_id``, ``unknown_asset_type``, ``bad_timestamp``, ``timestamp_in_future``,
        ``timestamp_too_old``, ``unknown_tag``, ``non_finite_value``, ``out_of_range`` or
        ``no_good_values``.
    """
    check_asset_id(reading.get("asset_id"))
    asset_type = reading.get("asset_type")
    ranges = _RANGES.get(asset_type) if isinstance(asset_type, str) else None
    if ranges is None:
        raise InvalidReading("unknown_asset_type", f"asset type {show(asset_type)}")

    ts_ms = reading.get("ts_ms")
    if not isinstance(ts_ms, int) or isinstance(ts_ms, bool):
        raise InvalidReading("bad_timestamp", f"ts_ms {show(ts_ms)} is not an integer")
    if ts_ms > now_ms + max_future_ms:
        raise InvalidReading(
            "timestamp_in_future", f"ts_ms {ts_ms} is {ts_ms - now_ms} ms after now {now_ms}"
        )
    if clock_ms is not None and ts_ms > clock_ms + max_future_ms:
        raise InvalidReading(
            "timestamp_in_future", f"ts_ms {ts_ms} is {ts_ms - clock_ms} ms after this "
            f"machine's clock {clock_ms} (arrival time {now_ms}: not to be trusted alone)"
        )
    if ts_ms < now_ms - max_age_ms:
        raise InvalidReading(
            "timestamp_too_old", f"ts_ms {ts_ms} is {now_ms - ts_ms} ms before now {now_ms}"
        )

    values = reading.get("values") or {}
    for name, value in values.items():
        bounds = ranges.get(name)
        if bounds is None:
            raise InvalidReading("unknown_tag", f"{asset_type} has no sensor {show(name)}")
        if not math.isfinite(value):
            raise InvalidReading("non_finite_value", f"{name} = {show(value)}")
        low, high = bounds
        if not low <= value <= high:
            raise InvalidReading("out_of_range", f"{name} = {show(value)} not in [{low}, {high}]")
    if not values:
        bad = ", ".join(reading.get("bad_quality") or []) or "none"
        raise InvalidReading("no_good_values", f"no usable sensor values (bad quality: {bad})")
    return reading
