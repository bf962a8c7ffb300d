"""Dead-letter records (``schemas/avro/twin/deadletter.v1.avsc``), built the same by every engine.

>>> d = dead_letter("normalize", "bad_magic", "magic byte 7 != 0", "helios", b"k", b"\\x07", 5)
>>> d["reason"], d["payload"], d["ts_ms"]
('bad_magic', b'\\x07', 5)
"""

from __future__ import annotations

from typing import Any

DEAD_LETTER = "dead_letter"


def dead_letter(
    stage: str, reason: str, detail: str, source: str, key: bytes | None,
    payload: bytes | None, ts_ms: int,
) -> dict[str, Any]:
    """A dead-letter record keeping the original bytes untouched (a message without a
    value, a Kafka tombstone, keeps empty bytes: its reason says which it was).

    >>> dead_letter("normalize", "null_value", "", "t/0@7", b"k", None, 5)["payload"]
    b''
    """
    return {
        "stage": stage,
        "reason": reason,
        "detail": detail[:2000],
        "source": source,
        "key": key,
        "payload": b"" if payload is None else payload,
        "ts_ms": int(ts_ms),
    }
