"""Beam binding of vendor normalization: raw messages -> canonical readings (columns, per
asset) | dead letters."""

from __future__ import annotations

import time
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import TimestampedValue

from pipelines import progress
from transforms.deadletter import DEAD_LETTER, dead_letter
from transforms.errors import InvalidReading
from transforms.normalize import normalize_sources


class NormalizeFn(beam.DoFn):
    """Decode, adapt and validate raw messages ``(source, key, value, arrival_ms)``.

    An element is one message or, on the fast path, a list of them (a source's poll or
    chunk): the batch is normalized into columns (:func:`~transforms.normalize.
    normalize_batch`) and leaves as one ``(asset_id, ReadingBlock)`` per asset, stamped
    with its earliest event time. Anything :class:`~transforms.errors.InvalidReading` goes
    to ``dead_letter`` with its reason and the original bytes; anything else a bug raises
    on one message is that message's ``internal_error`` dead letter, and the rest of the
    batch goes on.

    Event timestamps are judged against the message's arrival time (the broker's log
    time, as a Kafka consumer sees it), so a replay of old data is judged as it was
    received; ``now_ms`` fixes the clock instead, and without either the wall clock is used.
    A producer sets a message's Kafka timestamp, so event times are also judged against
    this machine's wall clock (``clock_ms`` fixes it, for tests): a reading in its future
    is a dead letter whatever its arrival time says.
    """

    def __init__(self, now_ms: int | None = None, max_bytes: int = 1 << 20,
                 max_future_ms: int = 300_000, max_age_ms: int = 366 * 86_400_000,
                 serde=None, shards: int | None = None,
                 clock_ms: int | None = None, plant=None) -> None:
        """``serde``: decode with a :class:`~pipelines.kafka.serde.RegistrySerde` (a schema
        registry's ids); default: the repo's local ids. A registry that cannot answer
        raises (the runner retries the bundle): that is not the message's fault.
        ``shards``: hand the batch's blocks over grouped by the twins' shard,
        ``(shard, [(asset_id, ReadingBlock), ...])`` (:mod:`pipelines.beam.twin`; 0: by
        asset, ``(asset_id, [(asset_id, ReadingBlock)])``)."""
        self.shards = shards
        self.plant = plant  # transforms.plant.Plant: a model and formats to install
        self.now_ms = now_ms
        self.clock_ms = clock_ms
        self.serde = serde
        self.max_bytes = max_bytes
        self.max_future_ms = max_future_ms
        self.max_age_ms = max_age_ms
        self.readings_in = Metrics.counter("twin", "readings_in")
        self.readings_valid = Metrics.counter("twin", "readings_valid")
        self.dead_letters = Metrics.counter("twin", "dead_letters")

    def setup(self) -> None:
        if self.plant is not None:
            self.plant.install()

    def _normalize(self, batch, nows, wall):
        """:func:`~transforms.normalize.normalize_sources`: a topic a format declares is
        read by its adapter, every other message as a built-in vendor's."""
        return normalize_sources(
            batch, nows, decode=self.serde.decode if self.serde is not None else None,
            max_bytes=self.max_bytes, max_future_ms=self.max_future_ms,
            max_age_ms=self.max_age_ms,
            clock_ms=self.clock_ms if self.clock_ms is not None else wall)

    def process(self, element):
        from pipelines.kafka.serde import RegistryError

        batch = [element] if isinstance(element, tuple) else element
        n = len(batch)
        self.readings_in.inc(n)
        progress.add("normalized", n)
        wall = int(time.time() * 1000)
        fixed = self.now_ms
        nows = [fixed if fixed is not None else (m[3] if m[3] is not None else wall)
                for m in batch]
        blocks, rejects = self._normalize(batch, nows, wall)
        for i, exc in rejects:
            source, key, value, arrival_ms = batch[i]
            if isinstance(exc, InvalidReading):
                reason, detail = exc.reason, exc.detail
            elif isinstance(exc, RegistryError):
                raise exc  # not the message's fault: _internal_errors fails the bundle
            else:
                reason, detail = "internal_error", f"{type(exc).__name__}: {exc!r}"
            self.dead_letters.inc()
            Metrics.counter("twin.dead_letters", reason).inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(
                "normalize", reason, detail, source, key, value, arrival_ms))
        self.readings_valid.inc(n - len(rejects))
        per_asset = [pair for block in blocks.values() for pair in block.by_asset().items()]
        if self.shards is None:
            for asset_id, b in per_asset:
                yield TimestampedValue((asset_id, b), int(b.ts_ms.min()) / 1000.0)
            return
        from pipelines.beam.twin import group_by_shard

        for shard, items in group_by_shard(per_asset, self.shards).items():
            first = min(int(b.ts_ms.min()) for _, b in items)
            yield TimestampedValue((shard, items), first / 1000.0)


def _internal_errors(bad: tuple[Any, tuple]) -> list[dict[str, Any]]:
    """Dead letters for an element whose processing raised something unexpected (each
    message of it, when it was a batch)."""
    from pipelines.kafka.serde import RegistryError

    element, (exc_type, exc_repr, _tb) = bad
    batch = [element] if isinstance(element, tuple) else element
    if issubclass(exc_type, RegistryError):
        # the schema registry failed, not the message: no dead letter; fail the bundle so
        # the runner retries it (a bounded run stops with nothing committed)
        raise RegistryError(f"{exc_repr} (while decoding {batch[0][0]})")
    Metrics.counter("twin", "dead_letters").inc(len(batch))
    Metrics.counter("twin.dead_letters", "internal_error").inc(len(batch))
    return [dead_letter("normalize", "internal_error", f"{exc_type.__name__}: {exc_repr}",
                        source, key, value, arrival_ms)
            for source, key, value, arrival_ms in batch]


class NormalizeReadings(beam.PTransform):
    """Raw messages (or lists of them) -> ``{"readings": (asset_id, ReadingBlock) ...,
    "dead_letters": ...}`` (with ``shards``: ``(shard, [(asset_id, ReadingBlock), ...])``).

    A bug that raises something other than ``InvalidReading`` also ends as a dead letter
    (reason ``internal_error``), so a bad deploy never drops input. A schema registry that
    cannot answer is not the message's fault: that fails the bundle instead.
    """

    def __init__(self, **normalize_kwargs: Any) -> None:
        super().__init__()
        self.normalize_kwargs = normalize_kwargs

    def expand(self, messages):
        result = messages | "Normalize" >> beam.ParDo(
            NormalizeFn(**self.normalize_kwargs)
        ).with_exception_handling(main_tag="readings", dead_letter_tag="crashed",
                                  exc_class=Exception)
        internal = result.crashed | "InternalErrors" >> beam.FlatMap(_internal_errors)
        dead = (result[DEAD_LETTER], internal) | "AllDeadLetters" >> beam.Flatten()
        return {"readings": result.readings, "dead_letters": dead}
