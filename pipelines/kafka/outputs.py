"""How a twin output record becomes a Kafka message, the same for every engine.

Key: the record's ``asset_id`` (so one asset's outputs stay in order on one partition).
Value: Confluent-framed Avro of the output's schema. Actions carry an HMAC signature
header over topic, key and value. Dead letters whose original bytes exceed what a Kafka
message carries keep a prefix (the full message stays at its ``source`` offset).

>>> from pipelines.kafka.serde import LocalSerde
>>> key, value, headers = encode_output("twin.actions", "twin/action.v1", {
...     "action_id": "p:1:ALERT", "asset_id": "p", "kind": "ALERT", "ts_ms": 1,
...     "severity": "warning", "reason": "r", "anomaly_score": 1.0, "health_index": 0.5},
...     LocalSerde(), b"k")
>>> key, headers[0][0], LocalSerde().decode(value)[1]["health_index"]
(b'p', 'twin-hmac-sha256', 0.5)
"""

from __future__ import annotations

from typing import Any

from transforms import signing

MAX_VALUE_BYTES = 900_000


def fit(record: dict[str, Any], max_bytes: int = MAX_VALUE_BYTES) -> dict[str, Any]:
    """A dead letter whose payload would not fit in a Kafka message, with a prefix of it."""
    payload = record.get("payload")
    if isinstance(payload, bytes | bytearray) and len(payload) > max_bytes:
        note = f" [payload truncated to {max_bytes} of {len(payload)} bytes]"
        return {**record, "payload": bytes(payload[:max_bytes]),
                "detail": (record.get("detail") or "")[:2000 - len(note)] + note}
    return record


def encode_output(topic: str, schema: str, record: dict[str, Any], serde,
                  secret: bytes | None = None, max_value_bytes: int = MAX_VALUE_BYTES
                  ) -> tuple[bytes | None, bytes, list[tuple[str, bytes]] | None]:
    """``(key, value, headers)`` of ``record`` on ``topic``; signed when ``secret``."""
    value = serde.encode(schema, fit(record, max_value_bytes))
    key = str(record.get("asset_id") or "").encode() or None
    headers = None
    if secret is not None:
        headers = [(signing.HEADER, signing.sign(secret, topic, key, value).encode())]
    return key, value, headers
