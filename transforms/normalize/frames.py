"""Columnar decoding of repeated binary frames: a device's frames differ only in numbers.

A device sends the same Avro frame again and again: its id, model, tags, units and
quality codes do not change, only its time stamp and values do. So after one frame of a
device has gone the whole way (decoded by fastavro, read by its vendor's ``envelope``,
validated), its bytes become a :class:`Template`: which bytes must stay as they are, and
where the time and each point's value sit. Later frames of the same device are then read
*as columns*, thousands at once with numpy: stack them as a byte matrix, check every
fixed byte in one comparison, view the value bytes as ``float64`` and decode the time's
varint arithmetically. No per-frame Python beyond finding its template.

The result is the same record by construction: a frame is read this way only when every
byte outside its number fields equals the template's, its number fields have the same
widths, and it has the same length, so fastavro would decode it to the template's
record with these numbers in place. Anything else (another device, a changed layout, a
corrupt frame) falls back to the one-frame path, which judges it as before.

Which vendor adapters can use it is decided by tracing, not declared: the template's
record is passed through the vendor's ``envelope`` with every number leaf replaced by a
:class:`_Slot` placeholder that refuses any use but being passed along. The template is
kept only if the time and every point's value come out as slots, untouched, and nothing
else does: the adapter reads them as they are. Helios frames qualify. Text formats (Orca
CSV, Kestrel JSON) keep their numbers inside strings of varying width: their adapters
compile a :class:`TextTemplate` instead, a regular expression over the whole frame (their
``text_template`` and ``frame_key``), read with the same interface.

>>> from transforms.sample import Sample
>>> from transforms.normalize import encode_message, helios
>>> from schemas.wire import decode
>>> t = lambda ms, flow: encode_message("helios", Sample("p1", "pump", ms, {"flow": flow}))
>>> frames = Templates()
>>> first = t(1_795_860_005_000, 0.05)
>>> frames.learn(first, "vendor/helios_raw.v1", decode(first)[1], helios) is not None
True
>>> later = [t(1_795_860_006_000, 0.06), t(1_795_860_007_000, 0.07)]
>>> tpl = frames.match(later[0])
>>> ok, ts, values = tpl.read(later)
>>> ok.tolist(), ts.tolist()
([True, True], [1795860006000, 1795860007000])
>>> values[:, 0].tolist() == [decode(f)[1]["points"][0]["value"] for f in later]
True
"""

from __future__ import annotations

import copy
import re
from types import ModuleType
from typing import Any

import numpy as np

from schemas import raw
from schemas.frames import NUMBERS, prefix_reader, spans
from schemas.wire import HEADER

MAX_TEMPLATES = 20_000  # bounded: a flood of distinct devices cannot grow it without end


class _Slot:
    """A placeholder for a number leaf while tracing an envelope: passing it along is all
    it allows (any comparison, arithmetic, truth test or hash raises)."""

    __slots__ = ("leaf",)

    def __init__(self, leaf: int) -> None:
        self.leaf = leaf

    def _refuse(self, *_: Any) -> Any:
        raise _Touched

    __bool__ = __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __hash__ = _refuse
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = _refuse
    __float__ = __int__ = __index__ = __neg__ = __abs__ = _refuse


class _Touched(Exception):
    """An envelope did more with a number leaf than pass it along."""


