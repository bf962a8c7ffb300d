"""A plant connected with two files and no Python: the compressor of
docs/connect-your-plant.md, plain JSON on Kafka, through the twin on Beam."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Producer

from jobs.cli import main
from pipelines.kafka.topics import ensure_topics

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "compressor"
START_MS = 1_796_119_200_000 - 86_400_000


def publish(bs: str, topic: str, rows: int = 1500) -> None:
    """Two compressors at 10 s: comp-7's vibration creeps to 2.5 times normal over its last
    300 readings, comp-8 stays healthy; and one message that is not JSON."""
    ensure_topics({"bootstrap.servers": bs}, [topic])
    p = Producer({"bootstrap.servers": bs})
    rng = np.random.default_rng(7)
    for dev in ("comp-7", "comp-8"):
        for i in range(rows):
            load = 0.7 + 0.1 * np.sin(i / 90) + rng.normal(0, 0.02)
            creep = min(max((i - (rows - 300)) / 200, 0), 1) if dev == "comp-7" else 0.0
            ts = np.datetime64(START_MS + i * 10_000, "ms")
            msg = {"device": dev, "ts": f"{ts}Z",
                   "p_bar": round(6 + 2 * load + rng.normal(0, 0.05), 3),
                   "t_c": round(40 + 30 * load + rng.normal(0, 0.4), 2),
                   "vib": round((1.5 + load) * (1 + 1.5 * creep) + rng.normal(0, 0.05), 3),
                   "amps": round(20 + 30 * load + rng.normal(0, 0.3), 2)}
            p.produce(topic, json.dumps(msg).encode(), key=dev.encode())
    p.produce(topic, b"not json at all", key=b"comp-7")
    p.flush()


@pytest.mark.slow
def test_plain_json_on_kafka_through_beam_with_a_model_and_a_format(broker, tmp_path):
    bs = broker.bootstrap_servers
    publish(bs, "plant.comp7")
    out = tmp_path / "out"
    rc = main(["run", "--source", "kafka", "--bootstrap-servers", bs, "--no-progress",
               "--model", str(EXAMPLE / "compressor.model.yaml"),
               "--format", str(EXAMPLE / "compressor.format.yaml"), "--out", str(out)])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["topics"] == ["plant.comp7"]  # the format's topic, read by default
    assert (s["readings_in"], s["readings_valid"], s["dead_letters"]) == (3001, 3000, 1)
    assert s["dead_letter_reasons"] == {"malformed_payload": 1}
    actions = pq.read_table(out / "actions.parquet").to_pylist()
    alerted = {a["asset_id"] for a in actions if a["kind"] == "ALERT"}
    assert alerted == {"comp-7"}
    [alert] = [a for a in actions if a["kind"] == "ALERT"]
    assert "vib" in alert["reason"]
    preds = pq.read_table(out / "predictions.parquet").to_pandas()
    assert set(preds["asset_type"]) == {"compressor"}
    # 250 windows of a minute each; the newest stay open for the next run (state file)
    assert set(preds.groupby("asset_id").size()) == {248}


@pytest.mark.slow
def test_a_topic_the_twin_cannot_read_fails_the_run_with_a_hint(broker, tmp_path, capsys):
    bs = broker.bootstrap_servers
    publish(bs, "plant.comp9", rows=100)
    rc = main(["run", "--source", "kafka", "--bootstrap-servers", bs, "--no-progress",
               "--topics", "plant.comp9", "--out", str(tmp_path / "o")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "cannot read plant.comp9: 201 of 201 messages are dead letters (bad_magic 201)" in err
    assert "these look like plain JSON: declare a json format for topic plant.comp9" in err


@pytest.mark.slow
def test_the_same_files_run_the_flink_job(broker, tmp_path):
    """The Flink job reads the same topic with the same two files: the same alert. (In a
    subprocess: PyFlink, once loaded, takes over Beam's operations in this process.)"""
    import subprocess
    import sys

    from pipelines.flink.sinks import read_json_outputs

    bs = broker.bootstrap_servers
    publish(bs, "plant.comp7")
    out = tmp_path / "flink"
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "flink", "run", "--source", "kafka", "--bounded",
         "--bootstrap-servers", bs, "--sink", "files", "--out", str(out),
         "--model", str(EXAMPLE / "compressor.model.yaml"),
         "--format", str(EXAMPLE / "compressor.format.yaml")],
        cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    actions = read_json_outputs(out, "actions")
    assert {a["asset_id"] for a in actions if a["kind"] == "ALERT"} == {"comp-7"}
    dead = read_json_outputs(out, "dead_letters")
    assert [d["reason"] for d in dead] == ["malformed_payload"]
    preds = read_json_outputs(out, "predictions")
    assert {p["asset_type"] for p in preds} == {"compressor"} and len(preds) >= 2 * 248
