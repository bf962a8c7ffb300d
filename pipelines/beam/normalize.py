"""Beam binding of vendor normalization: raw messages -> canonical readings | dead letters."""

from __future__ import annotations

import time
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import TimestampedValue

from pipelines import progress
from transforms.deadletter import DEAD_LETTER, dead_letter
from transforms.errors import InvalidReading
from transforms.normalize import normalize_message


class NormalizeFn(beam.DoFn):
    """Decode, adapt and validate one raw message ``(source, key, value)``.

    Valid readings go to the main output stamped with their event time; anything
    :class:`~transforms.errors.InvalidReading` goes to ``dead_letter`` with its reason and
    the original bytes.

    Event timestamps are judged against the message's arrival time (the broker's log
    time, as a Kafka consumer sees it), so a replay of old data is judged as it was
    received; ``now_ms`` fixes the clock instead, and without either the wall clock is used.
    """

    def __init__(self, now_ms: int | None = None, max_bytes: int = 1 << 20,
                 max_future_ms: int = 300_000, max_age_ms: int = 366 * 86_400_000,
                 serde=None) -> None:
        """``serde``: decode with a :class:`~pipelines.kafka.serde.RegistrySerde` (a schema
        registry's ids); default: the repo's local ids. A registry that cannot answer
        raises (the runner retries the bundle): that is not the message's fault."""
        self.now_ms = now_ms
        self.serde = serde
        self.max_bytes = max_bytes
        self.max_future_ms = max_future_ms
        self.max_age_ms = max_age_ms
        self.readings_in = Metrics.counter("twin", "readings_in")
        self.readings_valid = Metrics.counter("twin", "readings_valid")
        self.dead_letters = Metrics.counter("twin", "dead_letters")

    def process(self, msg: tuple[str, bytes | None, bytes, int]):
        source, key, value, arrival_ms = msg
        self.readings_in.inc()
        progress.add("normalized")
        now = self.now_ms
        if now is None:
            now = arrival_ms if arrival_ms is not None else int(time.time() * 1000)
        try:
            reading = normalize_message(
                value, now_ms=now, max_bytes=self.max_bytes,
                max_future_ms=self.max_future_ms, max_age_ms=self.max_age_ms,
                **({"decode": self.serde.decode} if self.serde is not None else {}))
        except InvalidReading as exc:
            self.dead_letters.inc()
            Metrics.counter("twin.dead_letters", exc.reason).inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(
                "normalize", exc.reason, exc.detail, source, key, value, arrival_ms))
            return
        self.readings_valid.inc()
        yield TimestampedValue(reading, reading["ts_ms"] / 1000.0)


def _internal_error(bad: tuple[Any, tuple]) -> dict[str, Any]:
    """A dead letter for an element whose processing raised something unexpected."""
    from pipelines.kafka.serde import RegistryError

    (source, key, value, arrival_ms), (exc_type, exc_repr, _tb) = bad
    if issubclass(exc_type, RegistryError):
        # the schema registry failed, not the message: no dead letter; fail the bundle so
        # the runner retries it (a bounded run stops with nothing committed)
        raise RegistryError(f"{exc_repr} (while decoding {source})")
    Metrics.counter("twin", "dead_letters").inc()
    Metrics.counter("twin.dead_letters", "internal_error").inc()
    return dead_letter("normalize", "internal_error", f"{exc_type.__name__}: {exc_repr}",
                       source, key, value, arrival_ms)


class NormalizeReadings(beam.PTransform):
    """Raw messages -> ``{"readings": ..., "dead_letters": ...}``.

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
        internal = result.crashed | "InternalErrors" >> beam.Map(_internal_error)
        dead = (result[DEAD_LETTER], internal) | "AllDeadLetters" >> beam.Flatten()
        return {"readings": result.readings, "dead_letters": dead}
