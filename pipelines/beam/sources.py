"""Beam sources of raw vendor messages: the built-in fleet simulator and Avro files.

Every source produces ``(source, key, value, arrival_ms)`` tuples, or lists of them (the
fast path: normalization works on a list at once): ``source`` names the vendor topic or
file, ``value`` is the untouched message (Confluent-framed Avro).
"""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam

from pipelines import progress
from transforms.simulator import Fleet, FleetConfig

# messages per element: the pipeline normalizes each element as columns and hands each
# asset its rows as one block, so larger lists amortize Beam's per-element cost (10,000 ->
# 50,000: +11 % at 1,000 assets, +73 % at 5,000; ~30 MB of messages in flight)
BATCH = 50_000


def _simulate(_: bytes, config: FleetConfig
              ) -> Iterator[list[tuple[str, bytes, bytes, int]]]:
    batch: list[tuple[str, bytes, bytes, int]] = []
    for m in Fleet(config).messages():
        batch.append((m.topic, m.key, m.value, m.arrival_ms))
        if len(batch) == BATCH:
            progress.add("simulated", len(batch))
            yield batch
            batch = []
    if batch:
        progress.add("simulated", len(batch))
        yield batch


class ReadSimulator(beam.PTransform):
    """The deterministic fleet simulator as a bounded source, in arrival order.

    The fleet is generated inside one DoFn (it is a single stream ordered by arrival
    time, as a broker partition would deliver it), so nothing is materialized in the
    pipeline graph whatever the duration.
    """

    def __init__(self, config: FleetConfig) -> None:
        super().__init__()
        self.config = config

    def expand(self, pbegin):
        return (
            pbegin
            | "Impulse" >> beam.Impulse()
            | "Simulate" >> beam.FlatMap(_simulate, self.config)
        )

