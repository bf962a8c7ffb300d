"""Vendor adapters: raw vendor records -> canonical ``twin/reading.v1`` dicts.

Runbook
-------
Every vendor is one module here with the same small API:

- ``VENDOR`` (name), ``SCHEMA`` (its ``vendor/<vendor>_raw.v<N>`` schema name);
- ``encode(sample) -> record``: what the vendor would send for a
  :class:`~transforms.sample.Sample` (the simulator's producer side);
- ``envelope(record) -> (asset_id, asset_type, ts_ms, points)``: what is genuinely the
  vendor's (identity, time, its raw ``(tag, value, unit, quality)`` points), or
  :class:`~transforms.errors.InvalidReading` with a reason code;
- ``normalize(record) -> reading``: ``canonical_reading(VENDOR, *envelope(record), TAGS)``,
  the canonical reading, values in SI;
- ``CORRUPTIONS`` / ``CORRUPTION_REASON`` and ``corrupt(record, kind, rng)``: the ways this
  vendor's data goes wrong in the field, and the dead-letter reason each one ends in when
  passed through :func:`normalize_message`.

Pipelines call :func:`normalize_message` (Confluent-framed bytes in, a validated canonical
reading out, or ``InvalidReading`` to route to dead letters) or, on the hot path,
:func:`normalize_batch` (many messages in, column blocks out, the same judgement).

Adding a vendor: one schema ``schemas/avro/vendor/<vendor>_raw.v1.avsc``, one module here,
one line in :data:`VENDORS`, one test module ``tests/transforms/normalize/test_<vendor>.py``.

>>> from transforms.sample import Sample
>>> s = Sample("pump-7", "pump", 1_795_860_005_250, {"flow": 0.05}, {})
>>> r = normalize_message(encode_message("kestrel", s), now_ms=1_795_860_006_000)
>>> r["reading_id"], round(r["values"]["flow"], 9)
('kestrel:pump-7:1795860005250', 0.05)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import chain
from types import ModuleType
from typing import Any

import numpy as np

from schemas import wire
from transforms.catalog import sensors_of
from transforms.columns import ReadingBlock, sensor_names
from transforms.errors import InvalidReading
from transforms.normalize import helios, kestrel, orca
from transforms.normalize.common import GOOD, QUALITIES
from transforms.normalize.frames import Template, Templates
from transforms.sample import Sample
from transforms.units import factors
from transforms.validate import (
    DEFAULT_MAX_AGE_MS,
    DEFAULT_MAX_FUTURE_MS,
    check_asset_id,
    show,
    validate,
)

VENDORS: dict[str, ModuleType] = {
    helios.VENDOR: helios,
    kestrel.VENDOR: kestrel,
    orca.VENDOR: orca,
}

_BY_SCHEMA: dict[str, ModuleType] = {m.SCHEMA: m for m in VENDORS.values()}
# adapters of data format files (transforms.normalize.generic.register): read like vendors,
# but not the simulator's (it only writes the built-in vendors' formats)
ADAPTERS: dict[str, Any] = {}


def _adapter(vendor: str):
    return VENDORS.get(vendor) or ADAPTERS[vendor]


def vendor_for_schema(schema_name: str) -> ModuleType:
    """The vendor module whose raw schema is ``schema_name``; ``unknown_vendor`` otherwise."""
    module = _BY_SCHEMA.get(schema_name)
    if module is None:
        raise InvalidReading("unknown_vendor", f"schema {show(schema_name)} is not a vendor schema")
    return module


def encode_message(vendor: str, sample: Sample) -> bytes:
    """Confluent-framed Avro bytes of ``vendor``'s raw record for ``sample``."""
    module = VENDORS[vendor]
    return wire.encode(module.SCHEMA, module.encode(sample))


