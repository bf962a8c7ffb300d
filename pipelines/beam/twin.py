"""Beam binding of the twins: a stateful DoFn keyed by *shard*, a set of assets.

``TwinFn`` keeps one :class:`~transforms.twin.TwinShard` (the twins of the assets whose
:func:`~transforms.twin.shard_of` is its key) in ``TWIN_STATE`` and two event-time timers,
at the earliest and at the newest open window's deadline (end + allowed lateness) of any
of its twins: the runner's watermark closes windows of quiet assets, the data watermark
inside each twin closes the rest. The second timer matters when the watermark jumps (the
end of a bounded input: to +inf): every open window then closes in one firing and one
state write, not one firing, one state write and one pickle per window (the runner fires
timers set in a handler only in its next round). All maths is in ``transforms``; this
file only reads state, calls, writes state and emits, tagging outputs by kind.

Why shards, not assets: a stateful DoFn sees one key per call. Keyed by asset, every
asset of a source batch cost a call, a state read and write and two timers, and its
windows were computed alone. Keyed by shard, normalization hands over each shard's part
of the batch as one element (``(shard, [(asset_id, ReadingBlock), ...])``) and the windows
it closes, across assets, are computed together; every twin's outputs are the ones it
gives alone (``tests/transforms/test_twin.py``). The price: a runner can spread the
twins over at most ``shards`` workers, and a state value holds a shard's twins (~15 kB
each), written whole when any of them changed in a bundle. That suits bounded runs (a
bundle is a whole source batch) and not a stream on a runner whose bundles hold a few
messages: every message would rewrite its shard's whole value. ``--shards`` sets it
(default :data:`~transforms.twin.DEFAULT_SHARDS` for bounded runs); 0 is one key per
asset (the default of ``--unbounded`` runs), 1 one state value for the whole fleet.

Bounded runs that continue later (``twin run --source kafka``) use *checkpoint* mode: the
end-of-input timer does not close the open windows but emits each twin, pickled, with its
newest event time, to the ``checkpoint`` output; the job stores them with the offsets
read, and the next run starts each asset's twin from them (``initial_path``: the state
file, read once per worker in ``setup`` through Beam's FileSystems, so local paths and
``gs://`` both work; only if its SHA-256 is ``initial_sha256``, the digest of the file
the job verified with the signing key, see :mod:`pipelines.statefile`), open windows
included, so a reading that arrives in the next run still lands in its window. The state
file holds twins by asset, so a run may change ``--shards``.

:class:`FlushTwins` is how a twin leaves the state file (:mod:`transforms.retention`):
its open windows are closed and scored, the outputs tagged as the twins' own.
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
from transforms.deadletter import DEAD_LETTER
from transforms.twin import (
    ACTION,
    DEFAULT_SHARDS,
    DUPLICATE,
    FEATURES,
    LATE,
    PREDICTION,
    STATE,
    AssetTwin,
    TwinShard,
    shard_of,
)

TAGS = (FEATURES, PREDICTION, ACTION, STATE, LATE, DEAD_LETTER)
CHECKPOINT = "checkpoint"

# What one twin weighs in the SDK's state cache (a shard weighs its twins): about its
# in-memory size with its open windows at 1 sample/s, 10 s windows, 60 s lateness.
# Beam measures every value it caches with objsize, on every state write and clear, and
# each such call first walks the globals of every loaded module (about a millisecond),
# which dominated the pipeline's time. Twins are weighed at this fixed size instead (`_weigh`);
# every other cached value is measured as Beam does. The cache's size is
# --max_cache_memory_usage_mb, on the DirectRunner too (pipelines.beam.runner: 1,000 MB,
# ~40,000 twins, by default; Beam's own DirectRunner cache is 100 MB, ~4,000 twins).
TWIN_CACHE_WEIGHT = 24 << 10


class _Cached:
    """A shard as the state cache holds it: what ``_weigh`` recognises and weighs at
    ``TWIN_CACHE_WEIGHT`` per twin instead of walking it."""

    __slots__ = ("shard",)

    def __init__(self, shard: TwinShard) -> None:
        self.shard = shard

    def __reduce__(self):
        return _Cached, (self.shard,)


def _weigh(*objs: Any) -> int:
    if len(objs) == 1 and type(objs[0]) is list and all(type(o) is _Cached for o in objs[0]):
        # a shard's state (or its clearing)
        return 64 + TWIN_CACHE_WEIGHT * sum(max(len(o.shard), 1) for o in objs[0])
    return _measure(*objs)


_measure = statecache.get_deep_size
if getattr(_measure, "__name__", "") != "_weigh":  # once per process, whatever reloads
    statecache.get_deep_size = _weigh


def _read(state) -> TwinShard | None:
    held = state.read()
    return held.shard if held is not None else None


class _Counted:
    """The twins' outputs counted (windows, predictions, anomalies, actions, dead letters,
    ...) and tagged, stamped with their event time: the same for :class:`TwinFn` and
    :class:`FlushTwinFn`."""

    def __init__(self) -> None:
        self.counters = {
            LATE: Metrics.counter("twin", "late_readings"),
            DUPLICATE: Metrics.counter("twin", "duplicate_readings"),
            FEATURES: Metrics.counter("twin", "windows"),
            PREDICTION: Metrics.counter("twin", "predictions"),
        }
        self.anomalies = Metrics.counter("twin", "anomalies")
        self.drift_events = Metrics.counter("twin", "drift_events")
        # a reading the event-time guard holds back passed normalization (counted valid
        # there) and is a dead letter after all: readings_in == valid + dead letters
        self.readings_valid = Metrics.counter("twin", "readings_valid")
        self.dead_letters = Metrics.counter("twin", "dead_letters")

    def tagged(self, outputs):
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
            elif tag == DEAD_LETTER:
                self.readings_valid.dec()
                self.dead_letters.inc()
                Metrics.counter("twin.dead_letters", record["reason"]).inc()
            if tag == DUPLICATE:
                continue  # counted; the first copy is in its window
            ts = record.get("window_end_ms", record.get("ts_ms"))
            yield beam.pvalue.TaggedOutput(tag, TimestampedValue(record, ts / 1000.0))


class TwinFn(beam.DoFn):
    """``(shard, [(asset_id, ReadingBlock) | reading dict, ...])`` in; features,
    predictions, actions, state, late readings and the dead letters of readings the
    event-time guard held back (:mod:`transforms.eventtime`) out."""

    TWIN_STATE = ReadModifyWriteStateSpec("twin", PickleCoder())
    CLOSE_TIMER = TimerSpec("close", TimeDomain.WATERMARK)
    LAST_TIMER = TimerSpec("last", TimeDomain.WATERMARK)

    def __init__(self, twin_kwargs: dict[str, Any] | None = None,
                 checkpoint: bool = False, initial_path: str | None = None,
                 initial_sha256: str | None = None, plant=None) -> None:
        if initial_path and not initial_sha256:
            raise ValueError("initial_path needs the initial_sha256 of the verified file")
        self.twin_kwargs = twin_kwargs or {}
        self.plant = plant  # transforms.plant.Plant: installed in each worker
        self.checkpoint = checkpoint
        self.initial_path = initial_path
        self.initial_sha256 = initial_sha256
        self._initial: dict[str, bytes] = {}
        self.counted = _Counted()

    def _emit(self, outputs, timer, last, shard: TwinShard):
        yield from self.counted.tagged(outputs)
        deadline = shard.next_deadline_ms()
        if deadline is None and self.checkpoint:  # the end-of-input timer must fire
            deadline = max(max((t.buffer.max_ts_ms for t in shard.twins.values()),
                               default=0), 0)
        if deadline is not None:
            timer.set(deadline / 1000.0)
        if not self.checkpoint:  # (checkpoint mode hands the twins over once, at the end)
            newest = shard.last_deadline_ms()
            if newest is not None and newest != deadline:
                last.set(newest / 1000.0)

    def setup(self) -> None:
        from pipelines.worker import tune_gc

        tune_gc()
        if self.plant is not None:
            self.plant.install()
        if self.initial_path:
            from pipelines.statefile import load_twins

            self._initial = load_twins(self.initial_path, self.initial_sha256)

    def process(
        self,
        element: tuple[int, list],
        state=beam.DoFn.StateParam(TWIN_STATE),
        timer=beam.DoFn.TimerParam(CLOSE_TIMER),
        last=beam.DoFn.TimerParam(LAST_TIMER),
    ):
        _, items = element  # this shard's readings: (asset_id, ReadingBlock) or dicts
        shard = _read(state) or TwinShard(self.twin_kwargs)
        outputs = shard.add(items, self._restore)
        state.write(_Cached(shard))
        yield from self._emit(outputs, timer, last, shard)

    def _restore(self, asset_id: str) -> AssetTwin | None:
        """A twin saved by the run before (``initial_path``), to continue where it stopped."""
        held = self._initial.get(asset_id)
        return pickle.loads(held) if held is not None else None

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
        shard = _read(state)
        if shard is None:
            return
        if self.checkpoint:  # bounded input ended: hand the twins over, windows still open
            for asset_id, twin in shard.twins.items():
                yield beam.pvalue.TaggedOutput(
                    CHECKPOINT, (asset_id, pickle.dumps(twin), int(twin.buffer.max_ts_ms)))
            return
        outputs = shard.advance(int(fire_ts.micros // 1000))
        if not outputs:  # the other timer closed these windows already: nothing changed
            return
        state.write(_Cached(shard))
        yield from self._emit(outputs, timer, last, shard)


def group_by_shard(items: list, shards: int) -> dict[int | str, list]:
    """``(asset_id, ReadingBlock)`` pairs or reading dicts -> ``{shard: [item, ...]}``,
    each shard's items in their order; ``shards`` 0: the asset id is the key."""
    groups: dict[int | str, list] = {}
    for item in items:
        asset_id = item["asset_id"] if isinstance(item, dict) else item[0]
        groups.setdefault(shard_of(asset_id, shards) if shards else asset_id, []).append(item)
    return groups


