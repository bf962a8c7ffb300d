"""The generic adapter: a data format file (:mod:`transforms.formats`) read as a vendor.

A :class:`FormatAdapter` has the vendor modules' API (``VENDOR``, ``SCHEMA``, ``TAGS``,
``envelope``, ``normalize``), so the batch path of :func:`transforms.normalize.
normalize_batch` (tag plans, unit conversion as numpy arithmetic, the one-message path
for anything odd) and every dead-letter reason are the built-in vendors'. It adds
``decode``: the source's bytes -> ``(schema name, record)``, for JSON, CSV lines, plain or
Confluent-framed Avro. :func:`register` makes a format's adapter known (in each worker
process, before the first message), :func:`adapter_for_topic` finds it.

Dead letters a format can give: ``empty_payload``, ``oversize_payload``,
``malformed_payload`` (not JSON / CSV / Avro of the declared shape, a value that is not a
number), ``bad_magic`` and ``unknown_schema`` (Confluent framing), ``missing_field`` (no
asset, time or value where the format says), ``bad_asset_id``, ``unknown_asset_type`` (no
type for the asset in the format or the model), ``bad_timestamp``, ``unknown_tag``,
``unknown_unit``, then the usual checks (``non_finite_value``, ``out_of_range``, times).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from transforms.errors import InvalidReading
from transforms.formats import Format, field_path
from transforms.model import Model
from transforms.normalize.common import BAD, GOOD, UNCERTAIN, canonical_reading
from transforms.validate import show

_EPOCH, _MS = datetime(1970, 1, 1, tzinfo=UTC), timedelta(milliseconds=1)
_EPOCH_SCALE = {"epoch_s": 1000.0, "epoch_ms": 1.0, "epoch_us": 0.001, "epoch_ns": 1e-6}


class FormatAdapter:
    """A format's messages as canonical readings, with the vendor adapters' API."""

    def __init__(self, fmt: Format, model: Model) -> None:
        from zoneinfo import ZoneInfo

        from transforms.units import declare_unit

        self.format = fmt
        self.model = model
        self.VENDOR = fmt.name
        self.SCHEMA = fmt.schema_name
        self._zone = ZoneInfo(fmt.zone)
        self._asset = field_path(fmt.asset)
        self._time = field_path(fmt.time_field)
        self._type_field = field_path(fmt.asset_type_field) if fmt.asset_type_field else None
        self._quality = field_path(fmt.quality_field) if fmt.quality_field else None
        self._good = {_key(v) for v in fmt.good}
        self._uncertain = {_key(v) for v in fmt.uncertain}
        types = [fmt.asset_type] if fmt.asset_type else list(model.asset_types)
        if fmt.layout == "wide":
            self._values = [(v.field, field_path(v.field), v.unit,
                             field_path(v.unit_field) if v.unit_field else None)
                            for v in fmt.values]
            tag_map = {v.field: (v.sensor, v.unit or "") for v in fmt.values}
        else:
            self._tag, self._value = field_path(fmt.tag_field), field_path(fmt.value_field)
            self._unit_field = field_path(fmt.unit_field) if fmt.unit_field else None
            tag_map = {tag: (sensor, unit or fmt.unit or "")
                       for tag, (sensor, unit) in fmt.tags.items()}
        self.TAGS = {t: tag_map for t in types}
        for _, (_, unit) in tag_map.items():
            if unit:
                declare_unit(unit)
        if fmt.encoding in ("avro", "confluent-avro") and fmt.schema is not None:
            import fastavro

            self._parsed = fastavro.parse_schema(fmt.schema)

    # -- bytes -> record ------------------------------------------------------------------
    def decode(self, payload: bytes, max_bytes: int) -> tuple[str, Any]:
        """``(schema name, record)`` of one message, or ``InvalidReading``."""
        if not payload:
            raise InvalidReading("empty_payload", "zero-length message")
        if len(payload) > max_bytes:
            raise InvalidReading("oversize_payload", f"{len(payload)} bytes > limit {max_bytes}")
        enc = self.format.encoding
        if enc == "json":
            try:
                import orjson

                record = orjson.loads(payload)
            except Exception:  # noqa: BLE001 - orjson refuses some valid JSON: ask json
                try:
                    record = json.loads(payload.decode("utf-8"))
                except (UnicodeDecodeError, ValueError) as exc:
                    raise InvalidReading("malformed_payload",
                                         f"{self.format.name}: not JSON: {exc}") from None
            if not isinstance(record, dict):
                raise InvalidReading("malformed_payload",
                                     f"{self.format.name}: a JSON {type(record).__name__}, "
                                     f"not an object")
            return self.SCHEMA, record
        if enc == "csv":
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidReading("malformed_payload", f"not UTF-8: {exc}") from None
            rows = list(csv.reader(io.StringIO(text), delimiter=self.format.csv_delimiter))
            rows = [r for r in rows if r]
            cols = self.format.csv_columns
            if len(rows) != 1 or len(rows[0]) != len(cols):
                got = len(rows[0]) if rows else 0
                raise InvalidReading("malformed_payload",
                                     f"{self.format.name}: a CSV line of {len(cols)} columns "
                                     f"expected, got {len(rows)} line(s) of {got}")
            return self.SCHEMA, {c: _csv_cell(v) for c, v in zip(cols, rows[0], strict=True)}
        return self.SCHEMA, self._avro(payload)

    def _avro(self, payload: bytes) -> dict:
        import fastavro

        from schemas import wire

        body = payload
        if self.format.encoding == "confluent-avro":
            if len(payload) < wire.HEADER.size:
                raise InvalidReading("bad_magic", f"message of {len(payload)} bytes has no "
                                                  f"wire header")
            magic, _sid = wire.HEADER.unpack_from(payload)
            if magic != wire.MAGIC:
                raise InvalidReading("bad_magic", f"magic byte {magic} != 0")
            body = payload[wire.HEADER.size:]
        buf = io.BytesIO(body)
        try:
            record = fastavro.schemaless_reader(buf, self._parsed, None)
        except Exception as exc:  # noqa: BLE001 - fastavro raises many kinds
            raise InvalidReading("malformed_payload",
                                 f"{self.format.name}: not Avro of its schema: {exc}") from None
        if buf.tell() != len(body):
            raise InvalidReading("malformed_payload", f"{len(body) - buf.tell()} trailing "
                                                      f"bytes after the record")
        return record

    # -- record -> reading ----------------------------------------------------------------
    def envelope(self, record: dict) -> tuple[Any, str, int, Iterable[tuple]]:
        """``(asset_id, asset_type, ts_ms, points)`` of one decoded message."""
        asset_id = _get(record, self._asset, self.format.asset)
        if not isinstance(asset_id, str):
            if isinstance(asset_id, int) and not isinstance(asset_id, bool):
                asset_id = str(asset_id)
            else:
                raise InvalidReading("bad_asset_id", f"asset {show(asset_id)} is not a string")
        asset_type = self.format.asset_type
        if self._type_field is not None:
            asset_type = _get(record, self._type_field, self.format.asset_type_field)
            if asset_type not in self.TAGS:
                raise InvalidReading("unknown_asset_type",
                                     f"{self.format.name}: type {show(asset_type)} is not in "
                                     f"the model")
        elif asset_type is None:
            asset_type = self.model.type_of(asset_id)
            if asset_type is None:
                raise InvalidReading("unknown_asset_type",
                                     f"{show(asset_id)} matches no asset of model "
                                     f"{self.model.id}")
        ts_ms = self._ts(_get(record, self._time, self.format.time_field))
        return asset_id, asset_type, ts_ms, self._points(record)

    def _ts(self, value: Any) -> int:
        fmt = self.format.time_format
        if fmt in _EPOCH_SCALE:
            if isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    raise InvalidReading("bad_timestamp",
                                         f"time {show(value)} is not a number") from None
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value):
                raise InvalidReading("bad_timestamp", f"time {show(value)} is not a number")
            try:
                return int(round(value * _EPOCH_SCALE[fmt]))
            except OverflowError:
                raise InvalidReading("bad_timestamp", f"time {show(value)} is out of "
                                                      f"range") from None
        if isinstance(value, datetime):  # Avro timestamp logical types
            parsed = value
        elif not isinstance(value, str):
            raise InvalidReading("bad_timestamp", f"time {show(value)} is not a string")
        else:
            try:
                parsed = (datetime.fromisoformat(value.replace("Z", "+00:00"))
                          if fmt == "iso8601" else datetime.strptime(value, fmt))
            except ValueError:
                raise InvalidReading("bad_timestamp", f"time {show(value)} is not "
                                                      f"{'ISO 8601' if fmt == 'iso8601' else fmt}"
                                     ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=self._zone)
        try:
            return (parsed - _EPOCH) // _MS  # aware arithmetic applies the offset
        except OverflowError:
            raise InvalidReading("bad_timestamp", f"time {show(value)} is out of range") \
                from None

    def _quality_of(self, record: dict) -> str:
        if self._quality is None:
            return GOOD
        code = _key(_get(record, self._quality, self.format.quality_field, required=False))
        if not self._good or code in self._good:
            return GOOD
        return UNCERTAIN if code in self._uncertain else BAD

    def _points(self, record: dict) -> list[tuple]:
        quality = self._quality_of(record)
        if self.format.layout == "wide":
            points = []
            for tag, path, unit, unit_path in self._values:
                value = _get(record, path, tag, required=quality == GOOD)
                if unit_path is not None:
                    unit = _get(record, unit_path, self.format.unit_field or "unit")
                points.append((tag, _number(value), unit, quality))
            return points
        tag = _get(record, self._tag, self.format.tag_field)
        value = _get(record, self._value, self.format.value_field, required=quality == GOOD)
        mapped = self.format.tags.get(str(tag))
        unit = mapped[1] if mapped and mapped[1] else self.format.unit
        if self._unit_field is not None:
            unit = _get(record, self._unit_field, self.format.unit_field)
        return [(str(tag), _number(value), unit, quality)]

    def normalize(self, record: dict) -> dict[str, Any]:
        """The canonical reading of a decoded message, or ``InvalidReading``."""
        return canonical_reading(self.VENDOR, *self.envelope(record), self.TAGS)


def _key(v: Any) -> Any:
    return str(v) if not isinstance(v, str) else v


def _get(record: Any, path: tuple[str, ...], name: str, required: bool = True) -> Any:
    value = record
    for part in path:
        if isinstance(value, dict) and part in value:
            value = value[part]
        else:
            value = None
            break
    if value is None and required:
        raise InvalidReading("missing_field", f"no {name!r} in the message")
    return value


def _number(value: Any) -> Any:
    """Numbers as they are; numeric text (CSV cells, JSON strings) as a float; anything else
    left for the adapter's checks to name."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _csv_cell(text: str) -> Any:
    text = text.strip()
    return text if text else None


