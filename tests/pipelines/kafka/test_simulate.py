"""`twin simulate` and the command loop against a real broker: nothing lost, nothing
reordered, only verified setpoints reach the assets, and failures are loud."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter

import numpy as np
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from jobs.cli import main
from pipelines.kafka.broker import free_port
from pipelines.kafka.commands import ACTIONS_TOPIC, CommandListener
from pipelines.kafka.outputs import encode_output
from pipelines.kafka.serde import LocalSerde
from pipelines.kafka.topics import ensure_topics, raw_topics
from tests.pipelines.kafka.helpers import read_topic
from transforms.errors import InvalidReading
from transforms.normalize import VENDORS, normalize_message
from transforms.signing import Signer
from transforms.simulator import Fleet, FleetConfig

START_MS = 1_795_800_000_000
SECRET = b"test-signing-key-0123456789"


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "hmac.key"
    path.write_bytes(SECRET)
    return path


def config(assets: int, hours: float, malformed: float = 0.0) -> FleetConfig:
    return FleetConfig(assets=assets, duration_s=hours * 3600, interval_s=5.0, seed=7,
                       start_ms=START_MS, malformed_rate=malformed)


def simulate_args(bootstrap: str, cfg: FleetConfig, *extra: str) -> list[str]:
    return ["simulate", "--bootstrap-servers", bootstrap, "--assets", str(cfg.assets),
            "--duration", str(cfg.duration_s), "--seed", str(cfg.seed),
            "--start-ms", str(cfg.start_ms), "--malformed-rate", str(cfg.malformed_rate),
            *extra]


def wait_for_data(bootstrap: str, topic: str, timeout_s: float = 10.0) -> None:
    """Return as soon as ``topic`` exists and holds a message."""
    deadline = time.monotonic() + timeout_s
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-waiter"})
    try:
        while not (md := c.list_topics(timeout=5).topics.get(topic)) or not md.partitions:
            assert time.monotonic() < deadline, f"{topic} never appeared"
            time.sleep(0.05)
        c.assign([TopicPartition(topic, p, 0) for p in md.partitions])
        while not [m for m in c.consume(10, timeout=0.1) if m.error() is None]:
            assert time.monotonic() < deadline, f"nothing arrived on {topic}"
    finally:
        c.close()


def action(asset_id: str, ts_ms: int, kind: str = "SETPOINT", value: float | None = None,
           dry_run: bool = False) -> dict:
    return {
        "action_id": f"{asset_id}:{ts_ms}:{kind}", "asset_id": asset_id, "kind": kind,
        "ts_ms": ts_ms, "severity": "warning", "reason": "test", "anomaly_score": 0.999,
        "health_index": 0.15, "rul_s": None,
        "setpoint_name": "speed" if value is not None else None, "setpoint_value": value,
        "setpoint_previous": None, "dry_run": dry_run,
    }


def send(bootstrap: str, messages: list[tuple[bytes, bytes, list | None]]) -> None:
    """Produce ``(key, value, headers or None)`` to the actions topic."""
    p = Producer({"bootstrap.servers": bootstrap})
    for key, value, headers in messages:
        p.produce(ACTIONS_TOPIC, value=value, key=key, headers=headers)
    assert p.flush(10) == 0


def signed(record: dict, secret: bytes = SECRET) -> tuple[bytes, bytes, list]:
    """A command as the twin's sinks sign it (fresh, sequence = its window end)."""
    return encode_output(ACTIONS_TOPIC, "twin/action.v1", record, LocalSerde(),
                         Signer(secret))


def with_signature(key: bytes, value: bytes) -> tuple[bytes, bytes, list]:
    return key, value, Signer(SECRET).headers(ACTIONS_TOPIC, key, value, seq=1)


def speeds(samples, asset_id: str, since_ms: int) -> np.ndarray:
    return np.array([s.values["speed"] for s in samples
                     if s.asset_id == asset_id and s.ts_ms >= since_ms])


def poll_until(listener: CommandListener, n: int, now_ms: int, timeout_s: float = 10.0):
    out, deadline = [], time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        out.extend(listener.poll(now_ms, timeout=0.2))
    return out


# -- the command listener ------------------------------------------------------------------

