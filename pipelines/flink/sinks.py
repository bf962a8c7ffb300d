"""Flink sinks of the twin's outputs.

- :func:`kafka_sink`: Kafka through Flink's Kafka SQL connector (key and value as raw
  bytes, the signed command stamp of actions as headers: the DataStream ``KafkaSink`` of
  PyFlink cannot write headers). Values are encoded in Python exactly as the Beam binding
  encodes them (:func:`pipelines.kafka.outputs.encode_output`). Delivery is at-least-once: the sink
  flushes on every checkpoint; a restore may repeat records written after the last one,
  with the same deterministic ids.
- :func:`file_sink`: JSON lines under ``OUT/<output>/`` through Flink's ``FileSink`` (part
  files are committed on checkpoints and at the end of a bounded input), for runs without
  Kafka. Bytes are base64, timestamps epoch ms. :func:`read_json_outputs` reads them back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pyflink.common import Types
from pyflink.common.serialization import Encoder
from pyflink.datastream.connectors.file_system import BucketAssigner, FileSink, OutputFileConfig

from pipelines.flink.sources import _sql_options, kafka_properties

ROW = Types.ROW_NAMED(["k", "v", "h"], [
    Types.PRIMITIVE_ARRAY(Types.BYTE()), Types.PRIMITIVE_ARRAY(Types.BYTE()),
    Types.MAP(Types.STRING(), Types.PRIMITIVE_ARRAY(Types.BYTE()))])


def to_json(record: dict[str, Any]) -> str:
    from jobs.tail import jsonable

    return json.dumps(jsonable(record), sort_keys=True, separators=(",", ":"))


def file_sink(stream, out_dir: str, name: str) -> None:
    """``stream`` of records -> JSON lines in ``out_dir/name/``."""
    path = Path(out_dir).resolve() / name
    sink = (FileSink.for_row_format(str(path), Encoder.simple_string_encoder())
            .with_output_file_config(OutputFileConfig.builder().with_part_prefix(name)
                                     .with_part_suffix(".jsonl").build())
            .with_bucket_assigner(BucketAssigner.base_path_bucket_assigner())
            .build())
    stream.map(to_json, output_type=Types.STRING()).name(f"{name} as json") \
        .sink_to(sink).name(f"{name} files")


class _Encode:
    def __init__(self, topic: str, schema: str, serde, secret) -> None:
        self.topic, self.schema, self.serde, self.secret = topic, schema, serde, secret

    def __call__(self, record: dict[str, Any]):
        from pyflink.common import Row

        from pipelines.kafka.outputs import encode_output

        key, value, headers = encode_output(self.topic, self.schema, record, self.serde,
                                            self.secret)
        return Row(k=key, v=value, h=dict(headers) if headers else None)


def kafka_sink(t_env, statements, stream, config: dict[str, Any], topic: str, schema: str,
               serde, secret=None) -> None:
    """``stream`` of records -> ``topic`` (added to ``statements``, a ``StatementSet``);
    ``secret``: a :class:`~transforms.signing.Signer` (or key) that signs each record."""
    table_name = "sink_" + topic.replace(".", "_")
    options = {
        "connector": "kafka",
        "topic": topic,
        "properties.bootstrap.servers": config["bootstrap.servers"],
        "key.format": "raw",
        "key.fields": "k",
        "value.format": "raw",
        "value.fields-include": "EXCEPT_KEY",
        "sink.delivery-guarantee": "at-least-once",
        "sink.partitioner": "default",
        **kafka_properties(config),
    }
    t_env.execute_sql(f"""
CREATE TEMPORARY TABLE {table_name} (
  k BYTES,
  v BYTES,
  h MAP<STRING, BYTES> METADATA FROM 'headers'
) WITH (
{_sql_options(options)}
)""")
    rows = stream.map(_Encode(topic, schema, serde, secret), output_type=ROW) \
        .name(f"encode {topic}")
    statements.add_insert(table_name, t_env.from_data_stream(rows))


def read_json_outputs(out_dir: str | Path, name: str) -> list[dict[str, Any]]:
    """Every record a :func:`file_sink` committed under ``out_dir/name`` (in-progress and
    hidden files skipped)."""
    records = []
    root = Path(out_dir) / name
    for path in sorted(root.rglob(f"{name}*.jsonl")):
        if path.name.startswith("."):
            continue
        with path.open() as f:
            records.extend(json.loads(line) for line in f if line.strip())
    return records
