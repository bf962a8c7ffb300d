"""Confluent wire format over the local registry: ``0x00 | schema id (4 bytes, BE) | Avro body``.

>>> from schemas.wire import encode, decode
>>> rec = {"stage": "decode", "reason": "bad_magic", "detail": "", "source": "x",
...        "key": None, "payload": b"\\x01", "ts_ms": 0}
>>> decode(encode("twin/deadletter.v1", rec))[0]
'twin/deadletter.v1'
"""

from __future__ import annotations

import io
import re
import struct
from typing import Any

import fastavro

from schemas import by_id, load, schema_id
from transforms.errors import InvalidReading

MAGIC = 0
HEADER = struct.Struct(">bI")
# Payloads above this are refused before any parsing (a guard against memory blow-ups and
# against a producer sending a file where a reading was expected).
DEFAULT_MAX_BYTES = 1 << 20
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def describe(exc: BaseException) -> str:
    """``Type: message`` of a parser error, without object addresses (``<... at 0x7f..>``)
    so the same bad message always gets the same dead-letter detail.

    >>> describe(EOFError("cannot read from <_io.BytesIO object at 0x7f3a2b1c>"))
    'EOFError: cannot read from <_io.BytesIO object>'
    """
    return f"{type(exc).__name__}: {_ADDRESS.sub('', str(exc))}"


def encode(name: str, record: dict[str, Any]) -> bytes:
    """Serialize ``record`` with schema ``name`` in Confluent wire format."""
    buf = io.BytesIO()
    buf.write(HEADER.pack(MAGIC, schema_id(name)))
    fastavro.schemaless_writer(buf, load(name), record)
    return buf.getvalue()


NULL_VALUE_DETAIL = "the message has no value (a Kafka tombstone): nothing to read"


def decode(data: bytes | None, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[str, dict[str, Any]]:
    """Parse a Confluent-framed Avro message into ``(schema name, record)``.

    Raises :class:`~transforms.errors.InvalidReading` with reason ``null_value`` (no value
    at all: a Kafka tombstone), ``empty_payload``, ``oversize_payload``, ``bad_magic``,
    ``unknown_schema`` or ``malformed_avro``.
    """
    if data is None:
        raise InvalidReading("null_value", NULL_VALUE_DETAIL)
    if not data:
        raise InvalidReading("empty_payload", "zero-length message")
    if len(data) > max_bytes:
        raise InvalidReading("oversize_payload", f"{len(data)} bytes > limit {max_bytes}")
    if len(data) < HEADER.size:
        raise InvalidReading("bad_magic", f"message of {len(data)} bytes has no wire header")
    magic, sid = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise InvalidReading("bad_magic", f"magic byte {magic} != 0")
    name = by_id().get(sid)
    if name is None:
        raise InvalidReading("unknown_schema", f"schema id {sid} is not registered")
    buf = io.BytesIO(data)
    buf.seek(HEADER.size)
    try:
        record = fastavro.schemaless_reader(buf, load(name), None)
    except Exception as exc:  # fastavro raises many types on corrupt bodies
        raise InvalidReading("malformed_avro", f"{name}: {describe(exc)}") from exc
    if buf.tell() != len(data):
        raise InvalidReading(
            "malformed_avro", f"{name}: {len(data) - buf.tell()} trailing bytes after record"
        )
    return name, record
