"""PyFlink bindings of the twin: the same ``transforms`` the Beam pipeline calls.

- :class:`NormalizeFunction` (a ``ProcessFunction``, chained to the source): a batch of
  raw messages -> readings as columns per twin key (the Beam pipeline's batched
  normalization), or one message -> its reading; dead letters on the
  :data:`DEAD_LETTERS` side output (with the reason and the original bytes; a bug
  becomes an ``internal_error`` dead letter, never a lost message).
- :class:`TwinFunction` (a ``KeyedProcessFunction`` keyed by asset id or shard): one
  :class:`~transforms.twin.TwinShard` per key, stepped a batch at a time, live in memory
  and in keyed state as a snapshot plus a log of what it took since, an event-time
  timer at the earliest open window's deadline, predictions on the main output and
  actions, state, features, late readings and the dead letters of readings its
  event-time guard held back (:data:`TWIN_DEAD_LETTERS`) on side outputs.

Everything here is plain Python executed in Flink's Python workers; nothing imports
``apache_beam``.
"""

from __future__ import annotations

import pickle
import time
from typing import Any

from pyflink.common import Row, Types
from pyflink.datastream import KeyedProcessFunction, OutputTag, ProcessFunction
from pyflink.datastream.state import ValueStateDescriptor

from pipelines.flink.sources import END_OF_INPUT
from transforms.deadletter import DEAD_LETTER, dead_letter
from transforms.errors import InvalidReading
from transforms.normalize import normalize_message, normalize_sources
from transforms.twin import (
    ACTION,
    DUPLICATE,
    FEATURES,
    LATE,
    PREDICTION,
    STATE,
    TwinShard,
    shard_of,
)

PICKLED = Types.PICKLED_BYTE_ARRAY()
# normalization's main output: (twin key, readings), keyed on the key by Flink itself
KEYED = Types.ROW([Types.STRING(), PICKLED])
DEAD_LETTERS = OutputTag("dead_letters", PICKLED)
SIDE = {tag: OutputTag(tag, PICKLED) for tag in (ACTION, STATE, FEATURES, LATE, DEAD_LETTER)}
TWIN_DEAD_LETTERS = SIDE[DEAD_LETTER]  # readings the twin's event-time guard held back


class NormalizeFunction(ProcessFunction):
    """Raw messages -> readings as columns, grouped by twin key | dead letters (side output).

    An element is a batch of messages, ``(last arrival_ms, pickled list of messages)`` (a
    simulator chunk), or one message ``(source, key, value, arrival_ms)`` (a Kafka
    record). A batch is normalized as columns (:func:`~transforms.normalize.
    normalize_sources`: templates, numpy, the same readings and reasons as one message at
    a time) and leaves as one element per twin key, ``(key, pickled [(asset_id,
    ReadingBlock), ...])``; one message leaves as ``(key, reading dict)``. The key is the
    asset id, or with ``shards`` the asset's :func:`~transforms.twin.shard_of` (as a
    string), so a batch of a thousand assets becomes ``shards`` elements, state values
    and twin calls.

    ``source`` says where the message came from (``topic/partition@offset`` for Kafka),
    ``arrival_ms`` is its broker time: event timestamps are judged against it, as in the
    Beam binding, so a replay is judged as it was received, and against this machine's
    wall clock, since a producer sets the broker time of its messages.
    """

    def __init__(self, max_bytes: int = 1 << 20, max_future_ms: int = 300_000,
                 max_age_ms: int = 366 * 86_400_000, serde=None, plant=None,
                 shards: int = 0) -> None:
        self.max_bytes = max_bytes
        self.max_future_ms = max_future_ms
        self.max_age_ms = max_age_ms
        self.serde = serde
        self.plant = plant  # transforms.plant.Plant: a model and formats to install
        self.shards = shards

    def open(self, runtime_context) -> None:
        if self.plant is not None:
            self.plant.install()

    def key_of(self, asset_id: str) -> str:
        return str(shard_of(asset_id, self.shards)) if self.shards else asset_id

    def _one(self, message):
        """One message (a Kafka record): its reading as a dict, ``(key, reading)``; columns
        pay off for batches, not for a row (the same reading and reasons:
        :func:`~transforms.normalize.normalize_batch` explains every message it refuses
        with :func:`~transforms.normalize.normalize_message`)."""
        from pipelines.kafka.serde import RegistryError
        from transforms.normalize.generic import adapter_for_topic

        source, key, value, arrival_ms = message
        clock = int(time.time() * 1000)
        now = arrival_ms if arrival_ms is not None else clock
        adapter = adapter_for_topic(source)
        decode = (adapter.decode if adapter is not None
                  else self.serde.decode if self.serde is not None else None)
        try:
            reading = normalize_message(
                value, now_ms=now, max_bytes=self.max_bytes, max_future_ms=self.max_future_ms,
                max_age_ms=self.max_age_ms, clock_ms=clock,
                **({"decode": decode} if decode is not None else {}))
        except InvalidReading as exc:
            yield DEAD_LETTERS, dead_letter("normalize", exc.reason, exc.detail, source, key,
                                            value, now)
            return
        except RegistryError:
            raise  # the registry, not the message: fail, restart from a checkpoint
        except Exception as exc:  # noqa: BLE001 - a bug: this message's dead letter
            yield DEAD_LETTERS, dead_letter("normalize", "internal_error",
                                            f"{type(exc).__name__}: {exc!r}", source, key,
                                            value, now)
            return
        yield Row(self.key_of(reading["asset_id"]), reading)

    def process_element(self, element, ctx: ProcessFunction.Context):
        from pipelines.kafka.serde import RegistryError

        if len(element) == 2:  # a batch: (its last arrival, the pickled messages)
            batch = pickle.loads(element[1])
        elif element[0] == END_OF_INPUT:  # the bounded source's last word per asset
            yield Row(self.key_of(element[1].decode()), END_OF_INPUT)
            return
        else:
            yield from self._one(element)
            return
        clock = int(time.time() * 1000)
        nows = [m[3] if m[3] is not None else clock for m in batch]
        blocks, rejects = normalize_sources(
            batch, nows, decode=self.serde.decode if self.serde is not None else None,
            max_bytes=self.max_bytes, max_future_ms=self.max_future_ms,
            max_age_ms=self.max_age_ms, clock_ms=clock)
        for i, exc in rejects:
            source, key, value, _ = batch[i]
            if isinstance(exc, InvalidReading):
                reason, detail = exc.reason, exc.detail
            elif isinstance(exc, RegistryError):
                raise exc  # the registry, not the message: fail, restart from a checkpoint
            else:
                reason, detail = "internal_error", f"{type(exc).__name__}: {exc!r}"
            yield DEAD_LETTERS, dead_letter("normalize", reason, detail, source, key, value,
                                            nows[i])
        groups: dict[str, list] = {}
        for block in blocks.values():
            for asset_id, b in block.by_asset().items():
                groups.setdefault(self.key_of(asset_id), []).append((asset_id, b))
        for key, items in groups.items():  # pickled once, here (see FleetChunks.flat_map)
            yield Row(key, pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL))