def test_only_verified_setpoints_reach_the_assets(broker, caplog):
    bs = broker.bootstrap_servers
    kafka = {"bootstrap.servers": bs}
    ensure_topics(kafka, [ACTIONS_TOPIC], partitions=3)
    cfg = config(assets=4, hours=1)
    fleet = Fleet(cfg)
    pump, motor, pump2, motor3 = fleet.assets
    at = START_MS + 20 * 60_000
    # already on the topic when the listener starts: by default it only hears what follows
    send(bs, [signed(action(motor3.asset_id, at, value=0.8 * motor3.nominal_speed))])
    listener = CommandListener(fleet, kafka, SECRET)

    good = signed(action(pump.asset_id, at, value=0.9 * pump.nominal_speed))
    unsigned = signed(action(motor.asset_id, at + 1, value=0.8 * motor.nominal_speed))[:2]
    forged = signed(action(motor.asset_id, at + 2, value=0.8 * motor.nominal_speed),
                    secret=b"not-the-key")
    key, value, sig = signed(action(motor.asset_id, at + 3, value=0.95 * motor.nominal_speed))
    evil = LocalSerde().encode("twin/action.v1",
                               action(motor.asset_id, at + 3, value=0.6 * motor.nominal_speed))
    assert len(evil) == len(value) and evil != value  # same shape, other setpoint
    tampered = (key, evil, sig)
    dry = signed(action(motor.asset_id, at + 4, value=0.85 * motor.nominal_speed,
                        dry_run=True))
    alert = signed(action(motor.asset_id, at + 5, kind="ALERT"))
    unknown = signed(action("pump-999", at, value=150.0))
    refused = signed(action(pump2.asset_id, at, value=0.3 * pump2.nominal_speed))
    garbage = with_signature(pump.asset_id.encode(), b"\x01junk")
    reading = next(fleet.messages())  # well framed and signed, but not an action
    not_an_action = with_signature(reading.key, reading.value)
    messages = [good, (*unsigned, None), forged, tampered, dry, alert, unknown, refused,
                garbage, not_an_action, good]
    with caplog.at_level(logging.WARNING, logger="twinstream.simulator"):
        send(bs, messages)
        results = poll_until(listener, len(messages), now_ms=START_MS)
        assert listener.poll(START_MS, timeout=1.0) == []  # the old command never comes
    listener.close()

    assert len(results) == len(messages)
    by_reason = Counter((r.status, r.reason) for r in results)
    assert by_reason == Counter({
        ("accepted", "applied"): 1, ("ignored", "duplicate"): 1,
        ("rejected", "unsigned"): 1, ("rejected", "bad_signature"): 2,
        ("rejected", "dry_run"): 1, ("ignored", "not_a_setpoint"): 1,
        ("rejected", "unknown_asset"): 1, ("rejected", "interlock"): 1,
        ("rejected", "undecodable"): 2,
    })
    accepted = next(r for r in results if r.status == "accepted")
    assert (accepted.asset_id, accepted.at_ms) == (pump.asset_id, at)
    assert accepted.setpoint_value == pytest.approx(0.9 * pump.nominal_speed)
    refusal = next(r for r in results if r.reason == "interlock")
    assert refusal.asset_id == pump2.asset_id and "outside [0.5, 1.1]" in refusal.detail
    assert sorted(r.detail for r in results if r.reason == "undecodable") == [
        "bad_magic: magic byte 1 != 0",
        f"schema {VENDORS[reading.vendor].SCHEMA}, not twin/action.v1"]
    assert listener.tally() == {"accepted": 1, "rejected": 8, "ignored": 2}
    # the fleet's own log: only commands that passed verification reached the assets
    assert sorted((e["asset_id"], e["accepted"]) for e in fleet.setpoint_log) == sorted(
        [(pump.asset_id, True), ("pump-999", False), (pump2.asset_id, False)])

    warnings = [r.getMessage() for r in caplog.records if r.name == "twinstream.simulator"
                and r.levelno == logging.WARNING]
    assert len(warnings) == 8
    assert sum(motor.asset_id in w for w in warnings) == 4  # unsigned, 2 x forged, dry run
    for reason in ("unsigned", "bad_signature", "dry_run", "unknown_asset", "interlock",
                   "undecodable"):
        assert any(f"reason {reason}" in w for w in warnings), reason
    signature = dict(sig)["twin-hmac-sha256-v2"].decode()
    assert not any(SECRET.decode() in w or signature in w for w in warnings)

    # behaviour: the commanded pump runs at 0.9 of its speed from `at` on, nothing else moved
    after = list(fleet.samples())
    before = list(Fleet(cfg).samples())
    commanded = speeds(after, pump.asset_id, at)
    assert commanded.mean() == pytest.approx(0.9 * pump.nominal_speed, rel=0.01)
    assert commanded.mean() / speeds(before, pump.asset_id, at).mean() == pytest.approx(
        0.9, rel=0.002)
    assert speeds(after, pump.asset_id, at - 60_000)[:12].tolist() == \
        speeds(before, pump.asset_id, at - 60_000)[:12].tolist()  # the past is untouched
    for other in (motor, pump2, motor3):
        assert speeds(after, other.asset_id, 0).tolist() == \
            speeds(before, other.asset_id, 0).tolist()