class Template:
    """One device's frame: its fixed bytes, where its time and point values are, and what
    its vendor's envelope made of it (asset id and type, points' tags, units, qualities).
    """

    __slots__ = ("length", "vendor", "asset_id", "asset_type", "layout", "_fixed",
                 "_fixed_bytes", "_cont", "_cont_bits", "_ts", "_values", "_float32",
                 "hits", "misses", "key", "envelope")

    def read(self, frames: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(ok, ts_ms, values)`` for frames of this template's length: ``ok`` where a
        frame is this template's with other numbers; ``ts_ms`` (``int64``) and ``values``
        (``float64 (n, points)``, the vendor's units) valid where ``ok``."""
        n = len(frames)
        a = np.frombuffer(b"".join(frames), dtype=np.uint8).reshape(n, self.length)
        ok = (a[:, self._fixed] == self._fixed_bytes).all(axis=1)
        if self._cont.size:  # every varint keeps its width
            ok &= ((a[:, self._cont] & 0x80) == self._cont_bits).all(axis=1)
        hits = int(np.count_nonzero(ok))
        self.hits += hits
        self.misses += n - hits
        raw_ts = (a[:, self._ts] & 0x7F).astype(np.uint64)
        raw_ts <<= np.arange(0, 7 * len(self._ts), 7, dtype=np.uint64)
        v = raw_ts.sum(axis=1, dtype=np.uint64)
        ts = (v >> np.uint64(1)).astype(np.int64) ^ -(v & np.uint64(1)).astype(np.int64)
        values = np.ascontiguousarray(a[:, self._values])  # (n, points * width) bytes
        values = values.view("<f4" if self._float32 else "<f8")
        return ok, ts, values.astype(np.float64, copy=False)


class Templates:
    """The templates learned so far, found by a frame's length and its bytes up to its
    first number (the identity: schema id, device strings, union branches)."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[int, bytes], Template | None] = {}
        self._readers: dict[bytes, Any] = {}  # schema id bytes -> prefix reader
        self._refused: set[bytes] = set()  # schema ids whose adapter reads numbers itself
        self._texts: dict[bytes, Any] = {}  # schema id bytes -> its vendor's frame_key
        self._by_text: dict[tuple[bytes, bytes], TextTemplate | None] = {}

    def match(self, frame: bytes) -> Template | TextTemplate | None:
        """The template ``frame`` may be an instance of (to be confirmed by
        :meth:`Template.read`), or ``None``."""
        sid = frame[1:5]
        reader = self._readers.get(sid)
        if reader is None:
            key_of = self._texts.get(sid)
            if key_of is None:
                return None
            key = key_of(frame)
            return self._by_text.get((sid, key)) if key is not None else None
        end = reader(frame, HEADER.size)
        if end is None:
            return None
        return self._by_key.get((len(frame), frame[:end]))

    def learn(self, frame: bytes, name: str, record: dict[str, Any],
              module: ModuleType) -> Template | None:
        """Make ``frame`` (decoded to ``record`` of schema ``name``, and accepted whole by
        the one-frame path) the template of its device, when its vendor qualifies (see the
        module doc). Returns the template, or ``None``."""
        sid = frame[1:5]
        if hasattr(module, "text_template"):  # a text format whose vendor compiles them
            return self._learn_text(sid, frame, record, module)
        if sid in self._refused:
            return None
        schema = raw(name)
        reader = self._readers.get(sid)
        if reader is None:
            reader = prefix_reader(schema)
            if reader is None:  # no record of this schema has an identity prefix
                self._refuse(sid)
                return None
            self._readers[sid] = reader
        end = reader(frame, HEADER.size)
        if end is None:  # this frame's prefix runs past its numbers: no template for it
            return None
        key = (len(frame), frame[:end])
        old = self._by_key.get(key, False)
        if old is None or (old and old.misses <= old.hits):
            return old  # (a device whose frames no longer fit gets a new template)
        template = _build(frame, schema, record, module)
        if template is False:  # the adapter does not pass numbers through: never again
            self._refuse(sid)
            return None
        if template is not None:
            template.key = key
        if len(self._by_key) >= MAX_TEMPLATES:
            self._by_key.clear()
        self._by_key[key] = template
        return template

    def _learn_text(self, sid: bytes, frame: bytes, record: dict[str, Any],
                    module: ModuleType) -> TextTemplate | None:
        key = module.frame_key(frame)
        if key is None:
            return None
        self._texts[sid] = module.frame_key
        old = self._by_text.get((sid, key), False)
        if old is None or (old and old.misses <= old.hits):
            return old
        template = module.text_template(frame, record)
        if template is not None:
            template.key = (sid, key)
        if len(self._by_text) >= MAX_TEMPLATES:
            self._by_text.clear()
        self._by_text[(sid, key)] = template
        return template

    def forget(self, template: Template | TextTemplate) -> None:
        """Drop ``template`` (its adapter changed: what it traced no longer holds)."""
        held = self._by_text if isinstance(template, TextTemplate) else self._by_key
        if held.get(template.key) is template:
            del held[template.key]

    def _refuse(self, sid: bytes) -> None:
        self._refused.add(sid)
        self._readers.pop(sid, None)

    def clear(self) -> None:
        self._by_key.clear()
        self._readers.clear()
        self._refused.clear()
        self._texts.clear()
        self._by_text.clear()


def _build(frame: bytes, schema: Any, record: dict[str, Any],
           module: ModuleType) -> Template | None | bool:
    """The template of ``frame``; ``None`` when this frame cannot be one (odd widths),
    ``False`` when the vendor's adapter does not pass its numbers through untouched."""
    leaves = spans(schema, frame, HEADER.size)
    if leaves is None:
        return None
    numbers = [(path, kind, start, end) for path, kind, start, end in leaves
               if kind in NUMBERS]
    if any(kind == "long" and end - start > 9 for _, kind, start, end in numbers):
        return None  # a varint beyond 63 bits: not worth the arithmetic
    traced = copy.deepcopy(record)
    for k, (path, _, _, _) in enumerate(numbers):
        node = traced
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = _Slot(k)
    try:
        asset_id, asset_type, ts, points = module.envelope(traced)
        tags, values, units, qualities = zip(*points, strict=True)
    except _Touched:
        return False
    except Exception:  # noqa: BLE001 - this frame's fault, not the adapter's: no template
        return None
    plain = (asset_id, asset_type, *tags, *units, *qualities)
    if any(isinstance(x, _Slot) for x in plain):
        return False
    if not isinstance(ts, _Slot) or numbers[ts.leaf][1] != "long":
        return False
    if not all(isinstance(v, _Slot) for v in values):
        return False
    kinds = {numbers[v.leaf][1] for v in values}
    if len(kinds) != 1 or kinds <= {"long"}:
        return False
    width = 4 if kinds == {"float"} else 8
    t = Template()
    t.length = len(frame)
    t.vendor = module.VENDOR
    t.asset_id, t.asset_type = asset_id, asset_type
    t.layout = (module.VENDOR, asset_type, tags, units, qualities)
    fixed = np.ones(len(frame), dtype=bool)
    cont: list[int] = []
    for _, kind, start, end in numbers:
        fixed[start:end] = False
        if kind == "long":
            cont.extend(range(start, end))
    t._fixed = np.flatnonzero(fixed)
    frame_bytes = np.frombuffer(frame, dtype=np.uint8)
    t._fixed_bytes = frame_bytes[t._fixed]
    t._cont = np.asarray(cont, dtype=np.intp)
    t._cont_bits = frame_bytes[t._cont] & 0x80
    _, _, ts_start, ts_end = numbers[ts.leaf]
    t._ts = np.arange(ts_start, ts_end, dtype=np.intp)
    t._values = np.concatenate([np.arange(numbers[v.leaf][2], numbers[v.leaf][2] + width)
                                for v in values]).astype(np.intp)
    t._float32 = width == 4
    t.hits = t.misses = 0
    t.envelope = module.envelope  # what was traced (a replaced adapter voids the template)
    return t


class TextTemplate:
    """A device's *text* frame (numbers written as text inside an Avro string): a regular
    expression over the whole frame's bytes with the device's fixed text, its time's and
    its values' digits as groups. Built by its vendor module's ``text_template(frame,
    record)``, which knows where its format keeps what (Orca's CSV); the vendor module's
    ``frame_key(frame)`` finds a frame's device in its bytes to look the template up.

    The same record by construction: a frame is read this way only when it matches the
    expression whole, so every byte but the number fields and the varints of the string
    lengths and ignored longs (of the template's widths) is the template's, and the
    string length's varint is checked against the bytes that follow; the number fields'
    digits are of forms the vendor's envelope reads exactly as :meth:`read` does.
    """

    __slots__ = ("vendor", "asset_id", "asset_type", "layout", "envelope", "hits", "misses",
                 "key", "_regex", "_ident", "_ts_ms", "_tail")

    def __init__(self, module: ModuleType, asset_id: str, asset_type: str, layout: tuple,
                 pattern: bytes, ident: bytes, ts_ms: Any, tail: int = 0) -> None:
        """``pattern``: group 1 is the varint of the length of the string whose text holds
        the numbers, which runs to ``tail`` bytes before the frame's end; group 2 the
        device's identity, which must read ``ident``; the groups ``ts_ms(groups)`` reads
        come next, then one group per point value. ``ts_ms``: the frame's time from its
        groups (bytes); a ``ValueError`` refuses the frame. Devices of one shape (the
        same pattern, the identity aside) share one compiled expression."""
        self.vendor = module.VENDOR
        self.envelope = module.envelope  # (a replaced adapter voids the template)
        self.asset_id, self.asset_type, self.layout = asset_id, asset_type, layout
        self._regex, self._ident = compiled(pattern), ident
        self._ts_ms, self._tail = ts_ms, tail
        self.hits = self.misses = 0
        self.key: Any = None

    def read(self, frames: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(ok, ts_ms, values)`` as :meth:`Template.read` gives them."""
        n, points = len(frames), len(self.layout[2])
        ok = np.zeros(n, dtype=bool)
        ts = np.zeros(n, dtype=np.int64)
        values = np.zeros((n, points))
        fullmatch, ts_ms, tail, ident = self._regex.fullmatch, self._ts_ms, self._tail, self._ident
        good: list[int] = []
        times: list[int] = []
        numbers: list[bytes] = []
        for i, frame in enumerate(frames):
            m = fullmatch(frame)
            if m is None:
                continue
            groups = m.groups()
            if groups[1] != ident:
                continue
            length = 0
            for shift, byte in enumerate(groups[0]):  # the string's length, zigzag varint
                length |= (byte & 0x7F) << (7 * shift)
            if length >> 1 != len(frame) - m.end(1) - tail or length & 1:
                continue
            try:
                times.append(ts_ms(groups))
            except ValueError:  # (a date that does not exist: the one-frame path says so)
                continue
            good.append(i)
            numbers.extend(groups[-points:])
        if good:
            rows = np.asarray(good, dtype=np.intp)
            ok[rows] = True
            ts[rows] = times
            values[rows] = np.array(list(map(float, numbers))).reshape(len(good), points)
        hits = len(good)
        self.hits += hits
        self.misses += n - hits
        return ok, ts, values


_PATTERNS: dict[bytes, re.Pattern] = {}


def compiled(pattern: bytes) -> re.Pattern:
    """``pattern`` compiled once per process (bounded like the templates): compiling a
    Kestrel device's ~1 kB expression takes ~0.3 ms, and a fleet has few shapes."""
    regex = _PATTERNS.get(pattern)
    if regex is None:
        if len(_PATTERNS) >= MAX_TEMPLATES:
            _PATTERNS.clear()
        regex = _PATTERNS[pattern] = re.compile(pattern, re.DOTALL)
    return regex


def zigzag(n: int) -> bytes:
    """Avro's encoding of the long ``n`` (zigzag, then a little-endian base-128 varint)."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def varint_pattern(width: int, group: bool = False) -> bytes:
    """A regular expression for any varint of ``width`` bytes (optionally a group)."""
    body = rb"[\x80-\xff]{%d}[\x00-\x7f]" % (width - 1)
    return b"(" + body + b")" if group else body


def key_between(frame: bytes, before: bytes, end: bytes) -> bytes | None:
    """The bytes after the first ``before`` in ``frame`` up to the next ``end`` (within
    200 bytes): a text frame's device, as its vendor's ``frame_key`` finds it; ``None``
    when either is missing."""
    i = frame.find(before)
    if i < 0:
        return None
    i += len(before)
    j = frame.find(end, i, i + 200)
    return frame[i:j] if j > 0 else None