ADVANCE = "advance"  # a log entry of TwinFunction's: the watermark closed windows at this time


def replay(twin, log):
    """``twin`` (an :class:`~transforms.twin.AssetTwin` or a
    :class:`~transforms.twin.TwinShard`) after the logged inputs, outputs discarded: they
    were emitted before the log was checkpointed. Entries are ``{ADVANCE: ts}`` for
    windows the watermark closed, a reading dict, or a list of ``(asset_id,
    ReadingBlock)`` items (what normalization hands over). Twins are deterministic, so
    this is the twin that took them."""
    shard = isinstance(twin, TwinShard)
    for entry in log:
        if isinstance(entry, bytes):  # a batch as normalization pickled it
            entry = pickle.loads(entry)
        if isinstance(entry, dict) and ADVANCE in entry:
            twin.advance(entry[ADVANCE])
        elif shard:
            twin.add(entry if isinstance(entry, list) else [entry])
        else:
            twin.add(entry)
    return twin


def _as_shard(held, twin_kwargs: dict[str, Any]) -> TwinShard:
    """A snapshot as a shard (a snapshot of one :class:`AssetTwin`, as jobs before shards
    wrote them, becomes a shard of one)."""
    if isinstance(held, TwinShard):
        return held
    shard = TwinShard(twin_kwargs)
    shard.twins[held.asset_id] = held
    return shard


