"""The twin as one Beam composite: raw messages -> normalized -> twins -> files.

    messages
      | NormalizeReadings      -> readings | dead letters (reason + original bytes)
      | RunTwins               -> features, predictions, actions, state, late readings,
                                  dead letters (readings far ahead of their asset's time)
      | Write<Kind>            -> <out>/<kind>.avro and <out>/<kind>.parquet
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam

from pipelines.beam.normalize import NormalizeReadings
from pipelines.beam.sinks import WriteBundleFiles, WriteRecords
from pipelines.beam.twin import CHECKPOINT, FlushTwins, RunTwins
from transforms.deadletter import DEAD_LETTER
from transforms.twin import ACTION, DEFAULT_SHARDS, FEATURES, LATE, PREDICTION, STATE

# output file name -> (tag in the twin outputs, schema)
OUTPUTS: dict[str, tuple[str, str]] = {
    "predictions": (PREDICTION, "twin/prediction.v1"),
    "actions": (ACTION, "twin/action.v1"),
    "state": (STATE, "twin/state.v1"),
    "features": (FEATURES, "twin/features.v1"),
    "late": (LATE, "twin/reading.v1"),
}


class ProcessMessages(beam.PTransform):
    """Raw messages -> ``{"dead_letters", "predictions", "actions", "state", ...}``."""

    def __init__(self, twin_kwargs: dict[str, Any] | None = None,
                 normalize_kwargs: dict[str, Any] | None = None,
                 initial_path: str | None = None, checkpoint: bool = False,
                 shards: int = DEFAULT_SHARDS, initial_sha256: str | None = None,
                 plant=None) -> None:
        """``initial_path`` / ``checkpoint``: continue twins from a state file (the one
        whose verified bytes have the SHA-256 ``initial_sha256``) and hand them over at the
        end instead of closing their windows (bounded Kafka runs; adds a ``checkpoint``
        output of ``(asset_id, pickled twin, newest event ms)``). ``shards``: the twins'
        state keys, 0 for one per asset (:mod:`pipelines.beam.twin`). ``plant``: a
        :class:`~transforms.plant.Plant` (a model and data formats) installed in every
        worker; None: the built-in fleet's."""
        super().__init__()
        self.initial_sha256 = initial_sha256
        self.shards = shards
        self.plant = plant
        self.twin_kwargs = twin_kwargs
        self.normalize_kwargs = normalize_kwargs or {}
        self.initial_path = initial_path
        self.checkpoint = checkpoint

    def expand(self, messages):
        norm = messages | "NormalizeReadings" >> NormalizeReadings(
            **self.normalize_kwargs, shards=self.shards, plant=self.plant)
        twins = norm["readings"] | "RunTwins" >> RunTwins(
            self.twin_kwargs, self.initial_path, self.checkpoint, self.shards,
            self.initial_sha256, self.plant)
        out = {name: twins[tag] for name, (tag, _) in OUTPUTS.items()}
        out["dead_letters"] = (norm["dead_letters"], twins[DEAD_LETTER]) \
            | "AllDeadLetters" >> beam.Flatten()
        if self.checkpoint:
            out[CHECKPOINT] = twins[CHECKPOINT]
        return out


class EvictTwins(beam.PTransform):
    """Pickled twins ``(asset_id, bytes)`` leaving the state -> the same outputs as
    :class:`ProcessMessages` (their last windows closed and scored). ``plant``: as
    :class:`ProcessMessages`'."""

    def __init__(self, plant=None) -> None:
        super().__init__()
        self.plant = plant

    def expand(self, twins):
        flushed = twins | "FlushTwins" >> FlushTwins(self.plant)
        out = {name: flushed[tag] for name, (tag, _) in OUTPUTS.items()}
        out["dead_letters"] = flushed[DEAD_LETTER]
        return out


class WriteOutputs(beam.PTransform):
    """Write every output of :class:`ProcessMessages` under ``out_dir``: one Avro and one
    Parquet file of each kind, or with ``per_bundle`` one of each per bundle (a bounded
    Kafka run's slice folders, joined at the end by
    :func:`~pipelines.beam.sinks.concat_outputs`: no sink stages in each slice's
    pipeline)."""

    def __init__(self, out_dir: str, per_bundle: bool = False) -> None:
        super().__init__()
        self.out_dir = out_dir
        self.per_bundle = per_bundle

    def expand(self, outputs: dict[str, beam.PCollection]):
        schemas = {name: schema for name, (_, schema) in OUTPUTS.items()}
        schemas["dead_letters"] = "twin/deadletter.v1"
        for name, pcoll in outputs.items():
            if name not in schemas:
                continue
            write = WriteBundleFiles if self.per_bundle else WriteRecords
            pcoll | f"Write{name.title().replace('_', '')}" >> write(
                self.out_dir, name, schemas[name])
        return beam.pvalue.PDone(next(iter(outputs.values())).pipeline)


# file output name -> Kafka output tag (pipelines.kafka.topics.OUTPUT_TOPICS)
KAFKA_OUTPUTS: dict[str, str] = {
    "predictions": "prediction", "actions": "action", "state": "state",
    "dead_letters": "dead_letter",
}


class WriteKafkaOutputs(beam.PTransform):
    """Predictions, actions (signed), twin state and dead letters to their Kafka topics."""

    def __init__(self, config: dict[str, Any], secret: bytes | None = None,
                 serde=None) -> None:
        super().__init__()
        self.config = config
        self.secret = secret
        self.serde = serde  # None: the repo's local schema ids

    def expand(self, outputs: dict[str, beam.PCollection]):
        from pipelines.beam.kafka import WriteToKafka
        from pipelines.kafka.topics import OUTPUT_TOPICS

        for name, tag in KAFKA_OUTPUTS.items():
            topic, schema = OUTPUT_TOPICS[tag]
            outputs[name] | f"Kafka{name.title().replace('_', '')}" >> WriteToKafka(
                self.config, topic, schema, self.secret if tag == "action" else None,
                serde=self.serde)
        return beam.pvalue.PDone(next(iter(outputs.values())).pipeline)