def normalize_message(
    payload: bytes,
    *,
    now_ms: int,
    max_bytes: int = wire.DEFAULT_MAX_BYTES,
    max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
    max_age_ms: int = DEFAULT_MAX_AGE_MS,
    decode: Callable[[bytes, int], tuple[str, dict[str, Any]]] = wire.decode,
    clock_ms: int | None = None,
) -> dict[str, Any]:
    """Decode, normalize and validate one raw vendor message.

    Parameters
    ----------
    payload
        Confluent wire format: magic byte, schema id of a ``vendor/*`` schema, Avro body.
    now_ms
        Processing clock (UTC epoch ms) for the timestamp plausibility window.
    max_bytes
        Larger payloads are refused before parsing (``oversize_payload``).
    max_future_ms, max_age_ms
        Accepted event-time window ``[now - max_age, now + max_future]``.
    clock_ms
        This machine's clock (UTC epoch ms): event times after ``clock_ms + max_future``
        are refused too, whatever the arrival time says (``None``: not checked; see
        :func:`~transforms.validate.validate`).
    decode
        ``(payload, max_bytes) -> (schema name, record)``: :func:`schemas.wire.decode`
        (the repo's own schema ids) by default; pass ``serde.decode`` of a
        :class:`~pipelines.kafka.serde.RegistrySerde` to use a schema registry's ids.

    Returns
    -------
    dict
        A canonical reading (``twin/reading.v1``): finite SI values within catalog ranges.

    Raises
    ------
    InvalidReading
        With a reason code from :data:`transforms.errors.REASONS`, never anything else
        for a bad message (a registry ``decode`` raises its own ``RegistryUnavailable``
        when the registry is down: not the message's fault, so not a dead letter).
    """
    name, record = decode(payload, max_bytes)
    reading = vendor_for_schema(name).normalize(record)
    return validate(reading, now_ms=now_ms, max_future_ms=max_future_ms, max_age_ms=max_age_ms,
                    clock_ms=clock_ms)


