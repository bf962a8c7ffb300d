"""Fault and abuse suite, input side: forged event times, a dead broker, the broker CLI.

End to end through the real embedded broker and the real ``twin`` commands:

- one forged reading (event time and Kafka timestamp both in 2100, or a day ahead of its
  asset but behind the wall clock) is a dead letter with its reason and leaves its asset's
  predictions and lateness exactly as without it, in the run that reads it and the next
  one (which starts from the state file);
- a broker that is not there, or dies mid-run, is one clear message, not a librdkafka
  storm;
- ``twin broker start|stop`` refuse what they cannot do and only ever stop our broker;
- a killed run's Beam temp folders are cleaned by the next run into the same folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fastavro
import pytest
from confluent_kafka import Producer

from pipelines.kafka.broker import free_port, port_open
from pipelines.kafka.topics import ensure_topics
from transforms.normalize import encode_message, normalize_message
from transforms.sample import Sample
from transforms.simulator import Fleet, FleetConfig

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
START_MS = 1_795_800_000_000  # fixed event time, weeks behind the machine's clock
YEAR_2100_MS = 4_102_444_800_000
DAY_MS = 86_400_000
VENDORS = ("helios", "kestrel", "orca")


def twin(*argv: str, env: dict[str, str] | None = None,
         timeout: float = 300) -> subprocess.CompletedProcess:
    """A ``twin`` command in its own process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "jobs.cli", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def publish(bootstrap: str, messages, prefix: str) -> None:
    """Messages to ``<prefix>.raw.<vendor>``, Kafka timestamp = the message's arrival time."""
    cfg = {"bootstrap.servers": bootstrap}
    ensure_topics(cfg, [f"{prefix}.raw.{v}" for v in VENDORS], partitions=2)
    p = Producer({**cfg, "linger.ms": 10, "message.max.bytes": 4_000_000})
    for m in messages:
        p.produce(f"{prefix}.raw.{m.vendor}", key=m.key, value=m.value, timestamp=m.arrival_ms)
    assert p.flush(30) == 0


class Forged:
    """A message of an existing asset with a forged event time and Kafka timestamp."""

    def __init__(self, like, ts_ms: int) -> None:
        reading = normalize_message(like.value, now_ms=like.arrival_ms)
        sample = Sample(reading["asset_id"], reading["asset_type"], ts_ms, reading["values"])
        self.vendor, self.key = like.vendor, like.key
        self.value = encode_message(like.vendor, sample)
        self.arrival_ms = ts_ms  # the producer sets the Kafka timestamp: forged too


def outputs(out: Path, name: str) -> list[dict]:
    path = out / f"{name}.avro"
    if not path.exists():
        return []
    with path.open("rb") as f:
        return list(fastavro.reader(f))


