"""PyFlink bindings of the twin: the same ``transforms`` the Beam pipeline calls.

- :class:`NormalizeFunction` (a ``ProcessFunction``, chained to the source): raw
  message -> canonical reading, or a dead letter on the :data:`DEAD_LETTERS` side output
  (with the reason and the original bytes; a bug becomes an ``internal_error`` dead
  letter, never a lost message).
- :class:`TwinFunction` (a ``KeyedProcessFunction`` keyed by asset id): one
  :class:`~transforms.twin.AssetTwin` per key, live in memory and in keyed state as a
  snapshot plus a log of what it took since, an event-time timer at the earliest open
  window's deadline, predictions on the main output and actions, state, features,
  late readings and the dead letters of readings its event-time guard held back
  (:data:`TWIN_DEAD_LETTERS`) on side outputs.

Everything here is plain Python executed in Flink's Python workers; nothing imports
``apache_beam``.
"""

from __future__ import annotations

import pickle
import time
from typing import Any

from pyflink.common import Types
from pyflink.datastream import KeyedProcessFunction, OutputTag, ProcessFunction
from pyflink.datastream.state import ValueStateDescriptor

from pipelines.flink.sources import END_OF_INPUT
from transforms.deadletter import DEAD_LETTER, dead_letter
from transforms.errors import InvalidReading
from transforms.normalize import normalize_message
from transforms.normalize.generic import adapter_for_topic
from transforms.twin import ACTION, DUPLICATE, FEATURES, LATE, PREDICTION, STATE, AssetTwin

PICKLED = Types.PICKLED_BYTE_ARRAY()
DEAD_LETTERS = OutputTag("dead_letters", PICKLED)
SIDE = {tag: OutputTag(tag, PICKLED) for tag in (ACTION, STATE, FEATURES, LATE, DEAD_LETTER)}
TWIN_DEAD_LETTERS = SIDE[DEAD_LETTER]  # readings the twin's event-time guard held back


class NormalizeFunction(ProcessFunction):
    """``(source, key, value, arrival_ms)`` -> reading | dead letter (side output).

    ``source`` says where the message came from (``topic/partition@offset`` for Kafka),
    ``arrival_ms`` is its broker time: event timestamps are judged against it, as in the
    Beam binding, so a replay is judged as it was received, and against this machine's
    wall clock, since a producer sets the broker time of its messages.
    """

    def __init__(self, max_bytes: int = 1 << 20, max_future_ms: int = 300_000,
                 max_age_ms: int = 366 * 86_400_000, serde=None, plant=None) -> None:
        self.max_bytes = max_bytes
        self.max_future_ms = max_future_ms
        self.max_age_ms = max_age_ms
        self.serde = serde
        self.plant = plant  # transforms.plant.Plant: a model and formats to install

    def open(self, runtime_context) -> None:
        if self.plant is not None:
            self.plant.install()

    def process_element(self, msg, ctx: ProcessFunction.Context):
        source, key, value, arrival_ms = msg
        if source == END_OF_INPUT:  # not data: the bounded source's last word per asset
            yield {"asset_id": key.decode(), END_OF_INPUT: True}
            return
        clock = int(time.time() * 1000)
        now = arrival_ms if arrival_ms is not None else clock
        adapter = adapter_for_topic(source) if self.plant is not None else None
        kwargs = ({"decode": adapter.decode} if adapter is not None
                  else {"decode": self.serde.decode} if self.serde is not None else {})
        try:
            reading = normalize_message(
                value, now_ms=now, max_bytes=self.max_bytes,
                max_future_ms=self.max_future_ms, max_age_ms=self.max_age_ms,
                clock_ms=clock, **kwargs)
        except InvalidReading as exc:
            yield DEAD_LETTERS, dead_letter("normalize", exc.reason, exc.detail, source, key,
                                            value, now)
            return
        except Exception as exc:
            from pipelines.kafka.serde import RegistryError

            if isinstance(exc, RegistryError):
                raise  # the registry, not the message: fail, Flink restarts from a checkpoint
            yield DEAD_LETTERS, dead_letter("normalize", "internal_error",
                                            f"{type(exc).__name__}: {exc!r}", source, key,
                                            value, now)
            return
        yield reading


ADVANCE = "advance"  # a log entry of TwinFunction's: the watermark closed windows at this time


def replay(twin: AssetTwin, log) -> AssetTwin:
    """``twin`` after the logged inputs (readings, and ``{ADVANCE: ts}`` for windows the
    watermark closed), outputs discarded: they were emitted before the log was
    checkpointed. :class:`AssetTwin` is deterministic, so this is the twin that took them."""
    for entry in log:
        if ADVANCE in entry:
            twin.advance(entry[ADVANCE])
        else:
            twin.add(entry)
    return twin


