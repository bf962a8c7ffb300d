"""Data formats: how to read a topic or a file, declared in a file, not in code.

A format file (YAML) says how one source's messages are written:

- ``encoding``: ``json`` (one JSON document a message), ``csv`` (one line a message; its
  ``columns`` named in order), ``avro`` (one Avro record a message, schemaless, with the
  ``schema`` file given) or ``confluent-avro`` (Confluent-framed Avro: magic byte, schema
  id, body; the schema file, or a registry's schema for that id);
- ``layout``: ``wide`` (one message carries many sensors' values: ``values`` maps each
  canonical sensor to its field and unit) or ``long`` (one message, one value: ``tag``,
  ``value`` and ``unit`` fields, ``tags`` mapping the source's tags to sensors);
- where the asset id, the asset type (fixed, a field, or the model's asset rules), the
  time (epoch ``s``/``ms``/``us``/``ns``, ISO 8601, or a ``strftime`` pattern, with a
  ``zone`` for naive times) and each value's quality (a field and its good / uncertain
  codes) are: field paths, dotted for nested records (``payload.device.id``).

Generic adapters (:mod:`transforms.normalize.generic`) interpret a format with the same
dead-letter reasons and the same judgement as the built-in vendors' adapters. Files are
validated like model files (:mod:`transforms.model`): every error names the file, line
and field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transforms.model import ModelError, _error, _unit_ok, read_document

ENCODINGS = ("json", "csv", "avro", "confluent-avro")
TIME_FORMATS = ("iso8601", "epoch_s", "epoch_ms", "epoch_us", "epoch_ns")
_FIELD = {"type": "string", "minLength": 1}
_UNIT = {"oneOf": [{"type": "string", "minLength": 1},
                   {"type": "object", "required": ["field"], "additionalProperties": False,
                    "properties": {"field": _FIELD}}]}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["format", "version", "encoding", "asset", "time"],
    "additionalProperties": False,
    "properties": {
        "format": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"},
        "version": {"type": ["integer", "string"]},
        "description": {"type": "string"},
        "topics": {"type": "array", "items": _FIELD},
        "encoding": {"enum": list(ENCODINGS)},
        "csv": {"type": "object", "additionalProperties": False, "required": ["columns"],
                "properties": {"columns": {"type": "array", "items": _FIELD, "minItems": 1},
                               "delimiter": {"type": "string", "minLength": 1,
                                             "maxLength": 1}}},
        "schema": _FIELD,
        "layout": {"enum": ["wide", "long"]},
        "asset": _FIELD,
        "asset_type": {"oneOf": [_FIELD, {"type": "object", "required": ["field"],
                                          "additionalProperties": False,
                                          "properties": {"field": _FIELD}}]},
        "time": {"type": "object", "required": ["field"], "additionalProperties": False,
                 "properties": {"field": _FIELD, "format": _FIELD, "zone": _FIELD}},
        "values": {"type": "object", "minProperties": 1, "additionalProperties": {
            "type": "object", "required": ["field", "unit"], "additionalProperties": False,
            "properties": {"field": _FIELD, "unit": _UNIT}}},
        "tag": _FIELD,
        "value": _FIELD,
        "unit": _UNIT,
        "tags": {"type": "object", "minProperties": 1, "additionalProperties": {
            "oneOf": [_FIELD, {"type": "object", "required": ["sensor"],
                               "additionalProperties": False,
                               "properties": {"sensor": _FIELD, "unit": _FIELD}}]}},
        "quality": {"type": "object", "required": ["field"], "additionalProperties": False,
                    "properties": {"field": _FIELD,
                                   "good": {"type": "array"},
                                   "uncertain": {"type": "array"}}},
    },
}


@dataclass(frozen=True)
class ValueSpec:
    """Where one sensor's value is, and its unit (fixed, or ``unit_field``)."""

    sensor: str
    field: str
    unit: str | None = None
    unit_field: str | None = None


@dataclass(frozen=True)
class Format:
    """A validated data format: typed, immutable, what the adapters and pipelines take."""

    name: str
    version: str
    encoding: str
    asset: str
    time_field: str
    time_format: str = "iso8601"
    zone: str = "UTC"
    layout: str = "wide"
    topics: tuple[str, ...] = ()
    csv_columns: tuple[str, ...] = ()
    csv_delimiter: str = ","
    schema: dict | None = None
    asset_type: str | None = None
    asset_type_field: str | None = None
    values: tuple[ValueSpec, ...] = ()
    tag_field: str | None = None
    value_field: str | None = None
    unit: str | None = None
    unit_field: str | None = None
    tags: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    quality_field: str | None = None
    good: tuple = ()
    uncertain: tuple = ()
    source: str = ""

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def schema_name(self) -> str:
        """The name a decoded message carries (``format/<name>``): the adapter's key."""
        return f"format/{self.name}"