def normalize_batch(
    payloads: Sequence[bytes],
    now_ms: Sequence[int],
    *,
    max_bytes: int = wire.DEFAULT_MAX_BYTES,
    max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
    max_age_ms: int = DEFAULT_MAX_AGE_MS,
    decode: Callable[[bytes, int], tuple[str, dict[str, Any]]] = wire.decode,
    clock_ms: int | None = None,
) -> tuple[dict[str, ReadingBlock], list[tuple[int, Exception]]]:
    """:func:`normalize_message` over many messages, readings out as columns.

    Returns ``(blocks, rejects)``: one :class:`~transforms.columns.ReadingBlock` per asset
    type with the valid readings in message order, and ``(index, exception)`` for every
    message that gave none: an :class:`~transforms.errors.InvalidReading` (dead letter
    with its reason) or anything else a bug raised (``internal_error``; the caller decides,
    e.g. a schema registry outage must fail instead). Every message is in exactly one of
    the two, and each is judged exactly as :func:`normalize_message` judges it alone
    (``now_ms`` per message, ``clock_ms``, this machine's clock, once for the batch).

    How: a message that fits a frame template its device's earlier frames taught
    (:mod:`transforms.normalize.frames`: Helios' binary frames; Orca's and Kestrel's text
    frames through a regular expression of their fixed text) is read as columns with
    the other frames of its device, without decoding it alone; every other message is
    decoded and its vendor envelope read (``module.envelope``: identity, time, raw
    points). The points' mapping, unit conversion and validation are
    then done for all messages at once, grouped by *layout* (vendor, asset type and the
    sequence of tag, unit and quality: an asset's device sends the same one every time),
    as numpy arithmetic. A message that fails or even might fail any check is not
    explained here: it goes through :func:`normalize_message`, which names the first
    problem, so reasons and readings are those of the one-message path by construction
    (``tests/transforms/normalize/test_batch.py`` checks this on every corruption kind).
    """
    n = len(payloads)
    if n != len(now_ms):
        raise ValueError(f"{n} payloads but {len(now_ms)} clocks")
    # the latest event time any message may have: this machine's clock + the skew
    latest = (clock_ms if clock_ms is not None else _NO_CLOCK) + max_future_ms
    slow: list[int] = []
    groups: dict[tuple, _Group] = {}
    rows: dict[str, _Rows] = {}  # asset type -> its accepted messages, as columns
    todo: Sequence[int] = range(n)
    frames = _FRAMES if decode is wire.decode else None  # templates know the repo's ids
    if frames is not None:
        todo = _read_frames(frames, payloads, now_ms, max_bytes, max_future_ms, max_age_ms,
                            latest, groups, rows)
    known_ids = _KNOWN_IDS
    for i in todo:
        now = now_ms[i]
        try:
            payload = payloads[i]
            name, record = decode(payload, max_bytes)
            module = _BY_SCHEMA[name]
            asset_id, asset_type, ts, points = module.envelope(record)
            tags, values, units, qualities = zip(*points)  # a 4-tuple per point, else slow
            layout = (module.VENDOR, asset_type, tags, units, qualities)
            group = groups.get(layout)
            if group is None:
                group = groups[layout] = _Group(layout)
            if (group.plan is None or type(ts) is not int
                    or not now - max_age_ms <= ts <= now + max_future_ms or ts > latest
                    or (asset_id not in known_ids and not _valid_id(asset_id))):
                slow.append(i)
                continue
            take = group.plan.take
            if take is not None:
                values = [values[j] for j in take]
            if frames is not None:  # this device's next frames can be read as columns
                frames.learn(payload, name, record, module)
        except Exception:  # noqa: BLE001 - explained by the one-message path below
            slow.append(i)
            continue
        per_type = rows.get(asset_type)
        if per_type is None:
            per_type = rows[asset_type] = _Rows()
        group.rows.append(len(per_type.msgs))
        group.values.append(values)
        group.msgs.append(i)
        per_type.msgs.append(i)
        per_type.ids.append(asset_id)
        per_type.vendors.append(module.VENDOR)
        per_type.ts.append(ts)

    # columns per asset type, filled group by group
    out_values = {t: np.full((len(r.msgs), len(sensor_names(t))), np.nan)
                  for t, r in rows.items()}
    out_bad = {t: np.zeros((len(r.msgs), len(sensor_names(t))), dtype=bool)
               for t, r in rows.items()}
    dropped: dict[str, list[np.ndarray]] = {}
    for group in groups.values():
        plan = group.plan
        asset_type = group.layout[1]
        parts = list(group.fast)  # (rows, msgs, values) read as columns
        if group.rows:  # those read one by one
            idx = np.fromiter(group.rows, dtype=np.intp, count=len(group.rows))
            try:
                if not set(map(type, chain.from_iterable(group.values))) <= _NUMBER:
                    raise TypeError("not all numbers")
                parts.append((idx, group.msgs, np.array(group.values, dtype=np.float64)))
            except (TypeError, ValueError, OverflowError):  # None, str, bool, huge int
                dropped.setdefault(asset_type, []).append(idx)
                slow.extend(group.msgs)
        for idx, msgs, raw in parts:
            with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN fail the range
                si = raw * plan.scale + plan.offset
                ok = np.all((si >= plan.low) & (si <= plan.high), axis=1)
            out_values[asset_type][idx[ok][:, None], plan.cols] = si[ok]
            if plan.bad_cols.size:
                out_bad[asset_type][idx[:, None], plan.bad_cols] = True
            if not ok.all():
                dropped.setdefault(asset_type, []).append(idx[~ok])
                slow.extend(msgs[k] for k in np.flatnonzero(~ok).tolist())

    # the one-message path: names the reason, or (never expected) accepts
    rejects: list[tuple[int, Exception]] = []
    extra: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for i in sorted(slow):
        try:
            reading = normalize_message(payloads[i], now_ms=now_ms[i], max_bytes=max_bytes,
                                        max_future_ms=max_future_ms, max_age_ms=max_age_ms,
                                        decode=decode, clock_ms=clock_ms)
        except Exception as exc:  # noqa: BLE001 - every message is accounted for
            rejects.append((i, exc))
            continue
        extra.setdefault(reading["asset_type"], []).append((i, reading))

    blocks: dict[str, ReadingBlock] = {}
    first = {t: min(r.msgs) for t, r in rows.items()}
    for t, more in extra.items():
        first[t] = min(first.get(t, n), more[0][0])
    for asset_type in sorted(first, key=first.__getitem__):  # first-seen order
        meta = rows.get(asset_type)
        block = None
        msgs: list[int] = []
        if meta is not None:
            msgs = meta.msgs
            block = ReadingBlock(asset_type, meta.ids, meta.vendors,
                                 np.array(meta.ts, dtype=np.int64),
                                 out_values[asset_type], out_bad[asset_type])
            if asset_type in dropped:
                keep = np.ones(len(msgs), dtype=bool)
                keep[np.concatenate(dropped[asset_type])] = False
                block = block.take(np.flatnonzero(keep))
                msgs = [m for m, k in zip(msgs, keep.tolist(), strict=True) if k]
        if asset_type in extra:
            more = ReadingBlock.from_readings([r for _, r in extra[asset_type]])
            more.dicts = None
            msgs = msgs + [m for m, _ in extra[asset_type]]
            block = more if block is None or not len(block) else ReadingBlock.concat(
                [block, more])
        if block is not None and len(block):
            order = np.asarray(msgs, dtype=np.int64)
            if len(order) > 1 and not (order[1:] > order[:-1]).all():  # message order
                block = block.take(np.argsort(order, kind="stable"))
            blocks[asset_type] = block
    if len(_KNOWN_IDS) > 100_000:
        _KNOWN_IDS.clear()
    return blocks, sorted(rejects, key=lambda r: r[0])