def run_kafka(bootstrap: str, out: Path, prefix: str, key: Path) -> dict:
    r = twin("run", "--source", "kafka", "--bootstrap-servers", bootstrap, "--out", str(out),
             "--topics", ",".join(f"{prefix}.raw.{v}" for v in VENDORS),
             "--group-id", prefix, "--hmac-key-file", str(key), "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((out / "summary.json").read_text())


def late_ids(out: Path, asset_id: str) -> list[str]:
    return [r["reading_id"] for r in outputs(out, "late") if r["asset_id"] == asset_id]


def by_asset(records: list[dict], asset_id: str, key: str) -> dict:
    return {r[key]: r for r in records if r["asset_id"] == asset_id}


def test_one_forged_timestamp_blinds_no_asset_in_a_kafka_run_or_the_next(broker, tmp_path):
    """The issue's reproduction: pump-000 kept 118 predictions / 1 late without the forged
    reading and fell to 60 / 661 with it, in that run and every later one."""
    key = tmp_path / "hmac.key"
    key.write_text("faults-key")
    fleet = Fleet(FleetConfig(assets=3, duration_s=2 * 3600, seed=4, start_ms=START_MS,
                              malformed_rate=0.0))
    messages = list(fleet.messages())
    victim = fleet.assets[0].asset_id
    mine = [i for i, m in enumerate(messages) if m.key == victim.encode()
            and m.defect == "clean"]
    at = mine[100]  # ~8 minutes of its history in
    forged = [Forged(messages[at], YEAR_2100_MS),  # the wall clock judges this one
              Forged(messages[at], START_MS + DAY_MS)]  # only its own history can
    half = len(messages) // 2
    poisoned_first = messages[:at + 1] + forged + messages[at + 1:half]
    publish(broker.bootstrap_servers, messages[:half], "clean")
    publish(broker.bootstrap_servers, poisoned_first, "poisoned")
    clean = run_kafka(broker.bootstrap_servers, tmp_path / "clean", "clean", key)
    poisoned = run_kafka(broker.bootstrap_servers, tmp_path / "poisoned", "poisoned", key)

    def same_twin_outputs(a: Path, b: Path) -> None:
        for asset in fleet.assets:
            pa = by_asset(outputs(a, "predictions"), asset.asset_id, "prediction_id")
            pb = by_asset(outputs(b, "predictions"), asset.asset_id, "prediction_id")
            assert pa.keys() == pb.keys() and len(pa) > 0, asset.asset_id
            for pid, p in pa.items():
                assert pb[pid]["anomaly_score"] == pytest.approx(p["anomaly_score"], abs=1e-12)
            assert late_ids(a, asset.asset_id) == late_ids(b, asset.asset_id), asset.asset_id

    # run 1: the forged readings are dead letters with their reasons, nothing else moved
    same_twin_outputs(tmp_path / "clean", tmp_path / "poisoned")
    assert poisoned["readings_in"] == clean["readings_in"] + 2
    assert poisoned["readings_valid"] == clean["readings_valid"]
    assert poisoned["dead_letters"] == clean["dead_letters"] + 2
    assert poisoned["invariant_ok"] and clean["invariant_ok"]
    assert poisoned["late_readings"] == clean["late_readings"]
    assert poisoned["predictions"] == clean["predictions"]
    reasons = dict(clean["dead_letter_reasons"])
    for reason in ("timestamp_in_future", "timestamp_jump"):
        reasons[reason] = reasons.get(reason, 0) + 1
    assert poisoned["dead_letter_reasons"] == reasons
    dead = {d["reason"]: d for d in outputs(tmp_path / "poisoned", "dead_letters")}
    future, jump = dead["timestamp_in_future"], dead["timestamp_jump"]
    assert future["stage"] == "normalize" and "clock" in future["detail"]
    assert future["payload"] == forged[0].value  # the original bytes
    assert jump["stage"] == "twin" and victim in jump["detail"]
    assert str(START_MS + DAY_MS) in jump["detail"]
    assert jump["key"] == victim.encode()

    # run 2 starts from the state file run 1 left: still nothing moved
    publish(broker.bootstrap_servers, messages[half:], "clean")
    publish(broker.bootstrap_servers, messages[half:], "poisoned")
    clean2 = run_kafka(broker.bootstrap_servers, tmp_path / "clean", "clean", key)
    poisoned2 = run_kafka(broker.bootstrap_servers, tmp_path / "poisoned", "poisoned", key)
    same_twin_outputs(tmp_path / "clean", tmp_path / "poisoned")
    for k in ("readings_in", "readings_valid", "dead_letters", "late_readings", "predictions",
              "dead_letter_reasons"):
        assert poisoned2[k] == clean2[k], k


def test_one_forged_timestamp_blinds_no_asset_in_a_flink_kafka_run(broker, tmp_path):
    """The same forged readings through the Flink job (local mini-cluster, bounded Kafka
    source): dead letters, and every asset's predictions those of the in-process reference
    on the fleet without them (pump-000 had 9 of 120 windows, 1,337 readings late)."""
    from pipelines.flink.sinks import read_json_outputs
    from pipelines.local import run_messages

    fleet = Fleet(FleetConfig(assets=3, duration_s=2 * 3600, seed=4, start_ms=START_MS,
                              malformed_rate=0.0))
    messages = list(fleet.messages())
    victim = fleet.assets[0].asset_id
    at = [i for i, m in enumerate(messages)
          if m.key == victim.encode() and m.defect == "clean"][100]
    forged = [Forged(messages[at], YEAR_2100_MS), Forged(messages[at], START_MS + DAY_MS)]
    publish(broker.bootstrap_servers, messages[:at + 1] + forged + messages[at + 1:], "twin")
    out = tmp_path / "flink"
    key = tmp_path / "hmac.key"
    key.write_text("faults-key")
    r = twin("flink", "run", "--source", "kafka", "--bounded", "--sink", "files", "--out",
             str(out), "--bootstrap-servers", broker.bootstrap_servers, "--parallelism", "2",
             "--hmac-key-file", str(key), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    reference, _ = run_messages((m.topic, m.key, m.value, m.arrival_ms) for m in messages)
    got = {p["prediction_id"]: p for p in read_json_outputs(out, "predictions")}
    want = {p["prediction_id"]: p for p in reference["prediction"]}
    assert got.keys() == want.keys() and sum(k.startswith(victim) for k in got) == 120
    for pid, p in want.items():
        assert got[pid]["anomaly_score"] == pytest.approx(p["anomaly_score"], abs=1e-9)
    assert sorted(r["reading_id"] for r in read_json_outputs(out, "late")) == sorted(
        r["reading_id"] for r in reference.get("late", []))
    dead = read_json_outputs(out, "dead_letters")
    assert sorted((d["stage"], d["reason"]) for d in dead) == [
        ("normalize", "timestamp_in_future"), ("twin", "timestamp_jump")]


def test_a_dead_broker_is_one_clear_message(tmp_path):
    """Nothing listens: run, simulate and tail each say so in one line, within seconds."""
    where = f"127.0.0.1:{free_port()}"
    key = tmp_path / "hmac.key"
    key.write_text("faults-key")
    commands = {
        "run": ["run", "--source", "kafka", "--out", str(tmp_path / "out"), "--no-progress",
                "--hmac-key-file", str(key)],
        "simulate": ["simulate", "--assets", "1", "--duration", "10m", "--no-actions"],
        "tail": ["tail", "twin.actions", "--timeout", "5"],
    }
    t0 = time.monotonic()
    assert twin("run", "--help").returncode == 0
    startup = time.monotonic() - t0  # the CLI's imports, however loaded the machine is
    for name, argv in commands.items():
        t0 = time.monotonic()
        r = twin(*argv, "--bootstrap-servers", where)
        elapsed = time.monotonic() - t0
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert r.returncode == 2, (name, r.stderr)
        text = " ".join(lines)
        assert f"cannot reach Kafka at {where}" in text, (name, r.stderr)
        assert " broker start` starts one" in text and "rdkafka" not in text, (name, r.stderr)
        assert len(lines) <= 3, (name, r.stderr)  # one message (wrapped at most)
        # was 10-18 s: librdkafka retried for its whole timeout
        assert elapsed - startup < 6, (name, elapsed, startup)


def test_a_broker_lost_mid_run_is_not_a_storm_of_errors(make_broker, tmp_path):
    """The broker dies while `twin run` reads: a few lines at most, then the clear error
    (it was ~950 ERROR lines of librdkafka's "Connection refused", one per retry)."""
    b = make_broker()
    key = tmp_path / "hmac.key"
    key.write_text("faults-key")
    fleet = Fleet(FleetConfig(assets=12, duration_s=6 * 3600, seed=4, start_ms=START_MS))
    publish(b.bootstrap_servers, fleet.messages(), "twin")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "jobs.cli", "run", "--source", "kafka", "--bootstrap-servers",
           b.bootstrap_servers, "--out", str(out), "--no-progress", "--hmac-key-file",
           str(key)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT),
                                            "TMPDIR": str(tmp_path)})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(out.glob(".slice-*/*")):
            time.sleep(0.05)  # the pipeline is running once its sinks write files in the
            # folder of the slice it is reading (one per bundle, temporary until whole)
        assert proc.poll() is None, "the run ended before the broker could be lost"
        b.kill()
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 2, err[-3000:]
    assert sum("rdkafka" in line for line in lines) <= 3, f"{len(lines)} lines:\n{err[:3000]}"
    assert len(lines) <= 8, err[:3000]
    assert b.bootstrap_servers in lines[-1] or b.bootstrap_servers in " ".join(lines[-3:])


