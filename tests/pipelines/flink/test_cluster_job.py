"""The twin job on a real standalone Flink cluster reading from the real broker: outputs
arrive and decode; a TaskManager SIGKILLed mid-run is replaced, the job restores from its
last checkpoint, and the deduplicated outputs equal those of an undisturbed run (the Beam
pipeline on the same fleet): no window lost, no reading learned twice."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter

import pytest

from jobs.cli import main
from pipelines.flink import cluster as fc
from pipelines.kafka.commands import epoch_ms
from pipelines.kafka.serde import LocalSerde
from pipelines.kafka.topics import ensure_topics, raw_topics
from tests.pipelines.flink.test_parity import assert_same, beam_records
from tests.pipelines.kafka.helpers import read_topic
from transforms import signing

KEY = b"flink-test-signing-key"
FLEET = ["--assets", "8", "--duration", "12h", "--seed", "5", "--start-ms", "1795800000000",
         "--malformed-rate", "0.01"]


@pytest.fixture
def cluster(tmp_path):
    record, _ = fc.start_background(tmp_path / "flink", slots=2)
    yield fc.running()
    fc.stop_background()


def completed_checkpoints(cluster, job_id: str) -> int:
    return cluster.get(f"/jobs/{job_id}/checkpoints")["counts"]["completed"]


def decoded_by_id(bootstrap: str, topic: str, id_field: str):
    messages = read_topic(bootstrap, topic)
    serde, records = LocalSerde(), {}
    for m in messages:
        _, record = serde.decode(m.value())
        records.setdefault(record[id_field], []).append((m, record))
    return messages, records


@pytest.mark.slow
def test_taskmanager_killed_mid_run_recovers_to_the_undisturbed_outputs(broker, cluster,
                                                                        tmp_path, capsys):
    bs = broker.bootstrap_servers
    key_file = tmp_path / "hmac.key"
    key_file.write_bytes(KEY)
    ensure_topics({"bootstrap.servers": bs}, raw_topics(), partitions=2)
    assert main(["simulate", "--bootstrap-servers", bs, *FLEET, "--no-actions"]) == 0
    reference = tmp_path / "beam"
    assert main(["run", *FLEET, "--out", str(reference), "--no-progress"]) == 0
    capsys.readouterr()

    assert main(["flink", "submit", "--source", "kafka", "--bounded", "--bootstrap-servers", bs,
                 "--parallelism", "2", "--checkpoint-interval", "1s",
                 "--hmac-key-file", str(key_file), "--group-id", "flink-recovery"]) == 0
    job_id = capsys.readouterr().out.strip().splitlines()[-1]
    assert len(job_id) == 32

    # mid-run: a checkpoint is done and outputs are flowing, but the job is not finished
    deadline = time.monotonic() + 180
    while completed_checkpoints(cluster, job_id) < 1:
        assert cluster.job_status(job_id) == "RUNNING", cluster.job_exceptions(job_id)
        assert time.monotonic() < deadline, "no checkpoint completed"
        time.sleep(0.5)
    [tm_pid] = cluster.taskmanager_pids()
    assert cluster.job_status(job_id) == "RUNNING"
    os.kill(tm_pid, signal.SIGKILL)
    cluster.start_taskmanager()
    assert cluster.wait_for_job(job_id, "FINISHED", timeout_s=600) == "FINISHED"
    restarts = cluster.get(f"/jobs/{job_id}")
    history = cluster.get(f"/jobs/{job_id}/exceptions")["exceptionHistory"]["entries"]
    assert history, f"the job never failed over: {restarts}"

    # predictions: at-least-once on the wire, equal to the undisturbed run once deduplicated
    messages, preds = decoded_by_id(bs, "twin.predictions", "prediction_id")
    expected = {r["prediction_id"]: r for r in beam_records(reference, "predictions")}
    assert set(preds) == set(expected) and len(messages) >= len(expected) > 1000
    from jobs.tail import jsonable

    for pid, copies in preds.items():
        for m, record in copies:  # every copy, including replays, is the same record
            assert m.key().decode() == record["asset_id"]
            assert_same(expected[pid], jsonable(record), pid)

    # actions: signed, and the same as undisturbed
    messages, actions = decoded_by_id(bs, "twin.actions", "action_id")
    expected = {r["action_id"]: r for r in beam_records(reference, "actions")}
    assert set(actions) == set(expected) and expected
    for m in messages:
        verdict = signing.verify_headers(KEY, "twin.actions", m.key(), m.value(), m.headers())
        assert verdict.status == "valid"
        _, record = LocalSerde().decode(m.value())
        assert verdict.stamp.seq == epoch_ms(record["ts_ms"])  # the decision's window end

    # dead letters: every bad message once (by its topic/partition@offset), same reasons
    messages, dead = decoded_by_id(bs, "twin.deadletter", "source")
    summary = json.loads((reference / "summary.json").read_text())
    assert Counter(copies[0][1]["reason"] for copies in dead.values()) == \
        Counter(summary["dead_letter_reasons"])
