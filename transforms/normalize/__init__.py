"""Vendor adapters: raw vendor records -> canonical ``twin/reading.v1`` dicts.

Runbook
-------
Every vendor is one module here with the same small API:

- ``VENDOR`` (name), ``SCHEMA`` (its ``vendor/<vendor>_raw.v<N>`` schema name);
- ``encode(sample) -> record``: what the vendor would send for a
  :class:`~transforms.sample.Sample` (the simulator's producer side);
- ``normalize(record) -> reading``: the canonical reading, values in SI, or
  :class:`~transforms.errors.InvalidReading` with a reason code;
- ``CORRUPTIONS`` / ``CORRUPTION_REASON`` and ``corrupt(record, kind, rng)``: the ways this
  vendor's data goes wrong in the field, and the dead-letter reason each one ends in when
  passed through :func:`normalize_message`.

Pipelines call one function, :func:`normalize_message`: Confluent-framed bytes in, a
validated canonical reading out (or ``InvalidReading``, to route to dead letters).

Adding a vendor: one schema ``schemas/avro/vendor/<vendor>_raw.v1.avsc``, one module here,
one line in :data:`VENDORS`, one test module ``tests/transforms/normalize/test_<vendor>.py``.

>>> from transforms.sample import Sample
>>> s = Sample("pump-7", "pump", 1_795_860_005_250, {"flow": 0.05}, {})
>>> r = normalize_message(encode_message("kestrel", s), now_ms=1_795_860_006_000)
>>> r["reading_id"], round(r["values"]["flow"], 9)
('kestrel:pump-7:1795860005250', 0.05)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from schemas import wire
from transforms.columns import ReadingBlock
from transforms.errors import InvalidReading
from transforms.normalize import helios, kestrel, orca
from transforms.sample import Sample
from transforms.validate import DEFAULT_MAX_AGE_MS, DEFAULT_MAX_FUTURE_MS, show, validate

VENDORS: dict[str, ModuleType] = {
    helios.VENDOR: helios,
    kestrel.VENDOR: kestrel,
    orca.VENDOR: orca,
}

_BY_SCHEMA: dict[str, ModuleType] = {m.SCHEMA: m for m in VENDORS.values()}


def vendor_for_schema(schema_name: str) -> ModuleType:
    """The vendor module whose raw schema is ``schema_name``; ``unknown_vendor`` otherwise."""
    module = _BY_SCHEMA.get(schema_name)
    if module is None:
        raise InvalidReading("unknown_vendor", f"schema {show(schema_name)} is not a vendor schema")
    return module


def encode_message(vendor: str, sample: Sample) -> bytes:
    """Confluent-framed Avro bytes of ``vendor``'s raw record for ``sample``."""
    module = VENDORS[vendor]
    return wire.encode(module.SCHEMA, module.encode(sample))


def normalize_message(
    payload: bytes,
    *,
    now_ms: int,
    max_bytes: int = wire.DEFAULT_MAX_BYTES,
    max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
    max_age_ms: int = DEFAULT_MAX_AGE_MS,
    decode: Callable[[bytes, int], tuple[str, dict[str, Any]]] = wire.decode,
) -> dict[str, Any]:
    """Decode, normalize and validate one raw vendor message.

    Parameters
    ----------
    payload
        Confluent wire format: magic byte, schema id of a ``vendor/*`` schema, Avro body.
    now_ms
        Processing clock (UTC epoch ms) for the timestamp plausibility window.
    max_bytes
        Larger payloads are refused before parsing (``oversize_payload``).
    max_future_ms, max_age_ms
        Accepted event-time window ``[now - max_age, now + max_future]``.
    decode
        ``(payload, max_bytes) -> (schema name, record)``: :func:`schemas.wire.decode`
        (the repo's own schema ids) by default; pass ``serde.decode`` of a
        :class:`~pipelines.kafka.serde.RegistrySerde` to use a schema registry's ids.

    Returns
    -------
    dict
        A canonical reading (``twin/reading.v1``): finite SI values within catalog ranges.

    Raises
    ------
    InvalidReading
        With a reason code from :data:`transforms.errors.REASONS`, never anything else
        for a bad message (a registry ``decode`` raises its own ``RegistryUnavailable``
        when the registry is down: not the message's fault, so not a dead letter).
    """
    name, record = decode(payload, max_bytes)
    reading = vendor_for_schema(name).normalize(record)
    return validate(reading, now_ms=now_ms, max_future_ms=max_future_ms, max_age_ms=max_age_ms)


def normalize_batch(
    payloads: Sequence[bytes],
    now_ms: Sequence[int],
    *,
    max_bytes: int = wire.DEFAULT_MAX_BYTES,
    max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
    max_age_ms: int = DEFAULT_MAX_AGE_MS,
    decode: Callable[[bytes, int], tuple[str, dict[str, Any]]] = wire.decode,
) -> tuple[dict[str, ReadingBlock], list[tuple[int, Exception]]]:
    """:func:`normalize_message` over many messages, readings out as columns.

    Returns ``(blocks, rejects)``: one :class:`~transforms.columns.ReadingBlock` per asset
    type with the valid readings in message order, and ``(index, exception)`` for every
    message that gave none: an :class:`~transforms.errors.InvalidReading` (dead letter
    with its reason) or anything else a bug raised (``internal_error``; the caller decides,
    e.g. a schema registry outage must fail instead). Every message is in exactly one of
    the two, and each is judged exactly as :func:`normalize_message` judges it alone.
    """
    if len(payloads) != len(now_ms):
        raise ValueError(f"{len(payloads)} payloads but {len(now_ms)} clocks")
    by_type: dict[str, list[dict[str, Any]]] = {}
    rejects: list[tuple[int, Exception]] = []
    for i, (payload, now) in enumerate(zip(payloads, now_ms, strict=True)):
        try:
            reading = normalize_message(payload, now_ms=now, max_bytes=max_bytes,
                                        max_future_ms=max_future_ms, max_age_ms=max_age_ms,
                                        decode=decode)
        except Exception as exc:  # noqa: BLE001 - every message is accounted for
            rejects.append((i, exc))
            continue
        rows = by_type.get(reading["asset_type"])
        if rows is None:
            rows = by_type[reading["asset_type"]] = []
        rows.append(reading)
    blocks = {}
    for asset_type, rows in by_type.items():
        block = ReadingBlock.from_readings(rows)
        block.dicts = None  # the columns say it all; lighter to ship between stages
        blocks[asset_type] = block
    return blocks, rejects
