"""How vendor data goes wrong in transit: dropouts, duplicates, disorder, lateness, garbage.

Each sample gets exactly one fate from :data:`FATES`, drawn from its own seeded stream, so
the ground truth can count every fate without running the physics. A malformed sample's
message is broken one of the ways in :func:`malformed_kinds` (byte-level framing damage,
impossible values, timestamps far off, or one of its vendor's own corruptions); each
kind has the dead-letter reason the pipeline must give it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import numpy as np

from schemas import by_id, wire
from transforms.normalize import VENDORS
from transforms.sample import Sample
from transforms.simulator.scenario import FleetConfig

FATES: tuple[str, ...] = ("clean", "dropout", "malformed", "duplicate", "out_of_order", "late")
DAY_MS = 86_400_000

# Kinds every vendor's messages can suffer, with the dead-letter reason each must end in.
COMMON_MALFORMED: dict[str, str] = {
    "truncated": "malformed_avro",  # connection cut mid-message
    "trailing_bytes": "malformed_avro",  # two messages glued together
    "bad_magic": "bad_magic",  # not Confluent framing (a producer without the serializer)
    "unknown_schema": "unknown_schema",  # a schema id nobody registered
    "empty": "empty_payload",  # tombstone-like empty value
    "not_a_vendor": "unknown_vendor",  # a valid twin record sent to a vendor topic
    "future_timestamp": "timestamp_in_future",  # device clock days ahead
    "ancient_timestamp": "timestamp_too_old",  # device clock over a year behind
    "impossible_value": "out_of_range",  # a bearing at 2000 K
    "oversize": "oversize_payload",  # a firmware dump where a reading should be
}
OVERSIZE_SHARE = 0.01  # of malformed messages; each is > 1 MiB
QUALITY_UNCERTAIN = 0.003  # samples where one sensor reports uncertain quality
QUALITY_BAD = 0.001  # ... or bad quality


def malformed_kinds(vendor: str) -> dict[str, str]:
    """Malformed-message kind -> expected dead-letter reason, for ``vendor``'s messages."""
    module = VENDORS[vendor]
    return {**COMMON_MALFORMED,
            **{f"{vendor}.{k}": r for k, r in module.CORRUPTION_REASON.items()}}


@dataclass(frozen=True)
class Fates:
    """The fates of one asset's samples in one chunk (arrays aligned with the samples)."""

    fate: np.ndarray  # index into FATES
    delay_ms: np.ndarray  # transport delay of the (first) message
    extra_ms: np.ndarray  # delay of the duplicate copy after the first
    kind: np.ndarray  # index into the vendor's malformed kinds
    jitter_ms: np.ndarray  # device clock jitter of the event time
    quality: np.ndarray  # 0 all good, 1 one sensor uncertain, 2 one sensor bad
    which: np.ndarray  # uniform [0, 1): which sensor the quality flag hits


def draw_fates(config: FleetConfig, n: int, rng: np.random.Generator,
               n_kinds: int) -> Fates:
    """Fates of ``n`` samples; always draws the same amount from ``rng`` per sample."""
    u = rng.random((8, n))
    edges = np.cumsum([config.dropout_rate, config.malformed_rate, config.duplicate_rate,
                       config.out_of_order_rate, config.late_rate])
    fate = np.searchsorted(edges, u[0], side="right") + 1
    fate[fate > len(FATES) - 1] = 0  # beyond the last edge: clean
    delay = 20 + u[1] * 380  # broker and network: 20-400 ms
    delay = np.where(fate == FATES.index("out_of_order"), 1_000 + u[2] * 19_000, delay)
    delay = np.where(fate == FATES.index("late"), 180_000 + u[2] * 420_000, delay)
    extra = 500 + u[3] * 29_500
    oversize = list(COMMON_MALFORMED).index("oversize")
    kind = (u[4] * (n_kinds - 1)).astype(np.int64)  # every kind but oversize ...
    kind = np.where(kind >= oversize, kind + 1, kind)
    kind = np.where(u[4] * 1e6 % 1.0 < OVERSIZE_SHARE, oversize, kind)  # ... which is rare
    jitter = np.rint((u[5] - 0.5) * 60).astype(np.int64)  # +-30 ms
    quality = np.where(u[6] < QUALITY_BAD, 2, np.where(u[6] < QUALITY_BAD + QUALITY_UNCERTAIN,
                                                        1, 0))
    return Fates(fate, delay.astype(np.int64), extra.astype(np.int64), kind, jitter, quality,
                 u[7])


def break_message(vendor: str, kind: str, sample: Sample, payload: bytes,
                  rng: random.Random) -> bytes:
    """``payload`` (the good message of ``sample``) broken the way ``kind`` says."""
    module = VENDORS[vendor]
    if kind == "truncated":
        return payload[: rng.randrange(wire.HEADER.size + 1, len(payload))]
    if kind == "trailing_bytes":
        return payload + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
    if kind == "bad_magic":
        return bytes([rng.choice((1, 0x7B, 0xFF))]) + payload[1:]
    if kind == "unknown_schema":
        return wire.HEADER.pack(wire.MAGIC, _unregistered_id(rng)) + payload[wire.HEADER.size:]
    if kind == "empty":
        return b""
    if kind == "not_a_vendor":
        return wire.encode("twin/action.v1", _some_action(sample))
    if kind == "future_timestamp":
        shifted = replace(sample, ts_ms=sample.ts_ms + rng.randrange(1, 30) * DAY_MS)
        return wire.encode(module.SCHEMA, module.encode(shifted))
    if kind == "ancient_timestamp":
        shifted = replace(sample, ts_ms=sample.ts_ms - rng.randrange(400, 2000) * DAY_MS)
        return wire.encode(module.SCHEMA, module.encode(shifted))
    if kind == "impossible_value":
        hot = replace(sample, values={**sample.values, "bearing_temp": 2000.0 + rng.random()})
        return wire.encode(module.SCHEMA, module.encode(hot))
    if kind == "oversize":
        return payload + b"\0" * (wire.DEFAULT_MAX_BYTES + 1 - len(payload) + rng.randrange(64))
    if kind.startswith(f"{vendor}."):
        record = module.corrupt(module.encode(sample), kind.split(".", 1)[1], rng)
        return wire.encode(module.SCHEMA, record)
    raise ValueError(f"unknown malformed kind {kind!r} for vendor {vendor}")


def _unregistered_id(rng: random.Random) -> int:
    known = by_id()
    while True:
        candidate = rng.randrange(1, 2**31)
        if candidate not in known:
            return candidate


def _some_action(sample: Sample) -> dict:
    """A well-formed twin action record: valid Avro, just not a vendor reading."""
    return {"action_id": f"{sample.asset_id}:{sample.ts_ms}:ALERT", "asset_id": sample.asset_id,
            "kind": "ALERT", "ts_ms": sample.ts_ms, "severity": "warning",
            "reason": "sent to the wrong topic", "anomaly_score": 1.0, "health_index": 1.0,
            "rul_s": None, "setpoint_name": None, "setpoint_value": None,
            "setpoint_previous": None, "dry_run": False}