def parse_format(data: dict, source: str = "<format>", where: dict | None = None) -> Format:
    """Validate a format document and build the typed :class:`Format`."""
    import jsonschema

    from transforms.model import _explain

    where = where or {}
    errors = sorted(jsonschema.Draft202012Validator(SCHEMA).iter_errors(data),
                    key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        raise _error(source, where, tuple(errors[0].absolute_path), _explain(errors[0]))
    enc, layout = data["encoding"], data.get("layout", "wide")

    def err(path, msg):
        return _error(source, where, path, msg)

    if enc == "csv" and "csv" not in data:
        raise err(("encoding",), "a csv format names its columns: csv: {columns: [...]}")
    if enc in ("avro", "confluent-avro") and "schema" not in data and enc == "avro":
        raise err(("encoding",), "an avro format needs its schema: schema: path/to/x.avsc")
    schema = None
    if "schema" in data:
        schema = _load_schema(Path(source).parent / data["schema"], err)
    if layout == "wide" and "values" not in data:
        raise err(("layout",), "a wide format maps sensors to fields: values: {sensor: "
                               "{field: ..., unit: ...}}")
    if layout == "long":
        for k in ("tag", "value"):
            if k not in data:
                raise err(("layout",), f"a long format names its {k} field: {k}: <field>")
        if "tags" not in data:
            raise err(("layout",), "a long format maps its tags to sensors: tags: {tag: "
                                   "sensor}")
    units_to_check: list[tuple[tuple, str]] = []
    values = []
    for sensor, spec in data.get("values", {}).items():
        unit = spec["unit"]
        if isinstance(unit, str):
            units_to_check.append((("values", sensor, "unit"), unit))
            values.append(ValueSpec(sensor, spec["field"], unit=unit))
        else:
            values.append(ValueSpec(sensor, spec["field"], unit_field=unit["field"]))
    tags = {}
    for tag, spec in data.get("tags", {}).items():
        if isinstance(spec, str):
            tags[str(tag)] = (spec, None)
        else:
            if "unit" in spec:
                units_to_check.append((("tags", tag, "unit"), spec["unit"]))
            tags[str(tag)] = (spec["sensor"], spec.get("unit"))
    unit = data.get("unit")
    if isinstance(unit, str):
        units_to_check.append((("unit",), unit))
    for path, u in units_to_check:
        if not _unit_ok(u):
            raise err(path, f"unknown unit {u!r} (a pint unit: degC, bar, mm/s, ...)")
    time = data["time"]
    tfmt = time.get("format", "iso8601")
    if tfmt not in TIME_FORMATS and "%" not in tfmt:
        raise err(("time", "format"), f"{tfmt!r} is not one of {', '.join(TIME_FORMATS)} "
                                      f"nor a strftime pattern like %Y-%m-%d %H:%M:%S")
    zone = time.get("zone", "UTC")
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(zone)
    except Exception:  # noqa: BLE001 - ZoneInfo raises several kinds for a bad name
        raise err(("time", "zone"), f"unknown time zone {zone!r} (an IANA name: UTC, "
                                    f"Europe/Berlin, ...)") from None
    at = data.get("asset_type")
    q = data.get("quality", {})
    return Format(
        name=data["format"], version=str(data["version"]), encoding=enc,
        asset=data["asset"], time_field=time["field"], time_format=tfmt, zone=zone,
        layout=layout, topics=tuple(data.get("topics", ())),
        csv_columns=tuple(data.get("csv", {}).get("columns", ())),
        csv_delimiter=data.get("csv", {}).get("delimiter", ","), schema=schema,
        asset_type=at if isinstance(at, str) else None,
        asset_type_field=at["field"] if isinstance(at, dict) else None,
        values=tuple(values), tag_field=data.get("tag"), value_field=data.get("value"),
        unit=unit if isinstance(unit, str) else None,
        unit_field=unit["field"] if isinstance(unit, dict) else None, tags=tags,
        quality_field=q.get("field"), good=tuple(q.get("good", ())),
        uncertain=tuple(q.get("uncertain", ())), source=source)


def _load_schema(path: Path, err) -> dict:
    import json

    import fastavro

    try:
        schema = json.loads(path.read_text())
        fastavro.parse_schema(schema)
    except OSError as exc:
        raise err(("schema",), f"cannot read {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - JSON or Avro schema errors
        raise err(("schema",), f"{path} is not an Avro schema: {exc}") from None
    return schema


def load_format(path: str | Path) -> Format:
    """The format of one file."""
    data, where = read_document(path)
    return parse_format(data, str(path), where)


def check_against(fmt: Format, model) -> None:
    """``ModelError`` unless every sensor ``fmt`` names is one of a type it can reach in
    ``model`` (the fixed type, or every type of the model when the type is a field or the
    asset rules decide)."""
    types = [fmt.asset_type] if fmt.asset_type else list(model.asset_types)
    for t in types:
        if t not in model.asset_types:
            raise ModelError(f"{fmt.source}: asset_type {t!r} is not in the model "
                             f"({', '.join(model.asset_types)})")
    known = {s.name for t in types for s in model.asset_types[t].sensors}
    named = [v.sensor for v in fmt.values] + [s for s, _ in fmt.tags.values()]
    unknown = sorted(set(named) - known)
    if unknown:
        raise ModelError(f"{fmt.source}: sensor(s) {', '.join(unknown)} are not in the model's "
                         f"{'/'.join(types)} ({', '.join(sorted(known))})")


def field_path(path: str) -> tuple[str, ...]:
    """``a.b.c`` -> ``("a", "b", "c")``.

    >>> field_path("payload.device.id")
    ('payload', 'device', 'id')
    """
    return tuple(p for p in re.split(r"\.", path) if p)
