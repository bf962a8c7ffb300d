"""File sinks: the output folder a run claims (Beam temp folders of killed runs are removed,
a folder another run is writing to is refused), and a run's slices ending as one Avro and
one Parquet file per output kind."""

from __future__ import annotations

import os
import subprocess
import sys

import apache_beam as beam
import fastavro
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from pipelines.beam.sinks import (
    LOCK_FILE,
    OutputFolderBusy,
    WriteRecords,
    claim_out_dir,
    concat_outputs,
)
from tests.schemas.test_schemas import FIXTURES

UUID = "7fef644cf24a11f1a4cd02fc00000001"


def test_stale_beam_temp_folders_go_and_nothing_else(tmp_path):
    out = tmp_path / "out"
    stale = [out / f"beam-temp-predictions-{UUID}", out / f"beam-temp-.checkpoint-{UUID}",
             out / f"beam-temp-dead_letters-{UUID[:-1]}2"]
    keep = [out / "beam-temp-notes", out / f"beam-temp-predictions-{UUID}.avro",
            out / "predictions.avro", out / "sub" / f"beam-temp-x-{UUID}"]
    for d in stale:
        (d / "part").mkdir(parents=True)
        (d / "part" / "f.avro").write_bytes(b"x")
    for k in keep:
        k.parent.mkdir(parents=True, exist_ok=True)
        if k.name.endswith(UUID):
            k.mkdir()
        else:
            k.write_bytes(b"y")
    with claim_out_dir(out) as held:
        assert held == out
        assert not any(d.exists() for d in stale)
        assert all(k.exists() for k in keep)
        assert (out / LOCK_FILE).read_text() == f"{os.getpid()}\n"
        assert (out / LOCK_FILE).stat().st_mode & 0o777 == 0o600


def test_a_folder_another_run_holds_is_refused_and_its_temp_folders_kept(tmp_path):
    out = tmp_path / "out"
    busy = out / f"beam-temp-state-{UUID}"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from pipelines.beam.sinks import claim_out_dir\n"
         f"with claim_out_dir({str(out)!r}):\n"
         "    print('held', flush=True)\n"
         "    time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert holder.stdout.readline().strip() == "held"
        busy.mkdir()  # the holder's sink writing
        with pytest.raises(OutputFolderBusy, match=f"another run \\(pid {holder.pid}\\) is "
                                                   f"writing to {out}"):
            with claim_out_dir(out):
                pass
        assert busy.exists()
    finally:
        holder.kill()
        holder.wait()
    with claim_out_dir(out):  # a killed holder's lock is gone with it
        assert not busy.exists()


SCHEMA = "twin/prediction.v1"


def write_part(folder, ids):
    with TestPipeline() as p:
        (p | beam.Create([{**FIXTURES[SCHEMA], "prediction_id": i} for i in ids])
         | WriteRecords(str(folder), "predictions", SCHEMA))


def test_parts_are_concatenated_in_order_and_replace_the_outputs(tmp_path):
    parts = [tmp_path / "a", tmp_path / "b", tmp_path / "c"]
    write_part(parts[0], ["p1", "p2"])
    write_part(parts[1], [])  # a slice without predictions
    write_part(parts[2], ["p3"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.avro").write_bytes(b"the previous run's")
    concat_outputs([str(p) for p in parts], str(out), {"predictions": SCHEMA})
    with open(out / "predictions.avro", "rb") as f:
        assert [r["prediction_id"] for r in fastavro.reader(f)] == ["p1", "p2", "p3"]
    table = pq.read_table(out / "predictions.parquet")
    assert table.column("prediction_id").to_pylist() == ["p1", "p2", "p3"]
    assert sorted(p.name for p in out.iterdir()) == ["predictions.avro", "predictions.parquet"]


def test_one_part_is_moved_as_it_is(tmp_path):
    write_part(tmp_path / "a", ["p1"])
    out = tmp_path / "out"
    out.mkdir()
    concat_outputs([str(tmp_path / "a")], str(out), {"predictions": SCHEMA})
    with open(out / "predictions.avro", "rb") as f:
        assert [r["prediction_id"] for r in fastavro.reader(f)] == ["p1"]