def test_broker_start_and_stop_refuse_what_they_cannot_do(tmp_path):
    env = {"TWIN_STATE_DIR": str(tmp_path / "state")}
    port, other = free_port(), free_port()
    record = tmp_path / "state" / "broker.json"
    try:
        r = twin("broker", "start", "--port", str(port), env=env)
        assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == f"127.0.0.1:{port}"
        pid = json.loads(record.read_text())["pid"]
        # another port while ours runs: an error naming the running broker, not its address
        r = twin("broker", "start", "--port", str(other), env=env)
        assert r.returncode == 2, r.stdout + r.stderr
        assert r.stdout == ""  # nothing a script could take for the new broker's address
        assert f"127.0.0.1:{port}" in r.stderr and str(pid) in r.stderr
        assert not port_open(other)
        # the same port, or none given: it is already there
        for argv in (["--port", str(port)], []):
            r = twin("broker", "start", *argv, env=env)
            assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == f"127.0.0.1:{port}"
            assert "already running" in r.stdout
        # stop --port of another port: refused, ours keeps running
        r = twin("broker", "stop", "--port", str(other), env=env)
        assert r.returncode == 2 and f"127.0.0.1:{port}" in r.stderr
        assert port_open(port)
        r = twin("broker", "stop", "--port", str(port), env=env)
        assert r.returncode == 0 and "stopped" in r.stdout
        assert not port_open(port)
    finally:
        twin("broker", "stop", env=env)

    # a record whose pid now belongs to another program (a reused pid): never signalled
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        record.write_text(json.dumps({
            "pid": bystander.pid, "port": port, "bootstrap_servers": f"127.0.0.1:{port}",
            "log": str(tmp_path / "broker.log"), "started": "2026-01-01T00:00:00+0000"}))
        r = twin("broker", "stop", env=env)
        assert r.returncode == 0 and "no broker running" in r.stdout
        assert bystander.poll() is None  # still alive
        assert not record.exists()  # the stale record is gone
        assert twin("broker", "status", env=env).returncode == 1
    finally:
        bystander.kill()
        bystander.wait()


def test_a_killed_run_leaves_no_temp_folders_after_the_next(tmp_path):
    out = tmp_path / "out"
    fleet = ["--assets", "6", "--duration", "3h", "--seed", "3", "--start-ms", str(START_MS)]
    cmd = [sys.executable, "-m", "jobs.cli", "run", *fleet, "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list(out.glob("beam-temp-*"))) < 6:
            time.sleep(0.05)
        assert list(out.glob("beam-temp-*")), "the run never started writing"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert list(out.glob("beam-temp-*"))  # what a killed run leaves behind
    r = twin("run", *fleet, "--out", str(out), "--no-progress", env={"TMPDIR": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-3000:]
    assert not list(out.glob("beam-temp-*"))
    assert json.loads((out / "summary.json").read_text())["invariant_ok"]