class TwinFunction(KeyedProcessFunction):
    """Readings keyed by twin key (an asset id, or a shard of assets) -> predictions
    (main output) and side outputs.

    An element is the value of :class:`NormalizeFunction`'s ``(key, value)`` rows (Flink
    keys them; the key is the current key): a pickled list of ``(asset_id,
    ReadingBlock)`` (logged as it came; a list, a reading dict, or a list of them is taken
    too), or ``END_OF_INPUT``. Each key's twins are a
    :class:`~transforms.twin.TwinShard` (one twin when keyed by asset), stepped a batch
    at a time: the windows a batch closes
    across the shard's assets are computed together, as in the Beam binding.

    The live shard of each key, and its registered timer, are kept in memory between
    calls; keyed state is what a restore (a new worker, empty memory) rebuilds them from,
    made for speed (pickling a twin costs far more than stepping it, and every state read
    that misses the worker's cache waits for the JVM):

    - ``twin``: a pickled :class:`~transforms.twin.TwinShard`, a snapshot;
    - ``pending``: what the shard took since, in order (a ``ListState`` append each,
      cheap): batches of readings, and ``{ADVANCE: ts}`` when the watermark closed
      windows. A restore replays them on the snapshot (:func:`replay`). A new snapshot
      replaces both once ``snapshot_every`` entries are logged, and at the end of a
      bounded input;
    - ``timer``: the one registered event-time timer, read once per restore.
    """

    def __init__(self, twin_kwargs: dict[str, Any] | None = None,
                 snapshot_every: int = 50, plant=None) -> None:
        self.twin_kwargs = twin_kwargs or {}
        self.snapshot_every = snapshot_every
        self.plant = plant

    def open(self, runtime_context) -> None:
        from pyflink.datastream.state import ListStateDescriptor

        from pipelines.worker import tune_gc

        tune_gc()
        if self.plant is not None:
            self.plant.install()

        self.twin_state = runtime_context.get_state(ValueStateDescriptor("twin", PICKLED))
        self.pending = runtime_context.get_list_state(ListStateDescriptor("pending", PICKLED))
        self.timer_state = runtime_context.get_state(ValueStateDescriptor("timer", Types.LONG()))
        self.live: dict[str, TwinShard] = {}
        self.logged: dict[str, int] = {}  # entries in ``pending`` per live shard
        self.timers: dict[str, int | None] = {}  # the registered timer per live shard
        group = runtime_context.get_metrics_group().add_group("twin")
        self.counters = {name: group.counter(name) for name in (
            "windows", "predictions", "anomalies", "drift_events", "late_readings",
            "duplicate_readings", "actions", "dead_letters")}

    def _shard(self, key: str) -> TwinShard:
        shard = self.live.get(key)
        if shard is not None:
            return shard
        blob = self.twin_state.value()
        log = list(self.pending.get() or ())  # restored: replay since the snapshot
        shard = (_as_shard(pickle.loads(blob), self.twin_kwargs) if blob is not None
                 else TwinShard(self.twin_kwargs))
        self.live[key] = replay(shard, log)
        self.logged[key] = len(log)
        self.timers[key] = self.timer_state.value()
        return shard

    def _save(self, key: str, shard: TwinShard, entry) -> None:
        """Record what the shard took: ``entry`` logged, or (``None``, or the log is long)
        a new snapshot."""
        if entry is not None and self.logged[key] < self.snapshot_every:
            self.pending.add(entry)
            self.logged[key] += 1
            return
        self.twin_state.update(pickle.dumps(shard, protocol=pickle.HIGHEST_PROTOCOL))
        self.pending.clear()
        self.logged[key] = 0

    def _emit(self, outputs, ctx, key: str, shard: TwinShard):
        counters = self.counters
        for tag, record in outputs:
            if tag == PREDICTION:
                counters["predictions"].inc()
                if record["is_anomaly"]:
                    counters["anomalies"].inc()
                if record["drift"]:
                    counters["drift_events"].inc()
                yield record
            elif tag == DUPLICATE:
                counters["duplicate_readings"].inc()
            else:
                if tag == FEATURES:
                    counters["windows"].inc()
                elif tag == LATE:
                    counters["late_readings"].inc()
                elif tag == ACTION:
                    counters["actions"].inc()
                elif tag == DEAD_LETTER:
                    counters["dead_letters"].inc()
                yield SIDE[tag], record
        self._set_timer(ctx, key, shard.next_deadline_ms())

    def _set_timer(self, ctx, key: str, deadline: int | None) -> None:
        """One timer per key, at the earliest open window's deadline."""
        current = self.timers[key]
        if current == deadline:
            return
        timers = ctx.timer_service()
        if current is not None:
            timers.delete_event_time_timer(current)
        if deadline is None:
            self.timer_state.clear()
        else:
            timers.register_event_time_timer(deadline)
            self.timer_state.update(deadline)
        self.timers[key] = deadline

    def process_element(self, element, ctx: KeyedProcessFunction.Context):
        key = ctx.get_current_key()
        if isinstance(element, str) and element == END_OF_INPUT:
            # bounded input ended: close every window
            shard = self._shard(key)
            outputs = shard.flush()
            if outputs:  # (a shard hears one marker per asset: it changes once)
                self._save(key, shard, None)
            yield from self._emit(outputs, ctx, key, shard)
            return
        if isinstance(element, dict):  # one reading dict
            items = [element]
        else:
            items = element
        entry = items
        if isinstance(items, bytes):  # logged as it came, not pickled again
            items = pickle.loads(items)
        elif isinstance(items, dict):  # one reading (a Kafka record's)
            items = [items]
        shard = self._shard(key)
        outputs = shard.add(items)
        self._save(key, shard, entry)
        yield from self._emit(outputs, ctx, key, shard)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        key = ctx.get_current_key()
        shard = self._shard(key)
        self.timer_state.clear()  # this timer fired
        self.timers[key] = None
        outputs = shard.advance(int(timestamp))
        if outputs:  # windows closed: the shard changed
            self._save(key, shard, {ADVANCE: int(timestamp)})
        yield from self._emit(outputs, ctx, key, shard)
