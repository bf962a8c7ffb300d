"""File sinks: the output folder a run claims (Beam temp folders of killed runs are removed,
a folder another run is writing to is refused), and a run's slices ending as one Avro and
one Parquet file per output kind, written per bundle in a slice's pipeline."""

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
    WriteBundleFiles,
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


def records_of(ids, schema=SCHEMA):
    return [{**FIXTURES[schema], "prediction_id": i} for i in ids]


@pytest.mark.parametrize("schema", ["twin/prediction.v1", "twin/features.v1",
                                    "twin/state.v1", "twin/deadletter.v1"])
def test_bundle_files_hold_what_beams_file_sinks_write(tmp_path, schema):
    """The per-bundle writer (a slice's) and Beam's sinks (a run's in one go) give the same
    records in Avro and the same table in Parquet, maps, timestamps and bytes included."""
    rows = [{**FIXTURES[schema]} for _ in range(3)]
    with TestPipeline() as p:
        records = p | beam.Create(rows, reshuffle=False)
        records | "Beam" >> WriteRecords(str(tmp_path / "beam"), "x", schema)
        records | "Bundles" >> WriteBundleFiles(str(tmp_path / "bundles"), "x", schema)
    files = sorted(os.listdir(tmp_path / "bundles"))
    assert [f.rsplit(".", 1)[1] for f in files] == ["avro", "parquet"]
    assert files[0].startswith("x-") and not any(f.endswith(".tmp") for f in files)
    with open(tmp_path / "beam" / "x.avro", "rb") as a, \
            open(tmp_path / "bundles" / files[0], "rb") as b:
        assert list(fastavro.reader(a)) == list(fastavro.reader(b)) and len(rows) == 3
    assert pq.read_table(tmp_path / "beam" / "x.parquet").equals(
        pq.read_table(tmp_path / "bundles" / files[1]))


def test_bundle_files_write_parquet_row_groups_as_they_fill(tmp_path, monkeypatch):
    from pipelines.beam import sinks

    monkeypatch.setattr(sinks._BundleFilesFn, "ROWS", 2)
    with TestPipeline() as p:
        (p | beam.Create(records_of(["a", "b", "c", "d", "e"]), reshuffle=False)
         | WriteBundleFiles(str(tmp_path), "predictions", SCHEMA))
    [parquet] = [f for f in os.listdir(tmp_path) if f.endswith(".parquet")]
    pf = pq.ParquetFile(tmp_path / parquet)
    assert pf.metadata.num_row_groups == 3 and pf.metadata.num_rows == 5


def test_slices_of_bundle_files_join_in_order_block_by_block(tmp_path):
    """Slice folders with several bundle files each (and one without any predictions)
    become one file of each kind, records in folder then file-name order; a kind no slice
    wrote is an empty file, as a run in one go leaves it."""
    from pipelines.beam.sinks import _BundleFilesFn

    parts = []
    for n, bundles in enumerate([[["p1", "p2"], ["p3"]], [], [["p4"]]]):
        folder = tmp_path / f"slice-{n}"
        folder.mkdir()
        parts.append(str(folder))
        for k, ids in enumerate(bundles):
            before = set(os.listdir(folder))
            fn = _BundleFilesFn(str(folder), "predictions", SCHEMA, parquet=True)
            fn.setup()
            fn.start_bundle()
            for r in records_of(ids):
                list(fn.process(r))
            fn.finish_bundle()
            # a bundle's files have a random id: give them ids in the order written
            for f in set(os.listdir(folder)) - before:
                os.rename(folder / f, folder / f"predictions-{k:032x}.{f.split('.', 1)[1]}")
    out = tmp_path / "out"
    out.mkdir()
    concat_outputs(parts, str(out), {"predictions": SCHEMA, "late": "twin/reading.v1"})
    with open(out / "predictions.avro", "rb") as f:
        assert [r["prediction_id"] for r in fastavro.reader(f)] == ["p1", "p2", "p3", "p4"]
    assert pq.read_table(out / "predictions.parquet").column(
        "prediction_id").to_pylist() == ["p1", "p2", "p3", "p4"]
    with open(out / "late.avro", "rb") as f:
        assert list(fastavro.reader(f)) == []
    assert pq.read_table(out / "late.parquet").num_rows == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "late.avro", "late.parquet", "predictions.avro", "predictions.parquet"]


def test_avro_of_another_codec_is_re_encoded_when_joined(tmp_path):
    """Beam's own sink writes deflate blocks: joined with null-codec bundle files, its
    records are decoded and written again rather than copied as blocks."""
    write_part(tmp_path / "a", ["p1"])  # Beam's sink
    b = tmp_path / "b"
    b.mkdir()
    with TestPipeline() as p:
        (p | beam.Create(records_of(["p2"])) | WriteBundleFiles(str(b), "predictions", SCHEMA))
    out = tmp_path / "out"
    out.mkdir()
    concat_outputs([str(tmp_path / "a"), str(b)], str(out), {"predictions": SCHEMA})
    with open(out / "predictions.avro", "rb") as f:
        assert [r["prediction_id"] for r in fastavro.reader(f)] == ["p1", "p2"]
