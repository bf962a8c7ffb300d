"""`twin run --source kafka` against a real broker: accounting, topics, state, restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from jobs.cli import main
from pipelines.kafka.serde import LocalSerde
from pipelines.kafka.topics import raw_topics
from pipelines.statefile import read_state
from tests.pipelines.kafka.helpers import decoded, fleet, publish, read_topic, run_args
from transforms import signing

ROOT = Path(__file__).resolve().parents[3]
KEY = b"test-signing-key"


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "hmac.key"
    path.write_bytes(KEY)
    return path


@pytest.mark.slow
def test_every_input_accounted_for_and_outputs_on_their_topics(broker, tmp_path, key_file):
    f = fleet(hours=4.0)  # long enough for faults, alerts and setpoint commands
    n = publish(broker.bootstrap_servers, f.messages())
    out = tmp_path / "run"
    assert main(run_args(broker.bootstrap_servers, out)) == 0
    s = json.loads((out / "summary.json").read_text())
    truth = f.ground_truth()
    assert s["readings_in"] == n == sum(truth["messages"].values())
    assert s["readings_valid"] + s["dead_letters"] == n
    assert s["dead_letter_reasons"] == truth["expected_dead_letters"]
    preds = decoded(broker.bootstrap_servers, "prediction")
    assert len(preds) == s["predictions"] > 0
    actions_raw = read_topic(broker.bootstrap_servers, "twin.actions")
    assert len(actions_raw) == sum(s["actions"].values()) > 0
    for m in actions_raw:  # every command is signed with the configured key
        assert signing.verify_headers(b"test-signing-key", "twin.actions", m.key(),
                                      m.value(), m.headers()).status == "valid"
    dead = read_topic(broker.bootstrap_servers, "twin.deadletter")
    assert len(dead) == s["dead_letters"]
    name, d = LocalSerde().decode(dead[0].value())
    assert name == "twin/deadletter.v1" and d["source"].startswith("twin.raw.")
    # the dead letter points back at its original message: topic/partition@offset
    topic, _, rest = d["source"].partition("/")
    assert "@" in rest and topic in raw_topics()
    # progress is durable: state file and committed offsets; a rerun finds nothing new
    state = read_state(str(out / "twin-state.pkl"), KEY)
    assert set(state["twins"]) == {a.asset_id for a in f.assets}
    assert sum(state["offsets"].values()) == n
    assert main(run_args(broker.bootstrap_servers, out)) == 0
    assert json.loads((out / "summary.json").read_text()) == s  # left as it was


@pytest.mark.slow
def test_two_runs_continue_where_the_first_stopped(broker, tmp_path, key_file):
    """Half the data, run, the other half, run == one run over everything (by output id)."""
    import fastavro

    def preds(path):
        with open(path, "rb") as fh:
            return {p["prediction_id"]: p for p in fastavro.reader(fh)}

    messages = list(fleet().messages())
    half = len(messages) // 2
    publish(broker.bootstrap_servers, messages[:half])
    part = tmp_path / "part"
    assert main(run_args(broker.bootstrap_servers, part, "--group-id", "parts")) == 0
    first = preds(part / "predictions.avro")
    publish(broker.bootstrap_servers, messages[half:])
    assert main(run_args(broker.bootstrap_servers, part, "--group-id", "parts")) == 0
    second = preds(part / "predictions.avro")
    assert first and second and not first.keys() & second.keys()
    whole = tmp_path / "whole"
    assert main(run_args(broker.bootstrap_servers, whole, "--group-id", "whole")) == 0
    assert json.loads((whole / "summary.json").read_text())["readings_in"] == len(messages)
    # the second run's last windows are still open (handed to the state file), so the
    # whole run, which ends at the same place, has exactly the same windows
    everything = {**first, **second}
    whole_preds = preds(whole / "predictions.avro")
    assert everything.keys() == whole_preds.keys()
    for pid, p in whole_preds.items():
        assert everything[pid]["anomaly_score"] == pytest.approx(p["anomaly_score"], abs=1e-9)
    assert read_state(str(part / "twin-state.pkl"), KEY)["runs"] == 2


def _child_env(tmp_path) -> dict[str, str]:
    """A run started as a process the test kills: Beam's temporary folders (its runner
    removes them on a clean exit, which a killed run never reaches) go under the test's
    own tmp_path, which pytest cleans, instead of piling up in /tmp."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}


def _predictions_written(bootstrap: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "peek"})
    md = c.list_topics(timeout=5).topics.get("twin.predictions")
    written = 0
    if md is not None:
        for p in md.partitions:
            written += c.get_watermark_offsets(TopicPartition("twin.predictions", p),
                                               timeout=5)[1]
    c.close()
    return written


def _file_predictions(out: Path) -> set[str]:
    import fastavro

    with open(out / "predictions.avro", "rb") as fh:
        return {p["prediction_id"] for p in fastavro.reader(fh)}