def test_commands_take_effect_no_earlier_than_the_simulators_present(broker):
    kafka = {"bootstrap.servers": broker.bootstrap_servers}
    ensure_topics(kafka, [ACTIONS_TOPIC], partitions=1)
    fleet = Fleet(config(assets=2, hours=1))
    pump = fleet.assets[0]
    send(broker.bootstrap_servers,
         [signed(action(pump.asset_id, START_MS + 60_000, value=pump.nominal_speed))])
    with CommandListener(fleet, kafka, SECRET, from_beginning=True) as listener:
        now = START_MS + 30 * 60_000  # the command is older than the simulated present
        results = listener.catch_up(now)
        assert listener.caught_up()
    assert [(r.status, r.at_ms) for r in results] == [("accepted", now)]


def test_commands_must_be_fresh_new_and_current(broker, tmp_path, caplog):
    """Wall-clock expiry and skew, the per-asset sequence (kept across a restart) and the
    event-time lag, each with its reason; the first command that passes all is applied."""
    kafka = {"bootstrap.servers": broker.bootstrap_servers}
    ensure_topics(kafka, [ACTIONS_TOPIC], partitions=1)
    fleet = Fleet(config(assets=2, hours=6))
    pump, motor = fleet.assets
    now_wall = 1_900_000_000_000
    present = START_MS + 4 * 3_600_000  # the simulator's event time

    def cmd(asset, minutes_before_present: float, issued_s_ago: float = 1.0,
            validity_s: float = 300.0, frac: float = 0.9):
        at = present - int(minutes_before_present * 60_000)
        issued = now_wall - int(issued_s_ago * 1000)
        signer = Signer(SECRET, validity_ms=int(validity_s * 1000), clock=lambda: issued)
        return encode_output(ACTIONS_TOPIC, "twin/action.v1",
                             action(asset.asset_id, at, value=frac * asset.nominal_speed),
                             LocalSerde(), signer)

    state = tmp_path / "plant" / "commands.json"
    messages = [
        cmd(pump, 10, issued_s_ago=301),  # expired a second ago
        cmd(pump, 10, issued_s_ago=-31),  # issued 31 s in the future (skew 30 s)
        cmd(pump, 20),  # applied: sequence present - 20 min
        cmd(pump, 25),  # an older decision: its sequence is below the applied one
        cmd(motor, 3.4 * 60),  # decided 3.4 h of event time ago
        cmd(motor, 29, frac=0.85),  # applied
    ]
    send(broker.bootstrap_servers, messages)
    with caplog.at_level(logging.WARNING, logger="twinstream.simulator"), \
            CommandListener(fleet, kafka, SECRET, from_beginning=True, sequence_file=state,
                            clock=lambda: now_wall) as listener:
        results = listener.catch_up(present)
    assert [(r.asset_id, r.status, r.reason) for r in results] == [
        (pump.asset_id, "rejected", "expired"), (pump.asset_id, "rejected", "not_yet_valid"),
        (pump.asset_id, "accepted", "applied"), (pump.asset_id, "rejected", "replayed"),
        (motor.asset_id, "rejected", "stale"), (motor.asset_id, "accepted", "applied")]
    assert "3.40 h behind" in results[4].detail
    assert f"sequence {present - 25 * 60_000} is not above {present - 20 * 60_000}" in \
        results[3].detail
    assert sum("reason expired" in r.getMessage() for r in caplog.records) == 1

    # a restarted plant: the same messages again, plus the same decisions re-signed (a
    # pipeline rerun) and a new one; only the new decision is applied
    fleet = Fleet(config(assets=2, hours=6))
    send(broker.bootstrap_servers, messages + [cmd(pump, 20), cmd(pump, 15, frac=0.95)])
    with CommandListener(fleet, kafka, SECRET, from_beginning=True, sequence_file=state,
                         clock=lambda: now_wall) as listener:
        results = listener.catch_up(present)
    replayed = [("rejected", "expired"), ("rejected", "not_yet_valid")] + \
        [("rejected", "replayed")] * 4  # the applied ones, and the older decisions
    assert [(r.status, r.reason) for r in results] == \
        replayed + replayed + [("rejected", "replayed"), ("accepted", "applied")]
    assert [(e["asset_id"], e["value"] / pump.nominal_speed) for e in fleet.setpoint_log] \
        == [(pump.asset_id, pytest.approx(0.95))]


