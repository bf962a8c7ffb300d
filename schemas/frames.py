"""Where each value sits in an Avro body: the byte spans of a record's leaves.

A device sends the same frame over and over: the same identity strings, the same tags
and units, in the same order; only its numbers change. This module finds, for one
encoded record, the byte span of every leaf, so that later frames of the same device can
be read as columns (:mod:`transforms.normalize.frames`): compare the bytes that must not
change, read the numbers at their offsets, for thousands of frames at once with numpy.

Only what the Avro spec fixes is used: zig-zag varints for ``int``/``long`` and lengths,
little-endian IEEE ``float``/``double``, one varint branch index per union, array and map
blocks ending in a zero count. Maps are not walked (``None``): no vendor frame has one.

>>> from schemas import raw
>>> from schemas.wire import encode
>>> rec = {"gateway": "gw", "seq": 7, "csv": "a;b"}
>>> data = encode("vendor/orca_raw.v1", rec)
>>> [(path, kind, end - start)
...  for path, kind, start, end in spans(raw("vendor/orca_raw.v1"), data, 5)]
[(('gateway',), 'string', 3), (('seq',), 'long', 1), (('csv',), 'string', 4)]
>>> prefix_reader(raw("vendor/orca_raw.v1"))(data, 5)  # the bytes before the first number
8
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Path = tuple  # field names and array indices from the record's root
NUMBERS = frozenset(("long", "float", "double"))  # the leaves that change frame to frame
_WIDTH = {"null": 0, "boolean": 1, "float": 4, "double": 8}  # fixed-width primitives


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """``(value, next position)`` of the zig-zag varint at ``pos``."""
    b = data[pos]
    pos += 1
    v = b & 0x7F
    shift = 7
    while b & 0x80:
        b = data[pos]
        pos += 1
        v |= (b & 0x7F) << shift
        shift += 7
    return (v >> 1) ^ -(v & 1), pos


class _Unsupported(Exception):
    pass


def _named(schema: Any, names: dict[str, Any], namespace: str | None = None) -> None:
    """Collect the named types of ``schema`` (records, enums, fixed) by full name."""
    if isinstance(schema, list):
        for s in schema:
            _named(s, names, namespace)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "error", "enum", "fixed"):
            name = schema["name"]
            ns = schema.get("namespace", namespace)
            full = name if "." in name or not ns else f"{ns}.{name}"
            names[full] = names[name] = schema
            namespace = ns
        for f in schema.get("fields", ()):
            _named(f["type"], names, namespace)
        for key in ("items", "values"):
            if key in schema:
                _named(schema[key], names, namespace)


def _walk(schema: Any, data: bytes, pos: int, path: Path, names: dict, out: list) -> int:
    """Walk one value of ``schema`` at ``pos``; append ``(path, kind, start, end)`` per leaf
    to ``out``."""
    if isinstance(schema, str):
        if schema in names:
            return _walk(names[schema], data, pos, path, names, out)
        kind = schema
    elif isinstance(schema, list):  # union: a branch index, then that branch's value
        branch, pos = _varint(data, pos)
        if not 0 <= branch < len(schema):
            raise _Unsupported(f"union branch {branch}")
        return _walk(schema[branch], data, pos, path, names, out)
    else:
        kind = schema["type"]
        if kind in ("record", "error"):
            for f in schema["fields"]:
                pos = _walk(f["type"], data, pos, (*path, f["name"]), names, out)
            return pos
        if kind == "array":
            index = 0
            while True:
                count, pos = _varint(data, pos)
                if count == 0:
                    return pos
                if count < 0:  # a block with its byte size first
                    count = -count
                    _, pos = _varint(data, pos)
                for _ in range(count):
                    pos = _walk(schema["items"], data, pos, (*path, index), names, out)
                    index += 1
        if kind == "enum":
            kind = "int"
        elif kind == "fixed":
            start, pos = pos, pos + schema["size"]
            out.append((path, "fixed", start, pos))
            return pos
        elif isinstance(kind, (dict, list)):  # {"type": {...}}: a nested definition
            return _walk(kind, data, pos, path, names, out)
    start = pos
    if kind in _WIDTH:
        pos += _WIDTH[kind]
    elif kind in ("int", "long"):
        _, pos = _varint(data, pos)
    elif kind in ("string", "bytes"):
        size, pos = _varint(data, pos)
        if size < 0:
            raise _Unsupported("negative length")
        pos += size
    else:  # map, or a type this walker does not know
        raise _Unsupported(str(kind))
    if pos > len(data):
        raise _Unsupported("past the end")
    out.append((path, kind, start, pos))
    return pos


def spans(schema: Any, data: bytes, pos: int = 0) -> list[tuple[Path, str, int, int]] | None:
    """``(path, kind, start, end)`` of every leaf of the record encoded in ``data`` from
    ``pos`` (``kind`` an Avro primitive or ``fixed``), in byte order; ``None`` when the
    bytes are not exactly one such record or the schema has a map."""
    out: list = []
    try:
        end = _walk(schema, data, pos, (), names_of(schema), out)
    except (_Unsupported, IndexError):
        return None
    return out if end == len(data) else None


def prefix_reader(schema: Any) -> Callable[[bytes, int], int | None] | None:
    """A function ``data, pos -> offset | None``: where the first number leaf (``long``,
    ``float``, ``double``) of a record of ``schema`` begins. The bytes before it are a
    frame's identity (its leading strings and union branches); the function gives
    ``None`` for a body that ends first or whose null branches lead past the prefix.
    ``None`` instead of a function when no record of ``schema`` has such a prefix (it
    starts with an array or a map before any number).

    Compiled once per schema into a flat list of steps, since it runs for every message:
    ~0.5 us for a Helios frame, against ~4 us for walking the schema.
    """
    names = names_of(schema)
    steps: list[tuple] = []  # ("len",) skip a length-prefixed value; ("varint",);
    # ("skip", n); ("union", stop branches, null branches); ("stop",)

    def compile_(s: Any) -> bool:  # False: no prefix can be read past this point
        while isinstance(s, str) and s in names:
            s = names[s]
        if isinstance(s, list):
            stop = frozenset(i for i, b in enumerate(s) if b in NUMBERS)
            null = frozenset(i for i, b in enumerate(s) if b == "null")
            if len(stop) + len(null) != len(s):
                return False
            steps.append(("union", stop, null))
            return True
        kind = s if isinstance(s, str) else s["type"]
        if isinstance(kind, (dict, list)):
            return compile_(kind)
        if kind in ("record", "error"):
            return all(compile_(f["type"]) for f in s["fields"])
        if kind in NUMBERS:
            steps.append(("stop",))
            return False
        if kind in ("string", "bytes"):
            steps.append(("len",))
        elif kind in ("int", "enum"):
            steps.append(("varint",))
        elif kind in ("boolean", "fixed"):
            steps.append(("skip", 1 if kind == "boolean" else s["size"]))
        elif kind != "null":
            return False
        return True

    compile_(schema)
    if not any(step[0] in ("stop", "union") for step in steps):
        return None
    program = tuple(steps)

    def read(data: bytes, pos: int = 0) -> int | None:
        try:
            for step in program:
                op = step[0]
                if op == "len":
                    b = data[pos]
                    if b < 0x80:  # a length below 64: one byte
                        if b & 1:
                            return None
                        pos += 1 + (b >> 1)
                    else:
                        size, pos = _varint(data, pos)
                        if size < 0:
                            return None
                        pos += size
                elif op == "union":
                    branch, after = _varint(data, pos)
                    if branch in step[1]:
                        return after
                    if branch not in step[2]:
                        return None
                    pos = after
                elif op == "stop":
                    return pos
                elif op == "varint":
                    _, pos = _varint(data, pos)
                else:
                    pos += step[1]
        except IndexError:
            return None
        return None

    return read


def names_of(schema: Any) -> dict[str, Any]:
    """The named types of ``schema`` by name and full name."""
    names: dict[str, Any] = {}
    _named(schema, names)
    return names