def normalize_sources(
    messages: Sequence[tuple],
    now_ms: Sequence[int],
    *,
    decode: Callable[[bytes, int], tuple[str, dict[str, Any]]] | None = None,
    **kwargs: Any,
) -> tuple[dict[str, ReadingBlock], list[tuple[int, Exception]]]:
    """:func:`normalize_batch` of raw messages ``(source, key, value, arrival_ms)`` from
    any sources: a message whose topic a data format declares
    (:func:`~transforms.normalize.generic.adapter_for_topic`) is read by that format's
    adapter, every other one as a built-in vendor's with ``decode`` (default
    :func:`schemas.wire.decode`). Returns blocks per asset type in message order and
    rejects by index into ``messages``, as :func:`normalize_batch` does; ``kwargs`` are
    its limits and clock. What the engine bindings (Beam and Flink) both call."""
    from transforms.normalize.generic import adapter_for_topic

    vendor = {"decode": decode} if decode is not None else {}
    groups: dict[Any, list[int]] = {}
    for i, m in enumerate(messages):
        groups.setdefault(adapter_for_topic(m[0]), []).append(i)
    if len(groups) <= 1 and None in groups or not groups:  # built-in vendors only (usual)
        return normalize_batch([m[2] for m in messages], now_ms, **kwargs, **vendor)
    blocks: dict[str, ReadingBlock] = {}
    rejects: list[tuple[int, Exception]] = []
    for adapter, idx in groups.items():
        how = {"decode": adapter.decode} if adapter is not None else vendor
        got, bad = normalize_batch([messages[i][2] for i in idx], [now_ms[i] for i in idx],
                                   **kwargs, **how)
        rejects.extend((idx[k], exc) for k, exc in bad)
        for asset_type, block in got.items():
            blocks[asset_type] = block if asset_type not in blocks \
                else ReadingBlock.concat([blocks[asset_type], block])
    return blocks, sorted(rejects, key=lambda r: r[0])


def _read_frames(frames: Templates, payloads: Sequence[bytes], now_ms: Sequence[int],
                 max_bytes: int, max_future_ms: int, max_age_ms: int, latest: int,
                 groups: dict[tuple, _Group], rows: dict[str, _Rows]) -> list[int]:
    """Read the messages that fit a learned frame template as columns (see
    :mod:`transforms.normalize.frames`) into ``groups`` and ``rows``; return the indices
    of all others, in order, for the one-by-one decode."""
    todo: list[int] = []
    pending: dict[int, tuple[Template, list[int]]] = {}
    match = frames.match
    for i, payload in enumerate(payloads):
        t = match(payload) if payload is not None and len(payload) <= max_bytes else None
        if t is None:
            todo.append(i)
            continue
        entry = pending.get(id(t))
        if entry is None:
            pending[id(t)] = (t, [i])
        else:
            entry[1].append(i)
    if not pending:
        return todo
    for t, msgs in pending.values():
        if VENDORS[t.vendor].envelope is not t.envelope:  # the adapter was replaced
            frames.forget(t)
            todo.extend(msgs)
            continue
        ok, ts, values = t.read([payloads[i] for i in msgs])
        now = np.fromiter((now_ms[i] for i in msgs), dtype=np.int64, count=len(msgs))
        ok &= (ts >= now - max_age_ms) & (ts <= np.minimum(now + max_future_ms, latest))
        group = groups.get(t.layout)
        if group is None:
            group = groups[t.layout] = _Group(t.layout)
        if group.plan is None:  # (a template's layout had a plan when it was learned)
            ok[:] = False
        if not ok.all():  # not this device's frame after all, or too old or new
            todo.extend(m for m, good in zip(msgs, ok.tolist(), strict=True) if not good)
            keep = np.flatnonzero(ok)
            msgs = [msgs[k] for k in keep.tolist()]
            ts, values = ts[keep], values[keep]
        if not msgs:
            continue
        per_type = rows.get(t.asset_type)
        if per_type is None:
            per_type = rows[t.asset_type] = _Rows()
        start = len(per_type.msgs)
        per_type.msgs.extend(msgs)
        per_type.ids.extend([t.asset_id] * len(msgs))
        per_type.vendors.extend([t.vendor] * len(msgs))
        per_type.ts.extend(ts.tolist())
        take = group.plan.take
        group.fast.append((np.arange(start, start + len(msgs)), msgs,
                           values if take is None else values[:, take]))
    todo.sort()
    return todo


