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
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

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


def concat_outputs(parts: list[str], out_dir: str, schemas: dict[str, str]) -> None:
    """``<part>/<name>.avro`` and ``.parquet`` of every folder in ``parts``, in order, as
    ``<out_dir>/<name>.avro`` and ``.parquet`` (each replaced atomically), for every
    ``name -> schema`` of ``schemas``; records are streamed, never all held at once.

    How a run read in slices ends with one file per output kind, as a run in one go.
    """
    import fastavro
    import pyarrow.parquet as pq

    for name, schema_name in schemas.items():
        for ext in ("avro", "parquet"):
            files = [os.path.join(p, f"{name}.{ext}") for p in parts
                     if os.path.exists(os.path.join(p, f"{name}.{ext}"))]
            if not files:
                continue
            target = os.path.join(out_dir, f"{name}.{ext}")
            if len(files) == 1:
                os.replace(files[0], target)
                continue
            tmp = os.path.join(out_dir, f".{name}.{ext}.tmp")
            if ext == "avro":
                def records(files=files):
                    for path in files:
                        with open(path, "rb") as f:
                            yield from fastavro.reader(f)

                with open(tmp, "wb") as f:
                    fastavro.writer(f, load(schema_name), records())
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