def _sharded(element, shards: int):
    """Readings as the twins take them, ``(shard, [item, ...])``: a shard's group from
    normalization as it is; one asset's ``(asset_id, ReadingBlock)`` or a reading dict
    as a group of one."""
    if isinstance(element, tuple) and isinstance(element[1], list):
        return element
    ((shard, items),) = group_by_shard([element], shards).items()
    return shard, items


class RunTwins(beam.PTransform):
    """Canonical readings (``(shard, [...])`` groups from
    :class:`~pipelines.beam.normalize.NormalizeReadings` with ``shards``, one asset's
    ``(asset_id, ReadingBlock)``, or reading dicts) -> a dict of PCollections keyed by
    :data:`TAGS`."""

    def __init__(self, twin_kwargs: dict[str, Any] | None = None,
                 initial_path: str | None = None, checkpoint: bool = False,
                 shards: int = DEFAULT_SHARDS, initial_sha256: str | None = None,
                 plant=None) -> None:
        """``initial_path``: a state file to start the twins from (``initial_sha256``: the
        digest of its verified bytes); ``checkpoint``: bounded runs only, see the module
        doc (adds a ``checkpoint`` output of ``(asset_id, pickled twin, newest event
        ms)``); ``shards``: the number of state keys, 0 for one per asset (the same as
        normalization's, when it groups); ``plant``: a :class:`~transforms.plant.Plant`
        installed in every worker, None: the built-in fleet's."""
        super().__init__()
        if shards < 0:
            raise ValueError(f"shards must be 0 (one per asset) or more, got {shards}")
        self.twin_kwargs = twin_kwargs
        self.initial_path = initial_path
        self.initial_sha256 = initial_sha256
        self.checkpoint = checkpoint
        self.shards = shards
        self.plant = plant

    def expand(self, readings):
        tags = (*TAGS, CHECKPOINT) if self.checkpoint else TAGS
        outs = (
            readings
            | "KeyByShard" >> beam.Map(_sharded, self.shards).with_output_types(
                tuple[int, Any] if self.shards else tuple[str, Any])
            | "Twin" >> beam.ParDo(TwinFn(self.twin_kwargs, self.checkpoint,
                                          self.initial_path, self.initial_sha256,
                                          self.plant)).with_outputs(*tags)
        )
        return {tag: outs[tag] for tag in tags}


