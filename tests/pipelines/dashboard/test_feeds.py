"""What feeds the dashboard: the twin's Kafka output topics (a real broker) and run folders."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import fastavro
import pytest
from confluent_kafka import Producer

import schemas
from pipelines.dashboard.feeds import (
    FolderError,
    FolderFeed,
    KafkaFeed,
    check_folder,
    load_folder,
)
from pipelines.kafka.outputs import encode_output
from pipelines.kafka.serde import LocalSerde
from pipelines.kafka.topics import OUTPUT_TOPICS, ensure_topics
from tests.transforms.test_fleetview import MIN, T0, action, prediction, state
from transforms import fleetview as fv
from transforms.signing import Signer

KEY = b"dashboard-test-signing-key"
TOPIC = {tag: topic for tag, (topic, _) in OUTPUT_TOPICS.items()}
SCHEMA = {tag: schema for tag, (_, schema) in OUTPUT_TOPICS.items()}


def dead_letter(reason: str = "bad_magic", ms: int = T0, offset: int = 12) -> dict:
    return {"stage": "decode", "reason": reason, "detail": "magic byte 7 != 0",
            "source": f"twin.raw.orca/0@{offset}", "key": b"pump-000",
            "payload": b"\x07junk", "ts_ms": ms}


def publish(bootstrap: str, items, now_ms: int | None = None) -> None:
    """``items``: (tag, record, how) with how = signed | unsigned | tampered | raw bytes."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    serde = LocalSerde()
    for tag, record, how in items:
        topic = TOPIC[tag]
        if isinstance(how, bytes):
            p.produce(topic, key=b"pump-000", value=how, timestamp=now_ms or 0)
            continue
        secret = Signer(KEY) if how in ("signed", "tampered") else None
        key, value, headers = encode_output(topic, SCHEMA[tag], record, serde, secret)
        if how == "tampered":
            value = value[:-1] + bytes([value[-1] ^ 1])
        kwargs = {"timestamp": now_ms} if now_ms else {}
        p.produce(topic, key=key, value=value, headers=headers, **kwargs)
    assert p.flush(15) == 0


def wait_for(cond, timeout_s: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or cond}")


@pytest.mark.slow
def test_kafka_feed_reads_every_output_topic_and_checks_signatures(broker):
    cfg = {"bootstrap.servers": broker.bootstrap_servers}
    ensure_topics(cfg, TOPIC.values(), partitions=2)
    publish(broker.bootstrap_servers, [
        ("state", state("pump-000", T0, health=0.8), None),
        ("prediction", prediction("pump-000", T0, health=0.8, score=0.4), None),
        ("action", action("pump-000", T0, "ALERT"), "signed"),
        ("action", action("pump-000", T0 + MIN, "WORK_ORDER"), "unsigned"),
        ("action", action("pump-000", T0 + 2 * MIN, "SETPOINT", setpoint_name="speed",
                          setpoint_value=140.0, setpoint_previous=150.0), "tampered"),
        ("dead_letter", dead_letter(), None),
        ("dead_letter", None, b"\x07not framed"),
    ])
    view = fv.FleetView()
    feed = KafkaFeed(view, cfg, LocalSerde(), KEY).start()
    try:
        wait_for(lambda: view.records == 6 and feed.unreadable == 1, what="7 messages")
        with view.lock:
            row = view.rows()[0]
            detail = view.asset_detail("pump-000")
            q = view.quality.detail()
        assert (row["health_index"], row["anomaly_score"], row["alert_open"]) == \
            (0.8, 0.4, True)
        assert row["received_ms"] is not None
        sigs = {a["kind"]: a["signature"] for a in detail["actions"]}
        assert sigs == {"ALERT": "valid", "WORK_ORDER": "missing", "SETPOINT": "invalid"}
        alert = next(a for a in detail["actions"] if a["kind"] == "ALERT")
        assert alert["command"]["seq"] == T0 and alert["command"]["expired"] is False
        assert q["dead_letters_by_reason"] == {"bad_magic": 1}
        assert q["unreadable_by_reason"] == {"bad_magic": 1}
        wait_for(lambda: feed.status()["behind_messages"] == 0, what="caught up")
        assert feed.status()["partitions"] == 8
    finally:
        feed.stop()


@pytest.mark.slow
def test_kafka_feed_without_a_key_shows_signatures_unverified(broker):
    cfg = {"bootstrap.servers": broker.bootstrap_servers}
    ensure_topics(cfg, [TOPIC["action"]], partitions=1)
    publish(broker.bootstrap_servers, [("action", action("pump-000", T0, "ALERT"), "signed")])
    view = fv.FleetView()
    feed = KafkaFeed(view, cfg, LocalSerde(), None, topics=[TOPIC["action"]]).start()
    try:
        wait_for(lambda: view.records == 1)
        assert view.asset_detail("pump-000")["actions"][0]["signature"] == "unverified"
    finally:
        feed.stop()


