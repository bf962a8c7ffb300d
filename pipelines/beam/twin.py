"""Beam binding of the per-asset twin: a stateful DoFn keyed by asset id.

``TwinFn`` keeps one :class:`~transforms.twin.AssetTwin` per key in ``TWIN_STATE`` and
two event-time timers, at the earliest and at the newest open window's deadline (end +
allowed lateness): the runner's watermark closes windows of quiet assets, the data
watermark inside the twin closes the rest. The second timer matters when the watermark
jumps (the end of a bounded input: to +inf): every open window then closes in one firing
and one state write, not one firing, one state write and one twin pickle per window (the
runner fires timers set in a handler only in its next round). All maths is in
``transforms``; this file only reads state, calls, writes state and emits, tagging outputs
by kind.

Bounded runs that continue later (``twin run --source kafka``) use *checkpoint* mode: the
end-of-input timer does not close the open windows but emits each twin, pickled, to the
``checkpoint`` output; the job stores them with the offsets read, and the next run starts
each asset's twin from them (``initial_path``: the state file, read once per worker in
``setup`` through Beam's FileSystems, so local paths and ``gs://`` both work), open windows
included, so a reading that arrives in the next run still lands in its window.
"""

from __future__ import annotations

import pickle
from typing import Any

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.runners.worker import statecache
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import TimestampedValue

from pipelines import progress
from transforms.columns import ReadingBlock
from transforms.twin import ACTION, DUPLICATE, FEATURES, LATE, PREDICTION, STATE, AssetTwin

TAGS = (FEATURES, PREDICTION, ACTION, STATE, LATE)
CHECKPOINT = "checkpoint"

# What one twin weighs in the SDK's state cache: about its in-memory size with its open
# windows (17 kB measured with tracemalloc at 1 sample/s, 10 s windows, 60 s lateness).
# Beam measures every value it caches with objsize, on every state write and clear, and
# each such call first walks the globals of every loaded module (~1 ms here): that was
# 45 % of the pipeline's time. Twins are weighed at this fixed size instead (`_weigh`);
# every other cached value is measured as Beam does. The cache's size is
# --max_cache_memory_usage_mb, on the DirectRunner too (pipelines.beam.runner: 1,000 MB,
# ~40,000 twins, by default; Beam's own DirectRunner cache is 100 MB, ~4,000 twins).
TWIN_CACHE_WEIGHT = 24 << 10


class _Cached:
    """The twin as the state cache holds it: what ``_weigh`` recognises and weighs at
    ``TWIN_CACHE_WEIGHT`` instead of walking it."""

    __slots__ = ("twin",)

    def __init__(self, twin: AssetTwin) -> None:
        self.twin = twin

    def __reduce__(self):
        return _Cached, (self.twin,)


def _weigh(*objs: Any) -> int:
    if len(objs) == 1 and type(objs[0]) is list and all(type(o) is _Cached for o in objs[0]):
        return 64 + TWIN_CACHE_WEIGHT * len(objs[0])  # a twin's state (or its clearing)
    return _measure(*objs)


_measure = statecache.get_deep_size
if getattr(_measure, "__name__", "") != "_weigh":  # once per process, whatever reloads
    statecache.get_deep_size = _weigh


def _read(state) -> AssetTwin | None:
    held = state.read()
    return held.twin if held is not None else None