def test_a_damaged_sequence_file_stops_the_listener_before_it_reads(broker, tmp_path):
    kafka = {"bootstrap.servers": broker.bootstrap_servers}
    ensure_topics(kafka, [ACTIONS_TOPIC], partitions=1)
    state = tmp_path / "commands.json"
    state.write_text("{")
    from pipelines.kafka.sequences import SequenceFileError

    with pytest.raises(SequenceFileError, match="not ignored"):
        CommandListener(Fleet(config(assets=1, hours=1)), kafka, SECRET, sequence_file=state)


# -- twin simulate ---------------------------------------------------------------------------

@pytest.mark.slow
def test_every_message_arrives_once_keyed_stamped_and_in_order(broker, key_file, tmp_path,
                                                               capsys):
    cfg = config(assets=3, hours=1, malformed=0.02)
    truth_path = tmp_path / "truth.json"
    rc = main(simulate_args(broker.bootstrap_servers, cfg, "--hmac-key-file", str(key_file),
                            "--ground-truth", str(truth_path), "--partitions", "2"))
    assert rc == 0
    truth = json.loads(truth_path.read_text())
    expected = list(Fleet(cfg).messages())
    got = [m for t in raw_topics() for m in read_topic(broker.bootstrap_servers, t)]

    assert len(got) == sum(truth["messages"].values()) == len(expected)
    assert Counter(m.topic() for m in got) == Counter(m.topic for m in expected)
    assert truth["messages"] == dict(sorted(Counter(m.defect for m in expected).items()))
    assert truth["setpoints"] == []
    assert {m.key() for m in got} == {a["asset_id"].encode() for a in truth["assets"]}
    assert Counter((m.topic(), m.key(), m.value(), m.timestamp()[1]) for m in got) == \
        Counter((m.topic, m.key, m.value, m.arrival_ms) for m in expected)
    # each asset's messages are on one partition, in arrival order
    for key in {m.key for m in expected}:
        partitions = {m.partition() for m in got if m.key() == key}
        assert len(partitions) == 1
        assert [(m.value(), m.timestamp()[1]) for m in got if m.key() == key] == \
            [(m.value, m.arrival_ms) for m in expected if m.key == key]
    out = capsys.readouterr().out
    assert f"{len(expected)} delivered of {len(expected)}" in out
    assert "0 accepted, 0 rejected" in out


@pytest.mark.slow
def test_signed_setpoint_changes_what_the_asset_publishes(broker, key_file, tmp_path, caplog,
                                                          capsys):
    bs = broker.bootstrap_servers
    ensure_topics({"bootstrap.servers": bs}, [ACTIONS_TOPIC], partitions=3)
    cfg = config(assets=2, hours=1)
    pump, motor = Fleet(cfg).assets
    at = START_MS + 20 * 60_000
    send(bs, [signed(action(pump.asset_id, at, value=0.9 * pump.nominal_speed)),
              (*signed(action(motor.asset_id, at, value=0.8 * motor.nominal_speed))[:2], None)])
    truth_path = tmp_path / "truth.json"
    with caplog.at_level(logging.WARNING, logger="twinstream.simulator"):
        rc = main(simulate_args(bs, cfg, "--hmac-key-file", str(key_file), "--actions-from",
                                "beginning", "--ground-truth", str(truth_path)))
    assert rc == 0
    assert "1 accepted, 1 rejected (unsigned 1)" in capsys.readouterr().out
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
            and motor.asset_id in r.getMessage() and "reason unsigned" in r.getMessage()]
    truth = json.loads(truth_path.read_text())
    assert [(s["asset_id"], s["accepted"], s["at_ms"]) for s in truth["setpoints"]] == [
        (pump.asset_id, True, at)]

    published = {}
    for vendor in (pump.vendor, motor.vendor):
        for m in read_topic(bs, f"twin.raw.{vendor}"):
            try:
                r = normalize_message(m.value(), now_ms=m.timestamp()[1])
            except InvalidReading:
                continue
            if "speed" in r["values"]:  # not when its sensor reported bad quality
                published.setdefault(r["asset_id"], []).append(
                    (r["ts_ms"], r["values"]["speed"]))
    baseline = {}
    for s in Fleet(cfg).samples():
        baseline.setdefault(s.asset_id, []).append((s.ts_ms, s.values["speed"]))

    def mean_after(rows, asset_id, since):
        return np.mean([v for t, v in rows[asset_id] if t >= since])

    assert mean_after(published, pump.asset_id, at) == pytest.approx(
        0.9 * pump.nominal_speed, rel=0.01)
    assert mean_after(published, pump.asset_id, at) / mean_after(
        baseline, pump.asset_id, at) == pytest.approx(0.9, rel=0.003)
    assert mean_after(published, motor.asset_id, at) == pytest.approx(
        mean_after(baseline, motor.asset_id, at), rel=0.002)  # the unsigned command: no effect


