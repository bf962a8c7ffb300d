"""File sinks: each output kind as one Avro file and one Parquet file."""

from __future__ import annotations

import os

import apache_beam as beam

from schemas import load
from schemas.arrow import arrow_schema


class WriteRecords(beam.PTransform):
    """Write records of schema ``schema_name`` to ``<out_dir>/<name>.avro`` and ``.parquet``."""

    def __init__(self, out_dir: str, name: str, schema_name: str, parquet: bool = True) -> None:
        super().__init__()
        self.out_dir = out_dir
        self.name = name
        self.schema_name = schema_name
        self.parquet = parquet

    def expand(self, records):
        prefix = os.path.join(self.out_dir, self.name)
        records | "Avro" >> beam.io.WriteToAvro(
            prefix, schema=load(self.schema_name), file_name_suffix=".avro",
            num_shards=1, shard_name_template="")
        if self.parquet:
            records | "Parquet" >> beam.io.WriteToParquet(
                prefix, schema=arrow_schema(self.schema_name), file_name_suffix=".parquet",
                num_shards=1, shard_name_template="")
        return records
