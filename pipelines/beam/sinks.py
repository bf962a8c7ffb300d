"""File sinks: each output kind as one Avro file and one Parquet file, the output folder a
run claims for itself, and the files of a run's slices joined into the run's own
(:func:`concat_outputs`).

Beam's file sinks write each file in a temporary folder next to it,
``<out>/beam-temp-<name>-<uuid>``, and rename it into place when the pipeline finishes;
a run that is killed never gets there, and its temporary folders stay. Nothing reads
them (the outputs of a killed run are written again by its rerun), so
:func:`claim_out_dir` removes them before the next run into the same folder, once that
run holds the folder's lock: no other run can be writing there, so no temporary folder
in it is in use.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


class _BundleFilesFn(beam.DoFn):
    """Records -> one Avro file (and one Parquet file) per bundle, streamed: Avro blocks
    and Parquet row groups of :attr:`ROWS` records are written as they fill, so a bundle
    holds at most that many records in memory beyond the runner's own.

    A file is written as ``.<name>-<id>.<ext>.tmp`` and renamed to ``<name>-<id>.<ext>``
    when its bundle finishes, so a file that has its final name is whole. What a failed
    bundle wrote stays a temporary file: on the in-process runner a failed bundle fails
    the pipeline, and a bounded Kafka run then discards the slice's folder and redoes the
    slice (:mod:`jobs.kafka_run`)."""

    ROWS = 10_000

    def __init__(self, out_dir: str, name: str, schema_name: str | dict[str, Any],
                 parquet: bool) -> None:
        self.out_dir = out_dir
        self.name = name
        self.schema_name = schema_name
        self.parquet = parquet
        self._open: dict | None = None

    def setup(self) -> None:
        from fastavro import parse_schema

        self._avro_schema = parse_schema(load(self.schema_name) if isinstance(
            self.schema_name, str) else self.schema_name)
        self._arrow_schema = arrow_schema(self.schema_name) if self.parquet else None
        os.makedirs(self.out_dir, exist_ok=True)

    def start_bundle(self) -> None:
        self._open = None

    def _start(self) -> dict:
        import uuid

        from fastavro.write import Writer

        base = f"{self.name}-{uuid.uuid4().hex}"
        final = {"avro": os.path.join(self.out_dir, f"{base}.avro")}
        avro_tmp = os.path.join(self.out_dir, f".{base}.avro.tmp")
        f = open(avro_tmp, "wb")  # noqa: SIM115 - closed in finish_bundle
        files = {"final": final, "tmp": {"avro": avro_tmp}, "avro_file": f,
                 "avro": Writer(f, self._avro_schema, codec="null"), "rows": [],
                 "parquet": None}
        if self.parquet:
            final["parquet"] = os.path.join(self.out_dir, f"{base}.parquet")
            files["tmp"]["parquet"] = os.path.join(self.out_dir, f".{base}.parquet.tmp")
        return files

    def _flush_rows(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        files = self._open
        rows = files["rows"]
        if not rows:
            return
        schema = self._arrow_schema
        arrays = [pa.array([r.get(n) for r in rows], type=schema.types[i])
                  for i, n in enumerate(schema.names)]
        if files["parquet"] is None:
            files["parquet"] = pq.ParquetWriter(files["tmp"]["parquet"], schema)
        files["parquet"].write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
        files["rows"] = []

    def process(self, record: dict[str, Any]):
        if self._open is None:
            self._open = self._start()
        self._open["avro"].write(record)
        if self.parquet:
            self._open["rows"].append(record)
            if len(self._open["rows"]) >= self.ROWS:
                self._flush_rows()
        yield from ()  # a sink

    def finish_bundle(self) -> None:
        files, self._open = self._open, None
        if files is None:
            return
        files["avro"].flush()
        files["avro_file"].close()
        if self.parquet:
            self._open = files
            try:
                self._flush_rows()
            finally:
                self._open = None
            files["parquet"].close()
        for ext, tmp in files["tmp"].items():
            os.replace(tmp, files["final"][ext])


class WriteBundleFiles(beam.PTransform):
    """Records of ``schema_name`` -> ``<out_dir>/<name>-<id>.avro`` (and ``.parquet``),
    one file of each per bundle: no sink stages, no per-record encoding between stages.
    For folders whose files :func:`concat_outputs` joins (a bounded Kafka run's slices);
    :class:`WriteRecords` writes one file of each as a run's own output. ``schema_name``:
    a schema of ``schemas/`` by name, or an Avro record schema itself (Avro only)."""

    def __init__(self, out_dir: str, name: str, schema_name: str | dict[str, Any],
                 parquet: bool = True) -> None:
        super().__init__()
        self.out_dir = out_dir
        self.name = name
        self.schema_name = schema_name
        self.parquet = parquet

    def expand(self, records):
        return records | "Files" >> beam.ParDo(
            _BundleFilesFn(self.out_dir, self.name, self.schema_name, self.parquet))


LOCK_FILE = ".twin-run.lock"
# FileBasedSink._create_temp_dir: 'beam-temp-' + the output's file name prefix + '-' +
# uuid1().hex
_BEAM_TEMP = re.compile(r"^beam-temp-.+-[0-9a-f]{32}$")


class OutputFolderBusy(RuntimeError):
    """Another run is writing to the same output folder."""


@contextlib.contextmanager
def claim_out_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Hold ``path`` (created if missing) for one run: an exclusive lock on
    ``<path>/.twin-run.lock`` (released when the block ends or the process dies, however),
    then the Beam temporary folders earlier, killed runs left there removed.

    Raises :class:`OutputFolderBusy` if another live run holds the folder."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise OutputFolderBusy(
                f"another run (pid {holder}) is writing to {out}: wait for it to end, or "
                "pass another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        remove_stale_temp(out)
        yield out
    finally:
        os.close(fd)


def remove_stale_temp(out: Path) -> list[Path]:
    """Remove Beam's temporary sink folders in ``out`` (call it only while holding the
    folder, :func:`claim_out_dir`); returns what was removed."""
    removed = []
    for entry in out.iterdir():
        if _BEAM_TEMP.match(entry.name) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def part_files(folder: str, name: str, ext: str) -> list[str]:
    """The files of output ``name`` in ``folder``: ``<name>.<ext>`` (one file) and
    ``<name>-<id>.<ext>`` (one per bundle, :class:`WriteBundleFiles`), in name order."""
    whole = os.path.join(folder, f"{name}.{ext}")
    pattern = re.compile(rf"^{re.escape(name)}-[0-9a-f]{{32}}\.{ext}$")
    try:
        parts = sorted(e for e in os.listdir(folder) if pattern.match(e))
    except FileNotFoundError:
        return []
    return ([whole] if os.path.exists(whole) else []) + [os.path.join(folder, e)
                                                          for e in parts]


def concat_outputs(parts: list[str], out_dir: str, schemas: dict[str, str]) -> None:
    """The files of every output ``name -> schema`` of ``schemas`` in every folder of
    ``parts`` (:func:`part_files`), in order, as ``<out_dir>/<name>.avro`` and
    ``.parquet`` (each replaced atomically); nothing is held whole: Avro blocks are copied
    as they are (files of the same schema and codec; records re-encoded otherwise),
    Parquet row groups batch by batch.

    How a run read in slices ends with one file per output kind, as a run in one go.
    """
    import fastavro
    import pyarrow.parquet as pq

    for name, schema_name in schemas.items():
        for ext in ("avro", "parquet"):
            files = [f for p in parts for f in part_files(p, name, ext)]
            target = os.path.join(out_dir, f"{name}.{ext}")
            if not files:  # nothing of this kind: an empty file, as a run in one go has
                _write_empty(target, schema_name, ext)
                continue
            if len(files) == 1:
                os.replace(files[0], target)
                continue
            tmp = os.path.join(out_dir, f".{name}.{ext}.tmp")
            if ext == "avro":
                _concat_avro(files, tmp, load(schema_name), fastavro)
            else:
                writer = None
                try:
                    for path in files:
                        pf = pq.ParquetFile(path)
                        if writer is None:
                            writer = pq.ParquetWriter(tmp, pf.schema_arrow)
                        for batch in pf.iter_batches():
                            writer.write_batch(batch)
                finally:
                    if writer is not None:
                        writer.close()
            os.replace(tmp, target)


def _write_empty(target: str, schema_name: str, ext: str) -> None:
    import fastavro
    import pyarrow.parquet as pq

    tmp = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.tmp")
    if ext == "avro":
        with open(tmp, "wb") as f:
            fastavro.writer(f, fastavro.parse_schema(load(schema_name)), [], codec="null")
    else:
        schema = arrow_schema(schema_name)
        pq.write_table(schema.empty_table(), tmp)
    os.replace(tmp, target)


def _concat_avro(files: list[str], tmp: str, schema: dict[str, Any], fastavro) -> None:
    """Avro container ``files`` as one: blocks copied whole where a file has the schema
    and codec of the output (no decoding), records re-encoded from any other."""
    from fastavro.write import Writer

    parsed = fastavro.parse_schema(schema)
    canonical = json.dumps(parsed, sort_keys=True)
    with open(tmp, "wb") as out:
        writer = Writer(out, parsed, codec="null")
        for path in files:
            with open(path, "rb") as f:
                blocks = fastavro.block_reader(f)
                same = (blocks.codec == "null" and json.dumps(
                    fastavro.parse_schema(blocks.writer_schema), sort_keys=True) == canonical)
                if same:
                    writer.flush()
                    for block in blocks:
                        writer.write_block(block)
                else:
                    for block in blocks:
                        for record in block:
                            writer.write(record)
        writer.flush()