class TwinFn(beam.DoFn):
    """Readings keyed by asset id in; features, predictions, actions, state, late out."""

    TWIN_STATE = ReadModifyWriteStateSpec("twin", PickleCoder())
    CLOSE_TIMER = TimerSpec("close", TimeDomain.WATERMARK)
    LAST_TIMER = TimerSpec("last", TimeDomain.WATERMARK)

    def __init__(self, twin_kwargs: dict[str, Any] | None = None,
                 checkpoint: bool = False, initial_path: str | None = None) -> None:
        self.twin_kwargs = twin_kwargs or {}
        self.checkpoint = checkpoint
        self.initial_path = initial_path
        self._initial: dict[str, bytes] = {}
        self.counters = {
            LATE: Metrics.counter("twin", "late_readings"),
            DUPLICATE: Metrics.counter("twin", "duplicate_readings"),
            FEATURES: Metrics.counter("twin", "windows"),
            PREDICTION: Metrics.counter("twin", "predictions"),
        }
        self.anomalies = Metrics.counter("twin", "anomalies")
        self.drift_events = Metrics.counter("twin", "drift_events")

    def _emit(self, outputs, timer, last, twin: AssetTwin):
        for tag, record in outputs:
            if tag in self.counters:
                self.counters[tag].inc()
            if tag == PREDICTION:
                progress.add("windows")
                if record["is_anomaly"]:
                    self.anomalies.inc()
                if record["drift"]:
                    self.drift_events.inc()
            elif tag == ACTION:
                Metrics.counter("twin.actions", record["kind"]).inc()
            if tag == DUPLICATE:
                continue  # counted; the first copy is in its window
            ts = record.get("window_end_ms", record.get("ts_ms"))
            yield beam.pvalue.TaggedOutput(tag, TimestampedValue(record, ts / 1000.0))
        deadline = twin.next_deadline_ms()
        if deadline is None and self.checkpoint:  # the end-of-input timer must fire
            deadline = max(twin.buffer.max_ts_ms, 0)
        if deadline is not None:
            timer.set(deadline / 1000.0)
        if not self.checkpoint:  # (checkpoint mode hands the twin over once, at the end)
            newest = twin.last_deadline_ms()
            if newest is not None and newest != deadline:
                last.set(newest / 1000.0)

    def setup(self) -> None:
        if self.initial_path:
            from pipelines.statefile import read_state

            self._initial = read_state(self.initial_path)["twins"]

    def process(
        self,
        element: tuple[str, dict[str, Any]],
        state=beam.DoFn.StateParam(TWIN_STATE),
        timer=beam.DoFn.TimerParam(CLOSE_TIMER),
        last=beam.DoFn.TimerParam(LAST_TIMER),
    ):
        asset_id, readings = element  # one reading (dict) or a block of this asset's
        block = readings if isinstance(readings, ReadingBlock) else None
        twin = _read(state)
        if twin is None and asset_id in self._initial:
            twin = pickle.loads(self._initial[asset_id])  # continue where the last run stopped
        if twin is None:
            asset_type = block.asset_type if block is not None else readings["asset_type"]
            twin = AssetTwin(asset_id, asset_type, **self.twin_kwargs)
        outputs = twin.add_block(block) if block is not None else twin.add(readings)
        state.write(_Cached(twin))
        yield from self._emit(outputs, timer, last, twin)

    @on_timer(CLOSE_TIMER)
    @on_timer(LAST_TIMER)
    def on_close(
        self,
        fire_ts=beam.DoFn.TimestampParam,
        state=beam.DoFn.StateParam(TWIN_STATE),
        timer=beam.DoFn.TimerParam(CLOSE_TIMER),
        last=beam.DoFn.TimerParam(LAST_TIMER),
    ):
        """Either timer: the watermark passed ``fire_ts``; close what that closes."""
        twin = _read(state)
        if twin is None:
            return
        if self.checkpoint:  # bounded input ended: hand the twin over, windows still open
            yield beam.pvalue.TaggedOutput(CHECKPOINT, (twin.asset_id, pickle.dumps(twin)))
            return
        outputs = twin.advance(int(fire_ts.micros // 1000))
        if not outputs:  # the other timer closed these windows already: nothing changed
            return
        state.write(_Cached(twin))
        yield from self._emit(outputs, timer, last, twin)


def _keyed(element):
    """``(asset_id, ReadingBlock)`` as it comes from normalization; a reading dict keyed."""
    return element if isinstance(element, tuple) else (element["asset_id"], element)


class RunTwins(beam.PTransform):
    """Canonical readings (``(asset_id, ReadingBlock)`` or reading dicts) -> a dict of
    PCollections keyed by :data:`TAGS`."""

    def __init__(self, twin_kwargs: dict[str, Any] | None = None,
                 initial_path: str | None = None, checkpoint: bool = False) -> None:
        """``initial_path``: a state file to start the twins from; ``checkpoint``: bounded
        runs only, see the module doc (adds a ``checkpoint`` output).
        """
        super().__init__()
        self.twin_kwargs = twin_kwargs
        self.initial_path = initial_path
        self.checkpoint = checkpoint

    def expand(self, readings):
        tags = (*TAGS, CHECKPOINT) if self.checkpoint else TAGS
        outs = (
            readings
            | "KeyByAsset" >> beam.Map(_keyed).with_output_types(tuple[str, Any])
            | "Twin" >> beam.ParDo(TwinFn(self.twin_kwargs, self.checkpoint,
                                          self.initial_path)).with_outputs(*tags)
        )
        return {tag: outs[tag] for tag in tags}