# -- the adapters a process knows -----------------------------------------------------------

_BY_TOPIC: dict[str, FormatAdapter] = {}


def register(fmt: Format, model: Model) -> FormatAdapter:
    """Make ``fmt`` known to :mod:`transforms.normalize` (its schema name, its topics);
    idempotent for the same format."""
    from transforms.normalize import _BY_SCHEMA, ADAPTERS, VENDORS

    known = _BY_SCHEMA.get(fmt.schema_name)
    if isinstance(known, FormatAdapter) and known.format == fmt and known.model == model:
        return known
    if fmt.name in VENDORS:
        raise ValueError(f"format name {fmt.name!r} is a built-in vendor's; choose another")
    adapter = FormatAdapter(fmt, model)
    ADAPTERS[fmt.name] = adapter
    _BY_SCHEMA[fmt.schema_name] = adapter
    for topic in fmt.topics:
        _BY_TOPIC[topic] = adapter
    return adapter


def adapter_for_topic(topic: str | None) -> FormatAdapter | None:
    """The registered format that reads ``topic`` (a topic name, or a message's source
    ``topic/partition@offset``), if one declared it."""
    if topic is None or not _BY_TOPIC:
        return None
    adapter = _BY_TOPIC.get(topic)
    if adapter is None and "@" in topic:  # Kafka topic names have no "/"
        adapter = _BY_TOPIC.get(topic.split("/", 1)[0])
    return adapter

