"""`twin tail` against a real broker: decoded records, bad messages, signatures, stopping."""

from __future__ import annotations

import base64
import json
import threading
import time

import pytest
from confluent_kafka import Producer

from jobs import tail
from jobs.cli import main
from pipelines.kafka.broker import free_port
from pipelines.kafka.serde import RegistrySerde
from pipelines.kafka.topics import OUTPUT_TOPICS, ensure_topics
from schemas import wire
from tests.pipelines.kafka.registry_server import RegistryServer
from tests.schemas.test_schemas import FIXTURES, TS
from transforms import signing
from transforms.signing import Signer

SECRET = b"tail-test-key"
GARBAGE = b"not avro at all"


def produce(bootstrap: str, messages: list[tuple[str, bytes | None, bytes, list | None]]):
    cfg = {"bootstrap.servers": bootstrap}
    ensure_topics(cfg, {m[0] for m in messages}, partitions=2)
    p = Producer(cfg)
    for topic, key, value, headers in messages:
        p.produce(topic, key=key, value=value, headers=headers, timestamp=TS)
    assert p.flush(10) == 0


def output_messages(encode=wire.encode) -> list[tuple[str, bytes | None, bytes, list | None]]:
    """One record of each output schema on its topic; the action signed with SECRET."""
    out = []
    for topic, schema in OUTPUT_TOPICS.values():
        record = FIXTURES[schema]
        value = encode(schema, record)
        key = (record.get("asset_id") or "").encode() or None
        headers = None
        if topic == "twin.actions":
            headers = Signer(SECRET).headers(topic, key, value, seq=record["ts_ms"])
        out.append((topic, key, value, headers))
    return out


