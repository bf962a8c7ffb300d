"""Avro schemas of every record that crosses a process boundary, and a tiny local registry.

Schemas live in ``schemas/avro/<domain>/<entity>.v<N>.avsc`` and are addressed by
``"<domain>/<entity>.v<N>"`` (for example ``"twin/prediction.v1"``). Each has a stable
integer id derived from that name, so the Confluent wire format (magic byte 0, 4-byte
big-endian schema id, Avro body) can be produced and read without a schema-registry
server; with one, the ids come from the server instead (see :mod:`schemas.wire`).

>>> from schemas import load, schema_id
>>> load("twin/reading.v1")["name"]
'twin.reading.Reading'
>>> schema_id("twin/reading.v1") == schema_id("twin/reading.v1")
True
"""

from __future__ import annotations

import json
import zlib
from functools import cache
from pathlib import Path
from typing import Any

import fastavro

AVRO_DIR = Path(__file__).resolve().parent / "avro"


def names() -> list[str]:
    """Every schema name in the repo, sorted."""
    return sorted(
        str(p.relative_to(AVRO_DIR).with_suffix("")) for p in AVRO_DIR.rglob("*.avsc")
    )


def path_of(name: str) -> Path:
    """The ``.avsc`` file of ``name``; ``KeyError`` if there is none."""
    path = AVRO_DIR / f"{name}.avsc"
    if not path.is_file():
        raise KeyError(f"no schema named {name!r} (known: {', '.join(names())})")
    return path


@cache
def raw(name: str) -> dict[str, Any]:
    """The schema as written (JSON), before fastavro parses it."""
    return json.loads(path_of(name).read_text())


@cache
def load(name: str) -> dict[str, Any]:
    """The parsed fastavro schema of ``name`` (cached)."""
    return fastavro.parse_schema(raw(name))


def schema_id(name: str) -> int:
    """A stable positive 31-bit id for ``name``: the same on every machine and every run."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


@cache
def by_id() -> dict[int, str]:
    """Map schema id -> name for every schema in the repo."""
    table: dict[int, str] = {}
    for n in names():
        sid = schema_id(n)
        if sid in table:  # pragma: no cover - would be caught by tests/schemas
            raise RuntimeError(f"schema id collision: {n} and {table[sid]}")
        table[sid] = n
    return table