@pytest.mark.slow
def test_kafka_feed_picks_up_topics_created_after_it_started_and_keeps_up(broker):
    cfg = {"bootstrap.servers": broker.bootstrap_servers}
    view = fv.FleetView()
    feed = KafkaFeed(view, cfg, LocalSerde(), KEY).start()
    try:
        time.sleep(0.5)
        assert view.records == 0 and feed.error is None
        ensure_topics(cfg, TOPIC.values(), partitions=1)
        publish(broker.bootstrap_servers, [("state", state("motor-001", T0), None)])
        wait_for(lambda: "motor-001" in view.assets, what="the first record")
        for i in range(1, 4):  # each new window shows up while the feed runs
            publish(broker.bootstrap_servers,
                    [("state", state("motor-001", T0 + i * MIN, health=1 - i / 10), None)])
            wait_for(lambda i=i: view.assets["motor-001"].state_ms == T0 + i * MIN)
    finally:
        feed.stop()


@pytest.mark.slow
def test_kafka_feed_lookback_skips_old_predictions_but_reads_all_state(broker):
    cfg = {"bootstrap.servers": broker.bootstrap_servers}
    ensure_topics(cfg, TOPIC.values(), partitions=1)
    old = int(time.time() * 1000) - 3 * 3600_000
    publish(broker.bootstrap_servers, [
        ("state", state("pump-000", T0), None),
        ("prediction", prediction("pump-000", T0, score=0.11), None),
        ("dead_letter", dead_letter(), None)], now_ms=old)
    publish(broker.bootstrap_servers, [
        ("prediction", prediction("pump-000", T0 + MIN, score=0.22), None)])
    view = fv.FleetView()
    feed = KafkaFeed(view, cfg, LocalSerde(), KEY, lookback_ms=3600_000).start()
    try:
        wait_for(lambda: view.records == 2 and feed.before_lookback == 2,
                 what="the state and the new prediction")
        time.sleep(0.5)
        assert view.records_by_schema == {fv.STATE: 1, fv.PREDICTION: 1}
        assert view.asset_detail("pump-000")["predictions"]["anomaly_score"] == [0.22]
        assert view.quality.dead_letters == 0
    finally:
        feed.stop()


# -- run folders --------------------------------------------------------------------------

def write_avro(path: Path, schema: str, records: list[dict]) -> None:
    with path.open("wb") as f:
        fastavro.writer(f, schemas.load(schema), records)