def tail_json(capsys, *argv: str) -> list[dict]:
    capsys.readouterr()
    assert main(["tail", *argv, "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    return [json.loads(line) for line in lines]


def test_json_prints_each_decoded_record_and_the_garbage_with_its_reason(broker, capsys,
                                                                         tmp_path):
    b = broker.bootstrap_servers
    messages = output_messages()
    unsigned = (messages[1][0], b"pump-9", messages[1][2], None)  # action without signature
    produce(b, [*messages, ("twin.deadletter", b"x", GARBAGE, None), unsigned])
    key_file = tmp_path / "hmac.key"
    key_file.write_bytes(SECRET + b"\n")
    topics = [t for t, _ in OUTPUT_TOPICS.values()]
    got = tail_json(capsys, *topics, "--bootstrap-servers", b, "--from-beginning",
                    "--max", "6", "--timeout", "20", "--hmac-key-file", str(key_file))
    assert len(got) == 6
    by_schema = {d["schema"]: d for d in got if "schema" in d and d["key"] != "pump-9"}
    assert set(by_schema) == {schema for _, schema in OUTPUT_TOPICS.values()}
    for topic, schema in OUTPUT_TOPICS.values():
        d = by_schema[schema]
        assert d["topic"] == topic and d["timestamp"] == TS and d["offset"] >= 0
        assert d["partition"] in (0, 1)
        expected = dict(FIXTURES[schema])
        for field in ("key", "payload"):  # bytes fields: base64
            if isinstance(expected.get(field), bytes):
                expected[field] = base64.b64encode(expected[field]).decode()
        assert d["record"] == expected  # timestamp-millis as epoch ms, all values exact
    assert by_schema["twin/prediction.v1"]["key"] == "pump-1"
    assert by_schema["twin/deadletter.v1"]["key"] is None
    assert by_schema["twin/deadletter.v1"]["record"]["payload"] == "BwAB"
    assert by_schema["twin/action.v1"]["signature"] == "valid"
    assert "signature" not in by_schema["twin/state.v1"]
    unsigned_out = [d for d in got if d["key"] == "pump-9"]
    assert [d["signature"] for d in unsigned_out] == ["missing"]
    bad = [d for d in got if "error" in d]
    assert len(bad) == 1 and "record" not in bad[0]
    assert bad[0]["error"] == {"reason": "bad_magic", "detail": "magic byte 110 != 0"}
    assert bad[0]["topic"] == "twin.deadletter" and bad[0]["key"] == "x"
    assert base64.b64decode(bad[0]["value_b64"]) == GARBAGE and bad[0]["size"] == len(GARBAGE)


def test_a_forged_signature_is_reported_invalid_and_without_key_unverified(broker, capsys,
                                                                          tmp_path):
    b = broker.bootstrap_servers
    topic, key, value, headers = output_messages()[1]
    assert topic == "twin.actions"
    forged = Signer(b"other-key").headers(topic, key, value, seq=1)
    produce(b, [(topic, key, value, headers), (topic, key, value, forged)])
    props = tmp_path / "client.properties"
    props.write_text(f"twin.hmac.key={SECRET.decode()}\n")
    got = tail_json(capsys, topic, "--bootstrap-servers", b, "--from-beginning", "--max", "2",
                    "--kafka-config", str(props))
    assert sorted(d["signature"] for d in got) == ["invalid", "valid"]
    got = tail_json(capsys, topic, "--bootstrap-servers", b, "--from-beginning", "--max", "2")
    assert [d["signature"] for d in got] == ["unverified", "unverified"]
    # the per-user key that `twin run` creates and signs with is found without flags
    from pipelines.kafka.broker import state_dir
    from pipelines.kafka.secrets import hmac_key

    (state_dir() / "hmac.key").write_bytes(SECRET)
    assert hmac_key() == SECRET
    got = tail_json(capsys, topic, "--bootstrap-servers", b, "--from-beginning", "--max", "2")
    assert sorted(d["signature"] for d in got) == ["invalid", "valid"]


def test_the_command_stamp_expiry_and_old_signatures_are_shown(broker, capsys, tmp_path):
    b = broker.bootstrap_servers
    topic, key, value, fresh = output_messages()[1]
    old = Signer(SECRET, validity_ms=60_000, clock=lambda: 1_000_000)
    expired = old.headers(topic, key, value, seq=1_795_785_600_000)
    v1 = [(signing.LEGACY_HEADER, b"0" * 64)]
    produce(b, [(topic, key, value, h) for h in (fresh, expired, v1)])
    props = tmp_path / "client.properties"
    props.write_text(f"twin.hmac.key={SECRET.decode()}\n")
    got = tail_json(capsys, topic, "--bootstrap-servers", b, "--from-beginning", "--max", "3",
                    "--kafka-config", str(props))
    by_status = {(d["signature"], (d.get("command") or {}).get("expired")): d for d in got}
    assert set(by_status) == {("valid", False), ("valid", True), ("legacy", None)}
    assert by_status[("valid", True)]["command"] == {
        "issued_at_ms": 1_000_000, "expires_at_ms": 1_060_000, "seq": 1_795_785_600_000,
        "expired": True}
    capsys.readouterr()
    assert main(["tail", topic, "--bootstrap-servers", b, "--from-beginning", "--max", "3",
                 "--kafka-config", str(props)]) == 0
    out = capsys.readouterr().out
    assert "signature legacy" in out and out.count("signature valid") == 2
    assert "expired until 1970-01-01T00:17:40.000Z" in out


def test_human_output_names_the_useful_fields(broker, capsys):
    b = broker.bootstrap_servers
    produce(b, [*output_messages(), ("twin.state", None, b"", None)])
    capsys.readouterr()
    topics = [t for t, _ in OUTPUT_TOPICS.values()]
    assert main(["tail", *topics, "--bootstrap-servers", b, "--from-beginning",
                 "--max", "5"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 5
    # the empty message has no key, so it may land on either partition of twin.state and
    # print before or after the state record: pick each record's line, not the first match
    undecodable = [x for x in lines if "undecodable" in x]
    assert len(undecodable) == 1
    line = {word: next(x for x in lines if word in x and "undecodable" not in x)
            for word in ("prediction", "action", "state", "dead letter")}
    line["undecodable"] = undecodable[0]
    assert "pump-1" in line["prediction"] and "score=0.970" in line["prediction"]
    assert "ANOMALY" in line["prediction"] and "rul=1.0d" in line["prediction"]
    assert "SETPOINT warning pump-1: vibration rising speed 155→140" in line["action"]
    assert "(dry run)" in line["action"] and "signature unverified" in line["action"]
    assert "motor-2 (motor) health=0.90" in line["state"] and "speed=150" in line["state"]
    assert "bad_magic at decode from kafka:raw.helios" in line["dead letter"]
    assert "empty_payload" in line["undecodable"] and "twin.state/" in line["undecodable"]


def test_default_shows_only_new_messages_and_timeout_stops(broker, capsys):
    b = broker.bootstrap_servers
    old = output_messages()
    produce(b, old)  # before tail starts: not shown without --from-beginning
    state_topic, _, new_value, _ = old[2]
    result: dict = {}

    def run() -> None:
        t0 = time.monotonic()
        result["rc"] = main(["tail", state_topic, "--bootstrap-servers", b, "--json",
                             "--timeout", "3"])
        result["elapsed"] = time.monotonic() - t0

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(1.5)  # tail is assigned at the end offsets by now
    produce(b, [(state_topic, b"motor-2", new_value, None)])
    thread.join(20)
    assert not thread.is_alive()
    assert result["rc"] == 0
    got = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(got) == 1 and got[0]["offset"] >= 0 and got[0]["key"] == "motor-2"
    assert got[0]["record"]["windows_seen"] == 1234
    assert 3 <= result["elapsed"] < 12  # waited for the new message, then 3 s idle


def test_schema_registry_ids(broker, capsys):
    b = broker.bootstrap_servers
    with RegistryServer() as registry:
        serde = RegistrySerde(registry.url)
        produce(b, output_messages(serde.encode))
        topics = [t for t, _ in OUTPUT_TOPICS.values()]
        got = tail_json(capsys, *topics, "--bootstrap-servers", b, "--from-beginning",
                        "--max", "4", "--schema-registry-url", registry.url)
        assert sorted(d["schema"] for d in got) == sorted(s for _, s in OUTPUT_TOPICS.values())
        # without the registry the same bytes are unknown ids (reported, not a crash)
        got = tail_json(capsys, *topics, "--bootstrap-servers", b, "--from-beginning",
                        "--max", "4")
        assert [d["error"]["reason"] for d in got] == ["unknown_schema"] * 4


def test_registry_down_exits_2_with_one_clear_line(broker, capsys):
    b = broker.bootstrap_servers
    produce(b, output_messages()[:1])
    capsys.readouterr()
    url = f"http://127.0.0.1:{free_port()}"
    rc = main(["tail", "twin.predictions", "--bootstrap-servers", b, "--from-beginning",
               "--max", "1", "--schema-registry-url", url, "-X",
               "twin.schema.registry.max.retries=0"])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"twin tail: cannot reach the schema registry at {url}" in err


def test_unreachable_broker_and_missing_topic_exit_2(broker, capsys, monkeypatch):
    monkeypatch.setattr(tail, "CONNECT_TIMEOUT_S", 1.5)
    capsys.readouterr()
    dead = f"127.0.0.1:{free_port()}"
    assert main(["tail", "twin.actions", "--bootstrap-servers", dead, "--timeout", "1"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    from jobs.hints import program

    assert captured.err.strip().splitlines() == [
        f"twin tail: cannot reach Kafka at {dead} ({dead}: Connection refused); is the broker "
        f"running? (`{program()} broker start` starts one)"]
    ensure_topics({"bootstrap.servers": broker.bootstrap_servers}, ["twin.state"])
    assert main(["tail", "twin.nope", "--bootstrap-servers", broker.bootstrap_servers]) == 2
    err = capsys.readouterr().err
    assert "no topic twin.nope on" in err and "twin.state" in err


@pytest.mark.parametrize("bad", [["--max", "0"]])
def test_bad_flags_exit_2(bad, capsys):
    assert main(["tail", "t", "--bootstrap-servers", "127.0.0.1:1", *bad]) == 2
    assert "--max must be at least 1" in capsys.readouterr().err