def speeds_by_ts(messages) -> dict[int, float]:
    """``reading ts -> speed`` of ``(value, arrival_ms)`` pairs that normalize and have one."""
    out = {}
    for value, arrival_ms in messages:
        try:
            r = normalize_message(value, now_ms=arrival_ms)
        except InvalidReading:
            continue
        if "speed" in r["values"]:
            out[r["ts_ms"]] = r["values"]["speed"]
    return out


@pytest.mark.slow
def test_a_command_during_the_run_shapes_everything_generated_after_it(broker, key_file,
                                                                       tmp_path):
    bs = broker.bootstrap_servers
    ensure_topics({"bootstrap.servers": bs}, [ACTIONS_TOPIC], partitions=3)
    cfg = config(assets=2, hours=1)
    fleet = Fleet(cfg)
    pump = fleet.assets[0]
    truth_path = tmp_path / "truth.json"
    result = {}
    run = threading.Thread(target=lambda: result.setdefault("rc", main(simulate_args(
        bs, cfg, "--rate", "300", "--hmac-key-file", str(key_file),
        "--ground-truth", str(truth_path)))))
    run.start()
    wait_for_data(bs, f"twin.raw.{pump.vendor}")  # it is publishing: its listener is on
    # an old command: it takes effect at the simulator's present, never in its past
    send(bs, [signed(action(pump.asset_id, START_MS, value=0.9 * pump.nominal_speed))])
    run.join(30)
    assert result["rc"] == 0

    (applied,) = json.loads(truth_path.read_text())["setpoints"]
    at, chunk_ms = applied["at_ms"], fleet.per_chunk * fleet.interval_ms
    assert applied["accepted"] and applied["asset_id"] == pump.asset_id
    assert START_MS < at < START_MS + cfg.duration_s * 1000 and (at - START_MS) % chunk_ms == 0
    got = speeds_by_ts((m.value(), m.timestamp()[1])
                       for m in read_topic(bs, f"twin.raw.{pump.vendor}")
                       if m.key() == pump.asset_id.encode())
    baseline = speeds_by_ts((m.value, m.arrival_ms) for m in fleet.messages()
                            if m.key == pump.asset_id.encode())
    assert got.keys() == baseline.keys()
    before = [ts for ts in got if ts < at - 1000]
    after = [ts for ts in got if ts > at + 1000]
    assert len(before) > 10 and len(after) > 10
    assert [got[ts] for ts in before] == [baseline[ts] for ts in before]  # the past stands
    assert all(got[ts] / baseline[ts] == pytest.approx(0.9, rel=1e-3) for ts in after)


@pytest.mark.slow
def test_rate_paces_publishing(broker):
    cfg = config(assets=1, hours=0.25)
    n = sum(1 for _ in Fleet(cfg).messages())
    rate = 100.0
    t0 = time.monotonic()
    assert main(simulate_args(broker.bootstrap_servers, cfg, "--rate", str(rate),
                              "--no-actions")) == 0
    assert time.monotonic() - t0 >= (n - 1) / rate > 1.5


def test_unreachable_broker_is_one_clear_line_and_exit_code_2(capfd):
    where = f"127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.monotonic()
    rc = main(simulate_args(where, config(assets=1, hours=0.1), "--no-actions"))
    elapsed = time.monotonic() - t0
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and elapsed < 6  # refused outright: no reason to wait the full 10 s
    assert len(lines) == 1, err
    assert f"cannot reach Kafka at {where}" in lines[0]
    assert "Connection refused" in lines[0] and "Traceback" not in err


@pytest.mark.slow
def test_a_broker_lost_mid_run_fails_the_run_saying_how_many(make_broker, capfd):
    broker = make_broker()
    cfg = config(assets=2, hours=1)
    result = {}

    def run():
        result["rc"] = main(simulate_args(broker.bootstrap_servers, cfg, "--rate", "200",
                                          "--no-actions", "-X", "message.timeout.ms=2000"))

    t = threading.Thread(target=run)
    t.start()
    wait_for_data(broker.bootstrap_servers, "twin.raw.helios")
    broker.kill()
    t.join(30)
    assert not t.is_alive()
    err = capfd.readouterr().err
    assert result["rc"] == 1
    line = next(line for line in err.splitlines() if "were not delivered" in line)
    assert "MSG_TIMED_OUT" in line and "stopped after" in line
