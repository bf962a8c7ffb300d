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

from collections.abc import Callable
from types import ModuleType
from typing import Any

from schemas import wire
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