def avro_folder(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    write_avro(out / "state.avro", fv.STATE, [state("pump-000", T0 + i * MIN, health=1 - i / 10,
                                                   score=0.1 * i, alert=i > 0)
                                             for i in range(3)])
    write_avro(out / "predictions.avro", fv.PREDICTION,
               [prediction("pump-000", T0 + i * MIN, health=1 - i / 10, score=0.1 * i)
                for i in range(3)])
    write_avro(out / "actions.avro", fv.ACTION, [action("pump-000", T0 + MIN, "ALERT")])
    write_avro(out / "dead_letters.avro", fv.DEAD_LETTER,
               [dead_letter("unknown_tag", offset=n) for n in (3, 4)])
    write_avro(out / "late.avro", fv.LATE, [{
        "reading_id": "orca:pump-000:1", "asset_id": "pump-000", "asset_type": "pump",
        "vendor": "orca", "ts_ms": T0, "values": {"flow": 0.4}, "bad_quality": []}])
    write_avro(out / "features.avro", fv.FEATURES, [{
        "asset_id": "pump-000", "asset_type": "pump", "window_start_ms": T0 + (i - 1) * MIN,
        "window_end_ms": T0 + i * MIN, "count": 12, "duplicates": i,
        "features": {"flow.mean": 0.5, "flow.min": 0.4 + i / 100, "flow.max": 0.6}}
        for i in range(3)])
    return out


def test_a_twin_run_folder_is_read_whole(tmp_path):
    view = load_folder(avro_folder(tmp_path / "run"))
    row = view.rows()[0]
    assert (row["asset_id"], row["window_end_ms"], row["health_index"], row["alert_open"]) \
        == ("pump-000", T0 + 2 * MIN, pytest.approx(0.8), True)
    q = view.quality.detail()
    assert (q["dead_letters"], q["late_readings"], q["duplicate_readings"]) == (2, 1, 3)
    s = view.asset_detail("pump-000")["sensors"]
    assert s["sensors"]["flow"]["min"] == pytest.approx([0.4, 0.41, 0.42])  # not state means


def test_a_flink_run_folder_of_json_lines_is_read(tmp_path):
    from jobs.tail import jsonable

    out = tmp_path / "flink"
    for name, records in (("state", [state("motor-001", T0, health=0.6)]),
                          ("predictions", [prediction("motor-001", T0, 0.6, 0.5)]),
                          ("dead_letters", [dead_letter()])):
        folder = out / name / "2026-12-07--00"
        folder.mkdir(parents=True)
        (folder / f"{name}-0-0.jsonl").write_text(
            "".join(json.dumps(jsonable(r)) + "\n" for r in records))
        (folder / f".{name}-0-1.jsonl.inprogress").write_text("{broken")
    view = load_folder(out)
    row = view.rows()[0]
    assert (row["asset_id"], row["health_index"], row["anomaly_score"]) == \
        ("motor-001", 0.6, 0.5)
    sample = view.quality.detail()["samples"]["bad_magic"][0]
    assert sample["payload_bytes"] == 5 and sample["key"] == "pump-000"
    assert view.quality.summary()["late_readings"] is None  # a Flink folder has no late/


def test_a_folder_without_twin_outputs_is_refused(tmp_path):
    with pytest.raises(FolderError, match="not a folder"):
        check_folder(tmp_path / "nowhere")
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(FolderError, match="no twin outputs"):
        check_folder(tmp_path)


def test_folder_feed_rereads_a_changed_folder(tmp_path):
    out = avro_folder(tmp_path / "run")
    feed = FolderFeed(out, watch_s=0.1).start()
    try:
        assert feed.epoch == 0 and feed.view.records > 0
        write_avro(out / "state.avro", fv.STATE, [state("pump-000", T0 + 5 * MIN, health=0.3),
                                                 state("motor-009", T0)])
        st = (out / "state.avro").stat()
        os.utime(out / "state.avro", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        wait_for(lambda: feed.epoch == 1, 10, "the reread")
        assert set(feed.view.assets) == {"pump-000", "motor-009"}
        assert feed.view.assets["pump-000"].health == 0.3
    finally:
        feed.stop()


@pytest.mark.slow
def test_the_folder_twin_run_writes_is_shown_as_its_files_say(tmp_path):
    import pyarrow.parquet as pq

    from jobs.cli import main

    out = tmp_path / "run"
    assert main(["run", "--assets", "4", "--duration", "3h", "--out", str(out),
                 "--no-progress"]) == 0
    view = load_folder(out)
    states = pq.read_table(out / "state.parquet").to_pylist()
    latest = {}
    for s in states:
        if s["asset_id"] not in latest or s["ts_ms"] > latest[s["asset_id"]]["ts_ms"]:
            latest[s["asset_id"]] = s
    rows = {r["asset_id"]: r for r in view.rows()}
    assert set(rows) == set(latest)
    for asset, s in latest.items():
        assert rows[asset]["window_end_ms"] == fv.epoch_ms(s["ts_ms"])
        assert rows[asset]["health_index"] == pytest.approx(s["health_index"])
        assert rows[asset]["alert_open"] == s["alert_open"]
        assert rows[asset]["values"] == pytest.approx(dict(s["values"]))
    summary = json.loads((out / "summary.json").read_text())
    q = view.quality.summary()
    assert q["dead_letters"] == summary["dead_letters"]
    assert q["dead_letters_by_reason"] == summary["dead_letter_reasons"]
    assert (q["late_readings"], q["duplicate_readings"]) == \
        (summary["late_readings"], summary["duplicate_readings"])
    actions = pq.read_table(out / "actions.parquet").num_rows
    assert sum(len(a.actions) for a in view.assets.values()) == actions


# -- what-if: the models documents the state records carry ---------------------------------

def _twin_states(windows: int = 155) -> list[dict]:
    from tests.jobs.test_whatif import _twin

    return _twin(windows, fault_from=90)[1]


def _whatif_doc(view: fv.FleetView, asset: str) -> dict:
    with view.lock:
        learned, later = view.whatif_sources(asset)
    return fv.whatif_document(asset, learned, later)


def test_a_run_folder_s_state_records_give_the_what_if_its_models(tmp_path):
    from transforms.whatif import from_states

    states = _twin_states()
    out = tmp_path / "run"
    out.mkdir()
    write_avro(out / "state.avro", fv.STATE, states)
    feed = FolderFeed(out)
    # the same document twin whatif brings up to the newest record of the same records
    assert _whatif_doc(feed.view, "p1") == from_states(states)["p1"]
    assert feed.optimize_source() == [str(out)]  # twin optimize reads state.avro


def test_a_flink_folder_is_not_one_twin_optimize_reads(tmp_path):
    from jobs.tail import jsonable

    out = tmp_path / "flink" / "state" / "2026-12-07--00"
    out.mkdir(parents=True)
    (out / "state-0-0.jsonl").write_text(
        "".join(json.dumps(jsonable(r)) + "\n" for r in _twin_states(100)))
    feed = FolderFeed(tmp_path / "flink")
    assert _whatif_doc(feed.view, "p1")["ts_ms"] == 100 * MIN  # read all the same
    assert feed.optimize_source() is None


@pytest.mark.slow
def test_kafka_feed_gives_the_what_if_the_models_of_the_state_topic(broker):
    from transforms.whatif import from_states

    cfg = {"bootstrap.servers": broker.bootstrap_servers}
    ensure_topics(cfg, [TOPIC["state"]], partitions=1)
    states = _twin_states()
    publish(broker.bootstrap_servers, [("state", r, None) for r in states])
    view = fv.FleetView()
    feed = KafkaFeed(view, cfg, LocalSerde(), None, topics=[TOPIC["state"]]).start()
    try:
        wait_for(lambda: view.records == len(states), what="every state record")
        assert _whatif_doc(view, "p1") == from_states(states)["p1"]
        assert feed.optimize_source() == ["--source", "kafka", "--bootstrap-servers",
                                          broker.bootstrap_servers]
    finally:
        feed.stop()