@pytest.mark.slow
@pytest.mark.parametrize("sliced", [False, True], ids=["in-one-go", "between-slices"])
def test_killed_run_is_rerun_without_loss_or_difference(make_broker, tmp_path, key_file,
                                                        sliced):
    """Killed before anything was committed, or after some slices were: the rerun's
    outputs (on the topics and in the files) are those of a run never killed."""
    f = fleet(hours=3.0)
    messages = list(f.messages())
    calm, crashy = make_broker(), make_broker()
    for b in (calm, crashy):
        publish(b.bootstrap_servers, messages)
    assert main(run_args(calm.bootstrap_servers, tmp_path / "calm")) == 0
    expected = decoded(calm.bootstrap_servers, "prediction")
    expected_actions = decoded(calm.bootstrap_servers, "action")

    out = tmp_path / "crashy"
    slices = ["--max-messages-per-slice", "1500"] if sliced else []
    cmd = [sys.executable, "-m", "jobs.cli", *run_args(crashy.bootstrap_servers, out, *slices)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=_child_env(tmp_path))
    state_file = out / "twin-state.pkl"
    deadline = time.monotonic() + 120
    try:  # kill it once it has written some outputs (a slice committed) but not finished
        while time.monotonic() < deadline and proc.poll() is None:
            if (state_file.exists() if sliced
                    else _predictions_written(crashy.bootstrap_servers) > 0):
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    if sliced:  # some slices were made durable, not all
        state = read_state(str(state_file), KEY)
        assert 1 <= state["slices"] and sum(state["offsets"].values()) < len(messages)
    else:
        assert not state_file.exists()  # nothing was made durable
    assert main(run_args(crashy.bootstrap_servers, out, *slices)) == 0
    s = json.loads((out / "summary.json").read_text())
    # every message once: the killed run's committed slices and the rerun's
    assert s["readings_in"] == len(messages) and s["invariant_ok"]
    got = decoded(crashy.bootstrap_servers, "prediction")
    assert got.keys() == expected.keys()
    for pid, p in expected.items():
        assert got[pid]["anomaly_score"] == pytest.approx(p["anomaly_score"], abs=1e-9)
    assert decoded(crashy.bootstrap_servers, "action").keys() == expected_actions.keys()
    assert _file_predictions(out) == _file_predictions(tmp_path / "calm") == expected.keys()


def test_dead_broker_is_a_clear_error(tmp_path, key_file, capfd):
    from pipelines.kafka.broker import free_port

    port = free_port()
    rc = main(run_args(f"127.0.0.1:{port}", tmp_path / "x", "-X", "socket.timeout.ms=1000"))
    assert rc == 2
    err = capfd.readouterr().err  # file-descriptor level: librdkafka writes there directly
    assert f"cannot reach Kafka at 127.0.0.1:{port}" in err and " broker start` starts one" in err
    # one clear line, not librdkafka's "Connection refused" per retry
    assert err.count("Connection refused") <= 1 and "rdkafka" not in err and "%3|" not in err


@pytest.mark.slow
def test_unbounded_run_keeps_reading_new_data(broker, tmp_path, key_file):
    """--unbounded reads as a stream (here on the DirectRunner in streaming mode): data
    published while it runs is processed, and its predictions are the reference's."""
    from pipelines.local import run_messages

    messages = list(fleet().messages())
    split = 3000
    publish(broker.bootstrap_servers, messages[:split])
    cmd = [sys.executable, "-m", "jobs.cli",
           *run_args(broker.bootstrap_servers, tmp_path / "stream", "--unbounded")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=_child_env(tmp_path))

    def settled(min_count: int) -> dict:
        last, stable, deadline = -1, 0, time.monotonic() + 120
        while time.monotonic() < deadline:
            got = decoded(broker.bootstrap_servers, "prediction")
            stable = stable + 1 if len(got) == last and len(got) >= min_count else 0
            if stable >= 2:
                return got
            last = len(got)
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        raise AssertionError(f"predictions did not settle (last count {last})")

    try:
        early = settled(1)
        publish(broker.bootstrap_servers, messages[split:])
        late = settled(len(early) + 1)
    finally:
        proc.kill()
        proc.wait()
    outputs, _ = run_messages((m.topic, m.key, m.value, m.arrival_ms) for m in messages)
    reference = {p["prediction_id"]: p for p in outputs["prediction"]}
    assert early.keys() < late.keys() <= reference.keys()
    # a stream never closes each asset's last window; everything else is there
    assert len(reference) - len(late) <= len({a.asset_id for a in fleet().assets})
    # windows the first batch completed are scored exactly as by the reference; after the
    # pause the runner's watermark may close a window before the rest of its readings
    # arrive (they are then late, as a stream must treat them), so later scores may differ
    first_batch_end = max(m.event_ms for m in messages[:split])
    for pid, p in early.items():
        if int(pid.split(":")[1]) < first_batch_end - 120_000:
            assert p["anomaly_score"] == pytest.approx(reference[pid]["anomaly_score"],
                                                       abs=1e-9)
