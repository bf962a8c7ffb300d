"""`twin whatif` and `twin optimize` on a run folder, a state file and the state topic."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from schemas.arrow import arrow_schema
from tests.transforms.test_twin import readings, run
from transforms.twin import STATE, AssetTwin


def _twin(windows: int = 150, fault_from: int | None = 90) -> tuple[AssetTwin, list[dict]]:
    twin = AssetTwin("p1", "pump", detector={"warmup": 20}, learned_every=10,
                     policy={"setpoint_interval_s": 60})
    out = run(twin, readings(windows, fault_from=fault_from))
    return twin, [r for t, r in out if t == STATE]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A run folder whose state.parquet holds one degrading pump's state records."""
    d = tmp_path_factory.mktemp("run")
    _, states = _twin()
    pq.write_table(pa.Table.from_pylist(states, schema=arrow_schema("twin/state.v1")),
                   d / "state.parquet")
    return d


def test_whatif_on_a_run_folder_writes_json_and_a_plot(folder, tmp_path, capsys):
    out = tmp_path / "w"
    code = main(["whatif", str(folder), "--set", "speed=-5%", "--from", "+10m", "--for", "1h",
                 "--horizon", "3h", "--out", str(out), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["asset_id"] == "p1" and result["horizon_s"] == 3 * 3600
    assert result["scenario"]["steps"][0]["from_s"] == 600.0
    assert json.loads((out / "p1.json").read_text()) == result
    assert (out / "p1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a fault is developing: the answer carries it and says so
    assert result["fault"] is not None
    assert any("fault is developing" in n for n in result["notes"])


def test_whatif_prints_a_table(folder, tmp_path, capsys):
    assert main(["whatif", str(folder), "--set", "speed=150", "--out", str(tmp_path),
                 "--no-plot"]) == 0
    text = capsys.readouterr().out
    assert "vibration if" in text and "remaining useful life" in text
    assert not (tmp_path / "p1.png").exists()


def test_a_scenario_file(folder, tmp_path, capsys):
    f = tmp_path / "s.toml"
    f.write_text('horizon = "2h"\n[[step]]\nset = {speed = "-5%"}\nfor = "30m"\n'
                 '[[step]]\nset = {speed = "-10%"}\nfrom = "+30m"\n')
    assert main(["whatif", str(folder), "--scenario", str(f), "--out", str(tmp_path),
                 "--json", "--no-plot"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["scenario"]["steps"]) == 2 and result["horizon_s"] == 7200


@pytest.mark.parametrize("argv, message", [
    (["--set", "sped=1"], "is not a sensor a scenario can set"),
    (["--set", "speed=10%"], "give its sign"),
    (["--asset", "p9", "--set", "speed=-5%"], "no asset 'p9'"),
    (["--from", "+5m"], "need at least one --set"),
])
def test_bad_usage_exits_2_with_the_reason(folder, tmp_path, capsys, argv, message):
    assert main(["whatif", str(folder), "--out", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err.replace("\n", " ")


def test_a_source_is_needed_and_only_one(tmp_path, capsys):
    assert main(["whatif", "--set", "speed=-5%"]) == 2
    assert "give one source" in capsys.readouterr().err
    assert main(["whatif", str(tmp_path), "--set", "speed=-5%"]) == 2
    assert "no state.parquet or state.avro" in capsys.readouterr().err


def test_optimize_proposes_a_dry_run_setpoint_within_the_guardrails(folder, tmp_path, capsys):
    code = main(["optimize", str(folder), "--min-rul", "30m", "--horizon", "2h", "--out",
                 str(tmp_path), "--json"])
    rec = json.loads(capsys.readouterr().out)
    assert code == (0 if rec["feasible"] else 1)
    a = rec["action"]
    if rec["steps"]:
        assert a["kind"] == "SETPOINT" and a["dry_run"] is True
        assert abs(a["setpoint_value"] - a["setpoint_previous"]) <= 0.05 * rec["nominal"] + 1e-9
    assert (tmp_path / "p1-optimize.json").is_file()


def test_optimize_apply_needs_publish(folder, capsys):
    assert main(["optimize", str(folder), "--apply"]) == 2
    assert "--apply only means something with --publish" in capsys.readouterr().err


def test_optimize_until_a_time(folder, tmp_path, capsys):
    assert main(["optimize", str(folder), "--until", "1970-01-01T00:00Z"]) == 2
    assert "is not after the state's time" in capsys.readouterr().err
    assert main(["optimize", str(folder), "--until", "2030-01-01T00:00"]) == 2
    assert "needs a time zone" in capsys.readouterr().err


def test_whatif_on_a_state_file(tmp_path, capsys, monkeypatch):
    from pipelines import statefile

    twin, _ = _twin()
    path = tmp_path / "twin-state.pkl"
    if hasattr(statefile, "seal"):  # signed state files: read with the run's key
        key = b"state-file-test-key"
        monkeypatch.setenv("TWIN_HMAC_KEY", key.decode())
        state = {**statefile.empty_state(), "twins": {"p1": pickle.dumps(twin)}}
        path.write_bytes(statefile.seal(state, key))
    else:
        statefile.write_state(str(path), {}, {"p1": pickle.dumps(twin)})
    assert main(["whatif", "--state-file", str(path), "--set", "speed=-5%", "--out",
                 str(tmp_path), "--json", "--no-plot"]) == 0
    result = json.loads(capsys.readouterr().out)
    direct = json.loads(json.dumps(__import__("transforms.whatif", fromlist=["whatif"]).whatif(
        twin, {"steps": [{"set": {"speed": "-5%"}}]})))
    assert result == direct


@pytest.mark.slow
def test_the_state_topic_and_a_signed_published_command(broker, tmp_path, capsys, monkeypatch):
    from confluent_kafka import Consumer, TopicPartition

    from pipelines.kafka.outputs import encode_output
    from pipelines.kafka.serde import LocalSerde
    from pipelines.kafka.topics import ensure_topics
    from transforms import signing

    key = b"whatif-test-key"
    monkeypatch.setenv("TWIN_HMAC_KEY", key.decode())
    b = broker.bootstrap_servers
    _, states = _twin(80, None)  # healthy: nothing holds it below the top of its bounds
    cfg = {"bootstrap.servers": b}
    ensure_topics(cfg, ["twin.state", "twin.actions"], partitions=2)
    from confluent_kafka import Producer

    p = Producer(cfg)
    for r in states:
        k, v, _ = encode_output("twin.state", "twin/state.v1", r, LocalSerde())
        p.produce("twin.state", key=k, value=v)
    assert p.flush(10) == 0
    assert main(["whatif", "--source", "kafka", "--bootstrap-servers", b, "--set",
                 "speed=-5%", "--out", str(tmp_path), "--json", "--no-plot"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["from_ms"] == states[-1]["ts_ms"]
    code = main(["optimize", "--source", "kafka", "--bootstrap-servers", b, "--horizon", "1h",
                 "--out", str(tmp_path), "--json", "--publish", "--allow-extrapolation"])
    rec = json.loads(capsys.readouterr().out)
    assert code == 0 and rec["fraction"] == 1.05 and rec["action"]["setpoint_value"] > (
        rec["action"]["setpoint_previous"])
    c = Consumer({"bootstrap.servers": b, "group.id": "t", "auto.offset.reset": "earliest"})
    c.assign([TopicPartition("twin.actions", i, 0) for i in range(2)])
    msg = None
    for _ in range(30):
        msg = c.poll(1.0)
        if msg is not None and msg.error() is None:
            break
    c.close()
    assert msg is not None and msg.key() == b"p1"
    verdict = signing.verify_headers(key, "twin.actions", msg.key(), msg.value(),
                                     msg.headers())
    assert verdict.status == "valid" and verdict.stamp.seq == rec["action"]["ts_ms"]
    assert LocalSerde().decode(msg.value())[1]["dry_run"] is True
