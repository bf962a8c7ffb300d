"""The example consumer against a real broker: once per distinct id, commits, stops cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from jobs import example_consumer
from pipelines.kafka.broker import free_port
from pipelines.kafka.outputs import encode_output
from pipelines.kafka.serde import LocalSerde
from pipelines.kafka.topics import ensure_topics
from schemas import schema_id, wire
from tests.schemas.test_schemas import FIXTURES
from transforms import signing
from transforms.signing import Signer

ROOT = Path(__file__).resolve().parents[3]
SECRET = b"example-key"
# Tansu forms a group in about half the session timeout; keep it short for tests.
FAST_GROUP = ["-X", "session.timeout.ms=1000", "-X", "heartbeat.interval.ms=300",
              "-X", "max.poll.interval.ms=3000"]


def action(n: int, **kw) -> dict:
    return {**FIXTURES["twin/action.v1"], "action_id": f"pump-1:{n}:ALERT", "kind": "ALERT",
            "reason": f"reason {n}", "setpoint_name": None, "setpoint_value": None,
            "setpoint_previous": None, **kw}


def prediction(n: int) -> dict:
    return {**FIXTURES["twin/prediction.v1"], "prediction_id": f"pump-1:{n}:prediction"}


def produce(bootstrap: str, records: list[tuple[str, dict]], sign: bool = True,
            extra: list[tuple[str, bytes | None, bytes, list | None]] = (),
            signer: Signer | None = None) -> None:
    signer = signer or Signer(SECRET)
    ensure_topics({"bootstrap.servers": bootstrap}, ["twin.actions", "twin.predictions"],
                  partitions=2)
    p = Producer({"bootstrap.servers": bootstrap})
    for topic, record in records:
        schema = "twin/action.v1" if topic == "twin.actions" else "twin/prediction.v1"
        value, key = wire.encode(schema, record), record["asset_id"].encode()
        headers = None
        if sign and topic == "twin.actions":
            headers = encode_output(topic, schema, record, LocalSerde(), signer)[2]
        p.produce(topic, key=key, value=value, headers=headers)
    for topic, key, value, headers in extra:
        p.produce(topic, key=key, value=value, headers=headers)
    assert p.flush(10) == 0


def run(capsys, bootstrap: str, *args: str) -> tuple[int, list[str], str]:
    capsys.readouterr()
    rc = example_consumer.main(["--bootstrap-servers", bootstrap, "--group", "g1",
                                "--timeout", "1", *FAST_GROUP, *args])
    out = capsys.readouterr()
    return rc, out.out.splitlines(), out.err


def test_each_distinct_action_once_then_committed(broker, capsys):
    b = broker.bootstrap_servers
    actions = [action(i) for i in range(3)]
    # every action twice (a retried bundle), the third a third time, plus garbage
    produce(b, [("twin.actions", a) for a in actions + actions + actions[2:]],
            extra=[("twin.actions", b"x", b"garbage", None)])
    rc, lines, err = run(capsys, b)
    assert rc == 0
    assert sorted(lines) == sorted(
        f"ACTION ALERT warning pump-1: reason {i}  [pump-1:{i}:ALERT]" for i in range(3))
    assert "handled 3, duplicates 4, undecodable 1, rejected 0" in err
    assert "magic byte 103, expected 0" in err  # the garbage, reported and skipped

    rc, lines, err = run(capsys, b)  # same group: everything was committed
    assert rc == 0 and lines == []
    assert "handled 0, duplicates 0, undecodable 0" in err

    produce(b, [("twin.actions", action(7)), ("twin.actions", actions[0])])
    rc, lines, err = run(capsys, b)  # only what is new since the commit; actions[0] is
    # handled again: ids are remembered per process, so handle() must be idempotent too
    assert sorted(lines) == [f"ACTION ALERT warning pump-1: reason {i}  [pump-1:{i}:ALERT]"
                             for i in (0, 7)]
    assert "handled 2, duplicates 0" in err


def test_predictions_signatures_and_max(broker, capsys, tmp_path):
    b = broker.bootstrap_servers
    key_file = tmp_path / "key"
    key_file.write_bytes(SECRET)
    forged = wire.encode("twin/action.v1", action(9))
    produce(b, [("twin.actions", action(1)), ("twin.predictions", prediction(1)),
                ("twin.predictions", prediction(1)),
                ("twin.actions", action(2, kind="SETPOINT", setpoint_name="speed",
                                        setpoint_value=140.0, setpoint_previous=155.0))],
            extra=[("twin.actions", b"pump-1", forged,
                    [(signing.HEADER, b"0" * 64)])])
    rc, lines, err = run(capsys, b, "--predictions", "--hmac-key-file", str(key_file))
    assert rc == 0
    assert sorted(lines) == sorted([
        "ACTION ALERT warning pump-1: reason 1  [pump-1:1:ALERT]",
        "ACTION SETPOINT warning pump-1: reason 2 (speed 155.0 -> 140.0, dry run)  "
        "[pump-1:2:ALERT]",
        "PREDICTION pump-1 score=0.970 health=0.42 anomaly=True  [pump-1:1:prediction]"])
    assert "handled 3, duplicates 1, undecodable 0, rejected 1" in err
    assert "rejected action twin.actions/" in err and "pump-1:9:ALERT" in err

    produce(b, [("twin.actions", action(i)) for i in range(10, 14)])
    rc, lines, err = run(capsys, b, "--max", "2")
    assert rc == 0 and len(lines) == 2 and "handled 2" in err
    rc, lines, err = run(capsys, b)  # the two not handled were not committed
    assert len(lines) == 2 and "handled 2" in err


def test_a_failing_handler_does_not_commit_its_message(broker, capsys):
    b = broker.bootstrap_servers
    produce(b, [("twin.actions", action(i)) for i in range(2)])

    def boom(topic, record):
        raise RuntimeError("database down")

    config = {"bootstrap.servers": b, "group.id": "g1", "session.timeout.ms": 1000,
              "heartbeat.interval.ms": 300, "max.poll.interval.ms": 3000}
    with pytest.raises(RuntimeError, match="database down"):
        example_consumer.consume(config, ["twin.actions"], decoder=example_consumer.Decoder(),
                                 timeout_s=1, handler=boom)
    rc, lines, err = run(capsys, b)  # nothing was lost
    assert sorted(lines) == sorted(
        f"ACTION ALERT warning pump-1: reason {i}  [pump-1:{i}:ALERT]" for i in range(2))


def test_runs_as_a_module_and_stops_cleanly_on_ctrl_c(broker):
    b = broker.bootstrap_servers
    produce(b, [("twin.actions", action(1))])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.example_consumer", "--bootstrap-servers", b,
         "--group", "g2", *FAST_GROUP], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()  # blocks until the action is handled
        assert first.strip() == "ACTION ALERT warning pump-1: reason 1  [pump-1:1:ALERT]"
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "handled 1, duplicates 0" in err and "Traceback" not in err
    assert out == ""
    # committed before leaving: the same group has nothing new
    rc = example_consumer.main(["--bootstrap-servers", b, "--group", "g2", "--timeout", "1",
                                *FAST_GROUP])
    assert rc == 0


def test_unreachable_broker_and_local_ids(capsys, monkeypatch):
    assert example_consumer.local_id("twin/action.v1") == schema_id("twin/action.v1")
    signed = Signer(SECRET).headers("twin.actions", b"k", b"v", seq=7)
    assert example_consumer.signature_ok(SECRET, "twin.actions", b"k", b"v", signed)
    assert not example_consumer.signature_ok(SECRET, "twin.actions", b"k", b"w", signed)
    assert not example_consumer.signature_ok(SECRET, "twin.actions", b"k", b"v", None)
    ids = example_consumer.RecentIds(capacity=2)
    assert [ids.add(x) for x in "abac"] == [True, True, False, True] and len(ids) == 2
    assert ids.add("b") is True  # forgotten: bounded memory
    monkeypatch.setattr(example_consumer, "CONNECT_TIMEOUT_S", 1.5)
    capsys.readouterr()
    dead = f"127.0.0.1:{free_port()}"
    assert example_consumer.main(["--bootstrap-servers", dead]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"example_consumer: cannot reach Kafka at {dead}: Failed to get metadata: Local: "
        "Broker transport failure")


def test_it_verifies_exactly_what_the_twin_signs():
    """The standalone copy of the signature check agrees with transforms/signing.py on
    valid, tampered, re-stamped, repeated and version-1 headers."""
    stamp = signing.Stamp(1_000, 61_000, 42)
    good = signing.sign_headers(SECRET, "twin.actions", b"pump-1", b"v", stamp)
    cases = {
        "good": good,
        "other key": signing.sign_headers(b"x", "twin.actions", b"pump-1", b"v", stamp),
        "later expiry": [(n, b"99999999" if n == signing.EXPIRES_AT_HEADER else v)
                         for n, v in good],
        "repeated seq": good + [(signing.SEQ_HEADER, b"43")],
        "v1 only": [(signing.LEGACY_HEADER, b"0" * 64)],
    }
    for name, headers in cases.items():
        ours = signing.verify_headers(SECRET, "twin.actions", b"pump-1", b"v", headers)
        theirs = example_consumer.command_stamp(SECRET, "twin.actions", b"pump-1", b"v",
                                                headers)
        assert (ours.status == "valid") == (theirs is not None), name
        if theirs is not None:
            assert theirs == (1_000, 61_000, 42)
    assert example_consumer.stale_command((1_000, 61_000, 42), now_ms=61_001) == \
        "expired 0.0 s ago"
    assert example_consumer.stale_command((100_000, 161_000, 42), now_ms=60_000,
                                          skew_ms=30_000) == "issued 40.0 s in the future"
    assert example_consumer.stale_command((1_000, 61_000, 42), now_ms=30_000) is None


def test_expired_setpoints_are_rejected_but_alerts_are_still_handled(broker, capsys, tmp_path):
    b = broker.bootstrap_servers
    key_file = tmp_path / "key"
    key_file.write_bytes(SECRET)
    long_ago = Signer(SECRET, validity_ms=60_000, clock=lambda: 1_000_000)
    setpoint = action(3, kind="SETPOINT", action_id="pump-1:3:SETPOINT", dry_run=False,
                      setpoint_name="speed", setpoint_value=140.0, setpoint_previous=155.0)
    produce(b, [("twin.actions", setpoint), ("twin.actions", action(4))], signer=long_ago)
    produce(b, [("twin.actions", action(5, kind="SETPOINT", action_id="pump-1:5:SETPOINT",
                                        setpoint_name="speed", setpoint_value=150.0,
                                        setpoint_previous=140.0))])
    rc, lines, err = run(capsys, b, "--hmac-key-file", str(key_file))
    assert rc == 0
    assert sorted(x.split("  [")[1] for x in lines) == ["pump-1:4:ALERT]",
                                                        "pump-1:5:SETPOINT]"]
    assert "handled 2, duplicates 0, undecodable 0, rejected 1" in err
    assert "rejected setpoint twin.actions/" in err and "pump-1:3:SETPOINT): expired" in err


def test_secrets_go_in_the_config_file_never_on_the_command_line(broker, capsys, tmp_path):
    b = broker.bootstrap_servers
    rc, lines, err = run(capsys, b, "-X", "sasl.password=hunter2")
    assert rc == 2 and "--kafka-config" in err and "hunter2" not in err
    produce(b, [("twin.actions", action(1))])
    props = tmp_path / "client.properties"
    props.write_text("# plain text here; SASL settings would go here too\n"
                     "security.protocol=PLAINTEXT\n")
    rc, lines, err = run(capsys, b, "--kafka-config", str(props))
    assert rc == 0 and len(lines) == 1
