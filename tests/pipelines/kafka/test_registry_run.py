"""The whole Kafka path with a Confluent-compatible schema registry instead of local ids:
`twin simulate` -> `twin run --source kafka` -> `twin tail`, and a stock Confluent
deserializer reading the twin's topics."""

from __future__ import annotations

import json

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from jobs.cli import main
from pipelines.kafka.serde import RegistrySerde
from pipelines.kafka.topics import raw_topics
from schemas import by_id, wire
from tests.pipelines.kafka.helpers import read_topic

START_MS = 1_795_800_000_000


def framed_id(data: bytes) -> int:
    return wire.HEADER.unpack_from(data)[1]


@pytest.mark.slow
def test_simulate_run_and_tail_speak_the_registry_ids(broker, registry, tmp_path, capsys):
    bs, url = broker.bootstrap_servers, registry.url
    key = tmp_path / "hmac.key"
    key.write_text("registry-test-key")
    truth_path = tmp_path / "truth.json"
    assert main(["simulate", "--bootstrap-servers", bs, "--schema-registry-url", url,
                 "--assets", "3", "--duration", "3h", "--seed", "4",
                 "--start-ms", str(START_MS), "--malformed-rate", "0.02",
                 "--hmac-key-file", str(key), "--no-actions",
                 "--ground-truth", str(truth_path)]) == 0
    truth = json.loads(truth_path.read_text())
    n = sum(truth["messages"].values())

    # raw data on the wire carries the registry's ids, not the repo's
    raw = [m for t in raw_topics() for m in read_topic(bs, t)]
    assert len(raw) == n
    ids = {framed_id(m.value()) for m in raw if m.value() and m.value()[0] == 0}
    registered = set(registry.state.schemas)
    assert 3 <= len(ids & registered) and not ids & set(by_id())

    out = tmp_path / "run"
    assert main(["run", "--source", "kafka", "--bootstrap-servers", bs, "--out", str(out),
                 "--schema-registry-url", url, "--no-progress",
                 "--hmac-key-file", str(key)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["schema_registry"] == url
    assert s["readings_in"] == n
    assert s["readings_valid"] + s["dead_letters"] == n
    # the same dead letters, for the same reasons, as with local ids
    assert s["dead_letter_reasons"] == truth["expected_dead_letters"]

    # a stock Confluent deserializer (no twinstream code) reads the twin's predictions
    client = SchemaRegistryClient({"url": url})
    deserialize = AvroDeserializer(client)
    preds = read_topic(bs, "twin.predictions")
    assert len(preds) == s["predictions"] > 0
    registered = set(registry.state.schemas)  # now with the twin's output schemas
    for m in preds[:50]:
        assert framed_id(m.value()) in registered
        record = deserialize(m.value(), SerializationContext(m.topic(), MessageField.VALUE))
        assert record["asset_id"] == m.key().decode()
        assert 0.0 <= record["anomaly_score"] <= 1.0
    serde = RegistrySerde(url)
    dead = read_topic(bs, "twin.deadletter")
    assert len(dead) == s["dead_letters"]
    assert {serde.decode(m.value())[0] for m in dead} == {"twin/deadletter.v1"}

    capsys.readouterr()
    assert main(["tail", "twin.predictions", "--bootstrap-servers", bs,
                 "--schema-registry-url", url, "--from-beginning", "--max", "5",
                 "--timeout", "10", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    assert len(lines) == 5
    assert all(line["schema"] == "twin/prediction.v1" for line in lines)


@pytest.mark.slow
def test_run_with_an_unreachable_registry_stops_before_reading(broker, tmp_path, capsys):
    from pipelines.kafka.broker import free_port

    out = tmp_path / "run"
    dead_url = f"http://127.0.0.1:{free_port()}"
    assert main(["simulate", "--bootstrap-servers", broker.bootstrap_servers,
                 "--assets", "1", "--duration", "10m", "--start-ms", str(START_MS),
                 "--no-actions"]) == 0
    capsys.readouterr()
    key = tmp_path / "hmac.key"
    key.write_text("registry-test-key")
    rc = main(["run", "--source", "kafka", "--bootstrap-servers", broker.bootstrap_servers,
               "--out", str(out), "--schema-registry-url", dead_url, "--no-progress",
               "--hmac-key-file", str(key)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "cannot reach the schema registry" in err and dead_url in err
    # nothing was read, so nothing was committed and no state was written
    assert not (out / "twin-state.pkl").exists()
