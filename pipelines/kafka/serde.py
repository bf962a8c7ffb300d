"""Avro on the wire: Confluent framing (magic 0, 4-byte schema id, Avro body).

:class:`LocalSerde` uses the ids of :mod:`schemas` (a CRC of each schema's name, stable
across runs and machines), which is what runs without a schema registry use. A registry
serde (``--schema-registry-url``) registers the same schemas and uses its ids.
"""

from __future__ import annotations

from typing import Any

from schemas import wire


class LocalSerde:
    """Encode/decode with the repo's own schema ids; no network."""

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        return wire.encode(name, record)

    def decode(self, data: bytes, max_bytes: int = wire.DEFAULT_MAX_BYTES
               ) -> tuple[str, dict[str, Any]]:
        return wire.decode(data, max_bytes=max_bytes)
