"""How a twin output record becomes a Kafka message, the same for every engine.

Key: the record's ``asset_id`` (so one asset's outputs stay in order on one partition).
Value: Confluent-framed Avro of the output's schema. Actions are signed commands
(:mod:`transforms.signing`): headers with the issue time, the expiry, the sequence (the
action's event time, ``ts_ms``: the end of the window it was decided for) and an
HMAC-SHA256 over all of it, the topic, the key and the value. Dead letters whose original
bytes exceed what a Kafka message carries keep a prefix (the full message stays at its
``source`` offset).

>>> from pipelines.kafka.serde import LocalSerde
>>> key, value, headers = encode_output("twin.actions", "twin/action.v1", {
...     "action_id": "p:60000:ALERT", "asset_id": "p", "kind": "ALERT", "ts_ms": 60_000,
...     "severity": "warning", "reason": "r", "anomaly_score": 1.0, "health_index": 0.5},
...     LocalSerde(), b"k")
>>> key, dict(headers)["twin-seq"], LocalSerde().decode(value)[1]["health_index"]
(b'p', b'60000', 0.5)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from transforms.signing import Signer

MAX_VALUE_BYTES = 900_000


def fit(record: dict[str, Any], max_bytes: int = MAX_VALUE_BYTES) -> dict[str, Any]:
    """A dead letter whose payload would not fit in a Kafka message, with a prefix of it."""
    payload = record.get("payload")
    if isinstance(payload, bytes | bytearray) and len(payload) > max_bytes:
        note = f" [payload truncated to {max_bytes} of {len(payload)} bytes]"
        return {**record, "payload": bytes(payload[:max_bytes]),
                "detail": (record.get("detail") or "")[:2000 - len(note)] + note}
    return record


def sequence_of(record: dict[str, Any]) -> int:
    """A command's sequence number: its event time (``ts_ms``, the end of the window the
    decision was made for) in epoch ms. It grows per asset and a re-emission of the same
    decision has the same one."""
    ts = record["ts_ms"]
    if isinstance(ts, datetime):
        return round(ts.timestamp() * 1000)
    return int(ts)


def encode_output(topic: str, schema: str, record: dict[str, Any], serde,
                  secret: Signer | bytes | None = None,
                  max_value_bytes: int = MAX_VALUE_BYTES
                  ) -> tuple[bytes | None, bytes, list[tuple[str, bytes]] | None]:
    """``(key, value, headers)`` of ``record`` on ``topic``; a signed command when
    ``secret`` (a :class:`~transforms.signing.Signer`, or a bare key: default validity)."""
    value = serde.encode(schema, fit(record, max_value_bytes))
    key = str(record.get("asset_id") or "").encode() or None
    headers = None
    if secret is not None:
        signer = secret if isinstance(secret, Signer) else Signer(secret)
        headers = signer.headers(topic, key, value, sequence_of(record))
    return key, value, headers