class _Rows:
    """The accepted messages of one asset type in a batch, as columns."""

    __slots__ = ("msgs", "ids", "vendors", "ts")

    def __init__(self) -> None:
        self.msgs: list[int] = []
        self.ids: list[str] = []
        self.vendors: list[str] = []
        self.ts: list[int] = []


_NUMBER = frozenset((float, int))
_NO_CLOCK = 2**62  # no machine clock given: no event time is after it
_KNOWN_IDS: set[str] = set()  # asset ids already found valid (bounded, see above)
_FRAMES = Templates()  # devices' frame templates, kept across batches (bounded)
# layout -> its plan, kept across batches: a plan takes ~0.7 ms (unit conversions) and a
# device sends the same layout for as long as it runs
_PLANS: dict[tuple, _Plan | None] = {}


def _valid_id(asset_id: Any) -> bool:
    try:
        check_asset_id(asset_id)
    except InvalidReading:
        return False
    _KNOWN_IDS.add(asset_id)
    return True


class _Plan:
    """What a layout's points become: for its good points, their column, SI conversion and
    range; the columns flagged bad. ``None`` when the layout cannot be valid as a whole
    (unknown tag or unit, a sensor twice, no good point): such messages take the
    one-message path."""

    __slots__ = ("good", "take", "cols", "scale", "offset", "low", "high", "bad_cols")

    @staticmethod
    def of(vendor: str, asset_type: str, points: tuple) -> _Plan | None:
        tags = _adapter(vendor).TAGS.get(asset_type, {})
        sensors = {s.name: (j, s) for j, s in enumerate(sensors_of(asset_type))}
        plan = _Plan()
        good, cols, scale, offset, low, high, bad_cols, seen = [], [], [], [], [], [], [], set()
        for k, (tag, unit, quality) in enumerate(points):
            mapped = tags.get(tag) if isinstance(tag, str) else None
            if mapped is None or mapped[0] in seen or mapped[0] not in sensors:
                return None
            seen.add(mapped[0])
            j, sensor = sensors[mapped[0]]
            try:
                a, b = factors(unit, sensor.unit)
            except InvalidReading:
                return None
            if quality == GOOD:
                good.append(k)
                cols.append(j)
                scale.append(a)
                offset.append(b)
                low.append(sensor.low)
                high.append(sensor.high)
            elif quality in QUALITIES:  # uncertain or bad
                bad_cols.append(j)
            else:
                return None
        if not good:
            return None
        plan.good = np.asarray(good, dtype=np.intp)
        # as a list (indexing Python lists with numpy ints is slow); None: every point
        plan.take = None if len(good) == len(points) else good
        plan.cols = np.asarray(cols, dtype=np.intp)
        plan.scale, plan.offset = np.asarray(scale), np.asarray(offset)
        plan.low, plan.high = np.asarray(low), np.asarray(high)
        plan.bad_cols = np.asarray(bad_cols, dtype=np.intp)
        return plan


class _Group:
    """The messages of one layout in a batch: read one by one (``rows`` of their asset
    type, ``values``, ``msgs``) and read as columns (``fast``: row indices, messages and
    a value matrix per frame template)."""

    __slots__ = ("layout", "plan", "rows", "values", "msgs", "fast")

    def __init__(self, layout: tuple) -> None:
        self.layout = layout
        try:
            self.plan = _PLANS[layout]
        except KeyError:
            vendor, asset_type, tags, units, qualities = layout
            try:
                self.plan = _Plan.of(vendor, asset_type, tuple(zip(tags, units, qualities)))
            except Exception:  # noqa: BLE001 - odd points: the one-message path
                self.plan = None
            if len(_PLANS) >= 10_000:  # bounded: a flood of odd layouts cannot grow it
                _PLANS.clear()
            _PLANS[layout] = self.plan
        self.rows: list[int] = []
        self.values: list[Sequence[Any]] = []
        self.msgs: list[int] = []
        self.fast: list[tuple[np.ndarray, list[int], np.ndarray]] = []
