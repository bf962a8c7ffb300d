"""Arrow schemas derived from the Avro ones, for Parquet outputs (pandas, DuckDB, Spark).

Timestamps (``timestamp-millis``) become ``timestamp[ms, UTC]``, enums strings, maps
``map<string, double>``, nullable unions nullable columns.

>>> from schemas.arrow import arrow_schema
>>> arrow_schema("twin/state.v1").field("values").type
MapType(map<string, double>)
"""

from __future__ import annotations

from functools import cache
from typing import Any

import pyarrow as pa

from schemas import raw

_PRIMITIVES = {
    "string": pa.string(), "bytes": pa.binary(), "long": pa.int64(), "int": pa.int32(),
    "double": pa.float64(), "float": pa.float32(), "boolean": pa.bool_(),
}


def _arrow_type(t: Any) -> tuple[pa.DataType, bool]:
    """(arrow type, nullable) of an Avro type."""
    if isinstance(t, list):
        rest = [x for x in t if x != "null"]
        if len(rest) != 1:
            raise TypeError(f"unsupported union {t}")
        return _arrow_type(rest[0])[0], True
    if isinstance(t, str):
        return _PRIMITIVES[t], False
    kind = t["type"]
    if t.get("logicalType") == "timestamp-millis":
        return pa.timestamp("ms", tz="UTC"), False
    if kind == "enum":
        return pa.string(), False
    if kind == "map":
        return pa.map_(pa.string(), _arrow_type(t["values"])[0]), False
    if kind == "array":
        return pa.list_(_arrow_type(t["items"])[0]), False
    if kind in _PRIMITIVES:
        return _PRIMITIVES[kind], False
    raise TypeError(f"unsupported Avro type {t}")


@cache
def arrow_schema(name: str) -> pa.Schema:
    """The Arrow schema of the Avro record schema ``name``."""
    fields = []
    for f in raw(name)["fields"]:
        typ, nullable = _arrow_type(f["type"])
        fields.append(pa.field(f["name"], typ, nullable=nullable))
    return pa.schema(fields)
