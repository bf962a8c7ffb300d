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
from confluent_kafka import Consumer, Producer, TopicPartition

from jobs.cli import main
from pipelines.kafka.serde import LocalSerde
from pipelines.kafka.topics import OUTPUT_TOPICS, ensure_topics, raw_topics
from pipelines.statefile import read_state
from tests.pipelines.kafka.helpers import read_topic
from transforms import signing
from transforms.simulator import Fleet, FleetConfig

START_MS = 1_795_800_000_000
ROOT = Path(__file__).resolve().parents[3]


def fleet(hours: float = 2.0) -> Fleet:
    return Fleet(FleetConfig(assets=3, duration_s=hours * 3600, seed=4, start_ms=START_MS,
                             malformed_rate=0.02))


def publish(bootstrap: str, messages) -> int:
    cfg = {"bootstrap.servers": bootstrap}
    ensure_topics(cfg, raw_topics(), partitions=2)
    p = Producer({**cfg, "linger.ms": 10, "message.max.bytes": 4_000_000})  # oversize tests
    n = 0
    for m in messages:
        p.produce(m.topic, key=m.key, value=m.value, timestamp=m.arrival_ms)
        n += 1
        if n % 5000 == 0:
            p.poll(0)
    assert p.flush(30) == 0
    return n


def decoded(bootstrap: str, tag: str) -> dict[str, dict]:
    """Output records of ``tag`` on the broker, deduplicated by their deterministic id."""
    topic, schema = OUTPUT_TOPICS[tag]
    serde, records = LocalSerde(), {}
    id_field = {"prediction": "prediction_id", "action": "action_id"}[tag]
    for m in read_topic(bootstrap, topic):
        name, record = serde.decode(m.value())
        assert name == schema
        records[record[id_field]] = record
    return records


def run_args(bootstrap: str, out: Path, *extra: str) -> list[str]:
    return ["run", "--source", "kafka", "--bootstrap-servers", bootstrap, "--out", str(out),
            "--no-progress", "--hmac-key-file", str(out.parent / "hmac.key"), *extra]


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "hmac.key"
    path.write_text("test-signing-key")
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
    state = read_state(str(out / "twin-state.pkl"))
    assert set(state["twins"]) == {a.asset_id for a in f.assets}
    assert sum(state["offsets"].values()) == n
    assert main(run_args(broker.bootstrap_servers, out)) == 0
    assert json.loads((out / "summary.json").read_text())["nothing_new"] is True


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
    assert read_state(str(part / "twin-state.pkl"))["runs"] == 2


def _child_env(tmp_path) -> dict[str, str]:
    """A run started as a process the test kills: Beam's temporary folders (its runner
    removes them on a clean exit, which a killed run never reaches) go under the test's
    own tmp_path, which pytest cleans, instead of piling up in /tmp."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}


@pytest.mark.slow
def test_killed_run_is_rerun_without_loss_or_difference(make_broker, tmp_path, key_file):
    f = fleet(hours=3.0)
    messages = list(f.messages())
    calm, crashy = make_broker(), make_broker()
    for b in (calm, crashy):
        publish(b.bootstrap_servers, messages)
    assert main(run_args(calm.bootstrap_servers, tmp_path / "calm")) == 0
    expected = decoded(calm.bootstrap_servers, "prediction")
    expected_actions = decoded(calm.bootstrap_servers, "action")

    out = tmp_path / "crashy"
    cmd = [sys.executable, "-m", "jobs.cli", *run_args(crashy.bootstrap_servers, out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=_child_env(tmp_path))
    deadline = time.monotonic() + 120
    try:  # kill it once it has written some outputs but before it finishes
        while time.monotonic() < deadline and proc.poll() is None:
            c = Consumer({"bootstrap.servers": crashy.bootstrap_servers, "group.id": "peek"})
            md = c.list_topics(timeout=5).topics.get("twin.predictions")
            written = 0
            if md is not None:
                for p in md.partitions:
                    written += c.get_watermark_offsets(TopicPartition("twin.predictions", p),
                                                       timeout=5)[1]
            c.close()
            if written > 0:
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "twin-state.pkl").exists()  # nothing was made durable
    assert main(run_args(crashy.bootstrap_servers, out)) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["readings_in"] == len(messages)  # the rerun read everything again
    got = decoded(crashy.bootstrap_servers, "prediction")
    assert got.keys() == expected.keys()
    for pid, p in expected.items():
        assert got[pid]["anomaly_score"] == pytest.approx(p["anomaly_score"], abs=1e-9)
    assert decoded(crashy.bootstrap_servers, "action").keys() == expected_actions.keys()


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