class TwinFunction(KeyedProcessFunction):
    """Readings keyed by asset id -> predictions (main output) and side outputs.

    The live twin of each asset, and its registered timer, are kept in memory between
    calls; keyed state is what a restore (a new worker, empty memory) rebuilds them from,
    made for speed (pickling a twin costs ~13x a reading's processing, and every state
    read that misses the worker's cache waits for the JVM):

    - ``twin``: a pickled :class:`~transforms.twin.AssetTwin`, a snapshot;
    - ``pending``: what the twin took since, in order (a ``ListState`` append each, cheap):
      readings, and ``{ADVANCE: ts}`` when the watermark closed windows. A restore
      replays them on the snapshot (:func:`replay`). A new snapshot replaces both once
      ``snapshot_every`` entries are logged, and at the end of a bounded input;
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
        self.live: dict[str, AssetTwin] = {}
        self.logged: dict[str, int] = {}  # entries in ``pending`` per live twin
        self.timers: dict[str, int | None] = {}  # the registered timer per live twin
        group = runtime_context.get_metrics_group().add_group("twin")
        self.counters = {name: group.counter(name) for name in (
            "windows", "predictions", "anomalies", "drift_events", "late_readings",
            "duplicate_readings", "actions", "dead_letters")}

    def _twin(self, asset_id: str, reading: dict[str, Any] | None = None) -> AssetTwin | None:
        twin = self.live.get(asset_id)
        if twin is not None:
            return twin
        blob = self.twin_state.value()
        log = list(self.pending.get() or ())  # restored: replay since the snapshot
        if blob is not None:
            twin = pickle.loads(blob)
        else:  # a new asset, or one whose first readings are all in the log
            first = next((e for e in log if ADVANCE not in e), reading)
            if first is None:
                return None
            twin = AssetTwin(first["asset_id"], first["asset_type"], **self.twin_kwargs)
        self.live[asset_id] = replay(twin, log)
        self.logged[asset_id] = len(log)
        self.timers[asset_id] = self.timer_state.value()
        return twin

    def _save(self, asset_id: str, twin: AssetTwin, entry: dict[str, Any] | None) -> None:
        """Record what the twin took: ``entry`` logged, or (``None``, or the log is long) a
        new snapshot."""
        if entry is not None and self.logged[asset_id] < self.snapshot_every:
            self.pending.add(entry)
            self.logged[asset_id] += 1
            return
        self.twin_state.update(pickle.dumps(twin, protocol=pickle.HIGHEST_PROTOCOL))
        self.pending.clear()
        self.logged[asset_id] = 0

    def _emit(self, outputs, ctx, asset_id: str, twin: AssetTwin):
        for tag, record in outputs:
            if tag == DUPLICATE:
                self.counters["duplicate_readings"].inc()
                continue
            if tag == PREDICTION:
                self.counters["predictions"].inc()
                self.counters["anomalies"].inc(int(bool(record["is_anomaly"])))
                self.counters["drift_events"].inc(int(bool(record["drift"])))
                yield record
            else:
                if tag == FEATURES:
                    self.counters["windows"].inc()
                elif tag == LATE:
                    self.counters["late_readings"].inc()
                elif tag == ACTION:
                    self.counters["actions"].inc()
                elif tag == DEAD_LETTER:
                    self.counters["dead_letters"].inc()
                yield SIDE[tag], record
        self._set_timer(ctx, asset_id, twin.next_deadline_ms())

    def _set_timer(self, ctx, asset_id: str, deadline: int | None) -> None:
        """One timer per asset, at the earliest open window's deadline."""
        current = self.timers[asset_id]
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
        self.timers[asset_id] = deadline

    def process_element(self, reading, ctx: KeyedProcessFunction.Context):
        asset_id = ctx.get_current_key()
        if reading.get(END_OF_INPUT):  # bounded input ended: close every open window
            twin = self._twin(asset_id)
            if twin is None:
                return
            outputs = twin.flush()
            self._save(asset_id, twin, None)
            yield from self._emit(outputs, ctx, asset_id, twin)
            return
        twin = self._twin(asset_id, reading)
        outputs = twin.add(reading)
        self._save(asset_id, twin, reading)
        yield from self._emit(outputs, ctx, asset_id, twin)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        asset_id = ctx.get_current_key()
        twin = self._twin(asset_id)
        if twin is None:
            return
        self.timer_state.clear()  # this timer fired
        self.timers[asset_id] = None
        outputs = twin.advance(int(timestamp))
        if outputs:  # windows closed: the twin changed
            self._save(asset_id, twin, {ADVANCE: int(timestamp)})
        yield from self._emit(outputs, ctx, asset_id, twin)