class FlushTwinFn(beam.DoFn):
    """``(asset_id, pickled twin)`` -> the outputs of closing all its open windows, tagged
    and counted as :class:`TwinFn`'s (a twin leaving the state, see the module doc)."""

    def __init__(self, plant=None) -> None:
        self.plant = plant  # transforms.plant.Plant: installed in each worker
        self.counted = _Counted()
        self.evicted = Metrics.counter("twin", "evicted_assets")

    def setup(self) -> None:
        if self.plant is not None:
            self.plant.install()

    def process(self, element: tuple[str, bytes]):
        _, blob = element  # (a twin of the state file the job verified)
        twin: AssetTwin = pickle.loads(blob)
        self.evicted.inc()
        yield from self.counted.tagged(twin.flush())


class FlushTwins(beam.PTransform):
    """Pickled twins ``(asset_id, bytes)`` -> a dict of PCollections keyed by :data:`TAGS`:
    what closing every open window of each gives. ``plant``: as :class:`RunTwins`'."""

    def __init__(self, plant=None) -> None:
        super().__init__()
        self.plant = plant

    def expand(self, twins):
        outs = twins | "Flush" >> beam.ParDo(FlushTwinFn(self.plant)).with_outputs(*TAGS)
        return {tag: outs[tag] for tag in TAGS}
